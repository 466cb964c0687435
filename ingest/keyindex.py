"""Sorted-array indexes of 64-bit keys for one ingest run: a Bloom filter and an LSM of runs.

Every dedup key is a 64-bit hash already (exact keys, LSH band keys, id hashes), so an index is
a multimap uint64 -> int64 kept as sorted numpy arrays ("runs"): a lookup of a whole batch is a
few `searchsorted` calls, an insert an append. New runs are small and merged while their sizes
are alike (a binary counter: O(log n) runs, each entry re-merged O(log n) times, and a merge of
two sorted runs is a linear timsort pass); once the runs in memory pass `mem_entries` they are
merged into one run written to disk and memory-mapped. Disk runs are merged, in key-range
chunks of bounded size, when there are more than `max_disk_runs`.

This replaced SQLite (one B-tree insert per key from a writer thread: at 3M records, with the
B-tree far bigger than its page cache, that thread took most of the machine).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_U64 = np.uint64
_M64 = (1 << 64) - 1
_EMPTY_K = np.zeros(0, np.uint64)
_EMPTY_V = np.zeros(0, np.int64)


class Bloom:
    """k probes from one well-mixed 64-bit key: h1 + j*h2 over a power-of-two bit array."""

    def __init__(self, mbytes: float, k: int = 5):
        nbits = 1 << max(16, int(mbytes * 8 * 2**20).bit_length() - 1)
        self.bits = np.zeros(nbits // 8, dtype=np.uint8)
        self.mask, self.k = nbits - 1, k
        self._raw = memoryview(self.bits)

    def _probes(self, keys: np.ndarray) -> np.ndarray:
        """(k, n) bit positions of uint64 keys."""
        keys = np.asarray(keys, dtype=np.uint64)
        h2 = ((keys >> _U64(32)) | (keys << _U64(32))) | _U64(1)
        j = np.arange(self.k, dtype=np.uint64)[:, None]
        with np.errstate(over="ignore"):
            return (keys[None, :] + j * h2[None, :]) & _U64(self.mask)

    def test_many(self, keys: np.ndarray) -> np.ndarray:
        """Per key: True if it may have been added (no false negatives)."""
        p = self._probes(keys)
        bit = (np.uint8(1) << (p & _U64(7)).astype(np.uint8))
        return ((self.bits[p >> _U64(3)] & bit) != 0).all(axis=0)

    def add_many(self, keys: np.ndarray) -> None:
        p = self._probes(keys).ravel()
        if not len(p):
            return
        # OR-ing bits into bytes: equal byte indexes in one call would overwrite each other
        # (ufunc.at is exact but ~20x slower), so the bits of each byte are OR-reduced first.
        p.sort()
        byte = p >> _U64(3)
        bit = np.uint8(1) << (p & _U64(7)).astype(np.uint8)
        first = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
        self.bits[byte[first]] |= np.bitwise_or.reduceat(bit, first)

    def test_add(self, k: int) -> bool:
        """One key: True if it may have been added before; adds it either way. Python ints on
        a memoryview: one record's lookup is cheaper without numpy's per-call overhead."""
        raw, mask, seen = self._raw, self.mask, True
        h2 = ((k >> 32) | (k << 32)) & _M64 | 1
        for j in range(self.k):
            p = (k + j * h2) & mask  # mask < 2**64: the same bits as the uint64 sum in numpy
            byte, bit = p >> 3, 1 << (p & 7)
            if not raw[byte] & bit:
                seen = False
                raw[byte] |= bit
        return seen


def _merge(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One sorted run from several (older first); equal keys keep that order (stable sort)."""
    runs = [r for r in runs if len(r[0])]
    if not runs:
        return _EMPTY_K, _EMPTY_V
    if len(runs) == 1:
        return np.asarray(runs[0][0]), np.asarray(runs[0][1])
    k = np.concatenate([r[0] for r in runs])
    v = np.concatenate([r[1] for r in runs])
    o = np.argsort(k, kind="stable")  # timsort: concatenated sorted runs merge in linear time
    return k[o], v[o]


class KeyRuns:
    """uint64 key -> int64 values (a multimap; values of a key come out oldest first).

    Memory: about 16 bytes an entry up to `mem_entries` (plus a merge's temporaries); beyond
    that the entries live in files under `root`, memory-mapped (the OS page cache holds them)."""

    def __init__(self, root: Path, name: str, mem_entries: int = 4_000_000, max_disk_runs: int = 8,
                 merge_chunk: int = 2_000_000):
        self.root, self.name = root, name
        root.mkdir(parents=True, exist_ok=True)
        self.mem_entries, self.max_disk_runs, self.merge_chunk = mem_entries, max_disk_runs, merge_chunk
        self._mem: list[tuple[np.ndarray, np.ndarray]] = []
        self._disk: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_mem = 0
        self._files = 0
        self.spills = 0  # runs written to disk (a test proves the index spills)

    def __len__(self) -> int:
        return self._n_mem + sum(len(k) for k, _ in self._disk)

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Index values[i] under keys[i] (appended after the values already under that key)."""
        keys = np.asarray(keys, dtype=np.uint64).ravel()
        values = np.asarray(values, dtype=np.int64).ravel()
        if not len(keys):
            return
        o = np.argsort(keys, kind="stable")
        self._mem.append((keys[o], values[o]))
        self._n_mem += len(keys)
        while len(self._mem) > 1 and 2 * len(self._mem[-1][0]) >= len(self._mem[-2][0]):
            b, a = self._mem.pop(), self._mem.pop()
            self._mem.append(_merge([a, b]))
        if self._n_mem > self.mem_entries:
            self._spill()

    def _spill(self) -> None:
        k, v = _merge(self._mem)
        self._mem, self._n_mem = [], 0
        self._disk.append(self._write(k, v))
        self.spills += 1
        if len(self._disk) > self.max_disk_runs:
            self._merge_disk()

    def _write(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._files += 1
        base = self.root / f"{self.name}.{self._files}"
        k.tofile(f"{base}.k")
        v.tofile(f"{base}.v")
        return self._open(base, len(k))

    @staticmethod
    def _open(base: str | Path, n: int) -> tuple[np.ndarray, np.ndarray]:
        if not n:
            return _EMPTY_K, _EMPTY_V
        return (np.memmap(f"{base}.k", dtype=np.uint64, mode="r", shape=(n,)),
                np.memmap(f"{base}.v", dtype=np.int64, mode="r", shape=(n,)))

    def _merge_disk(self) -> None:
        """All disk runs into one, a key range at a time: memory is `merge_chunk` entries."""
        runs = self._disk
        total = sum(len(k) for k, _ in runs)
        big = max(runs, key=lambda r: len(r[0]))[0]
        step = max(1, len(big) * self.merge_chunk // max(total, 1))
        bounds = [int(x) for x in big[step::step]]  # key ranges [lo, hi) of ~merge_chunk entries in all
        self._files += 1
        base = self.root / f"{self.name}.{self._files}"
        starts = [0] * len(runs)
        with open(f"{base}.k", "wb") as fk, open(f"{base}.v", "wb") as fv:
            for hi in [*bounds, None]:
                parts = []
                for i, (k, v) in enumerate(runs):
                    end = len(k) if hi is None else int(np.searchsorted(k, _U64(hi), side="left"))
                    parts.append((k[starts[i]:end], v[starts[i]:end]))
                    starts[i] = end
                mk, mv = _merge(parts)
                mk.tofile(fk)
                mv.tofile(fv)
        old = [f for r in runs for f in (r[0].filename, r[1].filename) if isinstance(r[0], np.memmap)]
        self._disk = [self._open(base, total)]
        for f in old:
            os.unlink(f)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (i, value) with value under keys[i]: two int64 arrays, by run (oldest first)."""
        keys = np.asarray(keys, dtype=np.uint64).ravel()
        qs, vs = [], []
        if not len(keys):
            return _EMPTY_V, _EMPTY_V
        # Sorted needles: each binary search starts near the last one (far fewer page misses
        # in a memory-mapped run than random needles).
        o = np.argsort(keys)
        sk = keys[o]
        for rk, rv in (*self._disk, *self._mem):
            if not len(rk):
                continue
            lo = np.searchsorted(rk, sk, side="left")
            hi = np.searchsorted(rk, sk, side="right")
            n = hi - lo
            hit = np.flatnonzero(n)
            if not len(hit):
                continue
            n, lo = n[hit], lo[hit]
            total = int(n.sum())
            idx = np.arange(total) - np.repeat(np.cumsum(n) - n - lo, n)
            qs.append(np.repeat(o[hit], n))
            vs.append(np.asarray(rv[idx]))
        if not qs:
            return _EMPTY_V, _EMPTY_V
        return np.concatenate(qs).astype(np.int64), np.concatenate(vs)

    def close(self) -> None:
        self._mem, self._disk = [], []


class NameLog:
    """seq -> record id, append-only on disk (ids are only read back to name the record a
    duplicate is a copy of): the id bytes in one file, their end offsets in another."""

    def __init__(self, root: Path, name: str = "names"):
        root.mkdir(parents=True, exist_ok=True)
        self._data = open(root / f"{name}.txt", "wb+")
        self._ends = open(root / f"{name}.ends", "wb+")
        self._size = 0
        self.n = 0

    def append(self, rids: list[str]) -> int:
        """Store the next len(rids) ids; returns the seq of the first."""
        first = self.n
        raw = [r.encode("utf-8", "surrogatepass") for r in rids]
        ends = self._size + np.cumsum([len(r) for r in raw], dtype=np.int64)
        self._data.write(b"".join(raw))
        self._ends.write(ends.tobytes())
        self._size = int(ends[-1]) if len(raw) else self._size
        self.n += len(rids)
        return first

    def get(self, seq: int) -> str | None:
        if not 0 <= seq < self.n:
            return None
        self._data.flush()
        self._ends.flush()
        if seq:
            start, end = np.frombuffer(os.pread(self._ends.fileno(), 16, (seq - 1) * 8), dtype=np.int64).tolist()
        else:
            start, end = 0, int(np.frombuffer(os.pread(self._ends.fileno(), 8, 0), dtype=np.int64)[0])
        return os.pread(self._data.fileno(), end - start, start).decode("utf-8", "surrogatepass")

    def close(self) -> None:
        self._data.close()
        self._ends.close()
