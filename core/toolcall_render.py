"""Canonical tool calls (core/toolcalls.py) back in OpenAI's wire shape: for serve, predict, the
teacher request and chat templates."""
from __future__ import annotations

import json
from typing import Any

from core.base import stable_hash


def call_id(call: dict, index: int = 0) -> str:
    """The call's id, or a stable one derived from its content (same call, same id, every time)."""
    return call.get("id") or "call_" + stable_hash([call["name"], call.get("arguments") or {}, index], 24)


def render_tool_calls(calls: list[dict]) -> list[dict]:
    """OpenAI `tool_calls`: ids, `type: function`, arguments as a JSON string."""
    return [{"id": call_id(c, j), "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments") or {}, ensure_ascii=False)}}
            for j, c in enumerate(calls)]


def assistant_message(text: str | None, calls: list[dict] | None) -> dict:
    """An OpenAI assistant message: content (None when only calling) and tool_calls when any."""
    msg: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        msg["tool_calls"] = render_tool_calls(calls)
    return msg


def finish_reason(calls: list[dict] | None, default: str = "stop") -> str:
    return "tool_calls" if calls else default


def render_messages(messages: list[dict]) -> list[dict]:
    """Canonical messages in OpenAI request shape (for the teacher call and chat templates)."""
    out = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls"):
            m = {**m, "tool_calls": render_tool_calls(m["tool_calls"])}
        elif isinstance(m, dict) and m.get("role") == "tool":
            # A legacy function result keeps its name canonically; OpenAI's tool message has none.
            m = {k: v for k, v in m.items() if k != "name"}
        out.append(m)
    return out
