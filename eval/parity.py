"""All parity metrics for one set of (student, teacher[, gold]) outputs, with bootstrap intervals.

Returns flat `metrics` / `intervals` dicts (what the gate reads), `missing` reasons for metrics
that do not apply, and `details` (per-field, per-label tables for the report and plots).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from eval import metrics as M
from eval.bootstrap import bootstrap_macro_f1, bootstrap_mean


def task_kind(teacher: Sequence[str | None], max_classes: int, student_kind: str | None = None) -> str:
    """'json' when most teacher outputs are JSON, 'classification' when they are few repeated
    labels (or the student is a classifier), else 'text'. (JSON outputs can also get label
    metrics: see is_classification.)"""
    t = [x for x in teacher if x is not None]
    if t and M.json_validity(t).mean() >= 0.5:
        return "json"
    if student_kind == "classifier" or M.looks_like_classification(t, max_classes):
        return "classification"
    return "text"


def parity_metrics(
    student: Sequence[str | None],
    teacher: Sequence[str | None],
    gold: Sequence[str | None] | None = None,
    *,
    max_classes: int = 200,
    student_kind: str | None = None,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    intervals: dict[str, list[float]] = {}
    missing: dict[str, str] = {}
    details: dict[str, Any] = {}

    def put(name: str, values: np.ndarray) -> None:
        b = bootstrap_mean(values, samples=samples, confidence=confidence, seed=seed)
        metrics[name] = b["value"]
        if b["ci"] is not None:
            intervals[name] = b["ci"]

    kind = task_kind(teacher, max_classes, student_kind)
    details["task_kind"] = kind
    hits = M.exact_match(student, teacher)
    details["agreement_hits"] = hits.tolist()
    put("agreement", hits)

    metrics["json_valid_rate"] = float(M.json_validity(student).mean()) if len(student) else None
    metrics["teacher_json_valid_rate"] = float(M.json_validity(teacher).mean()) if len(teacher) else None

    fa = M.field_accuracy(student, teacher)
    if fa["items"]:
        put("field_accuracy", fa["per_item"])
        # Micro-average over (item, field) pairs is the headline; per-item mean only for the interval.
        metrics["field_accuracy"] = fa["overall"]
        details["field_accuracy"] = fa["per_field"]
    else:
        missing["field_accuracy"] = "teacher outputs are not JSON objects"

    # Label sets and extracted values (eval/metrics.py structured_metrics): per field micro/macro F1
    # and exact match, e.g. intents_micro_f1 and slots_micro_f1 for NLU++-shaped answers.
    structured = M.structured_metrics(student, teacher)
    for f, r in structured.items():
        metrics[f"{f}_micro_f1"], metrics[f"{f}_macro_f1"] = r["micro_f1"], r["macro_f1"]
        put(f"{f}_exact", r["per_item_exact"])
    if structured:
        details["structured_fields"] = {f: {k: v for k, v in r.items() if k != "per_item_exact"} for f, r in structured.items()}

    label_set = None
    # A classifier student of label sets / spans is scored per field above, not as one label per answer.
    classification = kind == "classification" or (student_kind == "classifier" and not structured) or M.looks_like_classification(teacher, max_classes)
    details["classification"] = bool(classification)
    if classification:
        lm = M.label_metrics(student, teacher)
        label_set = set(lm["labels"]) if kind == "classification" else None
        metrics["label_accuracy"] = lm["accuracy"]
        intervals["label_accuracy"] = intervals.get("agreement")  # same hits: label equality is output equality
        y_true = [M.normalize_label(t) for t in teacher]
        y_pred = [M.normalize_label(s) for s in student]
        f1 = bootstrap_macro_f1(y_true, y_pred, samples=max(samples // 2, 100), confidence=confidence, seed=seed)
        metrics["macro_f1"] = lm["macro_f1"]  # sklearn's value is the headline
        if f1["ci"] is not None:
            intervals["macro_f1"] = f1["ci"]
        details["per_label_accuracy"] = lm["per_label_accuracy"]
    else:
        for k in ("label_accuracy", "macro_f1"):
            missing[k] = "teacher outputs are not a small set of repeated labels"

    if kind == "text":
        put("chrf", M.chrf_scores(student, teacher))
    else:
        missing["chrf"] = f"task is {kind}; chrF is reported for free text only"

    put("format_compliance", M.format_compliance(student, teacher, label_set))
    metrics["length_ratio"] = M.length_ratio(student, teacher)

    if gold is not None:
        idx = [i for i, g in enumerate(gold) if g is not None]
        if idx:
            put("gold_agreement", M.exact_match([student[i] for i in idx], [gold[i] for i in idx]))
            put("teacher_gold_agreement", M.exact_match([teacher[i] for i in idx], [gold[i] for i in idx]))
            details["gold_items"] = len(idx)
    if "gold_agreement" not in metrics:
        missing["gold_agreement"] = "holdout records carry no gold label or recorded response"
        missing["teacher_gold_agreement"] = missing["gold_agreement"]

    return {"metrics": metrics, "intervals": {k: v for k, v in intervals.items() if v is not None}, "missing": missing, "details": details}
