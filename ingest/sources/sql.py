"""A generic SQL source: any SELECT through SQLAlchemy, with a column -> record-field mapping."""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Iterator

from core.base import DistillError
from ingest.records import (Item, RecordError, answer_calls, make_record, normalize_messages, normalize_timestamp, request_tools,
                            response_from_stored)


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and the manifest."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # Never echo an unparseable URL: it may be a password pasted in the wrong place.
        raise DistillError("ingest.source.url is not a valid SQLAlchemy URL (e.g. postgresql+psycopg2://user@host/db)") from None


def engine_for(url: str):
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    safe = safe_url(url)
    kwargs = {}
    if make_url(url).get_backend_name() == "postgresql" and make_url(url).get_driver_name() == "psycopg2":
        # An unroutable host would otherwise hang for the OS TCP timeout (minutes).
        kwargs["connect_args"] = {"connect_timeout": 15}
    try:
        return create_engine(url, **kwargs)
    except Exception as e:  # missing driver, bad options
        raise DistillError(f"cannot open database {safe}: {e}") from None


def stream_rows(url: str, stmt, params: dict, batch_size: int) -> Iterator[dict]:
    """Rows as dicts, fetched in batches; any database failure becomes a DistillError naming the URL.

    `stmt` may be a callable taking the open connection and returning (statement, params),
    for queries that depend on the table's actual columns."""
    from sqlalchemy.exc import SQLAlchemyError

    safe = safe_url(url)
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            if callable(stmt):
                stmt, params = stmt(conn)
            result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(stmt, params)
            for row in result.mappings():
                yield dict(row)
    except SQLAlchemyError as e:
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise DistillError(f"cannot read from database {safe}: {detail}") from None
    finally:
        engine.dispose()


def as_json(value: Any, field: str) -> Any:
    """Decode a JSON column that a driver may hand over as text or already decoded."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        s = value.strip()
        if s[:1] in ("{", "[", '"'):
            try:
                return json.loads(s)
            except json.JSONDecodeError as e:
                raise RecordError("malformed_json", f"column {field}: {e.msg} at column {e.colno}") from None
    return value


def iter_sql(src, since: datetime | None = None) -> Iterator[Item]:
    from sqlalchemy import text

    url = src.url.get_secret_value()
    where = safe_url(url)
    cols = src.columns
    if not cols.messages and not cols.prompt:
        raise DistillError("ingest.source.columns: set `messages` or `prompt` to the column holding the prompt")
    stmt = text(src.query)
    params = {}
    if re.search(r":watermark\b", src.query):  # the query opted in to incremental reads
        # ISO 8601 UTC with "Z", the form ingest writes; cast it in SQL if the column is typed.
        params["watermark"] = since.isoformat().replace("+00:00", "Z") if since else None
    for pos, row in enumerate(stream_rows(url, stmt, params, src.batch_size), 1):
        yield _row_item(pos, where, row, cols)


def _col(row: dict, name: str | None, what: str) -> Any:
    if name is None:
        return None
    if name not in row:
        raise DistillError(f"ingest.source.columns.{what}: the query returns no column {name!r} (it has: {', '.join(row)})")
    return row[name]


def _row_item(pos: int, where: str, row: dict, cols) -> Item:
    mapped = {f: _col(row, getattr(cols, f), f) for f in ("id", "messages", "prompt", "response", "model", "timestamp", "metadata", "tools")}
    nid = None if mapped["id"] is None else str(mapped["id"])
    try:
        tools = choice = None
        if cols.tools and mapped["tools"] is not None:
            t = as_json(mapped["tools"], cols.tools)
            tools, choice = request_tools(t if isinstance(t, dict) else {"tools": t})
        if cols.messages:
            messages = normalize_messages(as_json(mapped["messages"], cols.messages), tools)
        else:
            p = mapped["prompt"]
            if not isinstance(p, str):
                raise RecordError("bad_messages", f"column {cols.prompt} is {type(p).__name__}, not text")
            messages = [{"role": "user", "content": p}]
        resp = response_from_stored(mapped["response"])
        calls = answer_calls(_parsed(mapped["response"]), tools, n_messages=len(messages))
        meta = as_json(mapped["metadata"], cols.metadata or "") if cols.metadata else None
        rec = make_record(mapped["id"], messages, resp, mapped["model"], normalize_timestamp(mapped["timestamp"]), meta,
                          tools=tools, tool_choice=choice, tool_calls=calls)
        return Item(pos, where, row, record=rec, native_id=nid)
    except RecordError as e:
        return Item(pos, where, row, error=e, native_id=nid)


def _parsed(value: Any) -> Any:
    """A stored answer as an object when it is a serialized message or completion (for its tool
    calls); text that merely looks like JSON gives no calls either way."""
    if isinstance(value, (bytes, bytearray, str)):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    return value if isinstance(value, dict) else None
