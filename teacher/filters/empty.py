"""Empty outputs: null, "" or whitespace only, and no tool calls. Nothing to learn from, and they skew lengths."""
from __future__ import annotations

from teacher.filter_config import EmptyFilterConfig
from teacher.filters.base import KEEP, Filter, Verdict, drop


class EmptyFilter(Filter):
    name = "empty"

    def __init__(self, config: EmptyFilterConfig):
        super().__init__(config)

    def check(self, record: dict) -> Verdict:
        r = record.get("response")
        if record.get("tool_calls") and (r is None or (isinstance(r, str) and not r.strip())):
            return KEEP  # the answer is its tool calls (the tool_call filter checks them)
        if r is None:
            return drop("empty", "response is null")
        if not isinstance(r, str):
            return drop("empty", f"response is {type(r).__name__}, not text")
        if not r.strip():
            return drop("empty", "response is blank")
        return KEEP
