"""Parity metrics: student output vs teacher output (or vs a gold label), one small unit each.

Per-item functions return arrays (one value per item) so bootstrap.py can put an interval on
any of them; aggregate helpers return plain floats. None as an output means "no answer"
(the call failed) and never matches anything.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

_MISSING = object()


def parse_output(text: str | None) -> Any:
    """The JSON value of an output, or _MISSING when it is not JSON (or is None).

    Only objects/arrays count as JSON outputs: a bare label like `42` or `"true"` parsing as a
    scalar would make "42" and "42.0" agree, which is not what an exact-match user expects.
    """
    if text is None:
        return _MISSING
    s = text.strip()
    if not s or s[0] not in "[{":
        return _MISSING
    try:
        return json.loads(s)
    except (ValueError, RecursionError):
        return _MISSING


def is_json(text: str | None) -> bool:
    return parse_output(text) is not _MISSING


def outputs_match(a: str | None, b: str | None) -> bool:
    """Exact match of the parsed JSON when both are JSON (key order/whitespace ignored),
    else exact string match after stripping surrounding whitespace."""
    if a is None or b is None:
        return False
    pa, pb = parse_output(a), parse_output(b)
    if pa is not _MISSING and pb is not _MISSING:
        return pa == pb
    return a.strip() == b.strip()


def exact_match(student: Sequence[str | None], reference: Sequence[str | None]) -> np.ndarray:
    """1.0 where the student's output matches the reference (outputs_match), per item."""
    return np.array([float(outputs_match(s, r)) for s, r in zip(student, reference, strict=True)])


def json_validity(outputs: Sequence[str | None]) -> np.ndarray:
    """1.0 where the output parses as a JSON object/array, per item."""
    return np.array([float(is_json(o)) for o in outputs])


def field_accuracy(student: Sequence[str | None], teacher: Sequence[str | None]) -> dict[str, Any]:
    """Per top-level field of the teacher's JSON objects: share of items where the student has
    the same value. Items whose teacher output is not a JSON object are skipped.

    Returns {"per_field": {field: acc}, "overall": micro-average over (item, field) pairs or None,
    "per_item": array of per-item field-accuracy (for bootstrapping), "items": n used}.
    """
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    per_item: list[float] = []
    for s, t in zip(student, teacher, strict=True):
        pt = parse_output(t)
        if not isinstance(pt, dict) or not pt:
            continue
        ps = parse_output(s)
        ps = ps if isinstance(ps, dict) else {}
        ok = 0
        for k, v in pt.items():
            totals[k] += 1
            if k in ps and ps[k] == v:
                hits[k] += 1
                ok += 1
        per_item.append(ok / len(pt))
    n_pairs = sum(totals.values())
    return {
        "per_field": {k: hits[k] / totals[k] for k in sorted(totals)},
        "overall": (sum(hits.values()) / n_pairs) if n_pairs else None,
        "per_item": np.array(per_item),
        "items": len(per_item),
    }


def normalize_label(text: str | None) -> str | None:
    """Canonical label string: parsed JSON re-dumped with sorted keys, else the stripped text."""
    if text is None:
        return None
    p = parse_output(text)
    if p is not _MISSING:
        return json.dumps(p, sort_keys=True, separators=(",", ":"))
    return text.strip()


def looks_like_classification(teacher: Sequence[str | None], max_classes: int) -> bool:
    """Classifier-style task: few distinct teacher outputs that repeat (labels, not free text)."""
    labels = [normalize_label(t) for t in teacher if t is not None]
    if len(labels) < 2:
        return False
    distinct = len(set(labels))
    return distinct <= max_classes and distinct <= len(labels) / 2


def label_metrics(student: Sequence[str | None], teacher: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy and macro-F1 (sklearn) with the teacher's labels as truth.

    Macro-F1 averages over the labels the teacher used; a student label outside that set counts
    as a wrong prediction (it lowers recall of the true class) without adding a class.
    """
    from sklearn.metrics import accuracy_score, f1_score

    y_true = [normalize_label(t) for t in teacher]
    y_pred = [normalize_label(s) if s is not None else "<no answer>" for s in student]
    labels = sorted(set(y_true))
    per_label = {}
    for lab in labels:
        idx = [i for i, t in enumerate(y_true) if t == lab]
        per_label[lab] = sum(y_pred[i] == lab for i in idx) / len(idx)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "labels": labels,
        "per_label_accuracy": per_label,
    }


def chrf_scores(student: Sequence[str | None], teacher: Sequence[str | None]) -> np.ndarray:
    """Sentence-level chrF (sacrebleu, 0-100) of each student output against the teacher's."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    return np.array([chrf.sentence_score(s or "", [t or ""]).score for s, t in zip(student, teacher, strict=True)])


def format_compliance(student: Sequence[str | None], teacher: Sequence[str | None], label_set: set[str] | None = None) -> np.ndarray:
    """1.0 where the student's output has the teacher's format, per item:
    JSON object with the same keys / JSON array when the teacher's is; a known label when the
    task is classification (label_set given); otherwise a non-empty, non-JSON text."""
    out = []
    for s, t in zip(student, teacher, strict=True):
        if s is None:
            out.append(0.0)
            continue
        pt, ps = parse_output(t), parse_output(s)
        if isinstance(pt, dict):
            ok = isinstance(ps, dict) and set(ps) == set(pt)
        elif isinstance(pt, list):
            ok = isinstance(ps, list)
        elif label_set is not None:
            ok = normalize_label(s) in label_set
        else:
            ok = ps is _MISSING and bool(s.strip())
        out.append(float(ok))
    return np.array(out)


def length_ratio(student: Sequence[str | None], teacher: Sequence[str | None]) -> float | None:
    """Total student characters / total teacher characters (1.0 = same length; missing = 0)."""
    t = sum(len(x or "") for x in teacher)
    if t == 0:
        return None
    return sum(len(x or "") for x in student) / t


def gold_reference(record: dict, metadata_keys: Sequence[str]) -> str | None:
    """A gold answer for a holdout ingest record: a metadata gold label, else the recorded
    production response. Non-string gold labels are compared as their JSON text."""
    meta = record.get("metadata") or {}
    for k in metadata_keys:
        if k in meta and meta[k] is not None:
            v = meta[k]
            return v if isinstance(v, str) else json.dumps(v)
    resp = record.get("response")
    return resp if isinstance(resp, str) else None


def _f1_counts(tp: int, fp: int, fn: int) -> float | None:
    return 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else None


def _pair_metrics(pred: list[set], true: list[set], key) -> dict[str, Any]:
    """Micro-F1 over all (item, element) pairs, macro-F1 over `key(element)` classes, exact-set rate."""
    tp = fp = fn = 0
    per: dict[Any, list[int]] = {}
    for p, t in zip(pred, true, strict=True):
        tp, fp, fn = tp + len(p & t), fp + len(p - t), fn + len(t - p)
        for e, where in [(e, 0) for e in p & t] + [(e, 1) for e in p - t] + [(e, 2) for e in t - p]:
            per.setdefault(key(e), [0, 0, 0])[where] += 1
    truth_classes = {key(e) for t in true for e in t}
    per_f1 = {str(c): _f1_counts(*per[c]) or 0.0 for c in sorted(per, key=str) if c in truth_classes}
    return {"micro_f1": _f1_counts(tp, fp, fn), "macro_f1": float(np.mean(list(per_f1.values()))) if per_f1 else None,
            "exact": float(np.mean([p == t for p, t in zip(pred, true)])) if true else None, "per_class_f1": per_f1,
            "per_item_exact": np.array([float(p == t) for p, t in zip(pred, true)]), "items": len(true)}


def _items_of(student: Sequence[str | None], teacher: Sequence[str | None], field: str) -> list[tuple[Any, Any]]:
    """(student value, teacher value) of `field` over items whose teacher output is a JSON object
    holding it; a student output that is not an object (or lacks the field) gives None."""
    out = []
    for s, t in zip(student, teacher, strict=True):
        pt = parse_output(t)
        if not isinstance(pt, dict) or field not in pt:
            continue
        ps = parse_output(s)
        out.append((ps.get(field) if isinstance(ps, dict) else None, pt[field]))
    return out


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def set_field_metrics(student: Sequence[str | None], teacher: Sequence[str | None], field: str) -> dict[str, Any]:
    """A list-valued (multi-label) field: micro-F1 over (item, label), macro-F1 over the teacher's
    labels, exact-set match; a missing or non-list student value is the empty set."""
    pairs = _items_of(student, teacher, field)
    pred = [{_hashable(x) for x in s} if isinstance(s, list) else set() for s, _ in pairs]
    true = [{_hashable(x) for x in t} if isinstance(t, list) else set() for _, t in pairs]
    return _pair_metrics(pred, true, key=lambda e: e)


def span_field_metrics(student: Sequence[str | None], teacher: Sequence[str | None], field: str) -> dict[str, Any]:
    """An object-valued field of extracted values (slots: {name: span}): micro-F1 over
    (item, name, value) with the value matched exactly, macro-F1 over names, exact-object match."""
    pairs = _items_of(student, teacher, field)
    pred = [{(k, _hashable(v)) for k, v in s.items()} if isinstance(s, dict) else set() for s, _ in pairs]
    true = [{(k, _hashable(v)) for k, v in t.items()} if isinstance(t, dict) else set() for _, t in pairs]
    return _pair_metrics(pred, true, key=lambda e: e[0])


def structured_fields(teacher: Sequence[str | None]) -> dict[str, str]:
    """Top-level fields of the teacher's JSON objects that are label sets ("set": a list of
    scalars) or extracted values ("spans": an object of scalars), in at least half the objects
    holding the field."""
    kinds: dict[str, Counter] = {}
    for t in teacher:
        pt = parse_output(t)
        if not isinstance(pt, dict):
            continue
        for k, v in pt.items():
            c = kinds.setdefault(k, Counter())
            if isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v):
                c["set"] += 1
            elif isinstance(v, dict) and all(not isinstance(x, (list, dict)) for x in v.values()):
                c["spans"] += 1
            else:
                c["other"] += 1
    out = {}
    for k, c in kinds.items():
        kind, n = c.most_common(1)[0]
        if kind != "other" and n >= 0.5 * sum(c.values()):
            out[k] = kind
    return out


def structured_metrics(student: Sequence[str | None], teacher: Sequence[str | None]) -> dict[str, dict[str, Any]]:
    """{field: set_field_metrics or span_field_metrics (with "kind")} for structured_fields."""
    return {f: {"kind": kind, **(set_field_metrics if kind == "set" else span_field_metrics)(student, teacher, f)}
            for f, kind in structured_fields(teacher).items()}
