"""On-disk dedup state for one ingest run: exact keys, record ids, LSH bands and MinHash values.

Memory is set by `StoreConfig`, not by the log. Keys (exact keys, id hashes, LSH band keys: all
64-bit hashes) live in sorted numpy runs (ingest/keyindex.py) that spill to memory-mapped files
past `index_mb`; a Bloom filter of `bloom_mb` answers "never seen" for most lookups without
touching them. New exact keys and ids wait in dicts of `buffer_records` entries. MinHash values
are appended to a flat file read back with pread (the OS page cache, not this process, holds
them; `hv_cache` recently compared ones stay in memory).

A key collision can only add a false candidate: ids are confirmed against their stored text,
LSH candidates by their MinHash similarity, and exact keys are 64 bits of sha256.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ingest.keyindex import Bloom, KeyRuns, NameLog

_M64 = (1 << 64) - 1
_ID_SALT = 0x9E3779B97F4A7C15  # ids and exact keys share a Bloom filter: their keys must differ

__all__ = ["Bloom", "DedupStore", "ExactIndex"]


class ExactIndex:
    """Exact keys -> the id first seen with them, and ids -> their first position; one record at
    a time, in log order (each answer depends on the records before it)."""

    def __init__(self, root: Path, bloom_mb: float = 16, buffer_records: int = 50_000, index_mb: float = 128):
        self.bloom = Bloom(bloom_mb)
        entries = max(1024, int(index_mb * 2**20 / 16) // 2)  # two runs share the budget, 16 B an entry
        self._exact_runs = KeyRuns(root, "exact", entries)
        self._id_runs = KeyRuns(root, "ids", entries)
        self._names = NameLog(root, "exact-names")    # value of an exact key: its first id
        self._id_names = NameLog(root, "id-names")    # value of an id hash: the id, for the check
        self._id_pos: list[np.ndarray] = []           # and its position (8 B a record, in memory)
        self._exact: dict[int, str] = {}
        self._ids: dict[str, int] = {}
        self.buffer_records = buffer_records
        self.probes = 0  # lookups that got past the Bloom filter
        self._prefetch = False
        self._pre_exact: dict[int, str | None] = {}
        self._pre_ids: dict[str, int] = {}

    @property
    def spills(self) -> int:
        return self._exact_runs.spills + self._id_runs.spills

    @contextmanager
    def prefetched(self, keys: list[int], rids: list[str]):
        """Within the block, exact_first/id_position answer these keys and ids from one
        vectorised Bloom test and run lookup (no per-record probe), and flushes wait."""
        ek = np.array(keys, dtype=np.uint64)
        ik = np.fromiter((hash(r) & _M64 for r in rids), dtype=np.uint64, count=len(rids))
        self._pre_exact, self._pre_ids = {}, {}
        for mine, runs, names, ks, salt in ((self._pre_exact, self._exact_runs, self._names, ek, 0),
                                            (self._pre_ids, self._id_runs, self._id_names, ik, _ID_SALT)):
            maybe = np.flatnonzero(self.bloom.test_many(ks ^ np.uint64(salt)))
            if not len(maybe):
                continue
            self.probes += len(maybe)
            q, v = runs.lookup(ks[maybe])
            for i, n in zip(maybe[q].tolist(), v.tolist()):
                if salt:  # an id: kept only if the text matches (a hash shared by two ids)
                    rid = names.get(n)
                    if rid == rids[i]:
                        mine.setdefault(rid, int(self._id_pos[n // self._POS][n % self._POS]))
                else:
                    mine.setdefault(keys[i], names.get(n))
        self._prefetch = True
        try:
            yield
        finally:
            self._prefetch = False
            self._pre_exact, self._pre_ids = {}, {}
            if len(self._ids) >= self.buffer_records:
                self.flush()

    def exact_first(self, key: int) -> str | None:
        """The id first seen with this exact key, else None (then the key is marked in the
        Bloom filter: the caller adds it with add_exact)."""
        if (r := self._exact.get(key)) is not None:
            return r
        if self._prefetch:
            return self._pre_exact.get(key)
        if not self.bloom.test_add(key):
            return None
        self.probes += 1
        _, v = self._exact_runs.lookup(np.array([key], dtype=np.uint64))
        return self._names.get(int(v[0])) if len(v) else None

    def add_exact(self, key: int, rid: str) -> None:
        self._exact[key] = rid

    def id_position(self, rid: str) -> int | None:
        if (p := self._ids.get(rid)) is not None:
            return p
        if self._prefetch:
            return self._pre_ids.get(rid)
        k = hash(rid) & _M64
        if not self.bloom.test_add(k ^ _ID_SALT):
            return None
        self.probes += 1
        _, v = self._id_runs.lookup(np.array([k], dtype=np.uint64))
        for n in v.tolist():  # a hash shared by two ids: the text tells them apart
            if self._id_names.get(n) == rid:
                return int(self._id_pos[n // self._POS][n % self._POS])
        return None

    _POS = 65_536  # positions are kept in blocks, so growing them never copies

    def add_id(self, rid: str, pos: int) -> None:
        self._ids[rid] = pos
        if len(self._ids) >= self.buffer_records and not self._prefetch:  # (else at the block's end)
            self.flush()

    def flush(self) -> None:
        if self._exact:
            keys = np.fromiter(self._exact.keys(), dtype=np.uint64, count=len(self._exact))
            first = self._names.append(list(self._exact.values()))
            self._exact_runs.add(keys, np.arange(first, first + len(keys)))
            self.bloom.add_many(keys)  # (exact_first marked them already; add_exact alone did not)
            self._exact = {}
        if self._ids:
            rids = list(self._ids)
            keys = np.fromiter((hash(r) & _M64 for r in rids), dtype=np.uint64, count=len(rids))
            first = self._id_names.append(rids)
            for i, p in enumerate(self._ids.values(), first):
                if i % self._POS == 0:
                    self._id_pos.append(np.zeros(self._POS, dtype=np.int64))
                self._id_pos[-1][i % self._POS] = p
            self._id_runs.add(keys, np.arange(first, first + len(keys)))
            self.bloom.add_many(keys ^ np.uint64(_ID_SALT))
            self._ids = {}

    def close(self) -> None:
        self._names.close()
        self._id_names.close()


class DedupStore:
    """The near-dedup index of a run (LSH bands, MinHash values, seq -> id) in `root`
    (deleted by the caller when the run ends)."""

    def __init__(self, root: Path, bloom_mb: float = 64, index_mb: float = 128, num_perm: int = 64,
                 hv_cache: int = 100_000):
        root.mkdir(parents=True, exist_ok=True)
        self.bloom = Bloom(bloom_mb)
        self._lsh = KeyRuns(root, "lsh", max(1024, int(index_mb * 2**20 / 16)))
        self._names = NameLog(root, "names")
        self.probes = 0  # band keys that got past the Bloom filter
        self._hv_path = root / "minhash.u32"
        self._hv = open(self._hv_path, "wb+")
        self._hv_fd = self._hv.fileno()
        self._hv_width = num_perm * 4
        self._hv_n = 0
        self._hv_cache = np.zeros((hv_cache, num_perm), dtype=np.uint32)
        self._slot_of = np.full(0, -1, dtype=np.int32)    # seq -> row of _hv_cache, -1: not cached
        self._slot_seqs = np.zeros(hv_cache, dtype=np.int64)  # row -> seq (to forget them on a refill)
        self._hv_used = 0

    @property
    def spills(self) -> int:
        return self._lsh.spills

    # -- seq -> record id (to name the record a duplicate is a copy of) -------------------
    def put_names(self, pairs: list[list]) -> None:
        """[[seq, id], ...] with consecutive seqs following those stored."""
        if pairs and pairs[0][0] != self._names.n:
            raise AssertionError(f"names out of order: seq {pairs[0][0]} after {self._names.n}")
        self._names.append([rid for _, rid in pairs])

    def name(self, seq: int) -> str | None:
        return self._names.get(seq)

    # -- LSH bands ----------------------------------------------------------------------
    def bucket_pairs(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (i, seq) with seq in the bucket of uint64 band key keys[i]: two int64 arrays."""
        maybe = np.flatnonzero(self.bloom.test_many(keys))
        if not len(maybe):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.probes += len(maybe)
        q, seqs = self._lsh.lookup(keys[maybe])
        return maybe[q], seqs

    def add_bands(self, keys: np.ndarray, seqs: list[int]) -> None:
        """Index records: row i of the (n, bands) uint64 `keys` belongs to seqs[i]."""
        if not len(seqs):
            return
        self.bloom.add_many(keys.ravel())
        self._lsh.add(keys.ravel(), np.repeat(np.asarray(seqs, dtype=np.int64), keys.shape[1]))

    # -- MinHash values, by seq ---------------------------------------------------------
    def put_minhashes(self, values: np.ndarray) -> int:
        """Append rows of uint32 MinHash values; returns the seq of the first row."""
        first = self._hv_n
        self._hv.write(np.ascontiguousarray(values, dtype=np.uint32).tobytes())
        self._hv_n += len(values)
        return first

    def cached_minhashes(self, seqs) -> np.ndarray:
        """minhashes() through a bounded cache: LSH candidates repeat (a popular bucket's members
        are compared with every record that lands in it), so most are read once. The slot of a
        seq is looked up in an int32 array by seq (4 bytes a record, the one per-record cost)."""
        seqs = np.asarray(seqs, dtype=np.int64)
        if len(self._slot_of) < self._hv_n:
            grown = np.full(max(self._hv_n, 2 * len(self._slot_of)), -1, dtype=np.int32)
            grown[:len(self._slot_of)] = self._slot_of
            self._slot_of = grown
        slots = self._slot_of[seqs]
        miss = slots < 0
        if miss.any():
            missing = np.unique(seqs[miss])
            cap = len(self._hv_cache)
            if len(missing) > cap:
                return self.minhashes(seqs.tolist())
            if self._hv_used + len(missing) > cap:  # start over (the hot members come back at once)
                self._slot_of[self._slot_seqs[:self._hv_used]] = -1
                self._hv_used = 0
                missing = np.unique(seqs)
            first = self._hv_used
            self._hv_cache[first:first + len(missing)] = self.minhashes(missing.tolist())
            self._slot_of[missing] = np.arange(first, first + len(missing), dtype=np.int32)
            self._slot_seqs[first:first + len(missing)] = missing
            self._hv_used += len(missing)
            slots = self._slot_of[seqs]
        return self._hv_cache[slots]

    def minhashes(self, seqs: list[int]) -> np.ndarray:
        self._hv.flush()
        w = self._hv_width
        if len(seqs) > 1 and seqs[-1] - seqs[0] < 4 * len(seqs) and all(a < b for a, b in zip(seqs, seqs[1:])):
            # Ascending and close together (finish reads train and holdout in seq order): one
            # read of the span instead of a syscall per row.
            span = os.pread(self._hv_fd, (seqs[-1] - seqs[0] + 1) * w, seqs[0] * w)
            rows = np.frombuffer(span, dtype=np.uint32).reshape(-1, w // 4)
            return rows[np.asarray(seqs) - seqs[0]]
        buf = b"".join(os.pread(self._hv_fd, w, s * w) for s in seqs)
        return np.frombuffer(buf, dtype=np.uint32).reshape(len(seqs), w // 4)

    def best_twins(self, values: np.ndarray, keys: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each row i of `values` with band keys keys[i] (n, bands): the indexed record
        most similar to it at or above `threshold`, as three arrays (seq, or -1 for none; its
        count of equal values; the first band it shares). Ties go to the candidate found
        first walking the bands in order and each bucket oldest first (the in-memory index's
        order): the lowest (band, seq). Compared all at once: no Python step per candidate."""
        n, b = keys.shape
        best = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        q, seqs = self.bucket_pairs(keys.ravel())
        if not len(seqs):
            return best
        rec, band = q // b, q % b
        counts = np.empty(len(seqs), dtype=np.int64)
        step = max(1, 1_000_000 // values.shape[1])  # bounds the temporary arrays
        for lo in range(0, len(seqs), step):
            hi = lo + step
            counts[lo:hi] = np.count_nonzero(self.cached_minhashes(seqs[lo:hi]) == values[rec[lo:hi]], axis=1)
        ok = counts / values.shape[1] >= threshold  # the float test best_twin always made
        if ok.any():
            rec, band, seqs, counts = rec[ok], band[ok], seqs[ok], counts[ok]
            order = np.lexsort((seqs, band, -counts, rec))  # per record: most equal values, then lowest (band, seq)
            rec, band, seqs, counts = rec[order], band[order], seqs[order], counts[order]
            first = np.flatnonzero(np.r_[True, rec[1:] != rec[:-1]])
            i = rec[first]
            best[0][i], best[1][i], best[2][i] = seqs[first], counts[first], band[first]
        return best

    def close(self) -> None:
        self._hv.close()
        self._names.close()
        self._lsh.close()
