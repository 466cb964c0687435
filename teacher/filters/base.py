"""The filter unit and the text helpers the filters share.

A filter is a small step in the distilabel sense: it has a `name`, holds its own config section,
may look at all records once (`setup`, e.g. to infer a schema), and returns one `Verdict` per
record. Reasons are "<code>: <detail>"; the pipeline counts drops by the code so the counts stay
readable while the detail (which value, which pattern) stays on the record.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from core.base import stable_hash


@dataclass
class Verdict:
    keep: bool
    reason: str = ""
    # Fields to set on the record when it is kept (e.g. an unwrapped response); the pipeline
    # keeps the previous value under "original_<field>" so nothing is silently rewritten.
    update: dict[str, Any] = field(default_factory=dict)


KEEP = Verdict(True)


def drop(code: str, detail: str = "") -> Verdict:
    return Verdict(False, f"{code}: {detail}" if detail else code)


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip() or "unspecified"


class Filter:
    """Base filter. Subclasses set `name` and implement `check` (one record) or `check_all`."""

    name: ClassVar[str] = "filter"

    def __init__(self, config: Any = None):
        self.config = config
        # A line for the manifest/report: what the filter actually did (e.g. "schema inferred").
        self.note = ""

    @property
    def active(self) -> bool:
        return bool(getattr(self.config, "enabled", True))

    def setup(self, records: list[dict]) -> None:
        """See every record reaching this filter once, before checking (default: nothing)."""

    def check(self, record: dict) -> Verdict:
        return KEEP

    def check_all(self, records: list[dict]) -> list[Verdict]:
        return [self.check(r) for r in records]


# ---- shared helpers -------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n(.*?)\n?\s*```\s*$", re.S)
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WS = re.compile(r"\s+")


def response_text(record: dict) -> str:
    r = record.get("response")
    return r if isinstance(r, str) else ""


def unwrap_fence(text: str) -> str | None:
    """The body of a ```json ... ``` fence, or None when the text is not one fenced block."""
    m = _FENCE.match(text)
    return m.group(1) if m else None


def parse_json(text: str, allow_fence: bool = True) -> tuple[bool, Any]:
    """(ok, value). Only whole-text JSON counts: 'Sure! {"a": 1}' is not JSON output."""
    s = text.strip()
    if allow_fence:
        inner = unwrap_fence(s)
        if inner is not None:
            s = inner.strip()
    if not s or s[0] not in "{[\"-0123456789tfn":
        return False, None
    try:
        return True, json.loads(s)
    except (json.JSONDecodeError, ValueError):
        return False, None


def approx_tokens(text: str) -> int:
    """Words and punctuation marks: close enough to BPE counts for bounds and histograms."""
    return len(_TOKEN.findall(text))


def normalize_text(text: str) -> str:
    return _WS.sub(" ", text.strip().lower()).rstrip(" .!")


def answer_key(text: str, fields: list[str] | None = None) -> str:
    """What two answers must share to count as 'the same answer'.

    Structured outputs compare parsed values (key order and whitespace do not matter; with
    `fields`, only those fields); free text compares case- and whitespace-normalised text.
    """
    ok, value = parse_json(text)
    if ok:
        if fields and isinstance(value, dict):
            value = {f: value.get(f) for f in fields}
        return "json:" + stable_hash(value)
    return "text:" + normalize_text(text)


def record_answer_key(record: dict, fields: list[str] | None = None) -> str:
    """answer_key of a record's whole answer: its text and, when it calls tools, the calls by name
    and arguments (ids are random per request)."""
    calls = record.get("tool_calls")
    if not calls:
        return answer_key(response_text(record), fields)
    sig = [{"name": c.get("name"), "arguments": c.get("arguments")} for c in calls if isinstance(c, dict)]
    return "calls:" + stable_hash([normalize_text(response_text(record)), sig])


def input_key(record: dict) -> str:
    """Identity of a record's input: the messages and, when declared, the tools and tool_choice
    (the same question asked with other tools is another input)."""
    if record.get("tools") is None and record.get("tool_choice") is None:
        return stable_hash(record.get("messages") or [])
    return stable_hash([record.get("messages") or [], record.get("tools"), record.get("tool_choice")])
