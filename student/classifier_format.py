"""The teacher's output format for the classifier student: bare labels or JSON objects of
categorical fields, detected from the teacher's own outputs and reproduced exactly (key order,
separators, indent, ASCII escaping, text around the object)."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

PLAIN = "__label__"  # the single field of a bare-label (non-JSON) output
_STYLES = [  # (item sep, key sep, indent) candidates, most common first
    (", ", ": ", None), (",", ":", None), (",", ": ", None), (", ", ":", None), (",", ": ", 2), (",", ": ", 4),
]


@dataclass
class OutputFormat:
    """How the teacher writes its answers: a bare label, or a JSON object in a fixed style."""

    mode: str  # "json" | "plain"
    fields: list[str]  # key order as the teacher writes it ([PLAIN] for plain)
    item_sep: str = ", "
    key_sep: str = ": "
    indent: int | None = None
    ensure_ascii: bool = False
    prefix: str = ""  # text around the object, e.g. "```json\n" ... "\n```"
    suffix: str = ""

    def labels_of(self, text: str) -> dict[str, str] | None:
        """Teacher text -> {field: label}; None if it does not fit this format."""
        if self.mode == "plain":
            return {PLAIN: text}
        obj = _parse_object(text)
        if obj is None or set(obj) != set(self.fields):
            return None
        return {k: _label(obj[k]) for k in self.fields}

    def render(self, labels: dict[str, str]) -> str:
        if self.mode == "plain":
            return labels[PLAIN]
        obj = {k: json.loads(labels[k]) for k in self.fields}
        body = json.dumps(obj, ensure_ascii=self.ensure_ascii, indent=self.indent, separators=(self.item_sep, self.key_sep))
        return self.prefix + body + self.suffix

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _label(value: Any) -> str:
    # Labels are canonical JSON of the value, so "3", 3 and true stay distinct and round-trip.
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _parse_object(text: str) -> dict | None:
    i, j = text.find("{"), text.rfind("}")
    if i < 0 or j < i:
        return None
    try:
        obj = json.loads(text[i : j + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and obj else None


def detect_format(outputs: list[str]) -> OutputFormat:
    """Infer the teacher's format from its outputs; "plain" unless (nearly) all are JSON objects."""
    objs = [_parse_object(t) for t in outputs]
    if not outputs or sum(o is not None for o in objs) < 0.98 * len(outputs):
        return OutputFormat("plain", [PLAIN])
    orders = Counter(tuple(o) for o in objs if o is not None)
    fields = list(orders.most_common(1)[0][0])
    # Every style that reproduces a text gets its vote (a one-key object cannot tell ", " from
    # ","; an ASCII-only text cannot tell ensure_ascii): the style matching most texts wins, ties
    # going to the more common style (candidate order).
    votes: Counter = Counter()
    for text, obj in zip(outputs[:1000], objs[:1000]):
        if obj is None:
            continue
        i, j = text.find("{"), text.rfind("}")
        for sep, ksep, ind in _STYLES:
            for asc in (False, True):
                if json.dumps(obj, ensure_ascii=asc, indent=ind, separators=(sep, ksep)) == text[i : j + 1]:
                    votes[(sep, ksep, ind, asc, text[:i], text[j + 1 :])] += 1
    if votes:
        rank = {k: n for n, k in enumerate(votes)}  # insertion order follows candidate order
        sep, ksep, ind, asc, pre, suf = max(votes, key=lambda k: (votes[k], -rank[k]))
    else:  # an unusual style: fall back to the common one rather than fail
        sep, ksep, ind, asc, pre, suf = ", ", ": ", None, False, "", ""
    return OutputFormat("json", fields, sep, ksep, ind, asc, pre, suf)


def categorical_labels(outputs: list[str], max_labels: int, min_per_label: float) -> tuple[OutputFormat, dict[str, list[str]]] | None:
    """(format, field -> sorted label vocab) if the outputs are categorical enough for a classifier, else None."""
    fmt = detect_format(outputs)
    per_field: dict[str, Counter] = {f: Counter() for f in fmt.fields}
    for text in outputs:
        labels = fmt.labels_of(text)
        if labels is None:
            return None
        for f, lab in labels.items():
            per_field[f][lab] += 1
    for counts in per_field.values():
        if len(counts) > max_labels or len(outputs) / max(len(counts), 1) < min_per_label:
            return None
    return fmt, {f: sorted(c) for f, c in per_field.items()}
