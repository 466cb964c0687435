"""The cascade's threshold choice (validation only), holdout figures, config and plot."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from eval.cascade import apply_threshold, choose_threshold, curve, evaluate_cascade, gate_metrics, mix_latency, summary_line
from eval.cascade_config import CascadeConfig


def pairs(n: int, seed: int, base: float = 0.93):
    """Confidences that rank correctness: P(agree) rises with confidence; overall ~`base`."""
    rng = np.random.default_rng(seed)
    conf = rng.beta(8, 1, n)
    p = np.clip(base + 0.9 * (conf - conf.mean()) * 3, 0, 1)
    return conf, rng.random(n) < p


def test_curve_points_and_ties():
    pts = curve([0.9, 0.9, 0.5, 0.7], [True, False, False, True])
    assert [p["answered"] for p in pts] == [2, 3, 4]  # the two 0.9s are answered together
    assert [p["threshold"] for p in pts] == [0.9, 0.7, 0.5]
    assert pts[0]["student_agreement"] == 0.5 and pts[0]["cascade_agreement"] == pytest.approx((1 + 2) / 4)
    assert pts[-1]["coverage"] == 1.0 and pts[-1]["cascade_agreement"] == 0.5
    assert curve([], []) == []
    with pytest.raises(ValueError, match="2 confidences but 1"):
        curve([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="item 1 is not a finite"):
        curve([0.1, float("nan")], [True, True])


def test_target_agreement_picks_the_largest_coverage_meeting_it():
    conf = [0.99, 0.98, 0.97, 0.96, 0.5, 0.4]
    agree = [True, True, True, True, False, True]
    ch = choose_threshold(conf, agree, target_agreement=5 / 6, criterion="point")
    # coverage 4/6 -> 6/6 agree; 5/6 -> 5/6 (meets 5/6); 6/6 -> 5/6 too: the largest is all
    assert ch.reachable and ch.threshold == 0.4 and ch.val_coverage == 1.0
    ch = choose_threshold(conf, agree, target_agreement=0.9, criterion="point")
    assert ch.threshold == 0.96 and ch.val_coverage == pytest.approx(4 / 6) and ch.val_cascade_agreement == 1.0
    # the lower bound criterion is stricter than the point estimate on the same data
    c, a = pairs(2000, 0)
    point = choose_threshold(c, a, target_agreement=0.98, criterion="point")
    lower = choose_threshold(c, a, target_agreement=0.98, criterion="lower_bound")
    assert point.reachable and lower.reachable and lower.val_coverage < point.val_coverage
    assert lower.val_cascade_agreement_ci[0] >= 0.98


def test_max_teacher_share():
    c = np.linspace(0, 1, 101)[1:]  # 100 distinct confidences
    ch = choose_threshold(c, np.ones(100, bool), max_teacher_share=0.2)
    assert ch.reachable and ch.val_coverage == pytest.approx(0.8) and ch.threshold == pytest.approx(0.21)
    assert choose_threshold(c, np.ones(100, bool), max_teacher_share=0.0).val_coverage == 1.0
    with pytest.raises(ValueError, match="exactly one"):
        choose_threshold(c, np.ones(100, bool), max_teacher_share=0.2, target_agreement=0.9)


def test_unreachable_target_says_why_and_fails_the_gate():
    c, a = pairs(500, 1)
    ch = choose_threshold(c, a, target_agreement=0.999, min_coverage=0.8)
    assert not ch.reachable and ch.threshold is None
    assert "no threshold reaches validation cascade agreement 99.90%" in ch.reason and "coverage >= 80.0%" in ch.reason
    res = apply_threshold(c, a, ch)
    assert res["reachable"] is False and res["student_alone_agreement"] == pytest.approx(a.mean())
    g = gate_metrics(res)
    assert g["cascade_agreement"] is None and "no threshold reaches" in g["cascade_unreachable"]
    assert summary_line(res).startswith("cascade (target_agreement=0.999): unreachable - no threshold")
    assert not choose_threshold([], [], target_agreement=0.9).reachable


def test_threshold_is_a_function_of_the_validation_pairs_only():
    """The acceptance test of issue #18: the chosen threshold never reads the holdout."""
    vc, va = pairs(1500, 2)
    hc, ha = pairs(1500, 3)
    cfg = CascadeConfig(enabled=True, target_agreement=0.985)
    first = evaluate_cascade(vc, va, hc, ha, cfg, bootstrap_samples=200)
    # a completely different holdout (other confidences, all disagreeing, other length)
    hc2, ha2 = np.random.default_rng(9).random(700), np.zeros(700, bool)
    second = evaluate_cascade(vc, va, hc2, ha2, cfg, bootstrap_samples=200)
    assert first["threshold"] == second["threshold"] and first["choice"] == second["choice"]
    assert first["reachable"] and first["coverage"] != second["coverage"]
    # while changing the validation pairs does move it
    third = evaluate_cascade(*pairs(1500, 4, base=0.96), hc, ha, cfg, bootstrap_samples=200)
    assert third["threshold"] != first["threshold"]


def test_holdout_figures_cost_and_latency():
    vc, va = pairs(3000, 5)
    hc, ha = pairs(3000, 6)
    ch = choose_threshold(vc, va, target_agreement=0.985)
    rng = np.random.default_rng(0)
    s_lat, t_lat = rng.normal(10, 1, 3000), rng.normal(800, 50, 3000)
    res = apply_threshold(hc, ha, ch, student_cost_per_1k=0.01, teacher_cost_per_1k=1.0,
                          student_latency_ms=s_lat, teacher_latency_ms=t_lat, bootstrap_samples=300)
    answered = hc >= ch.threshold
    assert res["coverage"] == pytest.approx(answered.mean()) and res["forwarded"] == int((~answered).sum())
    assert res["cascade_agreement"] == pytest.approx((ha[answered].sum() + (~answered).sum()) / 3000)
    lo, hi = res["cascade_agreement_ci"]
    assert lo < res["cascade_agreement"] < hi and res["cascade_agreement"] > res["student_alone_agreement"]
    assert res["cost_per_1k_usd"] == pytest.approx(0.01 + (1 - res["coverage"]) * 1.0)
    assert res["cascade_cost_ratio"] == pytest.approx(res["cost_per_1k_usd"] / 1.0)
    assert res["latency_from"] == "per_item" and res["latency_p50_ms"] < 20 and res["latency_p95_ms"] > 700  # >5 % forwarded
    g = gate_metrics(res)
    assert g == {"cascade_agreement": lo, "coverage": res["coverage"], "cascade_cost_ratio": res["cascade_cost_ratio"], "cascade_unreachable": None}
    line = summary_line(res)
    assert line.startswith("cascade (target_agreement=0.985, threshold ") and "student alone" in line and "/1k" in line


def test_mix_latency_from_distributions():
    s, t = [10.0] * 100, [1000.0] * 50
    assert mix_latency(s, t, 0.0) == {"p50_ms": 10.0, "p95_ms": 10.0}
    m = mix_latency(s, t, 0.2)
    assert m["p50_ms"] == 10.0 and m["p95_ms"] == 1010.0
    assert mix_latency([10.0, 20.0], [100.0, 100.0], [False, True]) == {"p50_ms": 65.0, "p95_ms": 114.5}
    with pytest.raises(ValueError, match="equal lengths"):
        mix_latency(s, t, [True] * 100)


def test_config_needs_exactly_one_target():
    assert CascadeConfig().enabled is False
    assert CascadeConfig(enabled=True, max_teacher_share=0.1).max_teacher_share == 0.1
    with pytest.raises(ValidationError, match="cascade.target_agreement and cascade.max_teacher_share are both set"):
        CascadeConfig(target_agreement=0.99, max_teacher_share=0.2)
    with pytest.raises(ValidationError, match="cascade.target_agreement: set it"):
        CascadeConfig(enabled=True)
    with pytest.raises(ValidationError, match="target_agrement"):
        CascadeConfig(target_agrement=0.9)
    assert all(f.description for f in CascadeConfig.model_fields.values())


def test_plot_writes_a_png(tmp_path):
    from eval.cascade_plot import plot_cascade

    vc, va = pairs(800, 7)
    hc, ha = pairs(800, 8)
    res = evaluate_cascade(vc, va, hc, ha, CascadeConfig(enabled=True, target_agreement=0.98), bootstrap_samples=200)
    out = plot_cascade(res, tmp_path / "cascade.png", target_agreement=0.98)
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
