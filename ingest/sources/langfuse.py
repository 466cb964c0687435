"""Langfuse generation observations exported as JSON.

Accepts what `api.observations.get_many(type="GENERATION")` pages hold: a JSON list, an object
with "data", or JSONL of observations. Observations of other types (spans, events) are skipped
and counted.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from core.base import DistillError
from ingest.records import (Item, RecordError, SkipRecord, answer_calls, content_text, make_record, normalize_messages,
                            normalize_timestamp, request_tools, response_text)
from ingest.sources.jsonl import UTF8_BOM, open_log


def _observations(path: str | Path) -> Iterator[tuple[int, Any, Any]]:
    """(position, raw, parsed-or-error) per observation; JSON documents or JSONL."""
    with open_log(path) as f:
        data = f.read()
    if data.startswith(UTF8_BOM):  # Excel and Windows tools write one; it is not part of the JSON
        data = data[len(UTF8_BOM):]
    head = data.lstrip()[:1]
    if head in (b"[", b"{"):
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None  # maybe JSONL whose first line is an object
        if doc is not None:
            items = doc.get("data") if isinstance(doc, dict) and isinstance(doc.get("data"), list) else doc
            if isinstance(items, dict):
                items = [items]
            if not isinstance(items, list):
                raise DistillError(f"Langfuse export {path}: expected a list of observations or {{\"data\": [...]}}")
            for i, obs in enumerate(items, 1):
                yield i, obs, obs
            return
    for i, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obs = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            yield i, line, RecordError("invalid_utf8", f"byte {e.start} is not valid UTF-8")
            continue
        except json.JSONDecodeError as e:
            yield i, line, RecordError("malformed_json", f"{e.msg} at column {e.colno}")
            continue
        yield i, line, obs


def iter_langfuse(path: str | Path) -> Iterator[Item]:
    src = str(path)
    for pos, raw, obs in _observations(path):
        if isinstance(obs, RecordError):
            yield Item(pos, src, raw, error=obs)
            continue
        oid = obs.get("id") if isinstance(obs, dict) else None
        try:
            yield Item(pos, src, raw, record=observation_record(obs), native_id=oid)
        except RecordError as e:
            yield Item(pos, src, raw, error=e, native_id=oid)


def _input_messages(inp: Any, tools: list[dict] | None = None) -> list[dict]:
    if isinstance(inp, str):
        return [{"role": "user", "content": inp}]
    if isinstance(inp, dict):
        if "messages" in inp:
            return normalize_messages(inp["messages"], tools)
        if "role" in inp:
            return normalize_messages([inp], tools)
        if "prompt" in inp:
            return [{"role": "user", "content": content_text(inp["prompt"], "input.prompt")}]
    if isinstance(inp, list):
        return normalize_messages(inp, tools)
    raise RecordError("bad_messages", f"generation input is {type(inp).__name__}, not messages or text")


def _request(obs: dict) -> dict:
    """Where a generation keeps its tools: Langfuse's OpenAI integration puts `tools` (or
    `functions`, `function_call`) beside `messages` in the input; tool_choice may sit there or
    in modelParameters."""
    req: dict = {}
    params = obs.get("modelParameters")
    for src in (params, obs.get("input")):
        if isinstance(src, dict):
            req.update({k: src[k] for k in ("tools", "functions", "tool_choice", "function_call") if src.get(k) is not None})
    return req


def observation_record(obs: Any) -> dict:
    if not isinstance(obs, dict):
        raise RecordError("unknown_shape", f"observation is a JSON {type(obs).__name__}, not an object")
    kind = obs.get("type", "GENERATION")
    if kind != "GENERATION":
        raise SkipRecord("not_a_generation", f"observation type {kind!r}")
    if obs.get("level") == "ERROR":
        raise SkipRecord("request_failed", f"generation {obs.get('id')} has level ERROR")
    tools, choice = request_tools(_request(obs))
    messages = _input_messages(obs.get("input"), tools)
    meta = dict(obs["metadata"]) if isinstance(obs.get("metadata"), dict) else {}
    for k in ("traceId", "name"):
        if obs.get(k):
            meta[f"langfuse_{k}"] = obs[k]
    output = obs.get("output")
    return make_record(obs.get("id"), messages, response_text(output), obs.get("model"),
                       normalize_timestamp(obs.get("startTime")), meta, obs.get("tags"),
                       tools=tools, tool_choice=choice, tool_calls=answer_calls(output, tools, n_messages=len(messages)))
