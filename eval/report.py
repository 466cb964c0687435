"""Human-readable output: report.md, the one-screen run summary, and table rows for Prefect;
write_report puts report.json, report.md and the plots into <run>/eval/.

Plain strings and lists of dicts only: the lead turns them into Prefect artifacts, the CLI prints
them. Every "not measured" is said in words, never left as a blank cell.
"""
from __future__ import annotations

from typing import Any

from core.base import write_json
from core.rundir import RunDir
from eval.config import EvalConfig

PCT = {"agreement", "json_valid_rate", "teacher_json_valid_rate", "field_accuracy", "label_accuracy", "macro_f1",
       "format_compliance", "gold_agreement", "teacher_gold_agreement", "prompted_baseline_agreement",
       "agreement_vs_prompted_baseline_diff", "probe_baseline_agreement", "agreement_vs_probe_baseline_diff", "judge_score", "judge_win_rate", "judge_tie_rate", "judge_loss_rate",
       "cascade_agreement", "coverage", "teacher_share", "cascade_cost_ratio",
       "tool_name_accuracy", "tool_args_exact_match", "tool_per_argument_accuracy", "tool_parallel_set_match",
       "tool_called_when_text_rate", "tool_text_when_called_rate"}


def fmt_value(name: str, v: Any) -> str:
    if v is None:
        return "n/a"
    if name in PCT:
        return f"{v * 100:.1f}%"
    if name.endswith("_usd") or "usd" in name:
        return f"${v:.4g}"
    if name.endswith("_ms") or "_ms_at_" in name:
        return f"{v:.1f} ms"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fmt_interval(name: str, ci: list[float] | None) -> str:
    if not ci:
        return ""
    return f"[{fmt_value(name, ci[0])}, {fmt_value(name, ci[1])}]"


def metric_rows(report: dict) -> list[dict]:
    """One row per metric: {metric, value, interval, note} (Prefect table artifact ready)."""
    rows = []
    for name, v in report.get("metrics", {}).items():
        rows.append({"metric": name, "value": fmt_value(name, v), "interval": fmt_interval(name, report.get("intervals", {}).get(name)),
                     "note": report.get("missing", {}).get(name, "") if v is None else ""})
    return rows


def gate_rows(decision: dict | None) -> list[dict]:
    if not decision:
        return []
    return [{"check": c["name"], "value": fmt_value(c.get("metric") or "", c.get("value")),
             "threshold": "n/a" if c.get("threshold") is None else f"{c['threshold']:.4g}",
             "verdict": "SKIP" if c.get("skipped") else ("PASS" if c["passed"] else "FAIL"), "reason": c["reason"]}
            for c in decision.get("checks", [])]


def table_rows(report: dict, decision: dict | None = None) -> dict[str, list[dict]]:
    """{"metrics": rows, "gate": rows}: lists of flat dicts for create_table_artifact."""
    return {"metrics": metric_rows(report), "gate": gate_rows(decision)}


def _m(report: dict, name: str) -> str:
    v = report.get("metrics", {}).get(name)
    s = fmt_value(name, v)
    ci = report.get("intervals", {}).get(name)
    return f"{s} {fmt_interval(name, ci)}".strip() if ci else s


def _baseline_line(report: dict) -> str:
    pb = report.get("prompted_baseline") or {"ran": False, "verdict": "No prompted baseline was run."}
    if not pb.get("ran"):
        return f"**Prompted baseline:** {pb['verdict']}"
    method = pb.get("method") or f"base model, {pb['k']}-shot"
    line = (f"**Prompted baseline** ({method}, {pb['n']} items): agreement {_m(report, 'prompted_baseline_agreement')}. "
            f"**{pb['verdict']}**")
    lp = report.get("probe_baseline")
    if lp and lp.get("ran"):
        line += (f"\n\n**Linear-probe baseline** ({lp['method']}, {lp['n']} items): agreement "
                 f"{_m(report, 'probe_baseline_agreement')}. **{lp['verdict']}**")
    return line


def _key_lines(report: dict) -> list[str]:
    c = report.get("counts", {})
    conf = f"{report.get('confidence', 0.95):.0%}"
    lines = [
        (f"- Holdout: {c.get('evaluated')} evaluated of {c.get('holdout_total', 'n/a')} "
         f"(excluded: teacher failed {c.get('excluded_teacher_failed', 'n/a')}, filtered {c.get('excluded_filtered', 'n/a')}; "
         f"student errors {c.get('student_errors', 0)})"),
        f"- Agreement with teacher: {_m(report, 'agreement')} ({conf} bootstrap interval)",
    ]
    m = report.get("metrics", {})
    tc = report.get("details", {}).get("tool_calls")
    if tc:
        lines += _tool_lines(report, tc)
    if m.get("gold_agreement") is not None:
        lines.append(f"- Agreement with gold/recorded answers: student {_m(report, 'gold_agreement')}, teacher {_m(report, 'teacher_gold_agreement')}")
    lines.append(f"- Latency p50/p95/p99 (concurrency 1): student {fmt_value('x_ms', m.get('latency_p50_ms'))} / {fmt_value('x_ms', m.get('latency_p95_ms'))} / {fmt_value('x_ms', m.get('latency_p99_ms'))}; "
                 f"teacher {fmt_value('x_ms', m.get('teacher_latency_p50_ms'))} / {fmt_value('x_ms', m.get('teacher_latency_p95_ms'))} / {fmt_value('x_ms', m.get('teacher_latency_p99_ms'))}")
    ratio = m.get("cost_ratio")
    lines.append(f"- Cost per 1k requests: student {fmt_value('usd', m.get('cost_per_1k_usd'))}, teacher {fmt_value('usd', m.get('teacher_cost_per_1k_usd'))} "
                 f"(ratio {'n/a: ' + report.get('missing', {}).get('cost_ratio', '') if ratio is None else f'{ratio:.3g}'})")
    be = report.get("details", {}).get("cost", {}).get("break_even", {})
    if be.get("verdict"):
        lines.append(f"- Training {fmt_value('usd', m.get('training_cost_usd'))}; break-even: {be['verdict']}")
    if report.get("cascade"):
        lines.append(f"- Cascade: {report['cascade'].get('summary')}")
    j = report.get("judge")
    if j:
        lines.append(f"- LLM judge ({j['model']}, both orders): score {_m(report, 'judge_score')} (0.5 = parity); "
                     f"wins {j['wins']}, ties {j['ties']}, losses {j['losses']}")
    return lines


def _tool_lines(report: dict, tc: dict) -> list[str]:
    """The tool-call metrics (eval/toolcall_eval.py), each with its interval, or why it does not apply."""
    def m(name: str) -> str:
        v = report.get("metrics", {}).get(name)
        return _m(report, name) if v is not None else f"n/a ({report.get('missing', {}).get(name, 'not measured')})"

    return [
        (f"- Tool calls ({tc['n_call_expected']} holdout answers with calls, {tc['n_parallel']} of them parallel; "
         f"{tc['n_text_expected']} in text; BFCL AST semantics): tool name {m('tool_name_accuracy')}, "
         f"arguments exact {m('tool_args_exact_match')}, per argument {m('tool_per_argument_accuracy')}, "
         f"parallel set {m('tool_parallel_set_match')}"),
        f"- Called a tool where the teacher answered in text: {m('tool_called_when_text_rate')}; "
        f"answered in text where the teacher called: {m('tool_text_when_called_rate')}",
    ]


def _gate_lines(decision: dict | None) -> list[str]:
    if not decision:
        return ["Gate: not decided yet."]
    out = [f"**Gate: {'PASSED' if decision['passed'] else 'FAILED'}**"]
    for c in decision["checks"]:
        v = "SKIP" if c.get("skipped") else ("PASS" if c["passed"] else "FAIL")
        out.append(f"- {v} {c['name']}: {c['reason']}")
    return out


def summary_markdown(manifest: dict, report: dict | None, decision: dict | None) -> str:
    """One-screen run summary: per-stage counts, parity with CI, latency, cost, baseline, gate."""
    lines = [f"## Run {manifest.get('run_id', '?')}", "", "| stage | counts | wall s |", "|---|---|---|"]
    for stage, e in manifest.get("stages", {}).items():
        counts = ", ".join(f"{k}={v}" for k, v in (e.get("counts") or {}).items()) or "-"
        lines.append(f"| {stage} | {counts} | {e.get('wall_s', '-')} |")
    lines.append("")
    if report:
        lines += _key_lines(report) + ["", _baseline_line(report), ""]
    else:
        lines += ["No eval report.", ""]
    lines += _gate_lines(decision)
    return "\n".join(lines) + "\n"


def report_markdown(report: dict) -> str:
    """<run>/eval/report.md: key lines, baseline verdict, every metric with interval or reason."""
    lines = [f"# Evaluation report: {report.get('run_id')}", "",
             (f"Student `{report['student']['model']}` ({report['student'].get('kind') or 'unknown kind'}) at {report['student']['base_url']} "
              f"vs teacher `{report['teacher']['model']}`; task looks like **{report.get('task_kind')}**."), ""]
    lines += _key_lines(report) + ["", _baseline_line(report), ""]
    lines += ["## All metrics", "", "| metric | value | interval | note |", "|---|---|---|---|"]
    lines += [f"| {r['metric']} | {r['value']} | {r['interval']} | {r['note']} |" for r in metric_rows(report)]
    fa = report.get("details", {}).get("field_accuracy")
    if fa:
        lines += ["", "## Per-field accuracy", "", "| field | accuracy |", "|---|---|"]
        lines += [f"| {k} | {v * 100:.1f}% |" for k, v in fa.items()]
    pl = report.get("details", {}).get("per_label_accuracy")
    if pl:
        worst = sorted(pl.items(), key=lambda kv: kv[1])[:10]
        lines += ["", "## Weakest labels (accuracy)", "", "| label | accuracy |", "|---|---|"]
        lines += [f"| {k} | {v * 100:.1f}% |" for k, v in worst]
    tc = report.get("details", {}).get("tool_calls")
    if tc and tc.get("errors"):  # why the calls the AST match rejected were wrong (BFCL's error types)
        lines += ["", "## Tool-call errors (BFCL checker's reasons)", "", "| error | items |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(tc["errors"].items(), key=lambda kv: -kv[1])]
    lines += _cascade_section(report.get("cascade"))
    cost = report.get("details", {}).get("cost", {})
    if cost:
        lines += ["", "## Cost notes", "", f"- Teacher cost source: {cost.get('teacher', {}).get('source')}",
                  f"- Student: ${cost.get('student_usd_per_hour')}/hour, {cost.get('assumption')}.",
                  f"- Teacher timing calls made by this evaluation cost {fmt_value('usd', report['metrics'].get('teacher_timing_cost_usd'))}."]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p.split('/')[-1]})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _cascade_section(c: dict | None) -> list[str]:
    """report.md's cascade section: the validation choice, the holdout figures, calibration."""
    if not c:
        return []
    pct = lambda x: "n/a" if x is None else f"{100 * x:.2f} %"  # noqa: E731
    ch, cal, val = c.get("choice") or {}, c.get("calibration") or {}, c.get("val") or {}
    lines = ["", "## Cascade (student answers when confident, teacher the rest)", "", c.get("summary", ""), "",
             f"- Target {c.get('target')}; threshold chosen on the student's validation split ({val.get('n')} items, {val.get('source')}), "
             "never on the holdout."]
    if not c.get("reachable"):
        return lines + [f"- **Unreachable:** {c.get('reason')}"]
    lo, hi = c.get("cascade_agreement_ci") or (None, None)
    lines += [
        f"- Validation at the threshold: coverage {pct(ch.get('val_coverage'))}, cascade agreement {pct(ch.get('val_cascade_agreement'))}",
        f"- Holdout ({c.get('n')} items): threshold {c['threshold']:.6g}, coverage {pct(c.get('coverage'))} "
        f"({c.get('answered_by_student')} answered by the student, {c.get('forwarded')} forwarded), cascade agreement "
        f"{pct(c.get('cascade_agreement'))} [{pct(lo)}, {pct(hi)}], student on its share {pct(c.get('student_agreement_on_answered'))}; "
        f"student alone {pct(c.get('student_alone_agreement'))}",
        f"- Cost per 1k requests: {fmt_value('usd', c.get('cost_per_1k_usd'))} (student on every request + the forwarded share at the "
        f"teacher's {fmt_value('usd', c.get('teacher_cost_per_1k_usd'))}); ratio to the teacher {fmt_value('x', c.get('cascade_cost_ratio'))}",
        f"- Latency of the mix p50/p95: {fmt_value('x_ms', c.get('latency_p50_ms'))} / {fmt_value('x_ms', c.get('latency_p95_ms'))} "
        "(a forwarded request pays the student, then the teacher; resampled from the two measured distributions)"]
    if cal.get("method"):
        lines.append(f"- Calibration ({cal['method']}, fitted on {cal.get('fitted_on')}): ECE ({cal.get('binning')} bins) on validation "
                     f"{fmt_value('x', cal.get('val_ece_before'))} -> {fmt_value('x', cal.get('val_ece_after'))}; on the holdout "
                     f"{fmt_value('x', cal.get('holdout_ece_before'))} -> {fmt_value('x', cal.get('holdout_ece_after'))}")
    else:
        lines.append(f"- Calibration: none saved with this student; holdout ECE {fmt_value('x', cal.get('holdout_ece_after'))}")
    return lines


def write_report(cfg: EvalConfig, rd: RunDir, report: dict) -> None:
    """report.json, report.md and plots (plots are best effort: a plotting error is noted, not fatal)."""
    out_dir = rd.stage_dir("eval")
    missing = report.setdefault("missing", {})
    for k, v in report.get("metrics", {}).items():
        if v is None:
            missing.setdefault(k, "not measured in this run")  # a blank cell would read as zero
    if cfg.plots:
        try:
            from eval.plots import write_plots

            report["plots"] = [str(p.relative_to(rd.path)) for p in write_plots(report, out_dir)]
        except Exception as e:  # noqa: BLE001
            report.setdefault("notes", []).append(f"plots failed: {type(e).__name__}: {e}")
        if report.get("cascade"):
            try:
                from eval.cascade_plot import plot_cascade

                c = report["cascade"]
                png = plot_cascade(c, out_dir / "cascade.png", (c.get("config") or {}).get("target_agreement"))
                report.setdefault("plots", []).append(str(png.relative_to(rd.path)))
            except Exception as e:  # noqa: BLE001
                report.setdefault("notes", []).append(f"cascade plot failed: {type(e).__name__}: {e}")
    write_json(rd.eval_report, report)
    (out_dir / "report.md").write_text(report_markdown(report))
