"""On-disk dedup state for one ingest run: exact keys, record ids, LSH bands and MinHash values.

Memory is set by `IngestStoreConfig`, not by the log: SQLite holds the keys (its page cache is
`cache_mb`), a Bloom filter of `bloom_mb` answers "never seen" without touching SQLite (almost
every key), MinHash values are appended to a flat file read back with pread (the OS page cache,
not this process, holds them; `hv_cache` recently compared ones stay in memory). New keys wait in an in-memory buffer of `buffer_records`
records; a full buffer is written by a background thread with ONE statement over a JSON array
(json_each), so the insert runs in SQLite's C code with the GIL released, on the other core.

Why SQLite (measured on 2 cores, bench/ingest.py): inserts cost ~1.9 us a row whatever the
table layout; LMDB and DuckDB are not installed here and DuckDB's point lookups are slow. With
the Bloom filter almost no lookup reaches SQLite, and with the background writer the inserts
overlap the parsing and hashing.

Keys are 64-bit (exact keys and band keys are hashes already; ids are hashed with their text
kept to confirm a hit). A key collision can only add a false candidate, which the MinHash
similarity then rejects.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import orjson

_M64 = (1 << 64) - 1
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def signed(k: int) -> int:
    return k - (1 << 64) if k >= 1 << 63 else k


class Bloom:
    """k probes from one well-mixed 64-bit key: h1 + j*h2 over a power-of-two bit array."""

    def __init__(self, mbytes: float, k: int = 5):
        nbits = 1 << max(16, int(mbytes * 8 * 2**20).bit_length() - 1)
        self.bits = np.zeros(nbits // 8, dtype=np.uint8)
        self.mask, self.k = nbits - 1, k
        self._raw = memoryview(self.bits)  # Python-int probes without numpy call overhead

    def test_add(self, k: int) -> bool:
        """True if `k` may have been added before; adds it either way."""
        raw, mask, seen = self._raw, self.mask, True
        h2 = ((k >> 32) | (k << 32)) & _M64 | 1
        for j in range(self.k):
            p = (k + j * h2) & mask  # mask < 2**64: the same bits as the uint64 sum in numpy
            byte, bit = p >> 3, 1 << (p & 7)
            if not raw[byte] & bit:
                seen = False
                raw[byte] |= bit
        return seen

    def test_many(self, keys: np.ndarray) -> np.ndarray:
        """Vectorised `test` (no add) for uint64 keys."""
        h2 = ((keys >> np.uint64(32)) | (keys << np.uint64(32))) | np.uint64(1)
        hit = np.ones(len(keys), dtype=bool)
        for j in range(self.k):
            p = (keys + np.uint64(j) * h2) & np.uint64(self.mask)
            hit &= (self.bits[p >> np.uint64(3)] & (np.uint8(1) << (p & np.uint64(7)).astype(np.uint8))) != 0
        return hit

    def add_many(self, keys: np.ndarray) -> None:
        h2 = ((keys >> np.uint64(32)) | (keys << np.uint64(32))) | np.uint64(1)
        for j in range(self.k):
            p = (keys + np.uint64(j) * h2) & np.uint64(self.mask)
            np.bitwise_or.at(self.bits, p >> np.uint64(3), np.uint8(1) << (p & np.uint64(7)).astype(np.uint8))


class DedupStore:
    """The per-run index; lives in `root` (deleted by the caller when the run ends)."""

    def __init__(self, root: Path, cache_mb: float = 64, bloom_mb: float = 64, buffer_records: int = 50_000,
                 num_perm: int = 64, hv_cache: int = 100_000):
        root.mkdir(parents=True, exist_ok=True)
        db = root / "dedup.sqlite"
        db.unlink(missing_ok=True)
        self._w = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=OFF", f"cache_size=-{int(cache_mb * 512)}", "temp_store=FILE"):
            self._w.execute("PRAGMA " + pragma)
        self._w.executescript(
            "CREATE TABLE exact(k INTEGER PRIMARY KEY, rid TEXT);"
            "CREATE TABLE ids(k INTEGER PRIMARY KEY, rid TEXT, pos INTEGER);"
            "CREATE TABLE names(seq INTEGER PRIMARY KEY, rid TEXT);"
            "CREATE TABLE lsh(k INTEGER, seq INTEGER, PRIMARY KEY (k, seq)) WITHOUT ROWID;")
        self._r = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self._r.execute(f"PRAGMA cache_size=-{int(cache_mb * 512)}")
        self.bloom = Bloom(bloom_mb)
        self.buffer_records = buffer_records
        self._pending = self._empty()
        self._inflight = self._empty()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._added = 0
        self.probes = 0  # lookups that reached SQLite (Bloom positives)
        self._hv_path = root / "minhash.u32"
        self._hv = open(self._hv_path, "wb+")
        self._hv_fd = self._hv.fileno()
        self._hv_width = num_perm * 4
        self._hv_n = 0
        self._hv_cache = np.zeros((hv_cache, num_perm), dtype=np.uint32)
        self._slot_of = np.full(0, -1, dtype=np.int32)    # seq -> row of _hv_cache, -1: not cached
        self._slot_seqs = np.zeros(hv_cache, dtype=np.int64)  # row -> seq (to forget them on a refill)
        self._hv_used = 0

    @staticmethod
    def _empty() -> dict:
        return {"exact": {}, "ids": {}, "lsh": {}, "names": {}}

    # -- exact keys and ids -------------------------------------------------------------
    def exact_first(self, key: int) -> str | None:
        """The id first seen with this exact key; records the key for `rid` if new (see add_exact)."""
        for buf in (self._pending, self._inflight):
            if (r := buf["exact"].get(key)) is not None:
                return r
        if not self.bloom.test_add(key):
            return None
        self.probes += 1
        row = self._r.execute("SELECT rid FROM exact WHERE k = ?", (signed(key),)).fetchone()
        return row[0] if row else None

    def add_exact(self, key: int, rid: str) -> None:
        self._pending["exact"][key] = rid

    def id_position(self, rid: str) -> int | None:
        k = hash(rid) & _M64
        for buf in (self._pending, self._inflight):
            if (hit := buf["ids"].get(k)) is not None and hit[0] == rid:
                return hit[1]
        if not self.bloom.test_add(k ^ 0x9E3779B97F4A7C15):  # salted: ids and exact keys share the filter
            return None
        self.probes += 1
        row = self._r.execute("SELECT rid, pos FROM ids WHERE k = ?", (signed(k),)).fetchone()
        return row[1] if row and row[0] == rid else None

    def add_id(self, rid: str, pos: int) -> None:
        self._pending["ids"][hash(rid) & _M64] = (rid, pos)
        self._added += 1
        if self._added >= self.buffer_records:
            self.flush()

    # -- seq -> record id (to name the record a duplicate is a copy of) -------------------
    def put_names(self, pairs: list[list]) -> None:
        self._pending["names"].update(pairs)

    def name(self, seq: int) -> str | None:
        for buf in (self._pending, self._inflight):
            if (r := buf["names"].get(seq)) is not None:
                return r
        row = self._r.execute("SELECT rid FROM names WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    # -- LSH bands ----------------------------------------------------------------------
    def bucket_pairs(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (i, seq) with seq in the bucket of uint64 band key keys[i]: two int64 arrays.

        Popular buckets hold hundreds of members, so members cross from SQLite as one
        group_concat string per bucket, parsed by numpy: no Python object per member."""
        maybe = np.flatnonzero(self.bloom.test_many(keys))
        if not len(maybe):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ks = keys[maybe].view(np.int64).tolist()
        self.probes += len(ks)
        rows = self._r.execute("SELECT j.key, count(*), group_concat(l.seq) FROM json_each(?) j JOIN lsh l ON l.k = j.value "
                               "GROUP BY j.key", (orjson.dumps(ks),)).fetchall()
        qs, counts, texts = [], [], []
        for j, c, t in rows:
            qs.append(maybe[j])
            counts.append(c)
            texts.append(t)
        for buf in (self._inflight["lsh"], self._pending["lsh"]):
            if buf:
                for q, k in zip(maybe.tolist(), keys[maybe].tolist()):
                    if (m := buf.get(k)) is not None:
                        qs.append(q)
                        counts.append(len(m))
                        texts.append(",".join(map(str, m)))
        if not qs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        seqs = np.fromstring(",".join(texts), dtype=np.int64, sep=",")
        return np.repeat(np.array(qs, dtype=np.int64), counts), seqs

    def add_bands(self, keys: np.ndarray, seqs: list[int]) -> None:
        """Index records: row i of the (n, bands) uint64 `keys` belongs to seqs[i]."""
        if not len(seqs):
            return
        self.bloom.add_many(keys.ravel())
        lsh = self._pending["lsh"]
        for row, seq in zip(keys.tolist(), seqs):
            for k in row:
                lsh.setdefault(k, []).append(seq)
        self._added += len(seqs)
        if self._added >= self.buffer_records:
            self.flush()

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

    # -- writing ------------------------------------------------------------------------
    def flush(self, wait: bool = False) -> None:
        """Hand the buffer to the background writer (waiting for the previous one first)."""
        self._join()
        self._inflight, self._pending = self._pending, self._empty()
        self._added = 0
        self._thread = threading.Thread(target=self._write, args=(self._inflight,), daemon=True)
        self._thread.start()
        if wait:
            self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._inflight = self._empty()
        if self._error is not None:
            raise self._error

    def _write(self, buf: dict) -> None:
        try:
            # In key order: random keys into a B-tree bigger than the page cache touch each leaf
            # page many times (evicted, re-read, rewritten); in order, about once per flush.
            ex, idb, lb = buf["exact"], buf["ids"], buf["lsh"]
            exact = [[signed(k), ex[k]] for k in sorted(ex)]
            ids = [[signed(k), *idb[k]] for k in sorted(idb)]
            lsh = [[signed(k), s] for k in sorted(lb) for s in lb[k]]
            names = list(buf["names"].items())
            w = self._w
            w.execute("BEGIN")
            if exact:
                w.execute("INSERT OR IGNORE INTO exact SELECT value->>0, value->>1 FROM json_each(?)", (orjson.dumps(exact),))
            if ids:
                w.execute("INSERT OR IGNORE INTO ids SELECT value->>0, value->>1, value->>2 FROM json_each(?)", (orjson.dumps(ids),))
            if lsh:
                w.execute("INSERT OR IGNORE INTO lsh SELECT value->>0, value->>1 FROM json_each(?)", (orjson.dumps(lsh),))
            if names:
                w.execute("INSERT OR IGNORE INTO names SELECT value->>0, value->>1 FROM json_each(?)", (orjson.dumps(names),))
            w.execute("COMMIT")
        except BaseException as e:  # re-raised in the ingest thread at the next flush/close
            self._error = e

    def close(self) -> None:
        try:
            self._join()
        finally:
            self._hv.close()
            self._r.close()
            self._w.close()
