"""Streaming ingest: the on-disk index gives the in-memory index's answers, across flushes."""
from __future__ import annotations

import random

import numpy as np
from ingest_testkit import assert_balanced, chat, write_log

from ingest.dedup import MinHasher, NearIndex, band_keys, dialogue_text, lsh_params, system_key
from ingest.keyindex import KeyRuns
from ingest.store import Bloom, DedupStore, ExactIndex


def test_bloom_scalar_and_vector_paths_agree():
    b = Bloom(0.01)
    keys = np.array([random.Random(i).getrandbits(64) for i in range(500)], dtype=np.uint64)
    assert not b.test_many(keys).any()
    b.add_many(keys[:250])
    assert b.test_many(keys[:250]).all()
    assert all(b.test_add(int(k)) for k in keys[:250])  # what numpy set, the Python probe sees
    assert b.test_many(keys[250:]).mean() < 0.05


def test_store_finds_keys_in_buffer_in_memory_runs_and_on_disk(tmp_path):
    """A memory budget far below the keys: they spill to disk runs (memory stays bounded),
    the disk runs get merged, and every key is still found."""
    s = ExactIndex(tmp_path, bloom_mb=0.01, buffer_records=100, index_mb=0.001)
    for i in range(20_000):
        assert s.exact_first(i * 7919) is None and s.id_position(f"r{i}") is None
        s.add_exact(i * 7919, f"r{i}")
        s.add_id(f"r{i}", i + 1)
    assert s.spills > 8 and s._exact_runs._n_mem <= 1024 + 100  # spilled, merged, bounded
    assert [s.exact_first(i * 7919) for i in (0, 500, 19_999)] == ["r0", "r500", "r19999"]
    assert [s.id_position(f"r{i}") for i in (0, 500, 19_999)] == [1, 501, 20_000]
    assert s.id_position("nobody") is None and s.exact_first(7) is None
    s.close()


def test_key_runs_give_every_value_of_a_key_oldest_first_across_spills_and_merges(tmp_path):
    rng = np.random.default_rng(1)
    runs = KeyRuns(tmp_path, "t", mem_entries=500, max_disk_runs=3, merge_chunk=300)
    ref: dict[int, list[int]] = {}
    for lo in range(0, 6000, 200):
        keys = rng.integers(0, 700, 200).astype(np.uint64)  # many repeats: multi-value keys
        runs.add(keys, np.arange(lo, lo + 200))
        for k, v in zip(keys.tolist(), range(lo, lo + 200)):
            ref.setdefault(k, []).append(v)
    assert runs.spills >= 4 and len(runs) == 6000 and len(runs._disk) <= 3
    q = np.array([3, 699, 5000, 3], dtype=np.uint64)
    i, v = runs.lookup(q)
    got = {j: [x for a, x in zip(i.tolist(), v.tolist()) if a == j] for j in range(len(q))}
    assert {j: sorted(x) for j, x in got.items()} == {j: ref.get(int(k), []) for j, k in enumerate(q.tolist())}


def test_near_duplicates_match_the_in_memory_index_across_flushes(runner, tmp_path):
    """Many near copies far apart in the log, with a buffer small enough that most twins are
    found in SQLite: the same drops, with the same 'of', as datasketch-style in-memory LSH."""
    rng = random.Random(3)
    words = "card pin refund transfer fee limit app cash top up blocked lost stolen rate euro".split()
    base = [" ".join(rng.choice(words) for _ in range(25)) for _ in range(150)]
    rows = []
    for i in range(900):
        text = base[i % 150] + ("" if i < 150 else f" please {i // 150}")
        rows.append(chat(i, text, system="S1" if i % 2 else "S2"))
    log = write_log(tmp_path / "log.jsonl", rows)
    c = runner.run(runner.cfg(log, store={"buffer_records": 100, "bloom_mb": 0.05, "index_mb": 0.001}, holdout_fraction=0.2))
    assert_balanced(c)
    # the reference: the old in-memory index over the same admitted records, in log order
    h, idx = MinHasher(64, 5), NearIndex(0.9, 64)
    expected = {}
    for r in rows:
        m = h.minhash_text(dialogue_text(r["messages"]))
        twin = idx.find_or_add(system_key(r["messages"]), r["id"], m)
        if twin is not None:
            expected[r["id"]] = twin
    got = {d["id"]: d["of"] for d in runner.out("dropped") if d["reason"] == "near_duplicates"}
    assert got == expected and c["near_duplicates"] == len(expected) > 300


def test_band_keys_equal_iff_bands_equal():
    b, r = lsh_params(0.9, 64)
    v = np.random.default_rng(0).integers(0, 2**32, (3, 64), dtype=np.uint64).astype(np.uint32)
    v[1, :r] = v[0, :r]  # first band shared
    k = band_keys(v, np.array([5, 5, 6], dtype=np.uint64), b, r, 1)
    assert k[0, 0] == k[1, 0] and (k[0, 1:] != k[1, 1:]).all()
    v[2] = v[0]
    k = band_keys(v, np.array([5, 5, 6], dtype=np.uint64), b, r, 1)
    assert (k[2] != k[0]).all()  # another partition (system prompt): never the same bucket


def test_parquet_is_written_in_row_groups_and_loads_with_datasets(runner, tmp_path):
    from datasets import Dataset

    log = write_log(tmp_path / "log.jsonl", [chat(i) for i in range(50)])
    c = runner.run(runner.cfg(log, parquet=True, holdout_fraction=0.2))
    ds = Dataset.from_parquet(str(runner.rd.ingest_split("train").with_suffix(".parquet")))
    assert len(ds) == c["train"] and ds[0]["id"] == runner.out("train")[0]["id"]
    assert not any(p.name.startswith(".") for p in runner.rd.path.iterdir())  # no temp files left


def test_minhash_cache_refills_when_full(tmp_path):
    s = DedupStore(tmp_path, bloom_mb=0.01, hv_cache=4)
    v = np.arange(10 * 64, dtype=np.uint32).reshape(10, 64)
    s.put_minhashes(v)
    for seqs in ([0, 1, 2], [2, 3, 4], [5, 0], list(range(10))):  # overflow, then more than fit
        assert (s.cached_minhashes(seqs) == v[seqs]).all()
    s.close()


def _walk(values, keys, index_keys, index_values, seqs, threshold):
    """The per-record walk the vectorised lookups replace: bands in order, each bucket oldest
    first, the first of the most similar wins."""
    buckets: dict[int, list[int]] = {}
    for row, s in zip(index_keys.tolist(), seqs):
        for k in row:
            buckets.setdefault(k, []).append(s)
    by_seq = dict(zip(seqs, index_values))
    out = []
    for hv, row in zip(values, keys.tolist()):
        best, best_sim = None, 0.0
        for s in dict.fromkeys(s for k in row for s in buckets.get(k, [])):
            sim = np.count_nonzero(by_seq[s] == hv) / len(hv)
            if sim >= threshold and sim > best_sim:
                best, best_sim = s, sim
        out.append(best)
    return out


def test_vectorised_lookups_pick_the_same_twin_as_the_walk_ties_included(tmp_path):
    from ingest.finish import HoldoutIndex

    rng = np.random.default_rng(3)
    b, r = 8, 2
    base = rng.integers(0, 3, (40, 64)).astype(np.uint32)  # tiny alphabet: full buckets, many equal similarities
    idx_v = base[rng.integers(0, 40, 300)] ^ (rng.random((300, 64)) < 0.15).astype(np.uint32)
    q_v = base[rng.integers(0, 40, 200)] ^ (rng.random((200, 64)) < 0.15).astype(np.uint32)
    parts = np.zeros(300, dtype=np.uint64)
    idx_k, q_k = band_keys(idx_v, parts, b, r, 2), band_keys(q_v, parts[:200], b, r, 2)
    expect = _walk(q_v, q_k, idx_k, idx_v, list(range(300)), 0.7)
    assert sum(e is not None for e in expect) > 50
    # The run's on-disk store, with members on disk and in memory.
    s = DedupStore(tmp_path / "s", bloom_mb=0.01, index_mb=0.001, hv_cache=64)
    s.put_minhashes(idx_v)
    for lo in range(0, 300, 50):
        s.add_bands(idx_k[lo:lo + 50], list(range(lo, lo + 50)))
    assert s.spills >= 1
    seq, _, _ = s.best_twins(q_v, q_k, 0.7)
    assert [None if x < 0 else x for x in seq.tolist()] == expect
    s.close()
    # The decontamination index.
    h = HoldoutIndex(tmp_path, b, r)
    for lo in range(0, 300, 64):
        h.add(idx_v[lo:lo + 64], parts[lo:lo + 64], list(range(lo, min(lo + 64, 300))))
    h.build(64)
    assert h.best_twins(q_v, q_k, 0.7) == expect
    h.close()


def test_prefetched_lookups_give_the_per_record_answers(tmp_path):
    """A chunk's keys looked up at once (one Bloom test, one run lookup) answer as dicts of
    everything added would, across spills, and the flush waits for the end of the chunk."""
    s = ExactIndex(tmp_path, bloom_mb=0.01, buffer_records=100, index_mb=0.001)
    ref_exact: dict[int, str] = {}
    ref_ids: dict[str, int] = {}
    for lo in range(0, 3000, 250):
        keys = [(i % 1700) * 7919 for i in range(lo, lo + 250)]  # from 1700 on: repeats of earlier keys
        rids = [f"r{i % 2100}" for i in range(lo, lo + 250)]      # from 2100 on: reused ids
        with s.prefetched(keys, rids):
            for i, (k, r) in enumerate(zip(keys, rids), lo):
                assert (s.exact_first(k), s.id_position(r)) == (ref_exact.get(k), ref_ids.get(r))
                if k not in ref_exact and r not in ref_ids:
                    s.add_exact(k, r)
                    s.add_id(r, i + 1)
                    ref_exact[k], ref_ids[r] = r, i + 1
            if lo + 250 <= 1700:
                assert len(s._ids) >= 250  # no flush inside the block (buffer_records is 100)
    assert s.spills >= 2 and len(ref_exact) == 1700  # both indexes spilled
    s.close()
