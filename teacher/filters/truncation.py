"""Truncated outputs: the teacher hit max_tokens (finish_reason "length"), so the answer is cut.

A cut JSON object usually fails the format check anyway, but a cut free-text answer looks fine
and would teach the student to stop mid-sentence, so this is checked on its own.
"""
from __future__ import annotations

from teacher.filter_config import TruncationFilterConfig
from teacher.filters.base import KEEP, Filter, Verdict, drop


class TruncationFilter(Filter):
    name = "truncation"

    def __init__(self, config: TruncationFilterConfig):
        super().__init__(config)
        self._reasons = {r.lower() for r in config.finish_reasons}

    def check(self, record: dict) -> Verdict:
        fr = record.get("finish_reason")
        if isinstance(fr, str) and fr.lower() in self._reasons:
            code = "truncated" if fr.lower() in ("length", "max_tokens") else "withheld"
            return drop(code, f"finish_reason={fr}")
        return KEEP
