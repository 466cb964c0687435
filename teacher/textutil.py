"""Tiny text helpers shared by the reference server and the replay client (no heavy imports)."""
from __future__ import annotations

import re

# Token counts are an approximation: words and single punctuation marks. Close enough to a BPE
# count (within ~30% on English) for usage figures, rate limiting and tests; real providers
# report their own usage, which the replay uses whenever it is present.
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WS = re.compile(r"\s+")


def approx_tokens(text: str) -> int:
    return len(_TOKEN.findall(text or ""))


def normalise(text: str) -> str:
    """Lowercase, collapse whitespace, strip: the fallback match for reference answers."""
    return _WS.sub(" ", (text or "").lower()).strip()


def last_user_text(messages: list[dict]) -> str | None:
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # OpenAI content parts: keep the text parts
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else None
    return None


def messages_tokens(messages: list[dict]) -> int:
    # +4 per message mimics the chat-format overhead providers count; a turn's tool calls count too.
    total = 0
    for m in messages:
        c = m.get("content")
        total += approx_tokens(c if isinstance(c, str) else "" if c is None else str(c)) + 4
        if m.get("tool_calls"):
            total += approx_tokens(str(m["tool_calls"]))
    return total


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, int, bool]:
    """Cut `text` after `max_tokens` approximate tokens; returns (text, tokens, truncated)."""
    matches = list(_TOKEN.finditer(text))
    if len(matches) <= max_tokens:
        return text, len(matches), False
    return text[: matches[max_tokens - 1].end()], max_tokens, True
