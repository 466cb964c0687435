"""Confidence calibration for student predictions, fitted on the validation split only.

- Temperature scaling (Guo et al. 2017) for the classifier: one scalar T per output field,
  p = softmax(log q / T), fitted by minimising the validation NLL over log T (a bounded scalar
  search: the NLL is smooth and unimodal in log T, so Brent's method needs ~30 evaluations).
  q is whatever probability the predict path produces (the head's softmax, or its mix with the
  kNN vote); on a plain softmax, log q is the logits up to a constant, so this is exactly the
  textbook method. Dividing by T > 0 never changes the argmax: the rendered answer is unchanged.
- Platt scaling for a scalar sequence score (the causal LM: one number per answer, no
  distribution over alternatives to temper): p = sigmoid(a * s + b), fitted by logistic NLL.
- ECE with equal-mass bins by default: student confidences pile up near 1, so equal-width bins
  put most items into the top bin and hide miscalibration there; equal-mass bins (each holds
  n / n_bins items) resolve the high-confidence region the cascade threshold lives in.
  Equal-width bins (the classic definition) are available for comparison.

numpy in, numpy out; `temper` also takes torch tensors (the predict path stays on the device).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_EPS = 1e-12
T_BOUNDS = (0.05, 20.0)


def _log_probs(q: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(q, dtype=np.float64), _EPS, None))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll(log_q: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of `labels` under softmax(log_q / T)."""
    lp = _log_softmax(np.asarray(log_q, dtype=np.float64) / temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: Any, labels: Sequence[int] | np.ndarray, *, probs: bool = False) -> float:
    """The T minimising validation NLL of softmax(logits / T) ([N, C] logits, N label ids).

    probs=True: `logits` are probabilities (e.g. the kNN-mixed ones) and log q is tempered.
    An empty split returns 1.0 (no evidence, no change)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError(f"fit_temperature: logits must be [N, C] with N labels, got {z.shape} and {y.shape}")
    if len(y) == 0:
        return 1.0
    if probs:
        z = _log_probs(z)
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = minimize_scalar(lambda lt: nll(z, y, float(np.exp(lt))), bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def temper(q: Any, temperature: float, *, probs: bool = True):
    """softmax(log q / T) (probs=True) or softmax(logits / T); numpy arrays or torch tensors."""
    if isinstance(q, np.ndarray) or not hasattr(q, "softmax"):
        z = _log_probs(q) if probs else np.asarray(q, dtype=np.float64)
        return np.exp(_log_softmax(z / temperature))
    import torch

    z = torch.log(q.float().clamp_min(_EPS)) if probs else q.float()
    return torch.softmax(z / temperature, dim=-1)


def fit_platt(scores: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray) -> dict[str, float]:
    """{"a", "b"} of p = sigmoid(a * s + b) fitted on validation (score, correct) pairs.

    Lightly regularised (L2 1e-3 on a, b) so an all-correct or all-wrong split gives a finite
    fit instead of an infinite slope; with a single class the fit is the base rate."""
    from scipy.optimize import minimize

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if len(s) == 0:
        return {"a": 1.0, "b": 0.0}
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    x = (s - mu) / sd  # standardised: the optimiser sees a well-conditioned problem

    def loss(w: np.ndarray) -> float:
        t = w[0] * x + w[1]
        return float(np.mean(np.logaddexp(0.0, t) - y * t) + 1e-3 * (w @ w))

    w = minimize(loss, np.array([1.0, 0.0]), method="L-BFGS-B").x
    return {"a": float(w[0] / sd), "b": float(w[1] - w[0] * mu / sd)}


def platt(scores: Any, params: dict[str, float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-(params["a"] * s + params["b"])))


def ece(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, n_bins: int = 15,
        binning: str = "equal_mass") -> float | None:
    """Expected calibration error: sum over bins of (bin share) x |accuracy - mean confidence|.

    binning "equal_mass" (default; see module docstring) or "equal_width" ([0, 1] in n_bins)."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if len(c) != len(y):
        raise ValueError(f"ece: {len(c)} confidences but {len(y)} correctness flags")
    n = len(c)
    if n == 0:
        return None
    if binning == "equal_mass":
        order = np.argsort(c, kind="stable")
        bins = np.array_split(order, min(n_bins, n))
    elif binning == "equal_width":
        idx = np.minimum((c * n_bins).astype(int), n_bins - 1)
        bins = [np.flatnonzero(idx == b) for b in range(n_bins)]
    else:
        raise ValueError(f"ece: binning must be 'equal_mass' or 'equal_width', not {binning!r}")
    return float(sum(len(b) / n * abs(y[b].mean() - c[b].mean()) for b in bins if len(b)))


def fit_field_temperatures(probs: dict[str, Any], labels: dict[str, Any], n_bins: int = 15) -> dict[str, Any]:
    """Per-field temperatures on validation probabilities ({field: [N, C]}, {field: [N] ids}),
    with the joint (product over fields) confidence's ECE before and after, against exact-output
    correctness (every field right). What the classifier stores as its `calibration`."""
    fields = list(probs)
    p = {f: np.asarray(probs[f], dtype=np.float64) for f in fields}
    y = {f: np.asarray(labels[f], dtype=np.int64) for f in fields}
    n = len(next(iter(y.values()))) if fields else 0
    temps = {f: round(fit_temperature(p[f], y[f], probs=True), 5) for f in fields}
    correct = np.ones(n, dtype=bool)
    before, after = np.ones(n), np.ones(n)
    for f in fields:
        pred = p[f].argmax(-1)
        correct &= pred == y[f]
        before *= p[f][np.arange(n), pred]
        after *= temper(p[f], temps[f])[np.arange(n), pred]
    return {"temperature": temps, "method": "temperature_scaling", "fitted_on": "validation", "n": int(n),
            "ece_binning": "equal_mass", "ece_bins": n_bins,
            "ece_before": _round(ece(before, correct, n_bins)), "ece_after": _round(ece(after, correct, n_bins)),
            "val_accuracy": round(float(correct.mean()), 5) if n else None}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 5)
