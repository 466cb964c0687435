"""The eval stage's cascade section (cascade.enabled): the student's confidences on its own
validation split choose the threshold, the holdout only measures it.

- Validation pairs: <run>/train/val_scores.jsonl, written by the train stage
  (student.train.calibrate_and_score) on the path the server runs (int8 moves the confidences).
  A run trained before that file existed gets them recomputed here the same way: the val split is rebuilt from the kept TRAINING records with the
  train stage's own fraction and salt (student.train.split_validation), never from the holdout.
- Holdout pairs: the student's calibrated confidence for every holdout item, computed in this
  process with predict_scored on the path the server runs (student/fast_path.py); the served
  answers come from a child process whose responses carry no confidence. Each row of
  eval/predictions.jsonl gains `confidence` and `cascade` (who would answer it).
- "agrees" is the eval's own per-item agreement (eval.metrics.exact_match) on both splits.
Writes report["cascade"] and flat metrics the gate reads: cascade_agreement (its interval too),
coverage, cascade_cost_ratio, ...; an unreachable target leaves them None with the reason.
"""
from __future__ import annotations

import json
from typing import Any

from core.base import read_jsonl, write_jsonl
from core.rundir import RunDir
from eval.cascade import evaluate_cascade, mix_latency, summary_line
from eval.cascade_config import CascadeConfig
from eval.metrics import exact_match

METRICS = ("cascade_threshold", "cascade_agreement", "coverage", "teacher_share", "cascade_cost_per_1k_usd", "cascade_cost_ratio",
           "cascade_latency_p50_ms", "cascade_latency_p95_ms")
CHUNK = 256  # holdout items per predict_scored call


def load_local_student(rd: RunDir) -> Any:
    """The run's student in this process, on the inference path its servers run (fp32 / int8)."""
    from student.fast_path import load_served

    return load_served(rd.model_dir)


def recompute_val_scores(rd: RunDir, student: Any) -> list[dict]:
    """val_scores.jsonl's rows for a run whose train stage did not write them (see module doc)."""
    from student.train import calibrate_and_score, load_examples, split_validation

    try:
        fraction = json.loads(rd.train_metrics.read_text()).get("config", {}).get("val_fraction", 0.1)
    except (OSError, ValueError):
        fraction = 0.1
    train, val = split_validation(load_examples(rd), fraction)
    return calibrate_and_score(student, val, len(train))


def validation_pairs(rows: list[dict]) -> tuple[list[float], list[bool]]:
    agrees = exact_match([r["answer"] for r in rows], [r["target"] for r in rows]).astype(bool).tolist()
    return [float(r["confidence"]) for r in rows], agrees


def score_holdout(student: Any, conversations: list[list[dict]]) -> list[tuple[str, float, float | None]]:
    """(answer, calibrated confidence, confidence before calibration) per holdout conversation,
    predict_scored in chunks. The uncalibrated one comes from the same pass for a classifier
    (predict_scored_raw); a causal LM would need a second generation pass for it: None."""
    raw = getattr(student, "predict_scored_raw", None)
    out: list[tuple[str, float, float | None]] = []
    for i in range(0, len(conversations), CHUNK):
        part = conversations[i:i + CHUNK]
        out += raw(part) if raw is not None else [(t, c, None) for t, c in student.predict_scored(part)]
    return out


def cascade_figures(cfg: CascadeConfig, val_conf: list[float], val_agrees: list[bool], hold_conf: list[float], hold_agrees: list[bool], *,
                    student_cost_per_1k: float | None, teacher_cost_per_1k: float | None, student_latency_ms: list[float] | None,
                    teacher_latency_ms: list[float] | None, samples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """evaluate_cascade (threshold from the validation pairs only) plus the latency of the mix:
    the eval times student and teacher separately, so the mix resamples the two distributions."""
    res = evaluate_cascade(val_conf, val_agrees, hold_conf, hold_agrees, cfg, student_cost_per_1k=student_cost_per_1k,
                           teacher_cost_per_1k=teacher_cost_per_1k, bootstrap_samples=samples, seed=seed)
    if res.get("reachable") and student_latency_ms and teacher_latency_ms is not None:
        lat = mix_latency(student_latency_ms, teacher_latency_ms or [], res["teacher_share"], seed=seed)
        res.update({"latency_p50_ms": lat["p50_ms"], "latency_p95_ms": lat["p95_ms"], "latency_from": "distributions"})
    return res


def _samples(report: dict, who: str) -> list[float] | None:
    m = (report.get("details", {}).get("latency") or {}).get(who)
    return (m or {}).get("levels", {}).get("c1", {}).get("latency_samples_ms") or None


def attach_cascade(cfg: CascadeConfig, rd: RunDir, report: dict, items: list[dict], served: list[str | None], *,
                   samples: int = 2000, seed: int = 0, student: Any | None = None) -> dict[str, Any]:
    """Compute the cascade section into `report` (see module doc); returns it."""
    from student.calibration import ece

    metrics, intervals, missing = report["metrics"], report["intervals"], report["missing"]
    if rd.val_scores.is_file():
        val_rows, val_source = list(read_jsonl(rd.val_scores)), "train stage (train/val_scores.jsonl)"
    else:
        student = student or load_local_student(rd)
        val_rows, val_source = recompute_val_scores(rd, student), "recomputed by the eval (the run predates train/val_scores.jsonl)"
    val_conf, val_agrees = validation_pairs(val_rows)
    student = student or load_local_student(rd)
    conversations = [r["messages"] for r in items]
    teacher_out = [r["response"] for r in items]
    scored = score_holdout(student, conversations)
    hold_conf = [c for _, c, _ in scored]
    hold_agrees = exact_match([t for t, _, _ in scored], teacher_out).astype(bool).tolist()
    res = cascade_figures(cfg, val_conf, val_agrees, hold_conf, hold_agrees, student_cost_per_1k=metrics.get("cost_per_1k_usd"),
                          teacher_cost_per_1k=metrics.get("teacher_cost_per_1k_usd"), student_latency_ms=_samples(report, "student"),
                          teacher_latency_ms=_samples(report, "teacher"), samples=samples, seed=seed)
    cal = (getattr(student, "calibration", None) or getattr(student, "structured_calibration", None)
           or (getattr(student, "meta", None) or {}).get("calibration") or {})
    before = None
    if getattr(student, "kind", None) == "classifier" and cal:
        before = ece([r for _, _, r in scored], hold_agrees)
    res.update({
        "val": {"n": len(val_rows), "source": val_source, "student_agreement": (sum(val_agrees) / len(val_agrees)) if val_agrees else None},
        "calibration": {"method": cal.get("method"), "fitted_on": cal.get("fitted_on"), "temperature": cal.get("temperature"),
                        "binning": cal.get("ece_binning", "equal_mass"), "val_ece_before": cal.get("ece_before"), "val_ece_after": cal.get("ece_after"),
                        "holdout_ece_before": before, "holdout_ece_after": ece(hold_conf, hold_agrees)},
        "scored_vs_served_mismatches": sum(t != s for (t, _, _), s in zip(scored, served)),
        "config": cfg.model_dump(mode="json"),
    })
    res["summary"] = summary_line(res)
    report["cascade"] = res
    _flat_metrics(res, metrics, intervals, missing)
    if res["scored_vs_served_mismatches"]:
        report.setdefault("notes", []).append(f"cascade: {res['scored_vs_served_mismatches']} holdout answers scored in process differ "
                                              "from the served ones (the cascade figures use the scored answers)")
    answered = [res.get("threshold") is not None and c >= res["threshold"] for c in hold_conf]
    rows = list(read_jsonl(rd.predictions)) if rd.predictions.is_file() else []
    if len(rows) == len(items):
        write_jsonl(rd.predictions, ({**r, "confidence": round(c, 8), "cascade": "student" if a else "teacher"}
                                     for r, c, a in zip(rows, hold_conf, answered)))
    return res


def _flat_metrics(res: dict, metrics: dict, intervals: dict, missing: dict) -> None:
    cal = res["calibration"]
    metrics.update({"ece_before": cal["holdout_ece_before"], "ece_after": cal["holdout_ece_after"]})
    if cal["holdout_ece_before"] is None:
        missing["ece_before"] = ("the student has no calibration" if not cal.get("method") else
                                 "causal LM: the uncalibrated score would need a second generation pass; see cascade.calibration.val_ece_before")
    if not res.get("reachable"):
        for k in METRICS:
            metrics[k] = None
            missing[k] = f"cascade target unreachable: {res.get('reason')}"
        return
    metrics.update({"cascade_threshold": res["threshold"], "cascade_agreement": res["cascade_agreement"], "coverage": res["coverage"],
                    "teacher_share": res["teacher_share"], "cascade_cost_per_1k_usd": res.get("cost_per_1k_usd"),
                    "cascade_cost_ratio": res.get("cascade_cost_ratio"), "cascade_latency_p50_ms": res.get("latency_p50_ms"),
                    "cascade_latency_p95_ms": res.get("latency_p95_ms")})
    if res.get("cascade_agreement_ci"):
        intervals["cascade_agreement"] = list(res["cascade_agreement_ci"])
    for k in ("cascade_cost_per_1k_usd", "cascade_cost_ratio"):
        if metrics[k] is None:
            missing[k] = "student or teacher cost per 1k not measured"
    for k in ("cascade_latency_p50_ms", "cascade_latency_p95_ms"):
        if metrics[k] is None:
            missing[k] = "student or teacher latency not timed"

