"""Tool calling in the canonical record: parse what logs carry, check it, render OpenAI shape back.

Canonical shapes (every stage reads and writes these; only serve/predict and the teacher call
see the OpenAI wire shape, via core/toolcall_render.py):

    tools       [{"type": "function", "function": {"name", "description"?, "parameters", "strict"?}}]
                (OpenAI function tools; legacy `functions` and the flat Responses-API form are folded in)
    tool_choice "auto" | "none" | "required" | {"type": "function", "function": {"name"}} | absent
    tool call   {"id": str, "name": str, "arguments": dict}     (arguments parsed, never a JSON string)
    assistant   {"role": "assistant", "content": str | None, "tool_calls": [call, ...]}
    tool turn   {"role": "tool", "tool_call_id": str, "content": str}  (+ "name" when logged)
    record      + "tools", "tool_choice", and "tool_calls" beside "response" for the answer's calls

Errors are ToolCallError(code, detail) with codes bad_tools, bad_tool_choice, bad_tool_call,
bad_tool_arguments, undeclared_tool, bad_tool_result; the detail names the message and the call,
so a quarantined line says what was wrong ("message 3 tool call 1 (get_weather): ...").
"""
from __future__ import annotations

import json
from typing import Any, Callable

from core.base import stable_hash
from core.toolcall_render import call_id


class ToolCallError(ValueError):
    """A malformed tool-calling record; `code` is the quarantine reason key (as RecordError's)."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self):
        return (type(self), (self.code, self.detail))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _snippet(text: str, n: int = 60) -> str:
    return repr(text[:n] + ("..." if len(text) > n else ""))


# ---- declared tools -------------------------------------------------------------------------

def _one_tool(t: Any, where: str) -> dict:
    if not isinstance(t, dict):
        raise ToolCallError("bad_tools", f"{where} is a {type(t).__name__}, not an object")
    kind = t.get("type", "function")
    if kind != "function":
        raise ToolCallError("bad_tools", f"{where} has type {str(kind)[:40]!r}; only function tools can be distilled")
    # OpenAI chat nests the function; the Responses API and legacy `functions` are flat.
    fn = t["function"] if "function" in t else t
    if not isinstance(fn, dict):
        raise ToolCallError("bad_tools", f"{where} function is a {type(fn).__name__}, not an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolCallError("bad_tools", f"{where} has no function name")
    params = fn.get("parameters")
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise ToolCallError("bad_tools", f"{where} ({name}) parameters is a {type(params).__name__}, not a JSON schema object")
    out: dict[str, Any] = {"name": name}
    if isinstance(fn.get("description"), str):
        out["description"] = fn["description"]
    out["parameters"] = params
    if isinstance(fn.get("strict"), bool):
        out["strict"] = fn["strict"]
    return {"type": "function", "function": out}


def normalize_tools(tools: Any = None, functions: Any = None) -> list[dict] | None:
    """Canonical `tools` from a request's `tools` and/or legacy `functions`; None when neither is logged."""
    if tools is None and functions is None:
        return None
    out: list[dict] = []
    for field, value in (("tools", tools), ("functions", functions)):
        if value is None:
            continue
        if not isinstance(value, list):
            raise ToolCallError("bad_tools", f"{field} is a {type(value).__name__}, not a list")
        out.extend(_one_tool(t, f"{field}[{i}]") for i, t in enumerate(value))
    seen: set[str] = set()
    for t in out:
        name = t["function"]["name"]
        if name in seen:
            raise ToolCallError("bad_tools", f"tool {name!r} is declared twice")
        seen.add(name)
    return out or None


def tool_names(tools: list[dict] | None) -> list[str]:
    return [t["function"]["name"] for t in tools or []]


def tool_parameters(tools: list[dict] | None) -> dict[str, dict]:
    """{tool name: its parameters JSON schema} for canonical tools."""
    return {t["function"]["name"]: t["function"]["parameters"] for t in tools or []}


def normalize_tool_choice(tool_choice: Any = None, function_call: Any = None, tools: list[dict] | None = None) -> str | dict | None:
    """Canonical `tool_choice` from `tool_choice` or the legacy request parameter `function_call`."""
    value, field = (tool_choice, "tool_choice") if tool_choice is not None else (function_call, "function_call")
    if value is None:
        return None
    if isinstance(value, str):
        if value in ("auto", "none", "required"):
            return value
        raise ToolCallError("bad_tool_choice", f"{field} {value[:40]!r} is not auto, none, required or a named tool")
    if isinstance(value, dict):
        fn = value.get("function") if isinstance(value.get("function"), dict) else value
        name = fn.get("name")
        if isinstance(name, str) and name:
            if tools is not None and name not in tool_names(tools):
                raise ToolCallError("undeclared_tool", f"{field} names {name!r}, which the record's tools do not declare")
            return {"type": "function", "function": {"name": name}}
    raise ToolCallError("bad_tool_choice", f"{field} is {str(value)[:60]!r}, not auto, none, required or a named tool")


# ---- tool calls -----------------------------------------------------------------------------

def parse_arguments(raw: Any, where: str) -> dict:
    """A call's arguments as a dict: a JSON object string (the wire form), or already a dict.

    "" and null mean no arguments (some servers send them for parameterless tools); NaN and
    Infinity are rejected, since no JSON parser but Python's accepts them.
    """
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if not isinstance(raw, str):
        raise ToolCallError("bad_tool_arguments", f"{where} arguments is a {type(raw).__name__}, not a JSON object string")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ToolCallError("bad_tool_arguments", f"{where} arguments are not valid JSON ({e.msg} at char {e.pos}): {_snippet(raw)}") from None
    except ValueError as e:
        raise ToolCallError("bad_tool_arguments", f"{where} arguments are not valid JSON ({e}): {_snippet(raw)}") from None
    except RecursionError:
        raise ToolCallError("bad_tool_arguments", f"{where} arguments are nested too deeply to parse: {_snippet(raw)}") from None
    if not isinstance(value, dict):
        raise ToolCallError("bad_tool_arguments", f"{where} arguments are a JSON {type(value).__name__}, not an object: {_snippet(raw)}")
    return value


def _one_call(c: Any, where: str) -> dict:
    if not isinstance(c, dict):
        raise ToolCallError("bad_tool_call", f"{where} is a {type(c).__name__}, not an object")
    kind = c.get("type", "function")
    if kind != "function":
        raise ToolCallError("bad_tool_call", f"{where} has type {str(kind)[:40]!r}; only function calls can be distilled")
    fn = c["function"] if "function" in c else c  # canonical and some SDK logs are flat
    if not isinstance(fn, dict):
        raise ToolCallError("bad_tool_call", f"{where} function is a {type(fn).__name__}, not an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolCallError("bad_tool_call", f"{where} has no function name")
    cid = c.get("id")
    return {"id": cid if isinstance(cid, str) and cid else None, "name": name,
            "arguments": parse_arguments(fn.get("arguments"), f"{where} ({name})")}


def parse_tool_calls(message: Any, where: str = "message") -> list[dict] | None:
    """The calls an assistant message (or a canonical record) carries, canonical; None when it carries none.

    Reads `tool_calls` and the legacy `function_call`; ids are kept as logged, None when absent
    (normalize_tool_turns assigns them).
    """
    if not isinstance(message, dict):
        return None
    tc, fc = message.get("tool_calls"), message.get("function_call")
    if tc and fc:
        raise ToolCallError("bad_tool_call", f"{where} has both tool_calls and a legacy function_call")
    if fc:
        return [_one_call(fc, f"{where} function_call")]
    if tc is None or tc == []:
        return None
    if not isinstance(tc, list):
        raise ToolCallError("bad_tool_call", f"{where} tool_calls is a {type(tc).__name__}, not a list")
    return [_one_call(c, f"{where} tool call {j}") for j, c in enumerate(tc, 1)]


def response_tool_calls(resp: Any, where: str = "response") -> list[dict] | None:
    """The calls in a logged answer: an assistant message or a whole chat completion object."""
    if isinstance(resp, dict) and isinstance(resp.get("choices"), list):
        c0 = resp["choices"][0] if resp["choices"] else None
        resp = c0.get("message") if isinstance(c0, dict) else None
    return parse_tool_calls(resp, where)


def tool_result_text(content: Any, where: str) -> str:
    """A tool turn's content as text: text, text parts, or a JSON value some loggers store unserialised."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    try:
        return json.dumps(content, ensure_ascii=False)
    except (TypeError, ValueError):
        raise ToolCallError("bad_tool_result", f"{where} content is a {type(content).__name__}, not text") from None


def _assign_ids(calls: list[dict], prefix: str) -> list[dict]:
    return [{**c, "id": c["id"] or f"call_{prefix}_{j}"} for j, c in enumerate(calls, 1)]


def normalize_tool_turns(messages: list[dict]) -> list[dict]:
    """Canonical tool-calling turns in a message list; other messages pass through untouched.

    Assistant turns get canonical `tool_calls` (missing ids become "call_<message>_<call>"); legacy
    `function` results become `tool` turns linked to the latest call of that name; a tool turn
    must answer an earlier call. Content of non-tool turns is the caller's (ingest's) to convert;
    an assistant turn with calls may have content None.
    """
    out: list[dict] = []
    issued: dict[str, str] = {}   # call id -> tool name, for every call so far
    latest_by_name: dict[str, str] = {}
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            out.append(m)
            continue
        role, where = m.get("role"), f"message {i}"
        if role != "assistant" and (m.get("tool_calls") or m.get("function_call")):
            raise ToolCallError("bad_tool_call", f"{where} ({str(role)[:20]}) carries tool calls; only assistant turns call tools")
        if role == "assistant":
            calls = parse_tool_calls(m, where)
            m = {k: v for k, v in m.items() if k not in ("tool_calls", "function_call")}
            if calls:
                calls = _assign_ids(calls, str(i))
                for c in calls:
                    issued[c["id"]] = c["name"]
                    latest_by_name[c["name"]] = c["id"]
                m["content"] = m.get("content")
                m["tool_calls"] = calls
        elif role == "function":
            name = m.get("name")
            if not isinstance(name, str) or name not in latest_by_name:
                raise ToolCallError("bad_tool_result", f"{where} is a function result for {str(name)[:40]!r}, which no earlier turn called")
            m = {"role": "tool", "tool_call_id": latest_by_name[name], "name": name,
                 "content": tool_result_text(m.get("content"), where)}
        elif role == "tool":
            cid = m.get("tool_call_id")
            if not isinstance(cid, str) or not cid:
                raise ToolCallError("bad_tool_result", f"{where} is a tool result without a tool_call_id")
            if cid not in issued:
                raise ToolCallError("bad_tool_result", f"{where} answers tool_call_id {cid[:40]!r}, which matches no earlier tool call")
            m = {**m, "content": tool_result_text(m.get("content"), where)}
        out.append(m)
    return out


def check_declared(calls: list[dict] | None, tools: list[dict] | None, where: str) -> None:
    """Every call names a declared tool (the tool list the record was logged with)."""
    names = tool_names(tools)
    for j, c in enumerate(calls or [], 1):
        if c["name"] not in names:
            declared = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "no tools"
            raise ToolCallError("undeclared_tool", f"{where} tool call {j} names {c['name'][:60]!r}, which the record does not declare (it declares {declared})")


def normalize_tool_record(record: dict) -> dict:
    """A record with canonical tools, tool_choice, tool turns and answer calls; raises ToolCallError.

    Reads `tools`/`functions`, `tool_choice`/`function_call` (the legacy request parameter), the
    tool turns in `messages`, and the answer's calls from `tool_calls` or a message-shaped
    `response`. Records without any tool field come back unchanged (same object).
    """
    if not any(k in record for k in ("tools", "functions", "tool_choice", "function_call", "tool_calls")) and not _has_tool_turns(record):
        return record
    rec = {k: v for k, v in record.items() if k not in ("functions", "function_call")}
    tools = normalize_tools(record.get("tools"), record.get("functions"))
    choice = normalize_tool_choice(record.get("tool_choice"), record.get("function_call"), tools)
    messages = record.get("messages")
    if isinstance(messages, list):
        messages = normalize_tool_turns(messages)
        for i, m in enumerate(messages, 1):
            if isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls"):
                check_declared(m["tool_calls"], tools, f"message {i}")
        rec["messages"] = messages
    calls = parse_tool_calls({"tool_calls": record["tool_calls"]}, "answer") if record.get("tool_calls") else response_tool_calls(record.get("response"))
    rec.pop("tool_calls", None)
    if calls:
        check_declared(calls, tools, "answer")
        rec["tool_calls"] = _assign_ids(calls, str(len(messages) + 1 if isinstance(messages, list) else "answer"))
    for k in ("tools", "tool_choice"):
        rec.pop(k, None)
    if tools is not None:
        rec["tools"] = tools
    if choice is not None:
        rec["tool_choice"] = choice
    return rec


def _has_tool_turns(record: dict) -> bool:
    msgs = record.get("messages")
    if isinstance(msgs, list) and any(isinstance(m, dict) and (m.get("tool_calls") or m.get("function_call") or m.get("role") in ("tool", "function"))
                                      for m in msgs):
        return True
    resp = record.get("response")
    return isinstance(resp, dict) and response_tool_calls(resp) is not None


def validate_tool_record(record: dict) -> str | None:
    """The quarantine reason ("code: detail") for a malformed tool-calling record, else None."""
    try:
        normalize_tool_record(record)
    except ToolCallError as e:
        return str(e)
    return None


# ---- helpers for dedup, PII and agreement ---------------------------------------------------

def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """`value` with fn applied to every string leaf (dict keys unchanged): PII redaction of arguments."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    return value


def calls_signature(calls: list[dict] | None) -> list[dict]:
    """The calls without ids (ids are random per request): what dedup and agreement compare."""
    return [{"name": c["name"], "arguments": c.get("arguments") or {}} for c in calls or []]


def calls_text(calls: list[dict] | None) -> str:
    """Deterministic text of the calls, for text-based steps (MinHash dedup, token counts)."""
    return "\n".join(f"{c['name']}({json.dumps(c.get('arguments') or {}, ensure_ascii=False, sort_keys=True)})" for c in calls or [])


def tools_key(tools: list[dict] | None, tool_choice: Any = None) -> str | None:
    """Identity of a request's tool set (and tool_choice): None without tools, else a stable hash
    independent of declaration order. Dedup, the filters' input key and the reference teacher's
    lookup use it, so the same question asked with different tools is a different request."""
    if not tools and tool_choice is None:
        return None
    return stable_hash([sorted(tools or [], key=lambda t: t["function"]["name"]), tool_choice], 16)


def wire_calls(raw: Any) -> list[dict] | None:
    """A teacher's OpenAI-shaped `tool_calls` as canonical calls, keeping what it said even when
    it is wrong: arguments that do not parse stay the raw string (the tool-call filter drops the
    record with invalid_arguments), a call without a name keeps name "" (undeclared_tool)."""
    if not raw:
        return None
    out = []
    for j, c in enumerate(raw if isinstance(raw, list) else [raw]):
        c = c if isinstance(c, dict) else {}
        fn = c.get("function") if isinstance(c.get("function"), dict) else c
        name = fn.get("name") if isinstance(fn.get("name"), str) else ""
        try:
            args: Any = parse_arguments(fn.get("arguments"), f"tool call {j + 1} ({name})")
        except ToolCallError:
            args = fn.get("arguments")
        cid = c.get("id")
        out.append({"id": cid if isinstance(cid, str) and cid else call_id({"name": name, "arguments": args if isinstance(args, dict) else {}}, j),
                    "name": name, "arguments": args})
    return out
