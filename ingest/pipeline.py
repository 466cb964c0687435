"""The ingest stage: source -> validate -> window -> exact dedup -> redact -> near dedup -> split
-> decontaminate -> per-tag caps -> ingest/{train,holdout,quarantine,dropped}.jsonl (+ Parquet).

Every record read ends up in exactly one bucket, and the counts prove it:
    read = kept + quarantined + skipped + duplicates + near_duplicates + decontaminated
           + over_tag_cap + outside_window
    kept = train + holdout
(skipped: not an error but not a prompt, e.g. a failed LiteLLM call or a Langfuse span.)

Records stream: the dedup state is on disk (ingest/store.py) and records that pass the first
pass wait in spill files in the work directory, so memory is set by `ingest.store`, not by the
log. Outputs go to temp files that replace the real ones only when the whole source has been
read, so a source that fails halfway (unreachable database, cut-off file) leaves no partial
outputs and no advanced watermark.
"""
from __future__ import annotations

import gc
import hashlib
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import orjson

from core.rundir import RunDir
from ingest.config import IngestConfig
from ingest.dedup import NEAR_SALT, MinHasher, band_keys, dialogue_text, lsh_params, system_key
from ingest.finish import SEP
from ingest.output import JsonlOut, ParquetOut, dumps
from ingest.front import Front, WorkerFront
from ingest.records import parse_time
from ingest.sources import describe, iter_source
from ingest.state import IngestState, state_dir
from ingest.store import DedupStore

STAGE = "ingest"
Emit = Callable[[bytes, int], None]  # (record as JSON, seq): seq is the read order of admitted records


def in_holdout(record_id: str, fraction: float) -> bool:
    """Stable split: the same id is always on the same side (for a given fraction)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(b"holdout:" + record_id.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < fraction


class Ingestor:
    """One pass over a source: per-record checks, near dedup and the split; the train and
    holdout candidates go to spill files for the whole-run steps (ingest/finish.py)."""

    def __init__(self, cfg: IngestConfig, work: Path, quarantine: JsonlOut, dropped: JsonlOut,
                 golden: list[dict] | None = None):
        self.cfg, self.work = cfg, work
        self.golden = golden or []
        self.golden_ids = {r["id"] for r in self.golden}
        self.golden_seen: set[str] = set()
        d, s = cfg.dedup, cfg.store
        self.hasher = MinHasher(d.num_perm, d.shingle_chars) if (d.near_duplicates or d.decontaminate) else None
        self.near = lsh_params(d.threshold, d.num_perm) if d.near_duplicates else None
        self.store = DedupStore(work, s.bloom_mb, s.index_mb, d.num_perm, s.minhash_cache)
        self.quarantine_out, self.dropped_out = quarantine, dropped
        self.train_spill = open(work / "train.spill", "wb", buffering=1 << 20)
        self.holdout_spill = open(work / "holdout.spill", "wb", buffering=1 << 20)
        self.seq = 0
        self.n_train = self.n_holdout = 0
        self.counts: Counter = Counter()
        self.redactions: Counter = Counter()
        self.max_ts: datetime | None = None
        self.min_ts: datetime | None = None
        self.probes = 0
        self.worker_peak_rss_mb: float | None = None  # the parse worker's, when there is one

    # -- events from the first half (ingest/front.py) ------------------------------------
    def drop(self, bucket: str, rid: str, position: int, of: str | None) -> None:
        self.counts[bucket] += 1
        self.dropped_out.write({"id": rid, "position": position, "reason": bucket, "of": of})

    def absorb(self, summary: dict) -> None:
        """The first half's counts and time range, once it has read the whole source."""
        self.counts.update(summary["counts"])
        self.redactions.update(summary["redactions"])
        self.min_ts, self.max_ts = summary["min_ts"], summary["max_ts"]
        self.probes += summary["probes"]
        self.worker_peak_rss_mb = summary.get("peak_rss_mb")

    def place(self, batch: list[tuple[dict, int]]) -> None:
        """Near-dedup (in log order, first seen wins) and split a batch of admitted records."""
        if not batch:
            return
        store = self.store
        first = self.seq
        self.seq += len(batch)
        parts = [system_key(r["messages"], r.get("tools"), r.get("tool_choice")) for r, _ in batch]
        store.put_names([[first + i, r["id"]] for i, (r, _) in enumerate(batch)])
        if self.hasher is not None:
            values = self.hasher.values_many([dialogue_text(r["messages"]) for r, _ in batch])
            store.put_minhashes(values)
        if self.near is not None:
            b, r = self.near
            thr = self.cfg.dedup.threshold
            keys = band_keys(values, np.array([int(p, 16) for p in parts], dtype=np.uint64), b, r, NEAR_SALT)
            # Candidates already in the index are compared all at once; this batch's own kept
            # records (`local`) are few and depend on the decisions, so they are walked in order.
            t_seq, t_cnt, t_band = (a.tolist() for a in store.best_twins(values, keys, thr))
            local: dict[int, list[int]] = {}  # band key -> batch indexes of this batch's kept records
            klist = keys.tolist()
            kept: list[int] = []
            width = values.shape[1]
            paired = _shares_a_bucket(keys).tolist()  # the others need no walk of `local`
        golden, fraction, tag_field = self.golden_ids, self.cfg.holdout_fraction, self.cfg.sampling.tag_field
        for i, (rec, pos) in enumerate(batch):
            rid, seq = rec["id"], first + i
            if self.near is not None:
                twin, cnt, bd = t_seq[i], t_cnt[i], t_band[i]
                if paired[i]:
                    ks = klist[i]
                    seen: set[int] = set()
                    for j, k in enumerate(ks):
                        for li in local.get(k, ()):
                            if li in seen:
                                continue
                            seen.add(li)
                            c = int(np.count_nonzero(values[li] == values[i]))
                            # (most equal values, then lowest (band, seq)): the index's walk order
                            if c / width >= thr and (twin < 0 or c > cnt or (c == cnt and (j, first + li) < (bd, twin))):
                                twin, cnt, bd = first + li, c, j
                if twin >= 0:
                    self.drop("near_duplicates", rid, pos, store.name(twin))
                    continue
                kept.append(i)
                if paired[i]:
                    for k in ks:
                        local.setdefault(k, []).append(i)
            is_golden = rid in golden
            holdout = is_golden or in_holdout(rid, fraction)
            if is_golden:
                self.golden_seen.add(rid)
            rec["split"] = "holdout" if holdout else "train"
            # The record's output bytes are made once, here: finish() copies them out unparsed.
            line = dumps([seq, pos, parts[i], rid, str(rec["metadata"].get(tag_field))]) + SEP + dumps(rec) + b"\n"
            if holdout:
                self.holdout_spill.write(line)
                self.n_holdout += 1
            else:
                self.train_spill.write(line)
                self.n_train += 1
        if self.near is not None:
            store.add_bands(keys[kept], [first + i for i in kept])

    def run(self, chunks: Iterable[list[tuple]], batch: int = 256) -> None:
        """Consume the first half's event lists (ingest/front.py), in order."""
        pending: list[tuple[dict, int]] = []
        counts, qout = self.counts, self.quarantine_out
        for events in chunks:
            for e in events:
                kind = e[0]
                if kind == "a":
                    pending.append((e[1], e[2]))
                    if len(pending) >= batch:  # MinHash is computed per batch: far fewer numpy calls
                        self.place(pending)
                        pending = []
                elif kind == "d":
                    self.drop("duplicates", e[1], e[2], e[3])
                else:
                    counts["quarantined"] += 1
                    counts[f"q:{e[2]}"] += 1
                    qout.write(e[1])
        self.place(pending)
        self.train_spill.close()
        self.holdout_spill.close()
        self.probes += self.store.probes

    def carried_holdout(self) -> list[dict]:
        """Golden holdout records from earlier runs that this run did not read again."""
        return [r for r in self.golden if r["id"] not in self.golden_seen]

    def final_counts(self, train: int) -> dict:
        c = self.counts
        out = {k: c[k] for k in ("read", "quarantined", "skipped", "duplicates", "near_duplicates", "decontaminated",
                                 "over_tag_cap", "outside_window", "blank_lines")}
        out["train"] = train
        out["holdout"] = self.n_holdout
        out["kept"] = out["train"] + out["holdout"]
        out["holdout_carried"] = len(self.carried_holdout())
        out["holdout_total"] = out["holdout"] + out["holdout_carried"]
        out["quarantined_by_reason"] = {k[2:]: v for k, v in sorted(c.items()) if k.startswith("q:")}
        out["skipped_by_reason"] = {k[2:]: v for k, v in sorted(c.items()) if k.startswith("s:")}
        red = self.redactions
        out["redactions_by_type"] = dict(sorted(red.items()))
        out["redactions"] = sum(red.values())
        accounted = sum(out[k] for k in ("kept", "quarantined", "skipped", "duplicates", "near_duplicates",
                                         "decontaminated", "over_tag_cap", "outside_window"))
        if accounted != out["read"]:  # a bug in this module, never the input's fault
            raise AssertionError(f"ingest lost records: read {out['read']} but accounted for {accounted}: {out}")
        return out


def _shares_a_bucket(keys: np.ndarray) -> np.ndarray:
    """Per row of the (n, bands) band keys: does another row of this batch share a bucket?
    (Band keys hash the band number in, so one row never meets itself.)"""
    n, b = keys.shape
    flat = keys.ravel()
    o = np.argsort(flat, kind="stable")
    same = flat[o][1:] == flat[o][:-1]
    out = np.zeros(n, dtype=bool)
    out[o[1:][same] // b] = True
    out[o[:-1][same] // b] = True
    return out


@contextmanager
def _gc_paused():
    """Records hold no cycles; the cycle collector would rescan the live ones again and again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _ingest(cfg: IngestConfig, work: Path, outs: dict, emit_train: Emit, emit_holdout: Emit,
            golden: list[dict], watermark: str | None) -> tuple[Ingestor, dict]:
    from ingest.finish import finish

    shutil.rmtree(work, ignore_errors=True)
    ing = Ingestor(cfg, work, outs["quarantine"], outs["dropped"], golden=golden)
    bounds = [parse_time(t) for t in (watermark, cfg.window.since) if t]
    since = max(bounds, default=None)
    front: Front | WorkerFront
    try:
        with _gc_paused():
            if cfg.store.parse_worker and cfg.source.kind == "jsonl":
                front = WorkerFront(cfg, work, watermark, since)
                try:
                    ing.run(front)
                finally:
                    front.close()
                ing.absorb(front.summary)
            else:
                front = Front(cfg, work, watermark)
                try:
                    ing.run(front.chunks(iter_source(cfg.source, since)))
                    ing.absorb(front.summary())
                finally:
                    front.close()
            counts = finish(ing, emit_train, emit_holdout)
    finally:
        ing.store.close()
        shutil.rmtree(work, ignore_errors=True)
    return ing, counts


def run_ingest(cfg: IngestConfig, rd: RunDir) -> dict:
    """Run the ingest stage into `rd`; returns the counts (also in the run manifest). An
    incremental run holds its source's state lock throughout (workers sharing the state take
    turns; ingest/state.py)."""
    state = IngestState(state_dir(cfg, rd))
    if not cfg.window.incremental:
        return _run_ingest(cfg, rd, state)
    with state.lock():
        return _run_ingest(cfg, rd, state)


def _run_ingest(cfg: IngestConfig, rd: RunDir, state: IngestState) -> dict:
    t0 = time.time()
    source = describe(cfg.source)
    incremental = cfg.window.incremental
    watermark = state.watermark() if incremental else None
    # A full read re-derives the same holdout from the id hashes; only windowed runs, which
    # see just the new records, need the stored golden holdout to keep earlier ones.
    golden = state.golden_holdout() if incremental else []
    # Everything is written under one temp directory in the run (renamed into ingest/ at the
    # end); the dedup index may live elsewhere (store.dir: a fast local disk).
    staging = rd.path / f".{STAGE}-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    names = ("quarantine", "dropped", "train", "holdout")
    outs: dict = {n: JsonlOut(rd.ingest_split(n), staging) for n in names}
    pq = {}
    if cfg.parquet:
        pq = {n: ParquetOut(rd.ingest_split(n).with_suffix(".parquet"), staging) for n in ("train", "holdout")}

    def emitter(split: str) -> Emit:
        j, p = outs[split], pq.get(split)
        if p is None:
            return lambda raw, seq: j.write_raw(raw)
        return lambda raw, seq: (j.write_raw(raw), p.write(orjson.loads(raw)))

    work = Path(cfg.store.dir) / rd.run_id if cfg.store.dir else staging / "work"
    written: list[Path] = []
    try:
        ing, counts = _ingest(cfg, work, outs, emitter("train"), emitter("holdout"), golden, watermark)
        t_read = time.time() - t0
        for n in names:  # in this order: a failed rename leaves the later ones untouched
            written.append(outs.pop(n).commit())
        for n in ("train", "holdout"):
            if n in pq:
                written.append(pq.pop(n).commit())
            else:
                rd.ingest_split(n).with_suffix(".parquet").unlink(missing_ok=True)  # stale from an earlier attempt
    finally:
        for o in (*outs.values(), *pq.values()):
            o.abort()
        shutil.rmtree(staging, ignore_errors=True)

    # State last: a run that failed above must not move the watermark or the golden holdout.
    wm_after = watermark
    if incremental:
        if ing.n_holdout:
            state.save_golden_holdout_file(rd.ingest_holdout)
        if ing.max_ts is not None:
            wm_after = _iso(ing.max_ts)
            state.save_watermark(wm_after, rd.run_id, source)
    window = {"incremental": incremental, "since": cfg.window.since,
              "watermark_before": watermark, "watermark_after": wm_after,
              "first_record": _iso(ing.min_ts), "last_record": _iso(ing.max_ts)}
    figures = {"records_per_s": round(counts["read"] / t_read, 1) if t_read > 0 else None,
               "read_s": round(t_read, 3), "index_probes": ing.probes,
               "parse_worker_peak_rss_mb": ing.worker_peak_rss_mb}
    rd.record_stage(STAGE, counts=counts, figures=figures, inputs=_inputs(cfg, source), outputs=written,
                    config=cfg, started=t0, source=source, window=window, state_dir=str(state.root))
    return counts


def _inputs(cfg: IngestConfig, source: str) -> list:
    """What the manifest hashes as input: the log files, or the source's (safe) URL."""
    if cfg.source.kind == "jsonl":
        from ingest.sources.jsonl import log_files
        return log_files(cfg.source.path)
    return [cfg.source.path] if cfg.source.kind == "langfuse" else [source]


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def clean_records(cfg: IngestConfig) -> list[dict]:
    """The source's records after validation, dedup and redaction, in log order; writes
    nothing the caller sees and uses no state (drift checks, previews: compare like with like).
    Returns a list: for previews, not for whole production logs."""
    import tempfile

    kept: list[tuple[int, dict]] = []
    with tempfile.TemporaryDirectory(prefix="ingest-clean-") as tmp:
        outs = {n: JsonlOut(Path(tmp) / f"{n}.jsonl", Path(tmp) / "out") for n in ("quarantine", "dropped")}
        emit = lambda raw, seq: kept.append((seq, orjson.loads(raw)))  # noqa: E731
        _ingest(cfg, Path(tmp) / "work", outs, emit, emit, [], None)
        for o in outs.values():
            o.abort()
    return [r for _, r in sorted(kept, key=lambda x: x[0])]


__all__ = ["run_ingest", "clean_records", "in_holdout", "Ingestor"]
