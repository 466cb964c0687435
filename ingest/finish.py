"""The whole-run steps after the first pass, streamed from the spill files:

1. decontaminate: drop train records that are near copies of a holdout record (this run's or
   an earlier run's golden holdout), through a second LSH index in the same on-disk store;
2. per-tag caps: per tag, keep the `cap` train records with the lowest id hashes (a bounded
   heap per capped tag: memory is the caps, not the log);
3. emit train in log order, then the holdout (earlier golden records first).

Drops are written in the same order as before streaming: decontaminated, then over_tag_cap,
each in train order.
"""
from __future__ import annotations

import hashlib
import heapq
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson

from ingest.output import dumps
from ingest.dedup import DECON_SALT, band_keys, dialogue_text, lsh_params, system_key

CHUNK = 1024
# Spill lines: JSON [seq, position, partition, id, tag] SEP the record's output JSON. JSON text
# never holds a raw control character (they are escaped), so the first SEP ends the header.
SEP = b"\x1f"


def _rows(path: Path) -> Iterator[list]:
    """Spill rows as [seq, position, partition, id, tag, record JSON bytes]."""
    with open(path, "rb") as f:
        for line in f:
            head, _, rec = line.partition(SEP)
            row = orjson.loads(head)
            row.append(rec[:-1])
            yield row


def _line(row: list) -> bytes:
    return orjson.dumps(row[:5]) + SEP + row[5] + b"\n"


def _chunks(it: Iterator[list], n: int = CHUNK) -> Iterator[list[list]]:
    buf: list[list] = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def _parts(rows: list[list]) -> np.ndarray:
    return np.array([int(r[2], 16) for r in rows], dtype=np.uint64)


def _need(threshold: float, width: int) -> int:
    """The fewest equal values c with c / width >= threshold (the float test made all along)."""
    return next((c for c in range(width + 1) if c / width >= threshold), width + 1)


class HoldoutIndex:
    """The decontamination index: the holdout is complete before train is checked, so its LSH
    buckets are one sorted array of band keys (a lookup is a searchsorted, a bucket a slice)
    and its MinHash values one flat file, memory-mapped. A train chunk's candidates are then
    compared all at once in numpy; through per-record bucket lists this step was quadratic on
    logs with a small vocabulary (popular buckets: ~12 min of a 3M-record run).

    Candidates are screened on the low byte of each value first (64 bytes a holdout record,
    in memory): equal values have equal low bytes, so a pair short of the threshold there is
    short of it, and a random pair almost never passes; the few that do are compared in full."""

    def __init__(self, work: Path, b: int, r: int):
        self.b, self.r = b, r
        self._path = work / "holdout.u32"
        self._f = open(self._path, "wb")
        self._keys: list[np.ndarray] = []
        self._seqs: list[np.ndarray] = []
        self._low: list[np.ndarray] = []

    def add(self, values: np.ndarray, parts: np.ndarray, seqs: list[int]) -> None:
        self._f.write(np.ascontiguousarray(values, dtype=np.uint32).tobytes())
        self._keys.append(band_keys(values, parts, self.b, self.r, DECON_SALT))
        self._seqs.append(np.asarray(seqs, dtype=np.int64))
        self._low.append(values.astype(np.uint8))  # the low byte (astype wraps)

    def build(self, num_perm: int) -> None:
        self._f.close()
        keys = np.concatenate(self._keys) if self._keys else np.zeros((0, self.b), np.uint64)
        self.seq = np.concatenate(self._seqs) if self._seqs else np.zeros(0, np.int64)
        self.low = np.concatenate(self._low) if self._low else np.zeros((0, num_perm), np.uint8)
        self._keys, self._seqs, self._low = [], [], []
        n = len(keys)
        # Rows are added in seq order; a stable sort keeps each bucket oldest first.
        flat = keys.ravel()
        order = np.argsort(flat, kind="stable")
        self.owner = (order // self.b).astype(np.int32)  # row of the holdout record
        self.uniq, self.start, self.size = np.unique(flat[order], return_index=True, return_counts=True)
        self.values = (np.memmap(self._path, dtype=np.uint32, mode="r", shape=(n, num_perm)) if n
                       else np.zeros((0, num_perm), np.uint32))

    def best_twins(self, values: np.ndarray, keys: np.ndarray, threshold: float) -> list[int | None]:
        """Per row: the seq of the most similar holdout record at or above `threshold` sharing
        a bucket, else None; ties to the lowest (band, seq), the order a walk of the bands and
        buckets would find them in."""
        n, b = keys.shape
        width = values.shape[1]
        out: list[int | None] = [None] * n
        flat = keys.ravel()
        if not len(self.uniq):
            return out
        # Sorted needles: numpy's binary search then starts from the last hit (random ones
        # are a cache miss per step, 10x slower on a big holdout).
        o = np.argsort(flat)
        pos = np.empty(len(flat), np.int64)
        pos[o] = np.searchsorted(self.uniq, flat[o])
        pos = np.minimum(pos, len(self.uniq) - 1)
        sizes = np.where(self.uniq[pos] == flat, self.size[pos], 0)
        total = int(sizes.sum())
        if not total:
            return out
        q = np.repeat(np.arange(len(flat)), sizes)
        member = self.owner[np.arange(total) - np.repeat(np.cumsum(sizes) - sizes - self.start[pos], sizes)]
        rec = q // b
        low = values.astype(np.uint8)
        need = _need(threshold, width)
        passed = np.zeros(total, dtype=bool)
        step = max(1, 4_000_000 // width)  # bounds the temporary arrays
        for s in range(0, total, step):
            e = s + step
            passed[s:e] = np.count_nonzero(self.low[member[s:e]] == low[rec[s:e]], axis=1) >= need
        q, member, rec = q[passed], member[passed], rec[passed]
        if not len(q):
            return out
        counts = np.count_nonzero(self.values[member] == values[rec], axis=1)
        ok = counts >= need
        if ok.any():
            rec, band, seq, counts = rec[ok], (q % b)[ok], self.seq[member[ok]], counts[ok]
            order = np.lexsort((seq, band, -counts, rec))
            rec, seq = rec[order], seq[order]
            first = np.flatnonzero(np.r_[True, rec[1:] != rec[:-1]])
            for i, t in zip(rec[first].tolist(), seq[first].tolist()):
                out[i] = t
        return out

    def close(self) -> None:
        self._f.close()
        self.values = None
        self._path.unlink(missing_ok=True)


def _decontaminate(ing, carried: list[dict]) -> Iterator[list]:
    """Train spill rows that are not near copies of a holdout record (the others are dropped)."""
    d, store = ing.cfg.dedup, ing.store
    train = _rows(ing.work / "train.spill")
    if not d.decontaminate or ing.hasher is None or not (ing.n_holdout or carried):
        yield from train
        return
    b, r = lsh_params(d.decontaminate_threshold, d.num_perm)
    index = HoldoutIndex(ing.work, b, r)
    try:
        for chunk in _chunks(_rows(ing.work / "holdout.spill")):
            seqs = [x[0] for x in chunk]
            index.add(store.minhashes(seqs), _parts(chunk), seqs)
        for chunk in _chunks(iter(carried)):  # earlier golden records get seqs after this run's
            values = ing.hasher.values_many([dialogue_text(x["messages"]) for x in chunk])
            first = store.put_minhashes(values)
            store.put_names([[first + i, x["id"]] for i, x in enumerate(chunk)])
            parts = np.array([int(system_key(x["messages"], x.get("tools"), x.get("tool_choice")), 16) for x in chunk],
                             dtype=np.uint64)
            index.add(values, parts, list(range(first, first + len(chunk))))
        index.build(d.num_perm)
        for chunk in _chunks(train, 4 * CHUNK):
            values = store.minhashes([x[0] for x in chunk])
            twins = index.best_twins(values, band_keys(values, _parts(chunk), b, r, DECON_SALT), d.decontaminate_threshold)
            for row, twin in zip(chunk, twins):
                if twin is None:
                    yield row
                else:
                    ing.drop("decontaminated", row[3], row[1], store.name(twin))
    finally:
        index.close()


def _rank(rid: str) -> int:
    return int.from_bytes(hashlib.sha256(rid.encode()).digest(), "big")


def finish(ing, emit_train, emit_holdout) -> dict:
    """Run the whole-run steps, emit the outputs; returns the final counts."""
    s = ing.cfg.sampling
    carried = ing.carried_holdout()
    survivors = _decontaminate(ing, carried)
    n_train = 0
    if not s.max_per_tag and s.default_max_per_tag is None:
        for row in survivors:
            emit_train(row[5], row[0])
            n_train += 1
    else:
        # Pass 1: the lowest id hashes per capped tag; survivors wait in a spill file.
        heaps: dict[str, list[tuple[int, int]]] = {}
        spill = ing.work / "survivors.spill"
        with open(spill, "wb", buffering=1 << 20) as f:
            for row in survivors:
                f.write(_line(row))
                tag = row[4]
                cap = s.max_per_tag.get(tag, s.default_max_per_tag)
                if cap is None:
                    continue
                h, heap = _rank(row[3]), heaps.setdefault(tag, [])
                if len(heap) < cap:
                    heapq.heappush(heap, (-h, row[0]))
                elif h < -heap[0][0]:
                    heapq.heapreplace(heap, (-h, row[0]))
        keep = {seq for heap in heaps.values() for _, seq in heap}
        for row in _rows(spill):
            tag = row[4]
            if s.max_per_tag.get(tag, s.default_max_per_tag) is not None and row[0] not in keep:
                ing.drop("over_tag_cap", row[3], row[1], None)
            else:
                emit_train(row[5], row[0])
                n_train += 1
        os.unlink(spill)
    for rec in carried:
        emit_holdout(dumps(rec), -1)
    for row in _rows(ing.work / "holdout.spill"):
        emit_holdout(row[5], row[0])
    return ing.final_counts(n_train)
