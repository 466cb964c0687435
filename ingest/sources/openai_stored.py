"""OpenAI stored chat completions (requests made with store=True), read through the openai SDK.

List pages are followed to the end (the SDK's auto-pagination); each completion's input
messages come from a second paginated endpoint. Newest first, so an incremental run stops at
the first completion at or before the watermark instead of listing the whole history.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Iterator

from core.base import DistillError
from ingest.records import (Item, RecordError, answer_calls, make_record, normalize_messages, normalize_timestamp,
                            request_tools, response_text)


def _client(src):
    from openai import OpenAI

    key = src.api_key.get_secret_value() if src.api_key else os.environ.get("OPENAI_API_KEY")
    if not key:
        raise DistillError("ingest.source.api_key is not set (nor OPENAI_API_KEY) for the openai_stored source")
    return OpenAI(api_key=key, base_url=src.base_url, timeout=src.timeout_s, max_retries=src.max_retries)


def _fail(where: str, e: Exception) -> DistillError:
    import openai

    if isinstance(e, openai.APIConnectionError):
        return DistillError(f"cannot reach OpenAI stored completions at {where}: {e.__cause__ or e}")
    if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return DistillError(f"OpenAI stored completions at {where} rejected the API key ({e.status_code})")
    if isinstance(e, openai.APIStatusError):
        return DistillError(f"OpenAI stored completions at {where} answered {e.status_code}: {e.message}")
    return DistillError(f"reading OpenAI stored completions at {where} failed: {e}")


def iter_openai_stored(src, since: datetime | None = None) -> Iterator[Item]:
    import openai

    where = src.base_url or "https://api.openai.com/v1"
    client = _client(src)
    kwargs = {"limit": src.page_size, "order": "desc"}
    if src.model:
        kwargs["model"] = src.model
    if src.metadata:
        kwargs["metadata"] = src.metadata
    cutoff = since.timestamp() if since else None

    def fetch(c) -> list[dict] | None:
        try:
            return [m.to_dict() for m in client.chat.completions.messages.list(c.id, limit=100)]
        except openai.NotFoundError:
            return None

    # One messages request per completion: run a page's worth concurrently (order kept).
    with ThreadPoolExecutor(max_workers=src.fetch_concurrency) as pool:
        try:
            pos = 0
            for chunk in _chunks(client.chat.completions.list(**kwargs), src.page_size, cutoff):
                for c, stored in zip(chunk, pool.map(fetch, chunk)):
                    pos += 1
                    raw = c.to_dict()
                    if stored is None:
                        yield Item(pos, where, raw, native_id=c.id, error=RecordError(
                            "fetch_failed", f"messages of completion {c.id} not found (404)"))
                    else:
                        yield _to_item(pos, where, raw, stored)
        except openai.OpenAIError as e:
            raise _fail(where, e) from None


def _chunks(completions, size: int, cutoff: float | None):
    """Batches of listed completions, stopping at the first one at or before `cutoff`
    (the list is newest first, so everything after it is older still)."""
    chunk = []
    for c in completions:
        if cutoff is not None and c.created <= cutoff:
            break
        chunk.append(c)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _to_item(pos: int, where: str, raw: dict, stored: list[dict]) -> Item:
    raw = {**raw, "input_messages": stored}
    try:
        # The completion object carries the request's tools and tool_choice (when it had any);
        # input messages keep their tool_calls / tool_call_id.
        tools, choice = request_tools(raw)
        # content is None when the text is only in content_parts (multi-part messages), and
        # in an assistant turn that only calls tools.
        messages = normalize_messages([{**{k: m[k] for k in _TOOL_KEYS if m.get(k) is not None}, "role": m.get("role"),
                                        "content": m["content"] if m.get("content") is not None else m.get("content_parts")}
                                       for m in stored], tools)
        choices = raw.get("choices") or []
        msg = choices[0].get("message") if choices else None
        response = response_text(msg) if choices else None
        calls = answer_calls(msg, tools, n_messages=len(messages))
        ts = normalize_timestamp(raw.get("created"))
        meta = dict(raw.get("metadata") or {})
        rec = make_record(raw["id"], messages, response, raw.get("model"), ts, meta,
                          tools=tools, tool_choice=choice, tool_calls=calls)
        return Item(pos, where, raw, record=rec, native_id=raw["id"])
    except RecordError as e:
        return Item(pos, where, raw, error=e, native_id=raw.get("id"))


_TOOL_KEYS = ("tool_calls", "function_call", "tool_call_id", "name")
