"""LiteLLM proxy spend logs ("LiteLLM_SpendLogs", with store_prompts_in_spend_logs: true).

The prompt is the request body in proxy_server_request, the answer is in response. LiteLLM
cuts strings longer than MAX_STRING_LENGTH_PROMPT_IN_DB (default 2048) and splices in a
"(litellm_truncated skipped N chars ...)" marker: such a row no longer holds the real prompt or
answer, so it is quarantined, never trained on.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Iterator

from core.base import DistillError
from ingest.records import (Item, RecordError, SkipRecord, answer_calls, make_record, normalize_messages,
                            normalize_timestamp, request_tools, response_from_stored)
from ingest.sources.sql import as_json, safe_url, stream_rows

# The marker LiteLLM writes (litellm.constants.LITELLM_TRUNCATED_PAYLOAD_FIELD); older
# releases bracketed it. Matching the bracket keeps a prompt that merely mentions the word.
TRUNCATED = re.compile(r"[(\[]litellm_truncated")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

COLUMNS = ("request_id", "call_type", "startTime", "model", "proxy_server_request", "response",
           "messages", "request_tags", "status")
REQUIRED = ("request_id", "call_type", "startTime")


def _quoted(name: str, what: str) -> str:
    if not _IDENT.match(name):
        raise DistillError(f"ingest.source.{what} {name!r} is not a plain SQL identifier")
    return f'"{name}"'


def build_query(src, since: datetime | None, present: set[str]):
    """SELECT of the columns this table has: older LiteLLM releases lack status and
    proxy_server_request, and the prompt is then read from messages."""
    from sqlalchemy import bindparam, text

    table = _quoted(src.table, "table")
    if src.db_schema:
        table = f"{_quoted(src.db_schema, 'db_schema')}.{table}"
    missing = [c for c in REQUIRED if c not in present]
    if missing or not ({"proxy_server_request", "messages"} & present):
        raise DistillError(f"table {src.table} is not a LiteLLM spend logs table: it lacks "
                           f"{', '.join(missing) or 'proxy_server_request/messages'}")
    cols = ", ".join(f'"{c}"' for c in COLUMNS if c in present)
    where = "call_type IN :call_types"
    params: dict[str, Any] = {"call_types": list(src.call_types)}
    if since is not None:
        where += ' AND "startTime" > :since'
        # The column is timestamp without time zone holding UTC: compare naive UTC.
        params["since"] = since.replace(tzinfo=None)
    stmt = text(f'SELECT {cols} FROM {table} WHERE {where} ORDER BY "startTime", request_id')
    return stmt.bindparams(bindparam("call_types", expanding=True)), params


def iter_spend_logs(src, since: datetime | None = None) -> Iterator[Item]:
    from sqlalchemy import inspect

    url = src.url.get_secret_value()
    where = safe_url(url)
    schema_name = f"{src.db_schema}." if src.db_schema else ""

    def query(conn):
        insp = inspect(conn)
        if not insp.has_table(src.table, schema=src.db_schema):
            raise DistillError(f"table {schema_name}{src.table} not found in {where} "
                               "(ingest.source.table / db_schema; is the proxy writing spend logs there?)")
        present = {c["name"] for c in insp.get_columns(src.table, schema=src.db_schema)}
        return build_query(src, since, present)

    for pos, row in enumerate(stream_rows(url, query, {}, src.batch_size), 1):
        yield row_item(pos, where, row)


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def row_item(pos: int, where: str, row: dict) -> Item:
    rid = row.get("request_id")
    try:
        return Item(pos, where, row, record=row_record(row), native_id=rid)
    except RecordError as e:
        return Item(pos, where, row, error=e, native_id=rid)


def row_record(row: dict) -> dict:
    status = row.get("status")
    if status and status != "success":
        raise SkipRecord("request_failed", f"LiteLLM logged status {status!r} for request {row.get('request_id')}")
    for field in ("proxy_server_request", "response", "messages"):
        if row.get(field) is not None and TRUNCATED.search(_text_of(row[field])):
            raise RecordError("litellm_truncated", f"LiteLLM truncated {field} before storing it (MAX_STRING_LENGTH_PROMPT_IN_DB)")
    body = as_json(row.get("proxy_server_request"), "proxy_server_request") or {}
    msgs = body.get("messages") if isinstance(body, dict) else None
    if not msgs:
        msgs = as_json(row.get("messages"), "messages")
    if not msgs:
        raise RecordError("no_prompt", "no messages in proxy_server_request or messages "
                          "(is store_prompts_in_spend_logs on in the proxy config?)")
    # The request body holds the tools (and tool_choice / legacy functions) it was sent with.
    tools, choice = request_tools(body) if isinstance(body, dict) else (None, None)
    messages = normalize_messages(msgs, tools)
    stored = as_json(row.get("response"), "response")
    response = response_from_stored(stored)
    calls = answer_calls(stored, tools, n_messages=len(messages))  # the completion JSON, when LiteLLM kept it
    meta: dict[str, Any] = {}
    user_meta = body.get("metadata") if isinstance(body, dict) else None
    if isinstance(user_meta, dict):
        # The caller's own metadata (e.g. feature); LiteLLM's metadata column holds key hashes.
        meta.update({k: v for k, v in user_meta.items() if isinstance(v, (str, int, float, bool))})
    tags = as_json(row.get("request_tags"), "request_tags")
    if row.get("call_type"):
        meta["litellm_call_type"] = row["call_type"]
    return make_record(row.get("request_id"), messages, response, row.get("model"),
                       normalize_timestamp(row.get("startTime")), meta,
                       [str(t) for t in tags] if isinstance(tags, list) and tags else None,
                       tools=tools, tool_choice=choice, tool_calls=calls)

