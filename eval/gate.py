"""The promotion gate: declarative checks on report metrics. Pure: it writes nothing.

A check compares the conservative end of a metric's bootstrap interval (lower bound for a
minimum, upper bound for a maximum) when the report has one, so a lucky small holdout does not
pass. Relative checks ("at least the prompted baseline", "at most half the teacher's p95")
look up '<ref>_<metric>' in the report; for a paired difference the report carries
'<metric>_vs_<ref>_diff' with its own interval, which is used instead (a paired interval is
tighter and honest about shared items).
"""
from __future__ import annotations

from typing import Any

from eval.config import GateCheck, GateConfig


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def simple_checks(cfg: GateConfig) -> list[GateCheck]:
    """The three simple config fields as checks (kept so short configs stay short)."""
    required = cfg.on_missing == "fail"
    out = []
    if cfg.min_agreement is not None:
        out.append(GateCheck(name="min_agreement", metric="agreement", min=cfg.min_agreement, required=required))
    if cfg.max_p95_latency_ms is not None:
        out.append(GateCheck(name="max_p95_latency_ms", metric="latency_p95_ms", max=cfg.max_p95_latency_ms, required=required))
    if cfg.max_cost_ratio is not None:
        out.append(GateCheck(name="max_cost_ratio", metric="cost_ratio", max=cfg.max_cost_ratio, required=required))
    return out


def _check_name(c: GateCheck) -> str:
    if c.name:
        return c.name
    if c.min is not None:
        return f"{c.metric} >= {c.min:g}"
    if c.max is not None:
        return f"{c.metric} <= {c.max:g}"
    ref = c.min_relative_to or c.max_relative_to
    op = ">=" if c.min_relative_to else "<="
    scale = f"{c.factor:g} x " if c.factor != 1 else ""
    plus = f" {'+' if c.margin >= 0 else '-'} {abs(c.margin):g}" if c.margin else ""
    return f"{c.metric} {op} {scale}{ref}{plus}"


def _missing(c: GateCheck, name: str, what: str, value: Any = None, interval: Any = None) -> dict:
    verdict = "fails (required)" if c.required else "skipped (optional)"
    return {"name": name, "metric": c.metric, "value": value, "interval": interval, "threshold": None,
            "passed": not c.required, "skipped": not c.required, "reason": f"{what}; check {verdict}"}


def evaluate_check(c: GateCheck, report: dict) -> dict:
    metrics = report.get("metrics", {})
    intervals = report.get("intervals", {})
    name = _check_name(c)
    value = metrics.get(c.metric)
    interval = intervals.get(c.metric)
    if value is None:
        why = report.get("missing", {}).get(c.metric, "not measured in this run")
        return _missing(c, name, f"metric {c.metric!r} is missing ({why})", interval=interval)
    is_min = c.min is not None or c.min_relative_to is not None
    bound_word = "lower bound" if is_min else "upper bound"
    ref = c.min_relative_to or c.max_relative_to
    if ref is None:
        threshold = c.min if is_min else c.max
        compared, label = value, c.metric
    else:
        diff_key = f"{c.metric}_vs_{ref}_diff"
        if c.factor == 1 and metrics.get(diff_key) is not None:
            # Paired difference: metric - ref on the same items; compare it with the margin.
            value, interval, threshold, label = metrics[diff_key], intervals.get(diff_key), c.margin, f"{c.metric} - {ref}"
            compared = value
        else:
            ref_key = f"{ref}_{c.metric}" if f"{ref}_{c.metric}" in metrics else ref
            ref_val = metrics.get(ref_key)
            if ref_val is None:
                why = report.get("missing", {}).get(ref_key, "not measured in this run")
                return _missing(c, name, f"reference {ref_key!r} is missing ({why})", value, interval)
            threshold = ref_val * c.factor + c.margin
            compared, label = value, c.metric
    used_interval = c.use_interval and interval is not None
    if used_interval:
        compared = interval[0] if is_min else interval[1]
    passed = compared >= threshold if is_min else compared <= threshold
    op = (">=" if passed else "<") if is_min else ("<=" if passed else ">")
    shown = f"{label} {bound_word} {_fmt(compared)}" if used_interval else f"{label} {_fmt(compared)}"
    extra = f" (point {_fmt(value)}, interval {_fmt(interval[0])}-{_fmt(interval[1])})" if used_interval else ""
    reason = f"{shown} {op} {'min' if is_min else 'max'} {_fmt(threshold)}{extra}"
    return {"name": name, "metric": c.metric, "value": value, "interval": interval, "threshold": threshold,
            "passed": bool(passed), "skipped": False, "reason": reason}


def decide(cfg: GateConfig, report: dict) -> dict:
    """{"passed": all checks passed, "checks": [{name, value, threshold, passed, reason, ...}]}.

    No checks configured is a failure: promoting without any evidence is never the default.
    """
    checks = [evaluate_check(c, report) for c in simple_checks(cfg) + list(cfg.checks)]
    if report.get("cascade") is not None:
        checks.append(cascade_check(report["cascade"]))
    if not checks:
        return {"passed": False, "checks": [{"name": "no_checks", "metric": None, "value": None, "interval": None, "threshold": None,
                                              "passed": False, "skipped": False, "reason": "no gate checks configured"}]}
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def cascade_check(res: dict) -> dict:
    """An evaluated cascade whose target no validation threshold reaches fails the gate, with the
    reason: serving it in cascade mode would have no threshold to route by. Its figures
    (cascade_agreement with its interval, coverage, cascade_cost_ratio) are ordinary report
    metrics, so policies bound them with `checks:` like any other."""
    ok = bool(res.get("reachable"))
    reason = (f"{res.get('target')} reached on validation: threshold {res['threshold']:.6g}" if ok
              else f"cascade target unreachable: {res.get('reason')}")
    return {"name": "cascade_target", "metric": "cascade_threshold", "value": res.get("threshold"), "interval": None, "threshold": None,
            "passed": ok, "skipped": False, "reason": reason}
