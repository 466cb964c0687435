"""Selection before replay: which of the ingested train prompts go to the paid teacher.

    select_prompts(cfg: SelectConfig, rd: RunDir, embed=None) -> dict

Reads ingest/train.jsonl as a stream (any size) and writes the chosen records, in log order, to
select/train.jsonl (`rd.select_train`), which replay reads instead of ingest/train.jsonl.
Memory is bounded by `max_prompts` (uniform, stratified) or `reservoir` (diversity), not by
the log. Every strategy ranks records by a hash of their id, so a rerun picks the same prompts.

`embed(texts) -> (n, d) array` is given by the caller (distill/stages.py builds it from the
encoder student's base model): stage packages do not import each other.
"""
from __future__ import annotations

import hashlib
import heapq
import shutil
import time
from collections import Counter
from typing import Callable, Iterator

import numpy as np
import orjson

from core.base import DistillError
from core.rundir import RunDir
from ingest.config import SelectConfig
from ingest.output import JsonlOut

STAGE = "select"
Embed = Callable[[list[str]], np.ndarray]


def rank(rid: str) -> int:
    """A record's place in every strategy's uniform order (salted apart from the split hash)."""
    return int.from_bytes(hashlib.sha256(b"select:" + rid.encode("utf-8")).digest()[:8], "big")


def prompt_text(rec: dict) -> str:
    """What a prompt is about: its non-system turns (the shared system prompt says nothing)."""
    return "\n".join(m["content"] or "" for m in rec["messages"] if m["role"] != "system")  # None: a turn that only calls tools


def _records(rd: RunDir) -> Iterator[dict]:
    path = rd.ingest_train
    if not path.is_file():
        raise DistillError(f"select needs {path} (run the ingest stage first)")
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def lowest(items: Iterator[tuple[int, int]], k: int) -> list[tuple[int, int]]:
    """The k (rank, seq) pairs of lowest rank, with a bounded heap."""
    heap: list[tuple[int, int]] = []
    for h, seq in items:
        if len(heap) < k:
            heapq.heappush(heap, (-h, seq))
        elif h < -heap[0][0]:
            heapq.heapreplace(heap, (-h, seq))
    return sorted((-h, s) for h, s in heap)


def water_fill(sizes: dict, budget: int) -> dict:
    """Equal shares of `budget` over the groups; a group smaller than its share is taken whole
    and what it leaves is shared among the rest."""
    quota = {g: 0 for g in sizes}
    left, open_ = budget, sorted(sizes, key=lambda g: sizes[g])
    while left > 0 and open_:
        share = max(1, left // len(open_))
        nxt = []
        for g in open_:
            take = min(share, sizes[g] - quota[g], left)
            quota[g] += take
            left -= take
            if quota[g] < sizes[g]:
                nxt.append(g)
            if left == 0:
                break
        open_ = nxt
    return quota


def choose_uniform(rd: RunDir, cfg: SelectConfig) -> tuple[set[int], dict]:
    keep = lowest(((rank(r["id"]), i) for i, r in enumerate(_records(rd))), cfg.max_prompts)
    return {s for _, s in keep}, {}


def choose_stratified(rd: RunDir, cfg: SelectConfig) -> tuple[set[int], dict]:
    sizes = Counter(str(r["metadata"].get(cfg.field)) for r in _records(rd))
    quota = water_fill(dict(sizes), cfg.max_prompts)
    heaps: dict[str, list] = {g: [] for g in quota}
    for i, r in enumerate(_records(rd)):  # second pass: a bounded heap per stratum
        g, h = str(r["metadata"].get(cfg.field)), rank(r["id"])
        heap, q = heaps[g], quota[g]
        if len(heap) < q:
            heapq.heappush(heap, (-h, i))
        elif q and h < -heap[0][0]:
            heapq.heapreplace(heap, (-h, i))
    keep = {s for heap in heaps.values() for _, s in heap}
    return keep, {"strata": len(sizes), "per_stratum": {g: quota[g] for g in sorted(quota)}}


def choose_diversity(rd: RunDir, cfg: SelectConfig, embed: Embed | None) -> tuple[set[int], dict]:
    if embed is None:
        raise DistillError("select.strategy 'diversity' needs an embedding function (the stage runner passes the encoder's)")
    from sklearn.cluster import KMeans

    size = max(cfg.reservoir, cfg.max_prompts)
    pool = lowest(((rank(r["id"]), i) for i, r in enumerate(_records(rd))), size)
    if len(pool) <= cfg.max_prompts:
        return {s for _, s in pool}, {"clusters": 0}
    want = {s for _, s in pool}
    texts = {i: prompt_text(r) for i, r in enumerate(_records(rd)) if i in want}
    seqs = [s for _, s in pool]
    t0 = time.time()
    X = np.asarray(embed([texts[s] for s in seqs]), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True) + 1e-12  # cosine geometry
    t_embed = time.time() - t0
    k = min(cfg.clusters or min(1000, max(2, cfg.max_prompts)), len(seqs))
    km = KMeans(n_clusters=k, n_init=1, random_state=0).fit(X)
    # Within a cluster, the prompts nearest its centre first: the typical request of each type.
    dist = np.linalg.norm(X - km.cluster_centers_[km.labels_], axis=1)
    members: dict[int, list[int]] = {}
    for j in np.argsort(dist, kind="stable").tolist():
        members.setdefault(int(km.labels_[j]), []).append(seqs[j])
    quota = water_fill({c: len(m) for c, m in members.items()}, cfg.max_prompts)
    keep = {s for c, m in members.items() for s in m[:quota[c]]}
    sizes = sorted(len(m) for m in members.values())
    return keep, {"clusters": k, "reservoir": len(seqs), "embed_s": round(t_embed, 2),
                  "cluster_size_min": sizes[0], "cluster_size_median": sizes[len(sizes) // 2], "cluster_size_max": sizes[-1]}


def select_prompts(cfg: SelectConfig, rd: RunDir, embed: Embed | None = None) -> dict:
    """Choose the train prompts to replay; writes select/train.jsonl and the manifest entry."""
    t0 = time.time()
    if cfg.strategy == "uniform":
        keep, info = choose_uniform(rd, cfg)
    elif cfg.strategy == "stratified":
        keep, info = choose_stratified(rd, cfg)
    else:
        keep, info = choose_diversity(rd, cfg, embed)
    out_path = rd.select_train
    out = JsonlOut(out_path, rd.path / ".select-tmp")
    n = 0
    try:
        for i, r in enumerate(_records(rd)):
            n += 1
            if i in keep:
                out.write(r)
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        shutil.rmtree(rd.path / ".select-tmp", ignore_errors=True)
    counts = {"candidates": n, "selected": out.n, "not_selected": n - out.n}
    rd.record_stage(STAGE, counts=counts, figures={"strategy": cfg.strategy, "wall_s": round(time.time() - t0, 3), **info},
                    inputs=[rd.ingest_train], outputs=[out_path], config=cfg, started=t0)
    return counts


__all__ = ["select_prompts", "water_fill", "rank", "prompt_text"]
