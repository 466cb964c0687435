from collections import Counter

import pytest

from eval.drift import drift_report, js_divergence, token_counts


def test_jsd_bounds_and_symmetry():
    p = Counter({"card": 5, "lost": 3})
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    q = Counter({"hotel": 5, "booking": 3})
    assert js_divergence(p, q, alpha=1e-9) == pytest.approx(1.0, abs=1e-6)
    r = Counter({"card": 2, "hotel": 2})
    assert js_divergence(p, r) == pytest.approx(js_divergence(r, p))


def test_drift_report_flags_new_topics():
    ref = ["my card has not arrived", "i lost my card", "how do i top up my card"] * 20
    same = ["my card has not arrived", "i lost my card"] * 20  # same topics, other mix
    new = ["book a hotel room for two nights", "cancel my hotel booking"] * 20
    assert not drift_report(same, ref, threshold=0.3)["drifted"]
    rep = drift_report(new, ref, threshold=0.3)
    assert rep["drifted"] and "hotel" in rep["top_novel_tokens"]
    assert token_counts(["Don't PANIC"]) == Counter({"don't": 1, "panic": 1})
