"""Source adapters: each turns one kind of log into a stream of `Item`s (canonical record or error).

Adapters only read and convert; validation, dedup and redaction happen once, in the pipeline.
`since` lets an adapter skip old records at the source (SQL WHERE, early stop on a time-ordered
API); the pipeline filters by time again, so an adapter may ignore it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterator

from core.base import DistillError
from ingest.records import Item


def describe(src) -> str:
    """A name for the source that is safe to log and to put in error messages (no secrets)."""
    kind = src.kind
    if kind in ("jsonl", "langfuse"):
        return str(src.path)
    if kind == "openai_stored":
        return src.base_url or "https://api.openai.com/v1"
    if kind in ("litellm_spend_logs", "sql"):
        from ingest.sources.sql import safe_url
        return safe_url(src.url.get_secret_value())
    raise DistillError(f"ingest.source.kind {kind!r} is not supported")


def iter_source(src, since: datetime | None = None) -> Iterator[Item]:
    """Items from the configured source. Raises DistillError (naming the source) if it cannot be read."""
    kind = src.kind
    if kind == "jsonl":
        from ingest.sources.jsonl import iter_jsonl
        return iter_jsonl(src.path)
    if kind == "openai_stored":
        from ingest.sources.openai_stored import iter_openai_stored
        return iter_openai_stored(src, since)
    if kind == "litellm_spend_logs":
        from ingest.sources.litellm_spend import iter_spend_logs
        return iter_spend_logs(src, since)
    if kind == "langfuse":
        from ingest.sources.langfuse import iter_langfuse
        return iter_langfuse(src.path)
    if kind == "sql":
        from ingest.sources.sql import iter_sql
        return iter_sql(src, since)
    raise DistillError(f"ingest.source.kind {kind!r} is not supported")
