"""The classifier student's answer layout beyond one categorical field: the teacher's JSON as
categorical, set and span leaves (core/answer_shape.py), parsed into training targets and
rendered back into the teacher's exact JSON (key order, list order, omitted keys, its spacing).
"""
from __future__ import annotations

import json
from typing import Any

from core.answer_shape import ABSENT, answer_shape, encoder_fit, find_span, label
from student.classifier_format import OutputFormat, detect_format


class Layout:
    """Leaves by type (in the teacher's key order) + the JSON style they are rendered in."""

    def __init__(self, root: dict[str, Any], style: OutputFormat):
        from core.answer_shape import leaves

        self.root, self.style = root, style
        self.leaves = leaves(root)
        self.cats = {lf["name"]: lf["labels"] for lf in self.leaves if lf["type"] == "categorical"}
        self.sets = {lf["name"]: lf["labels"] for lf in self.leaves if lf["type"] == "set"}
        self.spans = [lf["name"] for lf in self.leaves if lf["type"] == "span"]
        self._leaf = {lf["name"]: lf for lf in self.leaves}

    @classmethod
    def detect(cls, outputs: list[str], inputs: list[str], max_labels: int, min_per_label: float) -> tuple["Layout | None", dict[str, Any]]:
        """(layout, fit) when the encoder can produce these answers, else (None, fit naming the field)."""
        shape = answer_shape(outputs, inputs, max_labels, min_per_label)
        fit = encoder_fit(shape)
        if not fit["encoder"] or shape["mode"] != "json":
            return None, fit
        return cls(shape["root"], detect_format(outputs)), fit

    # ---- teacher text -> targets
    def targets_of(self, text: str, user: str) -> dict[str, Any] | None:
        """{leaf: label (categorical) | [labels] (set) | (start, end, how) or None (span) | "unmatched"}
        for a teacher answer, span offsets in `user`; None when the answer does not fit the layout."""
        from core.answer_shape import parse_object

        obj = parse_object(text)
        if obj is None:
            return None
        out: dict[str, Any] = {}
        for lf in self.leaves:
            node: Any = obj
            for k in lf["path"][:-1]:
                node = node.get(k) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                return None
            present = lf["path"][-1] in node
            v = node.get(lf["path"][-1])
            t = lf["type"]
            if t == "categorical":
                out[lf["name"]] = label(v) if present else ABSENT
            elif t == "set":
                if present and not isinstance(v, list):
                    return None
                out[lf["name"]] = [label(x) for x in v] if present else []
            else:  # span
                if not present or v is None or v == "":
                    out[lf["name"]] = None
                elif not isinstance(v, str):
                    return None
                else:
                    out[lf["name"]] = find_span(v, user) or "unmatched"
        return out

    # ---- predictions -> teacher text
    def render(self, values: dict[str, Any]) -> str:
        """values: {leaf: label | [labels] | span text or None}."""
        s = self.style
        body = json.dumps(self._build(self.root, (), values), ensure_ascii=s.ensure_ascii, indent=s.indent, separators=(s.item_sep, s.key_sep))
        return s.prefix + body + s.suffix

    def _build(self, node: dict[str, Any], path: tuple[str, ...], values: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for k in node["keys"]:
            child, name = node["children"][k], ".".join((*path, k))
            if child["type"] == "object":
                obj[k] = self._build(child, (*path, k), values)
                continue
            v = values[name]
            if child["type"] == "categorical":
                if v != ABSENT:
                    obj[k] = json.loads(v)
            elif child["type"] == "set":
                if v or not child.get("optional"):
                    rank = {lab: i for i, lab in enumerate(child["label_order"])}
                    obj[k] = [json.loads(lab) for lab in sorted(v, key=lambda lab: rank.get(lab, len(rank)))]
            elif v is not None:
                obj[k] = v
            elif child["absent"] == "null":
                obj[k] = None
            elif child["absent"] == "empty":
                obj[k] = ""
        return obj

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "style": self.style.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Layout":
        return cls(d["root"], OutputFormat(**d["style"]))


def align_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Token positions (first, last) covering characters [start, end) of the input, from the
    tokenizer's offset mapping (special tokens have (0, 0)); None if truncation cut the span off."""
    real = [(i, a, b) for i, (a, b) in enumerate(offsets) if b > a]
    if not real or real[-1][2] < end:
        return None
    first = next(i for i, a, b in real if b > start)
    last = max(i for i, a, b in real if a < end)
    return (first, last) if last >= first else None
