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

from ingest.dedup import DECON_SALT, band_keys, dialogue_text, lsh_params, system_key

CHUNK = 1024


def _rows(path: Path) -> Iterator[list]:
    with open(path, "rb") as f:
        for line in f:
            yield orjson.loads(line)


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


def _decontaminate(ing, carried: list[dict]) -> Iterator[list]:
    """Train spill rows that are not near copies of a holdout record (the others are dropped)."""
    d, store = ing.cfg.dedup, ing.store
    train = _rows(ing.work / "train.spill")
    if not d.decontaminate or ing.hasher is None or not (ing.n_holdout or carried):
        yield from train
        return
    b, r = lsh_params(d.decontaminate_threshold, d.num_perm)
    for chunk in _chunks(iter(carried)):  # earlier golden records get seqs after this run's
        values = ing.hasher.values_many([dialogue_text(x["messages"]) for x in chunk])
        first = store.put_minhashes(values)
        store.put_names([[first + i, x["id"]] for i, x in enumerate(chunk)])
        parts = np.array([int(system_key(x["messages"]), 16) for x in chunk], dtype=np.uint64)
        store.add_bands(band_keys(values, parts, b, r, DECON_SALT), list(range(first, first + len(chunk))))
    for chunk in _chunks(_rows(ing.work / "holdout.spill")):
        seqs = [x[0] for x in chunk]
        store.add_bands(band_keys(store.minhashes(seqs), _parts(chunk), b, r, DECON_SALT), seqs)
    for chunk in _chunks(train):
        seqs = [x[0] for x in chunk]
        values = store.minhashes(seqs)
        keys = band_keys(values, _parts(chunk), b, r, DECON_SALT)
        members = store.bucket_members(keys.ravel())
        for i, row in enumerate(chunk):
            bands = [m for m in members[i * b:(i + 1) * b] if m]
            twin = store.best_twin(values[i], bands, d.decontaminate_threshold) if bands else None
            if twin is None:
                yield row
            else:
                ing.drop("decontaminated", row[3]["id"], row[1], store.name(twin))


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
            emit_train(row[3], row[0])
            n_train += 1
    else:
        # Pass 1: the lowest id hashes per capped tag; survivors wait in a spill file.
        heaps: dict[str, list[tuple[int, int]]] = {}
        spill = ing.work / "survivors.spill"
        with open(spill, "wb", buffering=1 << 20) as f:
            for row in survivors:
                f.write(orjson.dumps(row) + b"\n")
                tag = str(row[3]["metadata"].get(s.tag_field))
                cap = s.max_per_tag.get(tag, s.default_max_per_tag)
                if cap is None:
                    continue
                h, heap = _rank(row[3]["id"]), heaps.setdefault(tag, [])
                if len(heap) < cap:
                    heapq.heappush(heap, (-h, row[0]))
                elif h < -heap[0][0]:
                    heapq.heapreplace(heap, (-h, row[0]))
        keep = {seq for heap in heaps.values() for _, seq in heap}
        for row in _rows(spill):
            tag = str(row[3]["metadata"].get(s.tag_field))
            if s.max_per_tag.get(tag, s.default_max_per_tag) is not None and row[0] not in keep:
                ing.drop("over_tag_cap", row[3]["id"], row[1], None)
            else:
                emit_train(row[3], row[0])
                n_train += 1
        os.unlink(spill)
    for rec in carried:
        emit_holdout(rec, -1)
    for row in _rows(ing.work / "holdout.spill"):
        emit_holdout(row[3], row[0])
    return ing.final_counts(n_train)
