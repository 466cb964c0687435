"""Length bounds in tokens: drop outputs too short to be an answer or too long for the student."""
from __future__ import annotations

from core.toolcalls import calls_text
from teacher.filter_config import LengthFilterConfig
from teacher.filters.base import KEEP, Filter, Verdict, approx_tokens, drop, response_text


def output_tokens(record: dict, use_reported: bool = True) -> int:
    n = record.get("completion_tokens")
    # The teacher's own count is exact for its tokenizer; fall back when it reported none.
    if use_reported and isinstance(n, int) and n > 0:
        return n
    text = response_text(record)
    if record.get("tool_calls"):
        text = f"{text} {calls_text(record['tool_calls'])}"
    return approx_tokens(text)


class LengthFilter(Filter):
    name = "length"

    def __init__(self, config: LengthFilterConfig):
        super().__init__(config)

    @property
    def active(self) -> bool:
        return self.config.min_tokens is not None or self.config.max_tokens is not None

    def check(self, record: dict) -> Verdict:
        n = output_tokens(record, self.config.use_reported_tokens)
        if self.config.min_tokens is not None and n < self.config.min_tokens:
            return drop("too_short", f"{n} tokens < min_tokens {self.config.min_tokens}")
        if self.config.max_tokens is not None and n > self.config.max_tokens:
            return drop("too_long", f"{n} tokens > max_tokens {self.config.max_tokens}")
        return KEEP
