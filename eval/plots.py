"""PNG plots for the eval report (matplotlib Agg: no display on servers or in CI), and the
markdown that shows them on the Prefect run.

Pictures a reviewer reads at a glance rather than a table: where the student disagrees with the
teacher (the most-confused label pairs of each categorical field; per-field or per-label
accuracy with 95% Wilson intervals), latency distributions of student vs teacher at each
measured concurrency, and cost per 1k requests on a log scale (a linear axis draws a student
100x cheaper than the teacher as a zero-height bar).
"""
from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.base import read_jsonl
from core.rundir import RunDir
from eval import metrics as M
from eval.bootstrap import wilson

TEACHER, STUDENT, TRAINING = "tab:blue", "tab:orange", "tab:green"
_NO_ANSWER, _NO_FIELD = "<no answer>", "<missing>"
TOP_PAIRS = 12  # confused pairs drawn per categorical field
MAX_FIELDS = 3  # categorical fields drawn (most confused first)

CAPTIONS = {
    "disagreements.png": "Where the student disagrees with the teacher: the most frequent (teacher answer -> student answer) pairs of each categorical field.",
    "fields.png": "Agreement with the teacher per field (or per label, weakest first), with 95% Wilson intervals; n = holdout items.",
    "latency.png": "Latency distribution (CDF, log scale) of student and teacher at each measured concurrency.",
    "cost.png": "Cost per 1k requests, log scale.",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(s: Any, n: int = 32) -> str:
    s = str(s)
    s = s if len(s) <= n else s[: n - 1] + "…"
    # Labels are data (slot values like "$20"): two dollar signs would start matplotlib mathtext.
    return s.replace("$", r"\$")


def _save(fig, path: Path, written: list[Path]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    written.append(path)


# -- what the student got wrong -------------------------------------------------------------

def categorical_fields(teacher: Sequence[str | None], student: Sequence[str | None], max_classes: int = 200,
                       classifier: bool = False) -> dict[str, list[tuple[str, str]]]:
    """{field: [(teacher value, student value), ...]} for each categorical output field.

    JSON-object outputs: every top-level field whose teacher values are short scalars that
    repeat (few distinct values) - or all short scalar fields when the student is a classifier
    (it predicts labels whatever the holdout size); the student's value is its own field,
    `<missing>` or `<no answer>`. Bare-label outputs (classification): one field, "label".
    """
    objs = [M.parse_output(t) for t in teacher]
    if any(isinstance(o, dict) for o in objs):
        pairs: dict[str, list[tuple[str, str]]] = {}
        for o, s in zip(objs, student, strict=True):
            if not isinstance(o, dict):
                continue
            so = M.parse_output(s)
            for k, v in o.items():
                sv = _NO_ANSWER if s is None else (_val(so[k]) if isinstance(so, dict) and k in so else _NO_FIELD)
                pairs.setdefault(k, []).append((_val(v), sv))
        return {k: p for k, p in pairs.items() if _is_categorical([t for t, _ in p], max_classes, classifier)}
    labels = [M.normalize_label(t) for t in teacher]
    if not (classifier or M.looks_like_classification(teacher, max_classes)):
        return {}
    return {"label": [(t, M.normalize_label(s) if s is not None else _NO_ANSWER)
                      for t, s in zip(labels, student, strict=True) if t is not None]}


def _val(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _is_categorical(values: list[str], max_classes: int, classifier: bool) -> bool:
    distinct = len(set(values))
    repeats = distinct <= max_classes and distinct <= len(values) / 2
    return len(values) >= 2 and (classifier or repeats) and all(len(v) <= 200 for v in values)


def confused_pairs(pairs: list[tuple[str, str]], top: int = TOP_PAIRS) -> list[tuple[str, str, int, int]]:
    """The most frequent disagreements: (teacher value, student value, count, teacher value's total)."""
    totals = Counter(t for t, _ in pairs)
    wrong = Counter((t, s) for t, s in pairs if t != s)
    return [(t, s, c, totals[t]) for (t, s), c in sorted(wrong.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def accuracy_with_intervals(pairs: list[tuple[str, str]]) -> dict[str, tuple[float, float, float, int]]:
    """{teacher value: (accuracy, lo, hi, n)} over (teacher value, student value) pairs."""
    hits: Counter[str] = Counter()
    n: Counter[str] = Counter()
    for t, s in pairs:
        n[t] += 1
        hits[t] += t == s
    return {k: (hits[k] / n[k], *wilson(hits[k], n[k]), n[k]) for k in n}


def field_intervals(teacher: Sequence[str | None], student: Sequence[str | None]) -> dict[str, tuple[float, float, float, int]]:
    """Per top-level JSON field: (accuracy, lo, hi, n) over items whose teacher output has it."""
    hits: Counter[str] = Counter()
    n: Counter[str] = Counter()
    for t, s in zip(teacher, student, strict=True):
        pt = M.parse_output(t)
        if not isinstance(pt, dict):
            continue
        ps = M.parse_output(s)
        ps = ps if isinstance(ps, dict) else {}
        for k, v in pt.items():
            n[k] += 1
            hits[k] += k in ps and ps[k] == v
    return {k: (hits[k] / n[k], *wilson(hits[k], n[k]), n[k]) for k in sorted(n)}


def _plot_disagreements(fields: dict[str, list[tuple[str, str]]], path: Path, written: list[Path]) -> None:
    ranked = sorted(((k, confused_pairs(p)) for k, p in fields.items()), key=lambda kp: -sum(c for *_, c, _ in kp[1]))
    ranked = [(k, cp) for k, cp in ranked if cp][:MAX_FIELDS]
    if not ranked:
        return
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    heights = [max(2.0, 0.32 * len(cp) + 1.2) for _, cp in ranked]
    fig, axes = plt.subplots(len(ranked), 1, figsize=(9, sum(heights)), gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (field, cp) in zip(axes[:, 0], ranked):
        cp = cp[::-1]  # biggest on top
        ax.barh(range(len(cp)), [c for *_, c, _ in cp], color="tab:red")
        ax.set_yticks(range(len(cp)), [f"{_short(t)} → {_short(s)}" for t, s, _, _ in cp], fontsize=8)
        for i, (_, _, c, tot) in enumerate(cp):
            ax.text(c, i, f" {c} of {tot}", va="center", fontsize=8)
        ax.set_xlim(0, max(c for *_, c, _ in cp) * 1.25)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("holdout items (teacher answer → student answer)")
        n = len(fields[field])
        wrong = sum(t != s for t, s in fields[field])
        ax.set_title(f"Disagreements on {field!r}: {wrong} of {n} items; most confused pairs", fontsize=10)
    _save(fig, path, written)


def _plot_accuracy(acc: dict[str, tuple[float, float, float, int]], title: str, path: Path, written: list[Path]) -> None:
    plt = _plt()
    # weakest first; among equals, the one with the most evidence (narrowest interval) first
    items = sorted(acc.items(), key=lambda kv: (kv[1][0], -kv[1][3], kv[0]))[:30][::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(items) + 1.2)))
    y = range(len(items))
    vals = [a for _, (a, *_) in items]
    # Clamped at 0: an interval computed apart from the point estimate can miss it by a rounding error.
    err = [[max(0.0, a - lo) for _, (a, lo, _, _) in items], [max(0.0, hi - a) for _, (a, _, hi, _) in items]]
    ax.errorbar(vals, list(y), xerr=err, fmt="o", color=STUDENT, ecolor="grey", capsize=3)
    ax.set_yticks(list(y), [f"{_short(k)} (n={n})" for k, (*_, n) in items], fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("student = teacher (95% Wilson interval)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    _save(fig, path, written)


# -- latency and cost -----------------------------------------------------------------------

def _levels(lat: dict | None) -> dict[str, dict]:
    return (lat or {}).get("levels", {}) if isinstance(lat, dict) else {}


def _plot_latency(latency: dict, metrics: dict, path: Path, written: list[Path]) -> None:
    import numpy as np

    sides = {"teacher": _levels(latency.get("teacher")), "student": _levels(latency.get("student"))}
    names = sorted({n for lv in sides.values() for n in lv}, key=lambda n: int(n.lstrip("c")) if n.lstrip("c").isdigit() else 0)
    have_samples = any(lv.get(n, {}).get("latency_samples_ms") for lv in sides.values() for n in names)
    plt = _plt()
    if not names or not have_samples:
        # Older reports: only percentiles; draw them per level on a log axis.
        pcts = ["p50", "p95", "p99"]
        stud = [metrics.get(f"latency_{p}_ms") for p in pcts]
        teach = [metrics.get(f"teacher_latency_{p}_ms") for p in pcts]
        if all(v is None for v in stud + teach):
            return
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = range(len(pcts))
        ax.bar([i - 0.2 for i in x], [v or 0 for v in teach], width=0.4, label="teacher", color=TEACHER)
        ax.bar([i + 0.2 for i in x], [v or 0 for v in stud], width=0.4, label="student", color=STUDENT)
        ax.set_xticks(list(x), pcts)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms), concurrency 1")
        ax.set_title("Latency: teacher vs student")
        ax.legend()
        _save(fig, path, written)
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        for who, color in (("teacher", TEACHER), ("student", STUDENT)):
            lv = sides[who].get(name) or {}
            x = np.sort(np.asarray(lv.get("latency_samples_ms") or [], dtype=float))
            if x.size == 0:
                continue
            y = np.arange(1, x.size + 1) / x.size
            p50, p95 = np.percentile(x, [50, 95])
            ax.step(x, y, where="post", color=color, label=f"{who}: p50 {p50:.0f} ms, p95 {p95:.0f} ms (n={x.size})")
            ax.axvline(p95, color=color, ls=":", lw=1)
        _log_ms_axis(ax)
        ax.set_xlabel("latency per request (ms, log scale)")
        ax.axhline(0.95, color="grey", lw=0.5)
        ax.set_title(f"concurrency {name.lstrip('c')}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("share of requests ≤ x")
    fig.suptitle("Latency distribution: teacher vs student (dotted: p95)", fontsize=11)
    _save(fig, path, written)


def _log_ms_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _usd(v: float) -> str:
    return f"${v:.3g}"


def _plot_cost(m: dict, path: Path, written: list[Path]) -> None:
    costs = {"teacher": (m.get("teacher_cost_per_1k_usd"), TEACHER), "student": (m.get("cost_per_1k_usd"), STUDENT),
             "student + training\n(amortised, 1 month)": (m.get("cost_per_1k_with_training_usd"), TRAINING)}
    costs = {k: v for k, v in costs.items() if v[0] is not None and v[0] > 0}
    if not costs:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(costs) + 1.6))
    names = list(costs)[::-1]
    vals = [costs[k][0] for k in names]
    ax.barh(names, vals, color=[costs[k][1] for k in names])
    ax.set_xscale("log")
    lo, hi = min(vals), max(vals)
    ax.set_xlim(lo / 3, hi * 6)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {_usd(v)}", va="center", fontsize=9)
    ax.set_xlabel("USD per 1k requests (log scale)")
    ratio = m.get("cost_ratio")
    ax.set_title("Cost per 1k requests" + (f": student = {ratio:.2%} of teacher" if ratio is not None else ""), fontsize=10)
    _save(fig, path, written)


# -- entry points ---------------------------------------------------------------------------

def _load_predictions(out_dir: Path) -> list[dict] | None:
    path = RunDir(out_dir.parent).predictions
    return list(read_jsonl(path)) if path.is_file() else None


def write_plots(report: dict, out_dir: str | Path, predictions: list[dict] | None = None) -> list[Path]:
    """disagreements.png, fields.png, latency.png, cost.png, each only when its data exists;
    returns the written paths. `predictions` (rows with "teacher" and "student") default to the
    run's eval/predictions.jsonl next to `out_dir`; without them only latency and cost are drawn
    (plus per-field accuracy from the report, without intervals)."""
    out_dir = Path(out_dir)
    m = report.get("metrics", {})
    details = report.get("details", {})
    written: list[Path] = []
    preds = predictions if predictions is not None else _load_predictions(out_dir)
    if preds:
        teacher, student = [p.get("teacher") for p in preds], [p.get("student") for p in preds]
        max_classes = (report.get("config") or {}).get("max_label_classes", 200)
        classifier = (report.get("student") or {}).get("kind") == "classifier"
        fields = categorical_fields(teacher, student, max_classes, classifier)
        _plot_disagreements(fields, out_dir / "disagreements.png", written)
        fi = field_intervals(teacher, student)
        if len(fi) >= 2:
            _plot_accuracy(fi, "Per-field agreement with the teacher (weakest first)", out_dir / "fields.png", written)
        elif len(fields) == 1:
            (name, pairs), = fields.items()
            _plot_accuracy(accuracy_with_intervals(pairs), f"Per-label agreement on {name!r} (30 weakest)",
                           out_dir / "fields.png", written)
    elif len(details.get("field_accuracy") or {}) >= 2:
        fa = details["field_accuracy"]
        _plot_accuracy({k: (v, v, v, 0) for k, v in fa.items()}, "Per-field agreement (no intervals: predictions missing)",
                       out_dir / "fields.png", written)
    _plot_latency(details.get("latency") or {}, m, out_dir / "latency.png", written)
    _plot_cost(m, out_dir / "cost.png", written)
    return written


def plots_markdown(report: dict, run_dir: str | Path, inline: bool = True, max_inline_bytes: int = 2_000_000) -> str:
    """Markdown showing the report's plots (report["plots"], paths relative to `run_dir`), for a
    Prefect markdown artifact: images inlined as data: URIs (the Prefect UI renders them, and
    the artifact then does not depend on the run directory being reachable), each captioned.
    Past `max_inline_bytes` in all, or with inline=False, images are linked by file path instead."""
    run_dir = Path(run_dir)
    lines = [f"## Evaluation plots: {report.get('run_id', '?')}", ""]
    plots = report.get("plots") or []
    if not plots:
        return "\n".join(lines + ["No plots were drawn for this run (eval.plots is off, or no data to draw).", ""])
    budget = max_inline_bytes
    for rel in plots:
        path = run_dir / rel
        name = path.name
        lines += [f"### {name.removesuffix('.png')}", "", CAPTIONS.get(name, ""), ""]
        if not path.is_file():
            lines += [f"(missing: {path})", ""]
            continue
        data = path.read_bytes()
        if inline and len(data) * 4 // 3 <= budget:
            budget -= len(data) * 4 // 3
            lines += [f"![{name}](data:image/png;base64,{base64.b64encode(data).decode()})", ""]
        else:
            lines += [f"![{name}]({path.resolve().as_uri()})", "", f"`{path.resolve()}`", ""]
    return "\n".join(lines)
