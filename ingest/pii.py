"""PII redaction: emails, phone numbers, payment cards (Luhn), IBANs (mod 97), US SSNs, UK NINOs.

Each distinct value gets one placeholder per run (<EMAIL_1>, <CARD_2>, ...), so a conversation
that repeats an address still reads consistently and the student learns the placeholder, never
the value. Checksums keep order numbers and amounts from being redacted as cards or IBANs.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable

from core.toolcalls import map_strings

# Most specific first: a card number would otherwise also look like a phone number.
_PATTERNS: list[tuple[str, re.Pattern, bool]] = [
    # (type, pattern, needs a digit in the text to possibly match)
    ("email", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), False),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), True),
    ("card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), True),
    ("ssn", re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])"), True),
    ("nino", re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b", re.I), True),
    ("phone", re.compile(
        r"(?<![\w+])(?:(?:\+|00)[1-9]\d{0,2}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ .-]?\d{2,5}){1,4}(?![\w-])"), True),
]
_DIGIT = re.compile(r"\d")
_CACHE_MAX = 50_000


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    s = value.replace(" ", "").upper()
    if not (15 <= len(s) <= 34) or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _card_ok(v: str) -> bool:
    d = _digits(v)
    return 13 <= len(d) <= 19 and luhn_ok(d)


_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")  # an unissued SSN is still not a phone number
_US_PHONE = re.compile(r"(?:1[ .-]?)?\d{3}[ .-]\d{3}[ .-]\d{4}")


def _phone_ok(v: str) -> bool:
    # A phone number announces itself: an international prefix (+44, 0044), an area code in
    # brackets, a national trunk 0, or the US 3-3-4 grouping. Other digit groups (amounts,
    # order numbers, a card or IBAN that failed its checksum) are left alone.
    d = _digits(v)
    if not 9 <= len(d) <= 15 or _SSN_SHAPE.fullmatch(v):
        return False
    if v.startswith(("+", "00", "(")):
        return True
    if v.startswith("0"):
        return len(d) <= 12
    return _US_PHONE.fullmatch(v) is not None


_CHECKS: dict[str, Callable[[str], bool]] = {"iban": iban_ok, "card": _card_ok, "phone": _phone_ok}


def _key(kind: str, value: str) -> str:
    """Normalised value, so '4111 1111 1111 1111' and '4111111111111111' share a placeholder."""
    if kind == "email":
        return value.lower()
    if kind in ("iban", "nino"):
        return value.replace(" ", "").upper()
    return _digits(value)


class Redactor:
    """Stateful for one run: the value -> placeholder map and the counts by type."""

    def __init__(self, types: list[str] | None = None):
        wanted = set(types) if types is not None else {p[0] for p in _PATTERNS}
        self._patterns = [p for p in _PATTERNS if p[0] in wanted]
        self._placeholders: dict[tuple[str, str], str] = {}
        self._next: Counter = Counter()
        self.counts: Counter = Counter()
        # Logs repeat long system prompts; redacting each distinct text once keeps us fast.
        self._cache: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {}

    def placeholder(self, kind: str, value: str) -> str:
        k = (kind, _key(kind, value))
        ph = self._placeholders.get(k)
        if ph is None:
            self._next[kind] += 1
            ph = self._placeholders[k] = f"<{kind.upper()}_{self._next[kind]}>"
        return ph

    def redact(self, text: str) -> str:
        # Every pattern needs a digit or an "@": most short texts (metadata, many prompts) have neither.
        if "@" not in text and _DIGIT.search(text) is None:
            return text
        hit = self._cache.get(text)
        if hit is not None:
            out, found_items = hit
            for kind, n in found_items:
                self.counts[kind] += n
            return out
        found: dict[str, int] = {}
        out = text
        has_digit = _DIGIT.search(text) is not None
        for kind, pat, needs_digit in self._patterns:
            if (needs_digit and not has_digit) or (kind == "email" and "@" not in out):
                continue
            out = pat.sub(self._replacer(kind, found), out)
        for kind, n in found.items():
            self.counts[kind] += n
        if len(self._cache) < _CACHE_MAX:
            self._cache[text] = (out, tuple(found.items()))
        return out

    def _replacer(self, kind: str, found: dict[str, int]) -> Callable[[re.Match], str]:
        check = _CHECKS.get(kind)

        def sub(m: re.Match) -> str:
            v, rest = m.group(0), ""
            if check is not None and not check(v):
                if kind != "iban":
                    return v
                # The pattern may have swallowed a trailing word; retry shorter at spaces.
                while " " in v and not check(v):
                    v, tail = v.rsplit(" ", 1)
                    rest = " " + tail + rest
                if not check(v):
                    return m.group(0)
            found[kind] = found.get(kind, 0) + 1
            return self.placeholder(kind, v) + rest

        return sub

    def redact_record(self, record: dict) -> None:
        """Redact every message (tool results and tool-call arguments too), the recorded
        response and its calls, and metadata strings, in place. Tool schemas are the
        developer's, not the user's: left alone (redacting them would change the contract)."""
        for m in record["messages"]:
            if m["content"]:
                m["content"] = self.redact(m["content"])
            if m.get("tool_calls"):
                m["tool_calls"] = self._redact_calls(m["tool_calls"])
        if record.get("response"):
            record["response"] = self.redact(record["response"])
        if record.get("tool_calls"):
            record["tool_calls"] = self._redact_calls(record["tool_calls"])
        if record.get("metadata"):
            record["metadata"] = self._redact_value(record["metadata"])

    def _redact_calls(self, calls: list[dict]) -> list[dict]:
        # Argument values only: names and argument keys come from the tool schema.
        return [{**c, "arguments": map_strings(c.get("arguments"), self.redact)} for c in calls]

    def _redact_value(self, v):
        # Metadata is small but free-form: a logged "user" field is as sensitive as a prompt.
        if isinstance(v, str):
            return self.redact(v)
        if isinstance(v, dict):
            return {k: self._redact_value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self._redact_value(x) for x in v]
        return v
