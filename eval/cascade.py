"""The student/teacher cascade: the student answers when its confidence >= a threshold, the
teacher answers the rest. Plain functions over per-item (confidence, agrees_with_teacher) pairs.

Definitions (n items, threshold t):
- answered by the student: confidence >= t; coverage = their share of n; teacher share = 1 - coverage.
- cascade agreement = (student-answered items that agree with the teacher + teacher-answered
  items) / n: a forwarded request gets the teacher's own answer, which agrees by definition.
- the threshold is chosen on VALIDATION pairs only (`choose_threshold`) and then applied,
  unchanged, to the holdout (`apply_threshold`), so the holdout figure is an honest estimate.

Ties: items with equal confidence are answered together, so a curve point exists only where the
confidence changes; the threshold is the lowest confidence the student still answers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from eval.bootstrap import bootstrap_mean, wilson


@dataclass(frozen=True)
class ThresholdChoice:
    """The operating point chosen on validation; `reachable` False carries the reason."""

    reachable: bool
    threshold: float | None  # student answers when confidence >= threshold
    target: str  # "target_agreement=0.99" or "max_teacher_share=0.2"
    val_coverage: float | None = None
    val_cascade_agreement: float | None = None
    val_cascade_agreement_ci: tuple[float, float] | None = None
    val_n: int = 0
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["val_cascade_agreement_ci"] = list(self.val_cascade_agreement_ci) if self.val_cascade_agreement_ci else None
        return d


def _arrays(confidence: Sequence[float], agrees: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64)
    a = np.asarray(agrees, dtype=bool)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError(f"cascade: {c.size} confidences but {a.size} agreement flags (need one of each per item)")
    if c.size and not np.isfinite(c).all():
        raise ValueError(f"cascade: confidence of item {int(np.flatnonzero(~np.isfinite(c))[0])} is not a finite number")
    return c, a


def curve(confidence: Sequence[float], agrees: Sequence[bool]) -> list[dict[str, float]]:
    """Agreement vs coverage, one point per distinct confidence (highest first): threshold,
    coverage, student agreement on the share it answers, cascade agreement, teacher share."""
    c, a = _arrays(confidence, agrees)
    n = c.size
    if n == 0:
        return []
    order = np.argsort(-c, kind="stable")
    cs, hits = c[order], np.cumsum(a[order])
    # the last index of every run of equal confidences: the student answers whole runs
    ends = np.flatnonzero(np.r_[cs[1:] != cs[:-1], True])
    k = ends + 1
    return [{"threshold": float(cs[e]), "coverage": float(kk / n), "student_agreement": float(hits[e] / kk),
             "cascade_agreement": float((hits[e] + n - kk) / n), "teacher_share": float(1 - kk / n), "answered": int(kk)}
            for e, kk in zip(ends, k)]


def choose_threshold(confidence: Sequence[float], agrees: Sequence[bool], *, target_agreement: float | None = None,
                     max_teacher_share: float | None = None, min_coverage: float = 0.0, criterion: str = "lower_bound",
                     confidence_level: float = 0.95) -> ThresholdChoice:
    """The threshold for exactly one target, from VALIDATION pairs only.

    target_agreement: the largest coverage whose validation cascade agreement (its point
    estimate, or with criterion "lower_bound" the lower end of its Wilson interval) is >= target.
    max_teacher_share: the highest threshold whose validation teacher share is <= it (the
    smallest coverage that forwards no more than that share).
    Unreachable (no point with coverage >= min_coverage and at least one student answer meets
    the target) -> reachable False with the reason, which the gate reports."""
    if (target_agreement is None) == (max_teacher_share is None):
        raise ValueError("choose_threshold: pass exactly one of target_agreement and max_teacher_share")
    if criterion not in ("point", "lower_bound"):
        raise ValueError(f"choose_threshold: criterion must be 'point' or 'lower_bound', not {criterion!r}")
    c, a = _arrays(confidence, agrees)
    target = f"target_agreement={target_agreement}" if target_agreement is not None else f"max_teacher_share={max_teacher_share}"
    n = c.size
    if n == 0:
        return ThresholdChoice(False, None, target, reason="no validation items to choose a threshold on")
    pts = [p for p in curve(c, a) if p["coverage"] >= min_coverage - 1e-12]
    if max_teacher_share is not None:
        ok = [p for p in pts if p["teacher_share"] <= max_teacher_share + 1e-12]
        if not ok:
            return ThresholdChoice(False, None, target, val_n=n,
                                   reason=f"no threshold forwards at most {max_teacher_share:.1%} of validation requests with coverage >= {min_coverage:.1%}")
        best = ok[0]  # highest threshold (curve is ordered by falling threshold)
        return _choice(best, target, n, confidence_level)
    def score(p: dict) -> float:
        return wilson(p["cascade_agreement"] * n, n, confidence_level)[0] if criterion == "lower_bound" else p["cascade_agreement"]

    ok = [p for p in pts if score(p) >= target_agreement - 1e-12]
    if not ok:
        best = max(pts, key=score, default=None)
        why = (f"no threshold reaches validation cascade agreement {target_agreement:.2%} "
               f"({'lower bound of its ' + format(confidence_level, '.0%') + ' interval' if criterion == 'lower_bound' else 'point estimate'})"
               f" with coverage >= {min_coverage:.1%}")
        if best is not None:
            why += f"; the best is {score(best):.2%} at coverage {best['coverage']:.1%}"
        return ThresholdChoice(False, None, target, val_n=n, reason=why)
    return _choice(max(ok, key=lambda p: p["coverage"]), target, n, confidence_level)


def _choice(p: dict, target: str, n: int, level: float) -> ThresholdChoice:
    lo, hi = wilson(p["cascade_agreement"] * n, n, level)
    return ThresholdChoice(True, p["threshold"], target, val_coverage=p["coverage"], val_cascade_agreement=p["cascade_agreement"],
                           val_cascade_agreement_ci=(lo, hi), val_n=n)


def mix_latency(student_ms: Sequence[float], teacher_ms: Sequence[float], forwarded: Sequence[bool] | float,
                samples: int = 20_000, seed: int = 0) -> dict[str, float | None]:
    """p50/p95 of the cascade's latency: a forwarded request pays the student then the teacher.

    `forwarded` per item (with per-item student/teacher latencies of the same length: exact), or
    a share (latencies are then two measured distributions, mixed by seeded resampling)."""
    s = np.asarray(student_ms, dtype=np.float64)
    t = np.asarray(teacher_ms, dtype=np.float64)
    if not isinstance(forwarded, (int, float)):
        f = np.asarray(forwarded, dtype=bool)
        if not (s.size == t.size == f.size):
            raise ValueError(f"mix_latency: per-item latencies need equal lengths, got {s.size}, {t.size}, {f.size}")
        lat = s + np.where(f, t, 0.0)
    else:
        share = float(forwarded)
        if s.size == 0 or (share > 0 and t.size == 0):
            return {"p50_ms": None, "p95_ms": None}
        rng = np.random.default_rng(seed)
        lat = rng.choice(s, samples)
        fwd = rng.random(samples) < share
        if fwd.any():
            lat[fwd] += rng.choice(t, int(fwd.sum()))
    if lat.size == 0:
        return {"p50_ms": None, "p95_ms": None}
    p50, p95 = np.percentile(lat, [50, 95])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3)}


def apply_threshold(confidence: Sequence[float], agrees: Sequence[bool], choice: ThresholdChoice, *,
                    student_cost_per_1k: float | None = None, teacher_cost_per_1k: float | None = None,
                    student_latency_ms: Sequence[float] | None = None, teacher_latency_ms: Sequence[float] | None = None,
                    bootstrap_samples: int = 2000, confidence_level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The cascade on HOLDOUT pairs at the validation-chosen threshold.

    Cost per 1k = the student on every request (it runs first) + the forwarded share at the
    teacher's price per 1k; cost ratio = that / the teacher alone. Latency: see mix_latency
    (per-item when the latency lists match the holdout length, else distributions).
    An unreachable choice gives {"reachable": False, "reason": ...} and the student-alone figure."""
    c, a = _arrays(confidence, agrees)
    n = c.size
    alone = bootstrap_mean(a.astype(float), samples=bootstrap_samples, confidence=confidence_level, seed=seed)
    out: dict[str, Any] = {"reachable": choice.reachable, "reason": choice.reason, "target": choice.target, "threshold": choice.threshold,
                           "choice": choice.to_dict(), "n": int(n), "student_alone_agreement": alone["value"],
                           "student_alone_agreement_ci": alone["ci"]}
    if not choice.reachable or n == 0:
        if n == 0 and choice.reachable:
            out.update(reachable=False, reason="no holdout items to apply the threshold to")
        return out
    answered = c >= choice.threshold
    hits = np.where(answered, a, True).astype(float)
    ca = bootstrap_mean(hits, samples=bootstrap_samples, confidence=confidence_level, seed=seed)
    coverage = float(answered.mean())
    out.update({"coverage": coverage, "teacher_share": 1 - coverage, "answered_by_student": int(answered.sum()),
                "forwarded": int(n - answered.sum()), "cascade_agreement": ca["value"], "cascade_agreement_ci": ca["ci"],
                "student_agreement_on_answered": float(a[answered].mean()) if answered.any() else None})
    if student_cost_per_1k is not None and teacher_cost_per_1k is not None:
        cost = student_cost_per_1k + (1 - coverage) * teacher_cost_per_1k
        out.update({"cost_per_1k_usd": cost, "teacher_cost_per_1k_usd": teacher_cost_per_1k,
                    "cascade_cost_ratio": cost / teacher_cost_per_1k if teacher_cost_per_1k > 0 else None})
    if student_latency_ms is not None and teacher_latency_ms is not None:
        per_item = len(student_latency_ms) == len(teacher_latency_ms) == n
        lat = mix_latency(student_latency_ms, teacher_latency_ms, ~answered if per_item else 1 - coverage, seed=seed)
        out.update({"latency_p50_ms": lat["p50_ms"], "latency_p95_ms": lat["p95_ms"], "latency_from": "per_item" if per_item else "distributions"})
    return out


def evaluate_cascade(val_confidence: Sequence[float], val_agrees: Sequence[bool], holdout_confidence: Sequence[float],
                     holdout_agrees: Sequence[bool], cfg: Any, **kw: Any) -> dict[str, Any]:
    """choose_threshold on validation with a CascadeConfig's target, then apply_threshold on the
    holdout; `kw` goes to apply_threshold (costs, latencies, bootstrap settings). Adds the
    holdout curve (for cascade_plot) under "curve"."""
    choice = choose_threshold(val_confidence, val_agrees, target_agreement=cfg.target_agreement, max_teacher_share=cfg.max_teacher_share,
                              min_coverage=cfg.min_coverage, criterion=cfg.criterion, confidence_level=cfg.confidence)
    kw.setdefault("confidence_level", cfg.confidence)
    res = apply_threshold(holdout_confidence, holdout_agrees, choice, **kw)
    res["curve"] = curve(holdout_confidence, holdout_agrees)
    return res


def gate_metrics(res: dict[str, Any]) -> dict[str, Any]:
    """What a gate policy reads: cascade_agreement (the interval's lower bound), coverage,
    cascade_cost_ratio; an unreachable target gives None values and the reason."""
    if not res.get("reachable"):
        return {"cascade_agreement": None, "coverage": None, "cascade_cost_ratio": None,
                "cascade_unreachable": res.get("reason") or "cascade target unreachable"}
    ci = res.get("cascade_agreement_ci")
    return {"cascade_agreement": ci[0] if ci else None, "coverage": res.get("coverage"),
            "cascade_cost_ratio": res.get("cascade_cost_ratio"), "cascade_unreachable": None}


def summary_line(res: dict[str, Any]) -> str:
    """One line for the run summary, beside the student-alone figure."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"

    def ci(v: list | None) -> str:
        return f" [{pct(v[0])[:-2]}, {pct(v[1])[:-2]}]" if v else ""

    alone = f"student alone {pct(res.get('student_alone_agreement'))}{ci(res.get('student_alone_agreement_ci'))}"
    if not res.get("reachable"):
        return f"cascade ({res.get('target')}): unreachable - {res.get('reason')}; {alone}"
    line = (f"cascade ({res['target']}, threshold {res['threshold']:.4g}): agreement {pct(res['cascade_agreement'])}"
            f"{ci(res.get('cascade_agreement_ci'))} with the student answering {pct(res['coverage'])}")
    if res.get("cost_per_1k_usd") is not None:
        line += f", ${res['cost_per_1k_usd']:.4f}/1k"
        if res.get("cascade_cost_ratio") is not None:
            line += f" ({pct(res['cascade_cost_ratio'])} of the teacher's)"
    if res.get("latency_p95_ms") is not None:
        line += f", p50/p95 {res['latency_p50_ms']:.0f}/{res['latency_p95_ms']:.0f} ms"
    return line + f"; {alone}"
