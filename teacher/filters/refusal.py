"""Refusals and apologies-instead-of-answers ("I'm sorry, but I can't help with that.").

A student trained on them learns to refuse. Only the start of the answer is searched: teachers
refuse up front, and a long answer that mentions a refusal is still an answer.
"""
from __future__ import annotations

import re

from core.base import DistillError
from teacher.filter_config import RefusalFilterConfig
from teacher.filters.base import KEEP, Filter, Verdict, drop, response_text


class RefusalFilter(Filter):
    name = "refusal"

    def __init__(self, config: RefusalFilterConfig):
        super().__init__(config)
        self._patterns = []
        for p in [*config.patterns, *config.extra_patterns]:
            try:
                self._patterns.append(re.compile(p, re.I))
            except re.error as e:
                raise DistillError(f"filter.refusal.patterns: invalid regex {p!r}: {e}") from None

    def check(self, record: dict) -> Verdict:
        # Curly apostrophes are common in hosted-model output; the patterns use the plain one.
        head = response_text(record)[: self.config.search_chars].replace("\u2019", "'")
        for p in self._patterns:
            m = p.search(head)
            if m:
                return drop("refusal", f"matched {m.group(0)!r}")
        return KEEP
