"""The shape of the teacher's answers, field by field: what an encoder student can produce.

Pure Python (no torch, no stage package): the student's `kind: auto` and the teacher's data report
both read it, so the report can say which field decided the kind before anything trains.

Each leaf of the teacher's JSON objects gets one type, judged on all kept outputs:
- categorical: one of a bounded set of values (a missing key is one more value, ABSENT);
- set: a list of distinct items from a bounded vocabulary (multi-label), sorted or in a learned order;
- span: a string found in the user's message (exactly, or up to case/spacing: see `find_span`);
- free: anything else (free text, numbers not in the input, lists with repeats, mixed types):
  the encoder cannot produce it, so kind auto picks the causal LM and names this field.
Objects nest (`{"slots": {"date": ..., "time": ...}}`); a key the teacher sometimes leaves out is
omitted again when its value is absent. Labels are canonical JSON of the value (as in
student/classifier_format.py), so "3", 3 and true stay distinct and round-trip.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

ABSENT = "<absent>"  # the label of a categorical key the teacher left out (never canonical JSON)
SPAN_MIN_SHARE = 0.9  # share of a string field's values that must be found in the input to be a span
_WS = re.compile(r"\s+")


def last_user_text(messages: list[dict]) -> str:
    """The last user turn (what the encoder reads); falls back to all non-system text."""
    for m in reversed(messages):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "system")


def label(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def parse_object(text: str) -> dict | None:
    """The JSON object in `text` (text around it allowed), or None."""
    i, j = text.find("{"), text.rfind("}")
    if i < 0 or j < i:
        return None
    try:
        obj = json.loads(text[i : j + 1])
    except (json.JSONDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def find_span(value: str, text: str) -> tuple[int, int, str] | None:
    """(start, end, how) of `value` in `text`: how = "exact", or "fuzzy" when it matches only up to
    letter case and runs of whitespace (a teacher that "copied" "Next  Week" from "next week").
    The returned offsets are always the input's own characters."""
    if not value:
        return None
    i = text.find(value)
    if i >= 0:
        return i, i + len(value), "exact"
    # Case- and whitespace-insensitive: a regex of the value's words joined by \s+.
    words = value.split()
    if not words:
        return None
    m = re.search(r"\s+".join(re.escape(w) for w in words), text, flags=re.IGNORECASE)
    return (m.start(), m.end(), "fuzzy") if m else None


def consistent_order(sequences: list[list[str]]) -> list[str]:
    """One total order agreeing with the order items appear in (majority vote per pair, ties and
    cycles broken by first appearance): the teacher's key order, or its order of list items."""
    first: dict[str, int] = {}
    before: Counter = Counter()
    for seq in sequences:
        for n, a in enumerate(seq):
            first.setdefault(a, len(first))
            for b in seq[n + 1 :]:
                before[(a, b)] += 1
    items = sorted(first, key=first.get)
    # Greedy topological order: repeatedly take the earliest-seen item no remaining item must precede.
    out: list[str] = []
    left = list(items)
    while left:
        pick = next((a for a in left if not any(before[(b, a)] > before[(a, b)] for b in left if b != a)), left[0])
        out.append(pick)
        left.remove(pick)
    return out


def _is_sorted(items: list) -> bool:
    try:
        return items == sorted(items)
    except TypeError:
        return False


def _leaf(values: list[Any], present: int, n: int, inputs: list[str], max_labels: int, min_per_label: float) -> dict[str, Any]:
    """The type of one leaf from its present values (`present` of `n` parent objects had the key)."""
    types = {type(v).__name__ for v in values}
    optional = present < n
    if types <= {"list"}:
        flat = [x for v in values for x in v]
        if any(isinstance(x, (dict, list)) for x in flat):
            return {"type": "free", "reason": "a list of objects/lists"}
        if any(len({label(x) for x in v}) < len(v) for v in values):
            return {"type": "free", "reason": "a list with repeated items (not a set)"}
        labels = Counter(label(x) for x in flat)
        if not labels or len(labels) > max_labels or len(flat) / len(labels) < min_per_label:
            return {"type": "free", "reason": f"a list of {len(labels)} distinct items, too many for a label set (max {max_labels}, >= {min_per_label} examples each)"}
        if optional and any(not v for v in values):
            return {"type": "free", "reason": "a list sometimes omitted and sometimes empty"}
        ordered = all(_is_sorted(v) for v in values)
        order = sorted(labels, key=lambda lab: json.loads(lab)) if ordered else consistent_order([[label(x) for x in v] for v in values])
        return {"type": "set", "labels": sorted(labels), "order": "sorted" if ordered else "learned", "label_order": order, "optional": optional}
    if types <= {"str", "NoneType"} and "str" in types:
        strs = [(v, t) for v, t in zip(values, inputs) if isinstance(v, str)]
        found = [find_span(v, t) for v, t in strs]
        share = sum(f is not None for f in found) / len(strs)
        match = {"share_in_input": round(share, 4), "fuzzy": sum(1 for f in found if f and f[2] == "fuzzy"), "not_in_input": sum(f is None for f in found)}
        if share >= SPAN_MIN_SHARE:
            absent = "omit" if optional else ("null" if "NoneType" in types else ("empty" if "" in values else "omit"))
            if optional and "NoneType" in types:
                return {"type": "free", "reason": "a string sometimes omitted and sometimes null", **match}
            return {"type": "span", "absent": absent, **match}
        return {**_leaf_scalar(values, types, n, optional, max_labels, min_per_label, share), **match}
    return _leaf_scalar(values, types, n, optional, max_labels, min_per_label, None)


def _leaf_scalar(values: list[Any], types: set[str], n: int, optional: bool, max_labels: int, min_per_label: float, share: float | None) -> dict[str, Any]:
    present = len(values)
    if types <= {"str", "int", "float", "bool", "NoneType"}:
        labels = Counter(label(v) for v in values) + (Counter({ABSENT: n - present}) if optional else Counter())
        if len(labels) <= max_labels and n / len(labels) >= min_per_label:
            return {"type": "categorical", "labels": sorted(labels), "optional": optional}
        what = (f"strings, {share:.0%} found in the input (< {SPAN_MIN_SHARE:.0%}: free text)" if share is not None
                else "strings (free text)" if "str" in types else "numbers not in the input")
        return {"type": "free", "reason": f"{len(labels)} distinct {what}"}
    return {"type": "free", "reason": f"values of mixed types ({', '.join(sorted(types))})"}


def _object(objs: list[dict], inputs: list[str], max_labels: int, min_per_label: float) -> dict[str, Any]:
    n = len(objs)
    keys = consistent_order([list(o) for o in objs])
    children: dict[str, Any] = {}
    for k in keys:
        rows = [(o[k], t) for o, t in zip(objs, inputs) if k in o]
        values = [v for v, _ in rows]
        if values and all(isinstance(v, dict) for v in values):
            if len(values) < n:
                children[k] = {"type": "free", "reason": "an object the teacher sometimes leaves out"}
            else:
                children[k] = _object(values, [t for _, t in rows], max_labels, min_per_label)
        else:
            children[k] = _leaf(values, len(values), n, [t for _, t in rows], max_labels, min_per_label)
    return {"type": "object", "keys": keys, "children": children}


def answer_shape(outputs: list[str], inputs: list[str], max_labels: int = 500, min_per_label: float = 2.0) -> dict[str, Any]:
    """{"mode": "json"|"plain", "root": node, "leaves": [...]} for the teacher's outputs and the
    user messages they answer; plain outputs are one categorical leaf or free text."""
    objs = [parse_object(t) for t in outputs]
    if outputs and sum(o is not None and bool(o) for o in objs) >= 0.98 * len(outputs):
        if any(o is None or not o for o in objs):
            root = {"type": "free", "reason": f"{sum(o is None or not o for o in objs)} output(s) are not a JSON object"}
        else:
            root = _object(objs, inputs, max_labels, min_per_label)
        mode = "json"
    else:
        c = Counter(outputs)
        ok = bool(c) and len(c) <= max_labels and len(outputs) / len(c) >= min_per_label
        root = {"type": "categorical", "labels": sorted(c), "optional": False} if ok else {"type": "free", "reason": f"{len(c)} distinct plain-text outputs (free text)"}
        mode = "plain"
    return {"mode": mode, "root": root, "leaves": leaves(root)}


def leaves(node: dict[str, Any], path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """[{"path": [...], "name": "a.b", **leaf}] in the teacher's key order."""
    if node["type"] != "object":
        return [{"path": list(path), "name": ".".join(path) or "(output)", **node}]
    return [leaf for k in node["keys"] for leaf in leaves(node["children"][k], (*path, k))]


def encoder_fit(shape: dict[str, Any]) -> dict[str, Any]:
    """{"encoder": bool, "decided_by": field name or None, "reason", "types": {name: type}}:
    the encoder student can produce these answers iff no leaf is free."""
    types = {leaf["name"]: leaf["type"] for leaf in shape["leaves"]}
    free = [leaf for leaf in shape["leaves"] if leaf["type"] == "free"]
    if free:
        return {"encoder": False, "decided_by": free[0]["name"], "reason": free[0]["reason"], "types": types}
    return {"encoder": True, "decided_by": None, "reason": "every field is categorical, a label set or a span of the input", "types": types}


def span_summary(shape: dict[str, Any]) -> dict[str, int]:
    """Counts of span values matched exactly / only up to case or spacing / not found at all."""
    spans = [leaf for leaf in shape["leaves"] if leaf["type"] == "span"]
    return {"span_fields": len(spans), "fuzzy_matches": sum(s["fuzzy"] for s in spans), "not_in_input": sum(s["not_in_input"] for s in spans)}


def has_structure(outputs: list[str]) -> bool:
    """Any answer holding a list or an object as a value: a label set or nested fields, which a
    layout models per label / per leaf rather than as one label per distinct combination."""
    for t in outputs:
        obj = parse_object(t)
        if obj and any(isinstance(v, (list, dict)) for v in obj.values()):
            return True
    return False
