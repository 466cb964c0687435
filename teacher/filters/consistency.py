"""Teacher self-consistency: with n > 1 samples per prompt, keep prompts the teacher agrees on.

If the teacher gives three different intents for the same message in five tries, none of them is
a label worth teaching. Samples are compared by parsed value for JSON (optionally only some
fields), by normalised text otherwise. Replay puts all n answers in record["samples"] (strings,
or {"content": ...} objects); `response` is one of them.
"""
from __future__ import annotations

from collections import Counter

from teacher.filter_config import ConsistencyFilterConfig
from teacher.filters.base import KEEP, Filter, Verdict, answer_key, drop, response_text


def sample_texts(record: dict) -> list[str]:
    out = []
    for s in record.get("samples") or []:
        if isinstance(s, dict):
            s = s.get("content") if "content" in s else s.get("response")
        if isinstance(s, str):
            out.append(s)
    return out


def agreement(record: dict, fields: list[str] | None = None) -> tuple[float, str, int, int] | None:
    """(share, majority key, majority count, n) over the samples, or None with fewer than 2."""
    texts = sample_texts(record)
    if len(texts) < 2:
        return None
    counts = Counter(answer_key(t, fields) for t in texts)
    key, top = counts.most_common(1)[0]
    return top / len(texts), key, top, len(texts)


class ConsistencyFilter(Filter):
    name = "consistency"

    def __init__(self, config: ConsistencyFilterConfig):
        super().__init__(config)

    def check(self, record: dict) -> Verdict:
        a = agreement(record, self.config.fields)
        if a is None:
            return KEEP  # a single sample says nothing about agreement
        share, key, top, n = a
        if share < self.config.threshold:
            return drop("low_agreement", f"majority answer in {top} of {n} samples ({share:.0%} < {self.config.threshold:.0%})")
        update = {"agreement": round(share, 4)}
        if answer_key(response_text(record), self.config.fields) != key:
            if self.config.on_minority_response == "drop":
                return drop("minority_response", f"response is not the majority answer ({top} of {n} samples agree on another)")
            update["response"] = next(t for t in sample_texts(record) if answer_key(t, self.config.fields) == key)
        return Verdict(True, update=update)
