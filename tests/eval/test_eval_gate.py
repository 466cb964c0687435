"""Gate policy: simple fields, YAML check lists, intervals, relative and missing metrics."""
from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from eval.config import GateConfig
from eval.gate import decide


def report(**metrics):
    intervals = metrics.pop("intervals", {})
    missing = metrics.pop("missing", {})
    return {"metrics": metrics, "intervals": intervals, "missing": missing}


def test_simple_fields_use_interval_lower_bound():
    r = report(agreement=0.93, latency_p95_ms=50.0, cost_ratio=0.2, intervals={"agreement": [0.88, 0.97]})
    d = decide(GateConfig(min_agreement=0.9, max_p95_latency_ms=100, max_cost_ratio=0.5), r)
    assert d["passed"] is False
    agree = d["checks"][0]
    assert agree["name"] == "min_agreement" and agree["passed"] is False
    assert agree["value"] == 0.93 and agree["threshold"] == 0.9 and "lower bound 0.88" in agree["reason"]
    assert [c["passed"] for c in d["checks"][1:]] == [True, True]
    assert set(agree) >= {"name", "value", "threshold", "passed", "reason"}


def test_yaml_check_list_absolute_and_relative():
    cfg = GateConfig.model_validate(yaml.safe_load("""
min_agreement: null
checks:
  - {metric: agreement, min: 0.9}
  - {metric: latency_p95_ms, max: 200}
  - {metric: cost_ratio, max: 0.5}
  - {metric: latency_p95_ms, max_relative_to: teacher, factor: 0.5}
  - {metric: agreement, min_relative_to: prompted_baseline}
"""))
    r = report(agreement=0.95, latency_p95_ms=40.0, teacher_latency_p95_ms=100.0, cost_ratio=0.1,
               prompted_baseline_agreement=0.7, agreement_vs_prompted_baseline_diff=0.25,
               intervals={"agreement": [0.92, 0.97], "agreement_vs_prompted_baseline_diff": [0.2, 0.3]})
    d = decide(cfg, r)
    assert d["passed"] is True, d
    names = [c["name"] for c in d["checks"]]
    assert names == ["agreement >= 0.9", "latency_p95_ms <= 200", "cost_ratio <= 0.5",
                     "latency_p95_ms <= 0.5 x teacher", "agreement >= prompted_baseline"]
    assert d["checks"][3]["threshold"] == 50.0
    # Relative to the baseline uses the paired difference's lower bound against margin 0.
    assert d["checks"][4]["threshold"] == 0.0 and "lower bound 0.2" in d["checks"][4]["reason"]


def test_baseline_not_beaten_fails():
    cfg = GateConfig(min_agreement=None, checks=[{"metric": "agreement", "min_relative_to": "prompted_baseline"}])
    r = report(agreement=0.9, prompted_baseline_agreement=0.88, agreement_vs_prompted_baseline_diff=0.02,
               intervals={"agreement_vs_prompted_baseline_diff": [-0.01, 0.05]})
    assert decide(cfg, r)["passed"] is False


def test_relative_without_paired_diff_uses_reference_value():
    cfg = GateConfig(min_agreement=None, checks=[{"metric": "macro_f1", "min_relative_to": "teacher", "margin": -0.05}])
    d = decide(cfg, report(macro_f1=0.9, teacher_macro_f1=0.93))
    assert d["passed"] and d["checks"][0]["threshold"] == pytest.approx(0.88)


def test_missing_metric_required_fails_optional_skips():
    r = report(agreement=0.99, missing={"cost_ratio": "teacher unpriced"})
    d = decide(GateConfig(min_agreement=0.5, max_cost_ratio=0.5), r)
    assert d["passed"] is False and "teacher unpriced" in d["checks"][1]["reason"]
    d = decide(GateConfig(min_agreement=0.5, max_cost_ratio=0.5, on_missing="skip"), r)
    assert d["passed"] is True and d["checks"][1]["skipped"]
    d = decide(GateConfig(min_agreement=None, checks=[{"metric": "agreement", "min_relative_to": "prompted_baseline", "required": False}]), r)
    assert d["passed"] and d["checks"][0]["skipped"]


def test_no_checks_is_not_a_pass():
    assert decide(GateConfig(min_agreement=None), report(agreement=1.0))["passed"] is False


def test_point_estimate_when_interval_use_disabled():
    cfg = GateConfig(min_agreement=None, checks=[{"metric": "agreement", "min": 0.9, "use_interval": False}])
    assert decide(cfg, report(agreement=0.93, intervals={"agreement": [0.85, 0.97]}))["passed"]


def test_check_needs_exactly_one_rule_and_known_keys():
    with pytest.raises(ValidationError, match="exactly one"):
        GateConfig(checks=[{"metric": "agreement", "min": 0.9, "max": 1.0}])
    with pytest.raises(ValidationError):
        GateConfig(checks=[{"metric": "agreement", "minimum": 0.9}])
