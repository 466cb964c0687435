"""The eval stage: student vs teacher on the holdout (parity, latency, cost), rerunnable alone.

Reads  <run>/filter/kept.jsonl (holdout teacher answers), <run>/replay/responses.jsonl (what was
excluded and what the teacher cost), <run>/ingest/holdout.jsonl (gold labels / recorded
responses, optional), <run>/train/model/student.json and the train stage's wall_s (optional).
Writes <run>/eval/predictions.jsonl, report.json, report.md and PNG plots.

Student and teacher are called the same way (core.llm, model "openai/<name>" + api_base for the
served student), so latency and agreement are comparable. The teacher's timing calls go to it
directly, not through the replay ledger: a ledger hit makes no HTTP call and would time nothing;
their cost is reported as teacher_timing_cost_usd.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.base import DistillError, read_jsonl, write_jsonl
from core.llm import Endpoint, complete_many, run_sync, token_cost
from core.rundir import STUDENT_META, RunDir
from eval.cascade_config import CascadeConfig
from eval.config import EvalConfig
from eval.cost import break_even, student_cost_per_1k, teacher_cost_per_1k, training_cost
from eval.latency import best_throughput, measure_endpoint, planned_requests
from eval.metrics import gold_reference
from eval.parity import parity_metrics
from eval.progress import bar
from eval.report import write_report
from teacher.config import TeacherConfig


def _read(path: Path, required: bool) -> list[dict] | None:
    if not path.is_file():
        if required:
            raise DistillError(f"eval needs {path} (run the earlier stages first)")
        return None
    return list(read_jsonl(path))


def load_holdout(rd: RunDir) -> dict[str, Any]:
    """Holdout items with teacher answers, plus counts of holdout prompts excluded upstream."""
    kept = _read(rd.filter_kept, required=True)
    items = [r for r in kept if r.get("split") == "holdout" and (r.get("response") is not None or r.get("tool_calls"))]
    replay = _read(rd.replay_responses, required=False)
    ingest = _read(rd.ingest_holdout, required=False)
    kept_ids = {r["id"] for r in items}
    counts: dict[str, Any] = {"evaluated": len(items)}
    if replay is not None:
        hold = [r for r in replay if r.get("split") == "holdout"]
        counts["excluded_teacher_failed"] = sum(1 for r in hold if r.get("status") != "ok")
        counts["excluded_filtered"] = sum(1 for r in hold if r.get("status") == "ok" and r["id"] not in kept_ids)
        counts["holdout_total"] = len(hold)
    else:
        counts.update(excluded_teacher_failed=None, excluded_filtered=None, holdout_total=None)
    if ingest is not None and counts["holdout_total"] is None:
        counts["holdout_total"] = len(ingest)
    return {"items": items, "replay": replay or [], "ingest": {r["id"]: r for r in (ingest or [])}, "counts": counts}


def _student_kind(rd: RunDir) -> str | None:
    meta = rd.model_dir / STUDENT_META
    try:
        return json.loads(meta.read_text()).get("kind")
    except (OSError, ValueError):
        return None


def _secret(s) -> str | None:
    return s.get_secret_value() if s is not None else None


def _latency_metrics(prefix: str, m: dict | None, metrics: dict, missing: dict, why: str) -> None:
    keys = [f"{k}_{p}_ms" for k in ("latency", "ttft") for p in ("p50", "p95", "p99")] + ["throughput_rps"]
    if m is None or not m["levels"]["c1"]["latency_ms"]["p50"]:
        for k in keys:
            metrics[prefix + k] = None
            missing[prefix + k] = why if m is None else f"all timing requests failed: {m['levels']['c1']['first_error']}"
        return
    c1 = m["levels"]["c1"]
    for p in ("p50", "p95", "p99"):
        metrics[f"{prefix}latency_{p}_ms"] = c1["latency_ms"][p]
        metrics[f"{prefix}ttft_{p}_ms"] = c1["ttft_ms"][p]
        if c1["ttft_ms"][p] is None:
            missing[f"{prefix}ttft_{p}_ms"] = m.get("note") or "not streamed"
    for name, lv in m["levels"].items():
        if name != "c1":
            metrics[f"{prefix}latency_p95_ms_at_{name}"] = lv["latency_ms"]["p95"]
            metrics[f"{prefix}ttft_p95_ms_at_{name}"] = lv["ttft_ms"]["p95"]
    metrics[prefix + "throughput_rps"] = best_throughput(m)


def run_eval(
    cfg: EvalConfig,
    rd: RunDir,
    teacher: TeacherConfig,
    student_base_url: str,
    student_model: str = "student",
    baseline_predict: Callable[[list[dict]], str] | None = None,
    baseline_few_shot: bool | None = None,
    cascade: CascadeConfig | None = None,
) -> dict:
    """Evaluate the served student against the teacher; write report files; return the report.

    baseline_predict: optional predict(messages)->text of the student's *base* model (e.g.
    student.lm_baseline.prompted_baseline_predictor(...)); when given, the prompted baseline is
    scored too (eval.baseline). baseline_few_shot: True = prepend cfg.baseline_k teacher examples
    here, False = the callable adds its own, None = auto (callables with a `.shots` attribute
    add their own). cascade (enabled): the student/teacher cascade section (eval/cascade_eval.py).
    """
    t0 = time.time()
    data = load_holdout(rd)
    items, counts = data["items"], data["counts"]
    if not items:
        raise DistillError(
            f"no holdout items to evaluate in {rd.filter_kept} "
            f"(teacher failed: {counts['excluded_teacher_failed']}, filtered: {counts['excluded_filtered']})")
    notes: list[str] = []
    student_ep = Endpoint(f"openai/{student_model}", student_base_url, _secret(cfg.student_api_key),
                          teacher.temperature, teacher.max_tokens, cfg.timeout_s)
    teacher_ep = Endpoint(teacher.model, teacher.api_base, _secret(teacher.api_key),
                          teacher.temperature, teacher.max_tokens, cfg.timeout_s)
    predict_ep = dataclasses.replace(student_ep, max_retries=2)  # answers may retry; timing calls must not
    from eval import toolcall_eval as TC

    tool_run = TC.is_tool_run(items)  # tools in the requests, calls in the answers (eval/toolcall_eval.py)
    conversations = [r["messages"] for r in items]
    teacher_out = TC.teacher_answers(items) if tool_run else [r["response"] for r in items]

    # 1. Student answers through the same OpenAI-compatible path as the teacher.
    with bar(len(conversations), "eval: student predictions", cfg.progress) as pb:
        if tool_run:
            results = TC.predict(predict_ep, items, cfg.prediction_concurrency, on_reply=lambda _: pb.update(1))
        else:
            results = run_sync(complete_many(predict_ep, conversations, cfg.prediction_concurrency, on_reply=lambda _: pb.update(1)))
    answers = [TC.reply_answer(r) for r in results] if tool_run else None
    student_out = [a[0] for a in answers] if answers is not None else [r.text for r in results]
    errors = [r.error for r in results if r.error]
    counts["student_errors"] = len(errors)
    if errors:
        notes.append(f"{len(errors)} student requests failed (counted as disagreement); first: {errors[0]}")
    if len(errors) == len(items):
        raise DistillError(f"every student request to {student_base_url} failed; first error: {errors[0]}")
    write_jsonl(rd.predictions, (
        {"id": r["id"], "messages": r["messages"], "teacher": t, "student": s, **({"error": p.error} if p.error else {}),
         **({"tools": r.get("tools"), "teacher_tool_calls": r.get("tool_calls"), "student_tool_calls": a[1]} if a is not None else {}),
         **({"tool_call_error": a[2]} if a is not None and a[2] and p.ok else {})}
        for r, p, t, s, a in zip(items, results, teacher_out, student_out, answers or [None] * len(items))))

    # 2. Parity metrics with bootstrap intervals.
    gold = [(TC.gold_answer if tool_run else gold_reference)(data["ingest"][r["id"]], cfg.gold_metadata_keys) if r["id"] in data["ingest"] else None
            for r in items]
    kind = _student_kind(rd)
    par = parity_metrics(student_out, teacher_out, gold if any(g is not None for g in gold) else None,
                         max_classes=cfg.max_label_classes, student_kind=kind,
                         samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)
    metrics, intervals, missing, details = par["metrics"], par["intervals"], par["missing"], par["details"]
    counts["gold_items"] = details.get("gold_items", 0)
    if tool_run:  # tool-call metrics; agreement = the BFCL-semantics match per item (eval/toolcall_eval.py)
        tm = TC.tool_metrics(items, student_out, [a[1] for a in answers or []], samples=cfg.bootstrap_samples,
                             confidence=cfg.confidence, seed=cfg.seed)
        from eval.bootstrap import bootstrap_mean

        b = bootstrap_mean(tm["hits"], samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)
        metrics["agreement"], details["agreement_hits"] = b["value"], tm["hits"]
        if b["ci"] is not None:
            intervals["agreement"] = b["ci"]
        metrics.update(tm["metrics"])
        intervals.update(tm["intervals"])
        missing.update(tm["missing"])
        details["tool_calls"] = tm["details"]
        counts["tool_call_items"] = tm["details"]["n_call_expected"]
        notes.append("tool calls: agreement is the BFCL AST match against the teacher's calls (text answers: the texts match)")

    # 3. Latency: same prompts, same call path, warm-up excluded, concurrency 1 and N.
    lat = {}
    for who, ep in (("student", student_ep), ("teacher", teacher_ep)):
        if who == "teacher" and not cfg.time_teacher:
            lat[who] = None
            continue
        total = planned_requests(cfg.latency_requests, cfg.warmup_requests, cfg.latency_concurrency)
        with bar(total, f"eval: {who} latency", cfg.progress) as pb:
            lat[who] = run_sync(measure_endpoint(ep, TC.prompts(items) if tool_run else conversations, cfg.latency_requests, cfg.warmup_requests,
                                                 cfg.latency_concurrency, cfg.stream, tick=lambda: pb.update(1)))
        if lat[who].get("note"):
            notes.append(f"{who}: {lat[who]['note']}")
    _latency_metrics("", lat["student"], metrics, missing, "student not timed")
    _latency_metrics("teacher_", lat["teacher"], metrics, missing, "teacher timing disabled (eval.time_teacher=false)")
    details["latency"] = lat

    # 4. Cost.
    tc = teacher_cost_per_1k(data["replay"], teacher.model, teacher.input_cost_per_token, teacher.output_cost_per_token)
    sc = student_cost_per_1k(cfg.student_usd_per_hour, metrics.get("throughput_rps"))
    train_wall = rd.stage("train").get("wall_s")
    train_usd = training_cost(train_wall, cfg.training_usd_per_hour if cfg.training_usd_per_hour is not None else cfg.student_usd_per_hour)
    be = break_even(tc["usd"], sc, train_usd, cfg.monthly_requests)
    metrics.update({
        "teacher_cost_per_1k_usd": tc["usd"], "cost_per_1k_usd": sc,
        "cost_ratio": (sc / tc["usd"]) if (sc is not None and tc["usd"]) else None,
        "training_cost_usd": train_usd, "cost_per_1k_with_training_usd": be["student_per_1k_with_training"],
        "break_even_requests": be["break_even_requests"], "payback_months": be["payback_months"],
    })
    if tc["usd"] is None:
        missing["teacher_cost_per_1k_usd"] = tc["source"]
    if metrics["cost_ratio"] is None:
        missing["cost_ratio"] = (tc["source"] if tc["usd"] is None else "teacher cost is 0" if tc["usd"] == 0
                                 else "student throughput not measured")
    if train_usd is None:
        missing["training_cost_usd"] = "no train stage wall_s in the manifest"
    timing_cost = None
    if lat["teacher"]:
        timing_cost = token_cost(teacher.model, lat["teacher"]["prompt_tokens"], lat["teacher"]["completion_tokens"],
                                 teacher.input_cost_per_token, teacher.output_cost_per_token)
    metrics["teacher_timing_cost_usd"] = timing_cost
    details["cost"] = {"teacher": tc, "break_even": be, "student_usd_per_hour": cfg.student_usd_per_hour,
                       "train_wall_s": train_wall,
                       "assumption": "student priced at full utilisation of one replica at the best measured throughput"}

    from student.fast_path import recorded, served_path

    served = served_path(rd.model_dir)  # the inference path every server of this model loads (fp32 / int8)
    fp = recorded(rd.model_dir)
    notes.append(f"student served: {served}" + (f" ({fp['reason']})" if fp and fp.get("reason") else " (no fast-path choice recorded)"))
    report: dict[str, Any] = {
        "run_id": rd.run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "student": {"model": student_model, "base_url": student_base_url, "kind": kind, "served": served},
        "teacher": {"model": teacher.model, "api_base": teacher.api_base},
        "counts": counts, "task_kind": details.get("task_kind"),
        "metrics": metrics, "intervals": intervals, "missing": missing, "details": details,
        "confidence": cfg.confidence, "notes": notes,
        "prompted_baseline": None, "judge": None,
        "config": cfg.model_dump(mode="json"),
    }

    # 5. The cascade: threshold chosen on the student's validation split, measured on the holdout.
    if cascade is not None and cascade.enabled:
        from eval.cascade_eval import attach_cascade

        attach_cascade(cascade, rd, report, items, student_out, samples=cfg.bootstrap_samples, seed=cfg.seed)

    # 6. Optional: pairwise judge, prompted baseline.
    if cfg.judge.enabled:
        from eval.judge import judge_report

        judge_report(cfg, report, conversations, teacher_out, student_out)
    from eval.baseline import attach_baseline, no_baseline

    if baseline_predict is not None:
        attach_baseline(cfg, rd, report, baseline_predict, few_shot=baseline_few_shot)
    else:
        report["prompted_baseline"] = no_baseline()
        for key in ("prompted_baseline_agreement", "agreement_vs_prompted_baseline_diff"):
            missing[key] = "no prompted baseline was run"
    from eval.probe_baseline import attach_probe_baseline

    attach_probe_baseline(cfg, rd, report)  # classifier students: the linear probe saved by the train stage

    write_report(cfg, rd, report)
    rd.record_stage(
        "eval", counts=counts,
        figures={k: metrics.get(k) for k in ("agreement", "latency_p95_ms", "teacher_latency_p95_ms", "cost_per_1k_usd",
                                             "teacher_cost_per_1k_usd", "cost_ratio")
                 + (("cascade_threshold", "cascade_agreement", "coverage", "cascade_cost_ratio") if "cascade" in report else ())},
        inputs=[rd.filter_kept, rd.replay_responses],
        outputs=[rd.eval_report, rd.predictions], config=cfg, started=t0)
    return report


def evaluate_run(cfg: EvalConfig, rd: RunDir, teacher: TeacherConfig,
                 baseline_predict: Callable[[list[dict]], str] | None = None, cascade: CascadeConfig | None = None) -> dict:
    """Rerun the eval stage alone from a run directory (`distill evaluate --run <dir>`): serves
    <run>/train/model in its own process (student.serve_process: a client in the server's process
    would share its interpreter lock and time itself), then calls run_eval. The teacher is called
    where `teacher` says (the app shell starts the reference teacher for demos; eval never does)."""
    from contextlib import ExitStack

    from student.serve_process import ChildStudentServer

    model_dir = rd.model_dir
    if not (model_dir / STUDENT_META).is_file():
        raise DistillError(f"no saved student at {model_dir} (run the train stage first)")
    with ExitStack() as stack:
        api_key = _secret(cfg.student_api_key)
        student_url = stack.enter_context(ChildStudentServer(model_dir, api_key=api_key, model_name="student"))
        return run_eval(cfg, rd, teacher, student_url, "student", baseline_predict=baseline_predict, cascade=cascade)
