"""Bootstrap intervals against distributions with known intervals."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from eval.bootstrap import bootstrap_macro_f1, bootstrap_mean, bootstrap_paired_diff, macro_f1_from_codes


def test_bernoulli_interval_matches_normal_approximation():
    x = np.zeros(2000)
    x[:1800] = 1  # p = 0.9, n = 2000: +-1.96*sqrt(.9*.1/2000) = +-1.31 points
    b = bootstrap_mean(x, samples=2000, seed=1)
    half = 1.96 * np.sqrt(0.9 * 0.1 / 2000)
    assert b["value"] == pytest.approx(0.9)
    assert b["ci"][0] == pytest.approx(0.9 - half, abs=0.003)
    assert b["ci"][1] == pytest.approx(0.9 + half, abs=0.003)


def test_seeded_and_reproducible():
    x = np.random.default_rng(0).random(300)
    assert bootstrap_mean(x, seed=3) == bootstrap_mean(x, seed=3)


def test_constant_and_empty():
    assert bootstrap_mean(np.full(50, 0.7))["ci"] == pytest.approx([0.7, 0.7])


def test_perfect_small_holdout_is_not_certain():
    # 40/40 hits: the percentile bootstrap says [1, 1]; Wilson says the true rate may be ~0.91.
    lo, hi = bootstrap_mean(np.ones(40))["ci"]
    assert lo == pytest.approx(40 / (40 + 1.959964**2), abs=1e-4) and hi == 1.0
    assert bootstrap_mean([])["value"] is None


def test_paired_diff_is_tighter_than_independent():
    rng = np.random.default_rng(0)
    a = (rng.random(1000) < 0.8).astype(float)
    b = a.copy()
    b[:50] = 0  # b is a minus 50 items: true diff is small but certain
    diff = a.mean() - b.mean()
    d = bootstrap_paired_diff(a, b, seed=0)
    assert d["value"] == pytest.approx(diff)
    assert d["ci"][0] > 0  # paired: clearly positive
    with pytest.raises(ValueError):
        bootstrap_paired_diff([1, 0], [1])


def test_vectorised_macro_f1_equals_sklearn():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 500)
    p = np.where(rng.random(500) < 0.7, t, rng.integers(0, 6, 500))  # 5 = a label the truth never uses
    ours = macro_f1_from_codes(t, p, 5)[0]
    ref = f1_score(t, p, labels=list(range(5)), average="macro", zero_division=0)
    assert ours == pytest.approx(ref)


def test_bootstrap_macro_f1_interval_contains_point():
    t = ["a", "b", "c"] * 100
    p = [x if i % 5 else "a" for i, x in enumerate(t)]
    b = bootstrap_macro_f1(t, p, samples=300)
    assert b["ci"][0] < b["value"] < b["ci"][1]
