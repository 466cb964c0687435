"""Exact and near-duplicate detection.

Exact: a hash of the canonical messages. Near: MinHash over character shingles of the
non-system turns, with LSH to find candidates and the MinHash estimate to confirm them.
Indexes are partitioned by system prompt, so the same question asked of two different
tasks (different system prompts) is not a duplicate, and a shared ~2 KB system prompt does not
make every record look alike.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from datasketch import MinHash, MinHashLSH

from core.toolcalls import calls_text, tools_key
from ingest.records import exact_key  # noqa: F401  (the exact-dedup key; lives with the record)




_SYSTEM_KEYS: dict[str, str] = {}


def system_key(messages: list[dict], tools: list[dict] | None = None, tool_choice: Any = None) -> str:
    """Partition key: a hash of the system prompt(s) and of the declared tool set, memoised (logs
    repeat a few long ones). The same question asked with other tools is not a duplicate."""
    system = "\x00".join(m["content"] for m in messages if m["role"] == "system")
    tk = tools_key(tools, tool_choice)
    if tk is not None:
        system += "\x00tools\x00" + tk
    key = _SYSTEM_KEYS.get(system)
    if key is None:
        key = hashlib.sha256(system.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        if len(_SYSTEM_KEYS) < 10_000:
            _SYSTEM_KEYS[system] = key
    return key


def dialogue_text(messages: list[dict]) -> str:
    """Normalised non-system turns: lowercase, collapsed whitespace; tool calls as name(arguments)
    and tool results as their text, so near dedup sees them too."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            continue
        text = m["content"] or ""
        if m.get("tool_calls"):
            text = f"{text} {calls_text(m['tool_calls'])}" if text else calls_text(m["tool_calls"])
        parts.append(f"{m['role'][0]}:{text}")
    # str.split() and re's \s agree on what whitespace is (both Py_UNICODE_ISSPACE); splitting
    # is ~3x faster than re.sub(r"\s+", " ", ...).strip() and gives the same text.
    return " ".join(" ".join(parts).lower().split())


_U32 = np.uint32


def _fmix32(h: np.ndarray) -> np.ndarray:
    """murmur3's finaliser (uint32 arithmetic wraps mod 2**32, as murmur expects)."""
    h = h ^ (h >> _U32(16))
    h *= _U32(0x85EBCA6B)
    h ^= h >> _U32(13)
    h *= _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


class MinHasher:
    """datasketch MinHashes, computed for a batch of texts with a few numpy operations.

    datasketch hashes shingles one Python call at a time, which was half of ingest's time.
    Here the byte k-grams of all texts in a batch are hashed together (polynomial hash, then
    murmur3's finaliser), permuted with datasketch's own affine32 parameters
    (h -> a*h + b mod 2**32) and min-reduced per text; each result is a regular datasketch
    MinHash. Values are only ever compared within one run.
    """

    def __init__(self, num_perm: int, shingle_chars: int):
        self.num_perm = num_perm
        self.k = shingle_chars
        self._proto = MinHash(num_perm=num_perm, seed=1, scheme="affine32")
        perm_a, perm_b = self._proto.permutations
        self._a = perm_a.astype(np.uint32)
        self._b = perm_b.astype(np.uint32)
        self._state = dict(self._proto.__dict__)

    def _wrap(self, values: np.ndarray) -> MinHash:
        # Cloning a prototype skips MinHash.__init__'s permutation checks (~150 us each).
        m = MinHash.__new__(MinHash)
        m.__dict__.update(self._state)
        m.hashvalues = values
        return m

    def minhash_many(self, texts: list[str]) -> list[MinHash]:
        if not texts:
            return []
        k = self.k
        # Texts shorter than a shingle are padded so they still make exactly one.
        raws = [t.encode("utf-8", "surrogatepass").ljust(k, b"\x00") for t in texts]
        lens = np.fromiter((len(r) for r in raws), dtype=np.int64, count=len(raws))
        buf = np.frombuffer(b"".join(raws), dtype=np.uint8).astype(np.uint32)
        m = len(buf) - k + 1
        h = buf[:m].copy()
        for j in range(1, k):  # polynomial hash of every window, mod 2**32
            h *= _U32(257)
            h += buf[j:j + m]
        # Keep only windows inside one text: text i has lens[i]-k+1 of them from its offset.
        counts = lens - k + 1
        offsets = np.concatenate(([0], np.cumsum(lens)[:-1]))
        firsts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        idx = np.arange(counts.sum()) + np.repeat(offsets - firsts, counts)
        hv = _fmix32(h[idx])
        # Permutations as rows: reduceat then runs along contiguous memory (7x faster than
        # reducing the columns of the transposed array; the same values).
        perm = np.multiply.outer(self._a, hv)
        perm += self._b[:, None]
        mins = np.ascontiguousarray(np.minimum.reduceat(perm, firsts, axis=1).T)
        return [self._wrap(row) for row in mins]

    def values_many(self, texts: list[str]) -> np.ndarray:
        """MinHash values of a batch as one (len(texts), num_perm) uint32 array."""
        if not texts:
            return np.zeros((0, self.num_perm), dtype=np.uint32)
        return np.stack([m.hashvalues for m in self.minhash_many(texts)])

    def minhash_text(self, text: str) -> MinHash:
        return self.minhash_many([text])[0]

    def minhash(self, messages: list[dict]) -> MinHash:
        return self.minhash_text(dialogue_text(messages))


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's banding (b bands of r rows) for a similarity threshold, tuned for recall."""
    p = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=num_perm, weights=(0.1, 0.9))
    return p.b, p.r


_PRIME = np.uint64(0x100000001B3)
NEAR_SALT, DECON_SALT = 1, 2  # the near-dup and decontamination indexes share one store: keys must differ


def band_keys(values: np.ndarray, parts: np.ndarray, b: int, r: int, salt: int) -> np.ndarray:
    """(n, b) uint64 keys of the LSH buckets of n MinHashes: a hash of (salt, partition, band,
    the band's r values). Equal bands in one partition get equal keys."""
    n = len(values)
    v = values[:, :b * r].astype(np.uint64).reshape(n, b, r)
    with np.errstate(over="ignore"):
        h = parts.astype(np.uint64)[:, None] ^ (np.arange(1, b + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                                                 + np.uint64(salt))[None, :]
        for j in range(r):
            h = (h ^ v[:, :, j]) * _PRIME
            h ^= h >> np.uint64(29)
    return h


class NearIndex:
    """MinHash LSH over records seen so far, partitioned by system prompt.

    The banding parameters (b bands of r rows) are datasketch's, optimised for recall; the
    index itself is a dict per band. datasketch's MinHashLSH byteswaps and copies each band
    through a storage layer on every query and insert, which was ~40 % of ingest time; here
    a record's band keys are computed once and used for both the lookup and the insert.
    Candidates are confirmed by their MinHash similarity, so false candidates cost a compare.
    """

    def __init__(self, threshold: float, num_perm: int):
        self.threshold = threshold
        self.num_perm = num_perm
        self.b, self.r = lsh_params(threshold, num_perm)
        self._bands: dict[str, list[dict[bytes, list[str]]]] = {}
        self._values: dict[str, np.ndarray] = {}

    def _keys(self, m: MinHash) -> list[bytes]:
        raw = m.hashvalues.tobytes()
        w = len(raw) // len(m.hashvalues) * self.r
        return [raw[i * w:(i + 1) * w] for i in range(self.b)]

    def find(self, part: str, m: MinHash, keys: list[bytes] | None = None) -> str | None:
        bands = self._bands.get(part)
        if bands is None:
            return None
        keys = keys or self._keys(m)
        hv = m.hashvalues
        best, best_sim, seen = None, 0.0, set()
        for band, k in zip(bands, keys):
            for cand in band.get(k, ()):
                if cand in seen:
                    continue
                seen.add(cand)
                sim = np.count_nonzero(self._values[cand] == hv) / len(hv)
                if sim >= self.threshold and sim > best_sim:
                    best, best_sim = cand, sim
        return best

    def add(self, part: str, key: str, m: MinHash, keys: list[bytes] | None = None) -> None:
        if key in self._values:
            return
        bands = self._bands.get(part)
        if bands is None:
            bands = self._bands[part] = [{} for _ in range(self.b)]
        for band, k in zip(bands, keys or self._keys(m)):
            band.setdefault(k, []).append(key)
        self._values[key] = m.hashvalues

    def find_or_add(self, part: str, key: str, m: MinHash) -> str | None:
        """The near-duplicate of `m` if there is one; otherwise index `m` under `key`.
        One pass over the bands serves both the lookup and the insert."""
        bands = self._bands.get(part)
        if bands is None:
            bands = self._bands[part] = [{} for _ in range(self.b)]
        hv = m.hashvalues
        buckets = []
        best, best_sim, seen = None, 0.0, set()
        for band, k in zip(bands, self._keys(m)):
            bucket = band.get(k)
            if bucket is None:
                bucket = band[k] = []
            else:
                for cand in bucket:
                    if cand not in seen:
                        seen.add(cand)
                        sim = np.count_nonzero(self._values[cand] == hv) / len(hv)
                        if sim >= self.threshold and sim > best_sim:
                            best, best_sim = cand, sim
            buckets.append(bucket)
        if best is None and key not in self._values:
            for bucket in buckets:
                bucket.append(key)
            self._values[key] = hv
        return best

    def __len__(self) -> int:
        return len(self._values)
