"""The canonical prompt record and the conversion of the log shapes we accept into it.

Canonical record (docs/CONTRACTS.md):
    {"id", "messages": [{"role", "content"}], "response": str|None, "model": str|None,
     "timestamp": str|None (ISO 8601, UTC), "metadata": {...}}   (+ "split" on output)
Tool-calling records (core/toolcalls.py has the shapes) also carry "tools", "tool_choice" and the
answer's "tool_calls" when logged; their assistant turns carry "tool_calls" (content may be None)
and their "tool" turns "tool_call_id". Records without tools have none of these keys.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from core.base import stable_hash
from core import toolcalls as tc


class RecordError(ValueError):
    """A record that cannot be used; `code` is the quarantine reason key."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self):  # rebuilt from (code, detail) when it crosses a process boundary
        return (type(self), (self.code, self.detail))


class SkipRecord(RecordError):
    """Not an error in the log, just not a prompt we train on (a failed call, a span). Counted as skipped."""


@dataclass(slots=True)
class Item:
    """One unit read from a source: a canonical record, or the reason it could not be made one."""

    position: int            # 1-based line (files) or row (APIs, SQL) number within the source
    source: str              # path or URL, never with credentials
    raw: Any                 # the source's native form, kept only to quarantine it
    record: dict | None = None
    error: RecordError | None = None
    native_id: str | None = None   # the source's own id, so a quarantined row can be found again


_ROLE_ALIASES = {"developer": "system", "human": "user", "ai": "assistant", "bot": "assistant"}


def content_text(content: Any, where: str) -> str:
    """Message content as text; OpenAI content-part lists keep their text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text") and isinstance(p.get("text"), str):
                parts.append(p["text"])
            elif isinstance(p, str):
                parts.append(p)
            else:
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                raise RecordError("bad_messages", f"{where} has a non-text content part ({kind})")
        return "\n".join(parts)
    raise RecordError("bad_messages", f"{where} content is {type(content).__name__}, not text")


def _is_tool_turn(m: Any) -> bool:
    return type(m) is dict and ("tool_calls" in m or "function_call" in m or m.get("role") in ("tool", "function"))


class _ToolError:
    """`with _ToolError():` turns core.toolcalls' errors into quarantine reasons (same codes)."""

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if isinstance(e, tc.ToolCallError):
            raise RecordError(e.code, e.detail) from None
        return False


def normalize_messages(msgs: Any, tools: list[dict] | None = None) -> list[dict]:
    """Canonical messages. Tool-calling turns are made canonical by core.toolcalls (calls parsed,
    ids linked, every call naming one of `tools`, the record's canonical tools)."""
    if not isinstance(msgs, list) or not msgs:
        raise RecordError("bad_messages", "messages must be a non-empty list")
    out = []
    for i, m in enumerate(msgs, 1):
        if type(m) is dict:
            role, content = m.get("role"), m.get("content")
            if type(role) is str and type(content) is str and role not in _ROLE_ALIASES and role != "tool" and "tool_calls" not in m:
                out.append({"role": role, "content": content})  # the common case, checked cheaply
                continue
            if _is_tool_turn(m):
                return _tool_messages(msgs, tools)
        if not isinstance(m, dict):
            raise RecordError("bad_messages", f"message {i} is {type(m).__name__}, not an object")
        role = m.get("role")
        if not isinstance(role, str):
            raise RecordError("bad_messages", f"message {i} has no role")
        role = _ROLE_ALIASES.get(role, role)
        out.append({"role": role, "content": content_text(m.get("content"), f"message {i}")})
    return out


def _tool_messages(msgs: list, tools: list[dict] | None) -> list[dict]:
    aliased = [{**m, "role": _ROLE_ALIASES.get(m["role"], m["role"])} if type(m) is dict and isinstance(m.get("role"), str) and m["role"] in _ROLE_ALIASES else m
               for m in msgs]
    with _ToolError():
        canon = tc.normalize_tool_turns(aliased)
        for i, m in enumerate(canon, 1):
            if type(m) is dict and m.get("tool_calls"):
                tc.check_declared(m["tool_calls"], tools, f"message {i}")
    out = []
    for i, m in enumerate(canon, 1):
        if not isinstance(m, dict):
            raise RecordError("bad_messages", f"message {i} is {type(m).__name__}, not an object")
        role = m.get("role")
        if not isinstance(role, str):
            raise RecordError("bad_messages", f"message {i} has no role")
        if m.get("tool_calls"):
            c = m.get("content")
            out.append({"role": role, "content": None if c is None else content_text(c, f"message {i}"), "tool_calls": m["tool_calls"]})
        elif role == "tool":
            t = {"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]}
            if isinstance(m.get("name"), str):
                t["name"] = m["name"]
            out.append(t)
        else:
            out.append({"role": role, "content": content_text(m.get("content"), f"message {i}")})
    return out


def request_tools(req: dict) -> tuple[list[dict] | None, Any]:
    """Canonical (tools, tool_choice) of a logged request: `tools`/legacy `functions`,
    `tool_choice`/legacy `function_call` (the request parameter)."""
    if not isinstance(req, dict):
        return None, None
    with _ToolError():
        tools = tc.normalize_tools(req.get("tools"), req.get("functions"))
        return tools, tc.normalize_tool_choice(req.get("tool_choice"), req.get("function_call"), tools)


def answer_calls(resp: Any, tools: list[dict] | None, explicit: Any = None, n_messages: int = 0) -> list[dict] | None:
    """Canonical calls of the logged answer: `explicit` (a record's own "tool_calls"), else the
    ones in an assistant message or chat completion `resp`; each must name a declared tool."""
    with _ToolError():
        if explicit:
            calls = tc.parse_tool_calls({"tool_calls": explicit}, "answer")
        else:
            calls = tc.response_tool_calls(resp, "answer") if isinstance(resp, dict) else None
        if not calls:
            return None
        tc.check_declared(calls, tools, "answer")
    return [{**c, "id": c["id"] or f"call_{n_messages + 1}_{j}"} for j, c in enumerate(calls, 1)]


def response_text(resp: Any) -> str | None:
    """The recorded answer from a string, a message, or a whole chat completion object."""
    if resp is None:
        return None
    if isinstance(resp, str):
        return resp
    if isinstance(resp, dict):
        if "choices" in resp:
            choices = resp.get("choices") or []
            if not choices:
                return None
            c0 = choices[0] if isinstance(choices[0], dict) else {}
            msg = c0.get("message") or {}
            if "text" in c0 and not msg:
                return response_text(c0.get("text"))
            return response_text(msg.get("content")) if isinstance(msg, dict) else None
        if "content" in resp:
            c = resp["content"]
            return None if c is None else content_text(c, "response")
        if "text" in resp:
            return response_text(resp["text"])
    if isinstance(resp, list):
        return content_text(resp, "response")
    raise RecordError("bad_response", f"response is {type(resp).__name__}, not text or a message")


def response_from_stored(value: Any) -> str | None:
    """A stored answer that may be plain text, a message, or a serialized completion object.

    Text that merely looks like JSON (a model answering {"intent": ...}) stays text.
    """
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        s = value.strip()
        if s[:1] != "{":
            return value
        try:
            obj = json.loads(s)
        except json.JSONDecodeError:
            return value
        if isinstance(obj, dict) and ("choices" in obj or "role" in obj):
            return response_text(obj)
        return value
    if isinstance(value, dict) and not value:
        return None  # LiteLLM stores "{}" when it kept no response
    return response_text(value)


# Already what we write (UTC, "Z"): kept as logged, no parse-and-reformat round trip.
_CANONICAL_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z")


def normalize_timestamp(ts: Any) -> str | None:
    """ISO 8601 UTC string; accepts ISO strings (naive = UTC) and Unix seconds or milliseconds."""
    if ts is None or ts == "":
        return None
    try:
        if isinstance(ts, bool):
            raise TypeError
        if isinstance(ts, (int, float)):
            secs = ts / 1000 if ts > 1e11 else ts  # >1e11 s is year 5138: it is milliseconds
            dt = datetime.fromtimestamp(secs, tz=timezone.utc)
        elif isinstance(ts, datetime):
            dt = ts
        elif isinstance(ts, str):
            if _CANONICAL_TS.fullmatch(ts):
                datetime.fromisoformat(ts[:-1])  # still reject impossible dates (month 13)
                return ts
            dt = datetime.fromisoformat(ts.strip().replace("Z", "+00:00"))
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError, OSError):
        raise RecordError("bad_timestamp", f"timestamp {str(ts)[:60]!r} is not ISO 8601 or Unix time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(iso: str) -> datetime:
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)  # naive means UTC, as in the logs


def _prompt_messages(value: Any, field: str, tools: list[dict] | None = None) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, dict) and "messages" in value:
        return normalize_messages(value["messages"], tools)
    if isinstance(value, list):
        return normalize_messages(value, tools)
    raise RecordError("bad_messages", f"{field} is {type(value).__name__}, expected text or a message list")


def from_log_object(obj: Any) -> dict:
    """Canonical record from one logged object in any of the three accepted shapes."""
    if not isinstance(obj, dict):
        raise RecordError("unknown_shape", f"line is a JSON {type(obj).__name__}, not an object")
    tools = choice = None
    if "tools" in obj or "functions" in obj or "tool_choice" in obj or "function_call" in obj:
        tools, choice = request_tools(obj)
    if "messages" in obj:
        messages = normalize_messages(obj["messages"], tools)
        resp = obj.get("response", obj.get("completion", obj.get("output")))
        if resp is None and not obj.get("tool_calls") and len(messages) > 1 and messages[-1]["role"] == "assistant":
            # Fine-tuning style chat logs carry the answer as the final assistant turn.
            last = messages.pop()
            resp = {"role": "assistant", "content": last["content"], "tool_calls": last.get("tool_calls")}
    elif "prompt" in obj:
        messages = _prompt_messages(obj["prompt"], "prompt", tools)
        resp = obj.get("completion", obj.get("response"))
    elif "input" in obj:
        messages = _prompt_messages(obj["input"], "input", tools)
        resp = obj.get("output", obj.get("response"))
    else:
        raise RecordError("unknown_shape", "no 'messages', 'prompt' or 'input' field")
    ts = obj.get("timestamp", obj.get("created_at", obj.get("created")))
    calls = answer_calls(resp, tools, obj.get("tool_calls"), len(messages))
    return make_record(obj.get("id"), messages, response_text(resp), obj.get("model"),
                       normalize_timestamp(ts), obj.get("metadata"), obj.get("tags"),
                       tools=tools, tool_choice=choice, tool_calls=calls)


def make_record(rid: Any, messages: list[dict], response: str | None, model: Any, timestamp: str | None,
                metadata: Any = None, tags: Any = None, *, tools: list[dict] | None = None, tool_choice: Any = None,
                tool_calls: list[dict] | None = None) -> dict:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise RecordError("bad_metadata", f"metadata is {type(metadata).__name__}, not an object")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise RecordError("bad_metadata", "tags must be a list of strings")
        metadata = {**metadata, "tags": tags}
    if model is not None and not isinstance(model, str):
        raise RecordError("bad_metadata", f"model is {type(model).__name__}, not a string")
    extra: dict[str, Any] = {}
    if tools is not None:
        extra["tools"] = tools
    if tool_choice is not None:
        extra["tool_choice"] = tool_choice
    if tool_calls:
        extra["tool_calls"] = tool_calls
    if rid is None or rid == "":
        # No id in the log: derive one from content so reruns give the same id (and split).
        # (Tool fields join the hash only when present: plain records keep their ids.)
        basis = [messages, response, timestamp] + ([tc.tools_key(tools, tool_choice), tc.calls_signature(tool_calls)] if extra else [])
        rid = "rec_" + stable_hash(basis, 20)
    elif not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise RecordError("bad_id", f"id is {type(rid).__name__}, not a string")
    rec = {"id": str(rid), "messages": messages, "response": response, "model": model,
           "timestamp": timestamp, "metadata": metadata}
    if extra:
        rec.update(extra)
    return rec


def exact_key(messages: list[dict], tools: list[dict] | None = None, tool_choice: Any = None) -> str:
    """Identity of a prompt for exact dedup: roles and contents, outer whitespace ignored; tool
    calls by name and arguments (their ids are random per request), tool results by content,
    and the declared tool set: the same text asked with other tools is another request."""
    canon = "\x1e".join(_turn_key(m) for m in messages)
    tk = tc.tools_key(tools, tool_choice)
    if tk is not None:
        canon += "\x1dtools\x1f" + tk
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _turn_key(m: dict) -> str:
    key = f"{m['role']}\x1f{(m['content'] or '').strip()}"
    if m.get("tool_calls"):
        key += "\x1f" + tc.calls_text(m["tool_calls"])
    return key


def raw_text(raw: Any, limit: int) -> str:
    """Quarantine form of a raw item: text as-is, anything else as JSON, cut to `limit` chars."""
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw[: limit * 4 + 4]).decode("utf-8", errors="backslashreplace")
    elif isinstance(raw, str):
        text = raw[: limit + 1]
    else:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…[cut]"
