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
        self._hv_slot: dict[int, int] = {}

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
    def bucket_members(self, keys: np.ndarray) -> list[list[int]]:
        """For each uint64 band key, the seqs already in that bucket, oldest first."""
        out: list[list[int]] = [[] for _ in range(len(keys))]
        maybe = np.flatnonzero(self.bloom.test_many(keys))
        if len(maybe):
            ks = keys[maybe].view(np.int64).tolist()
            self.probes += len(ks)
            found: dict[int, list[int]] = {}
            rows = self._r.execute("SELECT j.value, l.seq FROM json_each(?) j JOIN lsh l ON l.k = j.value ORDER BY l.k, l.seq",
                                   (orjson.dumps(ks),)).fetchall()
            for k, seq in rows:
                found.setdefault(k & _M64, []).append(seq)
            for i in maybe.tolist():
                k = int(keys[i])
                out[i] = found.get(k, []) + self._inflight["lsh"].get(k, []) + self._pending["lsh"].get(k, [])
        return out

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

    def cached_minhashes(self, seqs: list[int]) -> np.ndarray:
        """minhashes() through a bounded cache: LSH candidates repeat (a popular bucket's members
        are compared with every record that lands in it), so most are read once."""
        slot = self._hv_slot
        missing = [s for s in seqs if s not in slot]
        if missing:
            if len(slot) + len(missing) > len(self._hv_cache):
                if len(seqs) > len(self._hv_cache):
                    return self.minhashes(seqs)
                slot.clear()  # start over (the hot members come back at once)
                missing = list(seqs)
            first = len(slot)
            self._hv_cache[first:first + len(missing)] = self.minhashes(missing)
            slot.update(zip(missing, range(first, first + len(missing))))
        return self._hv_cache[[slot[s] for s in seqs]]

    def minhashes(self, seqs: list[int]) -> np.ndarray:
        self._hv.flush()
        w = self._hv_width
        buf = b"".join(os.pread(self._hv_fd, w, s * w) for s in seqs)
        return np.frombuffer(buf, dtype=np.uint32).reshape(len(seqs), w // 4)

    def best_twin(self, hv: np.ndarray, bands: list[list[int]], threshold: float) -> int | None:
        """The candidate (seq) most similar to `hv` at or above `threshold`; the first seen wins
        ties (bands in order, each bucket oldest first: the in-memory index's order)."""
        seen = list(dict.fromkeys(s for members in bands for s in members))
        if not seen:
            return None
        sims = np.count_nonzero(self.cached_minhashes(seen) == hv, axis=1) / len(hv)
        best, best_sim = None, 0.0
        for s, sim in zip(seen, sims.tolist()):
            if sim >= threshold and sim > best_sim:
                best, best_sim = s, sim
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
            exact = [[signed(k), r] for k, r in buf["exact"].items()]
            ids = [[signed(k), r, p] for k, (r, p) in buf["ids"].items()]
            lsh = [[signed(k), s] for k, seqs in buf["lsh"].items() for s in seqs]
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
