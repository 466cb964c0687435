"""Percentile bootstrap intervals (numpy, seeded, vectorised).

Holdouts are small (hundreds to a few thousand items), so the gate must not trust a point
estimate: it compares the interval's lower bound with the threshold. Resampling is done as one
(B, n) index matrix per call; memory is B*n*8 bytes (2000 x 5000 = 80 MB worst case), so large
holdouts are processed in chunks of resamples.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_CHUNK_CELLS = 2_000_000  # index-matrix cells per chunk (~16 MB of int64)


def _index_chunks(n: int, samples: int, rng: np.random.Generator):
    per = max(1, _CHUNK_CELLS // max(n, 1))
    done = 0
    while done < samples:
        b = min(per, samples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (sane at 0% and 100%, unlike the bootstrap)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_mean(values: Sequence[float] | np.ndarray, samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Point mean and percentile interval of a per-item score (0/1 hits, chrF, ...).

    For 0/1 scores the interval is widened to cover the Wilson interval too: the percentile
    bootstrap of 40/40 hits is [1, 1], which would let a tiny perfect holdout pass any gate.
    Returns {"value", "ci": [lo, hi], "n"}; an empty input gives value None and no interval.
    """
    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        return {"value": None, "ci": None, "n": 0}
    rng = np.random.default_rng(seed)
    stats = np.concatenate([x[idx].mean(axis=1) for idx in _index_chunks(n, samples, rng)])
    lo, hi = _interval(stats, confidence)
    if np.isin(x, (0.0, 1.0)).all():
        wlo, whi = wilson(float(x.sum()), n, confidence)
        lo, hi = min(lo, wlo), max(hi, whi)
    return {"value": float(x.mean()), "ci": [lo, hi], "n": int(n)}


def bootstrap_paired_diff(a: Sequence[float], b: Sequence[float], samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Interval on mean(a) - mean(b) for paired per-item scores (same items, same resamples),
    e.g. fine-tuned student hits minus prompted-baseline hits on the same holdout items."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs equal lengths, got {a.shape} and {b.shape}")
    return bootstrap_mean(a - b, samples=samples, confidence=confidence, seed=seed)


def macro_f1_from_codes(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 over classes 0..k-1 for each row of (B, n) code matrices, vectorised.

    Predictions coded >= k (labels the truth never uses) only hurt recall. Classes absent from a
    resample's truth are left out of that resample's average (as sklearn does with labels= the
    truth's classes of that sample).
    """
    y_true = np.atleast_2d(y_true)
    y_pred = np.atleast_2d(y_pred)
    B = y_true.shape[0]
    rows = np.arange(B)[:, None]
    tp = np.zeros((B, k))
    np.add.at(tp, (np.broadcast_to(rows, y_true.shape)[y_true == y_pred], y_true[y_true == y_pred]), 1)
    support = np.zeros((B, k))
    np.add.at(support, (np.broadcast_to(rows, y_true.shape), y_true), 1)
    predicted = np.zeros((B, k + 1))
    np.add.at(predicted, (np.broadcast_to(rows, y_pred.shape), np.minimum(y_pred, k)), 1)
    predicted = predicted[:, :k]
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def bootstrap_macro_f1(y_true: Sequence[str], y_pred: Sequence[str | None], samples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Macro-F1 (teacher labels as truth) with a percentile interval."""
    labels = sorted(set(y_true))
    code = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    t = np.array([code[x] for x in y_true])
    p = np.array([code.get(x, k) if x is not None else k for x in y_pred])
    n = t.size
    if n == 0:
        return {"value": None, "ci": None, "n": 0}
    rng = np.random.default_rng(seed)
    stats = np.concatenate([macro_f1_from_codes(t[idx], p[idx], k) for idx in _index_chunks(n, samples, rng)])
    lo, hi = _interval(stats, confidence)
    return {"value": float(macro_f1_from_codes(t, p, k)[0]), "ci": [lo, hi], "n": int(n)}
