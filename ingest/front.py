"""The per-record first half of ingest, in log order: count, validate, window, exact dedup,
duplicate ids, PII redaction. Its output is a stream of events for the second half
(ingest/pipeline.py: near dedup, split, outputs):

    ("q", row, code)              quarantine `row` (raw text already redacted) for reason `code`
    ("d", rid, position, of)      an exact duplicate of record `of`
    ("a", record, position)       admitted (redacted), in log order

It runs in the ingest process, or for JSONL sources in a second process (`store.parse_worker`)
that sends the events in chunks: this half is about half of ingest's CPU time (py-spy, 100k
records) and needs none of the near-dedup state. Everything order-dependent (placeholder
numbering, first seen wins) happens here in log order either way: both give the same outputs.
"""
from __future__ import annotations

import multiprocessing as mp
import traceback
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

from ingest.config import IngestConfig
from ingest.dedup import exact_key
from ingest.pii import Redactor
from ingest.records import Item, RecordError, SkipRecord, parse_time, raw_text
from ingest.store import ExactIndex
from ingest.validate import validate

CHUNK = 512  # items per event list (per message from the worker)


class Front:
    def __init__(self, cfg: IngestConfig, work: Path, watermark: str | None = None):
        self.cfg = cfg
        self.after = parse_time(watermark) if watermark else None          # exclusive
        self.since = parse_time(cfg.window.since) if cfg.window.since else None  # inclusive
        self.incremental = cfg.window.incremental
        self.redactor = Redactor(cfg.pii.types) if cfg.pii.enabled else None
        s = cfg.store
        self.index = ExactIndex(work / "exact", max(0.01, s.bloom_mb / 4), s.buffer_records, s.index_mb)
        self.counts: Counter = Counter()
        self.max_ts: datetime | None = None
        self.min_ts: datetime | None = None
        self._sys: dict[str, str] = {}  # long system prompts repeat: one string each (see _share)
        self.events: list[tuple] = []

    def quarantine(self, item: Item, err: RecordError, rid: str | None = None) -> None:
        raw = raw_text(item.raw if item.raw is not None else item.record, self.cfg.quarantine_raw_chars)
        if self.redactor is not None:
            raw = self.redactor.redact(raw)  # quarantine is written too: no PII in it either
        row = {"position": item.position, "source": item.source, "reason": str(err), "raw": raw}
        rid = rid or item.native_id
        if rid is not None:
            row["id"] = rid
        self.events.append(("q", row, err.code))

    def _in_window(self, item: Item, rec: dict) -> bool | None:
        """True: take it; False: older than the window; None: quarantined."""
        ts = rec["timestamp"]
        if ts is None:
            if self.incremental or self.since:
                self.quarantine(item, RecordError("no_timestamp", "incremental/windowed reads need a timestamp"), rec["id"])
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

    def _check(self, item: Item) -> tuple[RecordError | None, int | None]:
        """What needs no state: the validation error, else the exact key (pure, so a whole
        chunk is checked first and its keys looked up in the index at once)."""
        rec = item.record
        try:
            validate(rec, self.cfg.validation)
        except RecordError as e:
            return e, None
        return None, int(exact_key(rec["messages"], rec.get("tools"), rec.get("tool_choice"))[:16], 16)

    def admit(self, item: Item, checked: tuple[RecordError | None, int | None] | None = None) -> None:
        """One item, in log order: appends its event (if any) to `events`, counts the rest."""
        if item.record is None and item.error is None:
            self.counts["blank_lines"] += 1
            return
        self.counts["read"] += 1
        if isinstance(item.error, SkipRecord):
            self.counts["skipped"] += 1
            self.counts[f"s:{item.error.code}"] += 1
            return
        if item.error is not None:
            self.quarantine(item, item.error)
            return
        rec = item.record
        err, key = checked or self._check(item)
        if err is not None:
            self.quarantine(item, err, rec["id"])
            return
        if not self._in_window(item, rec):
            return
        rid = rec["id"]
        first = self.index.exact_first(key)
        if first is not None:  # a retry logged twice is a duplicate even if it kept its id
            self.events.append(("d", rid, item.position, first))
            return
        pos = self.index.id_position(rid)
        if pos is not None:
            # Downstream joins on id (replay ledger, reference answers): ids must be unique.
            self.quarantine(item, RecordError("duplicate_id", f"id {rid!r} already used at position {pos}"), rid)
            return
        self.index.add_exact(key, rid)
        self.index.add_id(rid, item.position)
        self._share(rec)
        if self.redactor is not None:
            self.redactor.redact_record(rec)
        self.events.append(("a", rec, item.position))

    def _share(self, rec: dict) -> None:
        # One object per distinct system prompt: its hash is computed once (the redaction
        # cache looks every text up) and pickle sends it once per chunk, not ~1 KB again with
        # every record (a third of the bytes between the processes).
        for m in rec["messages"]:
            if m["role"] == "system" and isinstance(m["content"], str) and len(m["content"]) > 64:
                m["content"] = self._sys.setdefault(m["content"], m["content"]) if len(self._sys) < 10_000 else m["content"]

    def chunks(self, items: Iterable[Item]) -> Iterator[list[tuple]]:
        """Event lists of CHUNK items each, honouring `max_records`."""
        limit = self.cfg.max_records
        it = iter(items)
        done = False
        while not done:
            batch: list[Item] = []
            reads = self.counts["read"]
            for item in it:
                if item.record is not None or item.error is not None:
                    if limit is not None and reads >= limit:
                        done = True
                        break
                    reads += 1
                batch.append(item)
                if len(batch) >= CHUNK:
                    break
            else:
                done = True
            checks = [self._check(x) if x.record is not None and x.error is None else None for x in batch]
            with self.index.prefetched([c[1] for c in checks if c is not None and c[1] is not None],
                                       [x.record["id"] for x, c in zip(batch, checks) if c is not None and c[1] is not None]):
                for item, c in zip(batch, checks):
                    self.admit(item, c)
            if self.events:
                yield self.events
                self.events = []

    def summary(self) -> dict:
        """What the second half needs at the end: counts, redactions, time range, probes."""
        return {"counts": self.counts, "redactions": self.redactor.counts if self.redactor else Counter(),
                "min_ts": self.min_ts, "max_ts": self.max_ts, "probes": self.index.probes}

    def close(self) -> None:
        self.index.close()


# -- the second process ------------------------------------------------------------------
def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            return next(round(int(x.split()[1]) / 1024, 1) for x in f if x.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux
        return None


def _worker(cfg: IngestConfig, work: Path, watermark: str | None, since, conn) -> None:
    from ingest.sources import iter_source

    front = Front(cfg, work, watermark)
    try:
        for events in front.chunks(iter_source(cfg.source, since)):
            conn.send(("events", events))
        conn.send(("end", {**front.summary(), "peak_rss_mb": _peak_rss_mb()}))
    except BaseException as e:  # noqa: BLE001 - every failure goes to the ingest process
        try:
            conn.send(("error", e, traceback.format_exc()))
        except Exception:  # an exception that does not pickle: its text does
            conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}"), traceback.format_exc()))
    finally:
        front.close()
        conn.close()


class WorkerFront:
    """The first half in a child process: iterate it for event lists, then read `summary`."""

    def __init__(self, cfg: IngestConfig, work: Path, watermark: str | None, since):
        # forkserver, not fork: ingest runs inside Prefect flows, whose other threads (event loop,
        # API client, logging) may hold locks at fork time that a forked child would wait on forever
        # (Python 3.14 made forkserver Linux's default for this). It costs the child's imports once.
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker, args=(cfg, work, watermark, since, send), daemon=True,
                                name="ingest-front")
        self.proc.start()
        send.close()
        self.summary: dict | None = None

    def __iter__(self) -> Iterator[list[tuple]]:
        while True:
            try:
                msg = self._recv.recv()
            except EOFError:
                raise RuntimeError(f"the ingest parse worker died (exit code {self.proc.exitcode}) before the end of the source") from None
            if msg[0] == "events":
                yield msg[1]
            elif msg[0] == "end":
                self.summary = msg[1]
                return
            else:
                raise msg[1]

    def close(self) -> None:
        self._recv.close()
        if self.proc.is_alive():  # the ingest process failed first: nothing will read the events
            self.proc.terminate()
        self.proc.join()
