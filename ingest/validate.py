"""Checks on a canonical record beyond its shape: roles, a real user turn, size."""
from __future__ import annotations

import json

from core.toolcalls import calls_text
from ingest.config import ValidationConfig
from ingest.records import RecordError


def approx_tokens(text_len: int, cfg: ValidationConfig) -> int:
    # A tokenizer costs ~100x more than this and the limit only needs to catch outliers.
    return int(text_len / cfg.chars_per_token) + 1


def validate(record: dict, cfg: ValidationConfig) -> None:
    """Raise RecordError (one reason) if the record cannot be trained or evaluated on."""
    allowed = cfg.allowed_roles
    has_user = False
    total = 0
    for i, m in enumerate(record["messages"], 1):
        role = m["role"]
        if role not in allowed:
            raise RecordError("bad_role", f"message {i} has role {role!r}; allowed: {', '.join(allowed)}")
        content = m["content"]
        if content is not None:  # None: an assistant turn that only calls tools
            _check_encodable(content, f"message {i}")
            total += len(content)
            if role == "user" and content.strip():
                has_user = True
        if m.get("tool_calls"):
            # Arguments parsed from a JSON string can hold a lone surrogate ("\ud800") too.
            text = calls_text(m["tool_calls"])
            _check_encodable(text, f"message {i} tool calls")
            total += len(text)
    if not has_user:
        raise RecordError("no_user_turn", "no user message with non-empty content")
    if record.get("tools"):
        total += len(json.dumps(record["tools"], ensure_ascii=False))  # the teacher is sent (and bills) the schemas too
    tokens = approx_tokens(total, cfg)
    if tokens > cfg.max_tokens:
        raise RecordError("too_long", f"prompt is ~{tokens} tokens ({total} chars), limit {cfg.max_tokens}")
    if record["response"] is not None:
        if not isinstance(record["response"], str):
            raise RecordError("bad_response", "response is not text")
        _check_encodable(record["response"], "response")
    if record.get("tool_calls"):
        _check_encodable(calls_text(record["tool_calls"]), "answer tool calls")


def _check_encodable(text: str, where: str) -> None:
    # Lone surrogates (from "\ud800" escapes or lenient drivers) would crash the UTF-8 writer.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError("invalid_unicode", f"{where} holds a lone surrogate (not valid Unicode text)") from None
