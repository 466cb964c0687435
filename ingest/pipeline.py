"""The ingest stage: source -> validate -> window -> exact dedup -> redact -> near dedup -> split
-> decontaminate -> per-tag caps -> ingest/{train,holdout,quarantine,dropped}.jsonl (+ Parquet).

Every record read ends up in exactly one bucket, and the counts prove it:
    read = kept + quarantined + skipped + duplicates + near_duplicates + decontaminated
           + over_tag_cap + outside_window
    kept = train + holdout
(skipped: not an error but not a prompt, e.g. a failed LiteLLM call or a Langfuse span.)
The source is read completely before anything is written, so a source that fails halfway
(unreachable database, cut-off file) leaves no partial outputs and no advanced watermark.
"""
from __future__ import annotations

import gc
import hashlib
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterable

from core.base import write_jsonl
from core.rundir import RunDir
from ingest.config import IngestConfig
from ingest.dedup import MinHasher, NearIndex, dialogue_text, exact_key, system_key
from ingest.pii import Redactor
from ingest.records import Item, RecordError, SkipRecord, parse_time, raw_text
from ingest.sources import describe, iter_source
from ingest.state import IngestState, state_dir
from ingest.validate import validate

STAGE = "ingest"


def in_holdout(record_id: str, fraction: float) -> bool:
    """Stable split: the same id is always on the same side (for a given fraction)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(b"holdout:" + record_id.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < fraction


class Ingestor:
    """One pass over a source; holds the per-run dedup indexes, redaction map and counts."""

    def __init__(self, cfg: IngestConfig, golden: list[dict] | None = None,
                 watermark: str | None = None):
        self.cfg = cfg
        self.golden = golden or []
        self.golden_ids = {r["id"] for r in self.golden}
        self.after = parse_time(watermark) if watermark else None          # exclusive
        self.since = parse_time(cfg.window.since) if cfg.window.since else None  # inclusive
        self.incremental = cfg.window.incremental
        self.redactor = Redactor(cfg.pii.types) if cfg.pii.enabled else None
        d = cfg.dedup
        self.hasher = MinHasher(d.num_perm, d.shingle_chars) if (d.near_duplicates or d.decontaminate) else None
        self.near = NearIndex(d.threshold, d.num_perm) if d.near_duplicates else None
        self.minhashes: dict[str, object] = {}
        self.parts: dict[str, str] = {}  # record id -> dedup partition (its system prompt's hash)
        self.exact: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        self.counts: Counter = Counter()
        self.quarantine: list[dict] = []
        self.dropped: list[dict] = []
        self.train: list[dict] = []
        self.holdout: list[dict] = []
        self.max_ts: datetime | None = None
        self.min_ts: datetime | None = None

    # -- one record ---------------------------------------------------------------------
    def _quarantine(self, item: Item, err: RecordError, rid: str | None = None) -> None:
        self.counts["quarantined"] += 1
        self.counts[f"q:{err.code}"] += 1
        raw = raw_text(item.raw if item.raw is not None else item.record, self.cfg.quarantine_raw_chars)
        if self.redactor is not None:
            raw = self.redactor.redact(raw)  # quarantine is written too: no PII in it either
        row = {"position": item.position, "source": item.source, "reason": str(err), "raw": raw}
        rid = rid or item.native_id
        if rid is not None:
            row["id"] = rid
        self.quarantine.append(row)

    def _drop(self, bucket: str, rec: dict, position: int, of: str | None) -> None:
        self.counts[bucket] += 1
        self.dropped.append({"id": rec["id"], "position": position, "reason": bucket, "of": of})

    def _in_window(self, item: Item, rec: dict) -> bool | None:
        """True: take it; False: older than the window; None: quarantined."""
        ts = rec["timestamp"]
        if ts is None:
            if self.incremental or self.since:
                self._quarantine(item, RecordError("no_timestamp", "incremental/windowed reads need a timestamp"), rec["id"])
                return None
            return True
        t = parse_time(ts)
        if (self.after and t <= self.after) or (self.since and t < self.since):
            self.counts["outside_window"] += 1
            return False
        if self.max_ts is None or t > self.max_ts:
            self.max_ts = t
        if self.min_ts is None or t < self.min_ts:
            self.min_ts = t
        return True

    def admit(self, item: Item) -> dict | None:
        """First, per-record checks in log order: the record if it goes on, else None (counted)."""
        if item.record is None and item.error is None:
            self.counts["blank_lines"] += 1
            return None
        self.counts["read"] += 1
        if isinstance(item.error, SkipRecord):
            self.counts["skipped"] += 1
            self.counts[f"s:{item.error.code}"] += 1
            return None
        if item.error is not None:
            self._quarantine(item, item.error)
            return None
        rec = item.record
        try:
            validate(rec, self.cfg.validation)
        except RecordError as e:
            self._quarantine(item, e, rec["id"])
            return None
        if not self._in_window(item, rec):
            return None
        rid = rec["id"]
        key = exact_key(rec["messages"])
        first = self.exact.get(key)
        if first is not None:  # a retry logged twice is a duplicate even if it kept its id
            self._drop("duplicates", rec, item.position, first)
            return None
        if rid in self.ids:
            # Downstream joins on id (replay ledger, reference answers): ids must be unique.
            self._quarantine(item, RecordError("duplicate_id", f"id {rid!r} already used at position {self.ids[rid]}"), rid)
            return None
        self.exact[key] = rid
        self.ids[rid] = item.position
        if self.redactor is not None:
            self.redactor.redact_record(rec)
        return rec

    def place(self, recs: list[dict]) -> None:
        """Near-dedup (in log order, first seen wins) and split a batch of admitted records."""
        hashes = self.hasher.minhash_many([dialogue_text(r["messages"]) for r in recs]) if self.hasher else None
        for i, rec in enumerate(recs):
            rid = rec["id"]
            if hashes is not None:
                m = hashes[i]
                part = self.parts[rid] = system_key(rec["messages"])
                if self.near is not None:
                    twin = self.near.find_or_add(part, rid, m)
                    if twin is not None:
                        self._drop("near_duplicates", rec, self.ids[rid], twin)
                        continue
                self.minhashes[rid] = m
            holdout = rid in self.golden_ids or in_holdout(rid, self.cfg.holdout_fraction)
            rec["split"] = "holdout" if holdout else "train"
            (self.holdout if holdout else self.train).append(rec)

    # -- whole-run steps ----------------------------------------------------------------
    def carried_holdout(self) -> list[dict]:
        """Golden holdout records from earlier runs that this run did not read again."""
        new = {r["id"] for r in self.holdout}
        return [r for r in self.golden if r["id"] not in new]

    def decontaminate(self) -> None:
        """Drop train records that are near copies of any holdout record (this run's or golden)."""
        d = self.cfg.dedup
        if not d.decontaminate or self.hasher is None:
            return
        index = NearIndex(d.decontaminate_threshold, d.num_perm)
        carried = self.carried_holdout()
        for r, m in zip(carried, self.hasher.minhash_many([dialogue_text(r["messages"]) for r in carried])):
            index.add(system_key(r["messages"]), r["id"], m)
        for r in self.holdout:
            index.add(self.parts[r["id"]], r["id"], self.minhashes[r["id"]])
        if not len(index):
            return
        kept = []
        for r in self.train:
            twin = index.find(self.parts[r["id"]], self.minhashes[r["id"]])
            if twin is None:
                kept.append(r)
            else:
                self._drop("decontaminated", r, self.ids[r["id"]], twin)
        self.train = kept

    def cap_tags(self) -> None:
        """Per-tag caps on train: keep a uniform sample (lowest id hashes), in log order."""
        s = self.cfg.sampling
        if not s.max_per_tag and s.default_max_per_tag is None:
            return
        by_tag: dict[str, list[dict]] = {}
        for r in self.train:
            by_tag.setdefault(str(r["metadata"].get(s.tag_field)), []).append(r)
        drop: set[str] = set()
        for tag, recs in by_tag.items():
            cap = s.max_per_tag.get(tag, s.default_max_per_tag)
            if cap is not None and len(recs) > cap:
                ranked = sorted(recs, key=lambda r: hashlib.sha256(r["id"].encode()).digest())
                drop.update(r["id"] for r in ranked[cap:])
        if drop:
            for r in self.train:
                if r["id"] in drop:
                    self._drop("over_tag_cap", r, self.ids[r["id"]], None)
            self.train = [r for r in self.train if r["id"] not in drop]

    def run(self, items: Iterable[Item], batch: int = 256) -> None:
        limit = self.cfg.max_records
        pending: list[dict] = []
        for item in items:
            if limit is not None and self.counts["read"] >= limit and (item.record or item.error):
                break
            rec = self.admit(item)
            if rec is not None:
                pending.append(rec)
                if len(pending) >= batch:  # MinHash is computed per batch: far fewer numpy calls
                    self.place(pending)
                    pending = []
        self.place(pending)
        self.decontaminate()
        self.cap_tags()

    def final_counts(self) -> dict:
        c = self.counts
        out = {k: c[k] for k in ("read", "quarantined", "skipped", "duplicates", "near_duplicates", "decontaminated",
                                 "over_tag_cap", "outside_window", "blank_lines")}
        out["train"] = len(self.train)
        out["holdout"] = len(self.holdout)
        out["kept"] = out["train"] + out["holdout"]
        out["holdout_carried"] = len(self.carried_holdout())
        out["holdout_total"] = out["holdout"] + out["holdout_carried"]
        out["quarantined_by_reason"] = {k[2:]: v for k, v in sorted(c.items()) if k.startswith("q:")}
        out["skipped_by_reason"] = {k[2:]: v for k, v in sorted(c.items()) if k.startswith("s:")}
        red = self.redactor.counts if self.redactor else Counter()
        out["redactions_by_type"] = dict(sorted(red.items()))
        out["redactions"] = sum(red.values())
        accounted = sum(out[k] for k in ("kept", "quarantined", "skipped", "duplicates", "near_duplicates",
                                         "decontaminated", "over_tag_cap", "outside_window"))
        if accounted != out["read"]:  # a bug in this module, never the input's fault
            raise AssertionError(f"ingest lost records: read {out['read']} but accounted for {accounted}: {out}")
        return out


@contextmanager
def _gc_paused():
    """Python's cycle collector rescans every record held so far each time enough new dicts
    are allocated: 15-35 % of ingest time at 100k records. Records hold no cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run_ingest(cfg: IngestConfig, rd: RunDir) -> dict:
    """Run the ingest stage into `rd`; returns the counts (also in the run manifest)."""
    t0 = time.time()
    source = describe(cfg.source)
    state = IngestState(state_dir(cfg, rd))
    incremental = cfg.window.incremental
    watermark = state.watermark() if incremental else None
    # A full read re-derives the same holdout from the id hashes; only windowed runs, which
    # see just the new records, need the stored golden holdout to keep earlier ones.
    ing = Ingestor(cfg, golden=state.golden_holdout() if incremental else [], watermark=watermark)
    since = max((t for t in (ing.after, ing.since) if t is not None), default=None)
    with _gc_paused():
        ing.run(iter_source(cfg.source, since))
    counts = ing.final_counts()
    t_read = time.time() - t0

    holdout_all = ing.carried_holdout() + ing.holdout
    outputs = _write_outputs(cfg, rd, ing, holdout_all)

    # State last: a run that failed above must not move the watermark or the golden holdout.
    wm_after = watermark
    if incremental:
        if ing.holdout:
            state.save_golden_holdout(holdout_all)
        if ing.max_ts is not None:
            wm_after = _iso(ing.max_ts)
            state.save_watermark(wm_after, rd.run_id, source)
    window = {"incremental": incremental, "since": cfg.window.since,
              "watermark_before": watermark, "watermark_after": wm_after,
              "first_record": _iso(ing.min_ts), "last_record": _iso(ing.max_ts)}
    figures = {"records_per_s": round(counts["read"] / t_read, 1) if t_read > 0 else None,
               "read_s": round(t_read, 3)}
    rd.record_stage(STAGE, counts=counts, figures=figures, inputs=_inputs(cfg, source), outputs=outputs,
                    config=cfg, started=t0, source=source, window=window, state_dir=str(state.root))
    return counts


def _write_outputs(cfg: IngestConfig, rd: RunDir, ing: Ingestor, holdout_all: list[dict]) -> list[Path]:
    paths = {name: rd.ingest_split(name) for name in ("train", "holdout", "quarantine", "dropped")}
    write_jsonl(paths["quarantine"], ing.quarantine)
    write_jsonl(paths["dropped"], ing.dropped)
    write_jsonl(paths["train"], ing.train)
    write_jsonl(paths["holdout"], holdout_all)
    outputs = list(paths.values())
    for split, recs in (("train", ing.train), ("holdout", holdout_all)):
        pq = rd.ingest_split(split).with_suffix(".parquet")
        if cfg.parquet:
            from ingest.output import to_parquet
            to_parquet(recs, pq)
            outputs.append(pq)
        else:
            pq.unlink(missing_ok=True)  # a stale file from an earlier attempt would mislead
    return outputs


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
    nothing and uses no state (for drift checks and previews: compare like with like)."""
    ing = Ingestor(cfg)
    with _gc_paused():
        ing.run(iter_source(cfg.source))
    order = {rid: i for i, rid in enumerate(ing.ids)}  # read order (positions restart per file)
    return sorted(ing.train + ing.holdout, key=lambda r: order[r["id"]])


__all__ = ["run_ingest", "clean_records", "in_holdout", "Ingestor"]
