"""JSONL log files (optionally gzipped): one logged request per line, in any accepted shape.

`path` may be a glob (logs/2026-10-*.jsonl.gz) for rotated logs: files are read in name order,
positions are line numbers within each file.
"""
from __future__ import annotations

import codecs
import itertools

import gzip
import json
import re
from pathlib import Path
from typing import IO, Iterator

from core.base import DistillError
from ingest.records import Item, RecordError, from_log_object


def open_log(path: str | Path | None, what: str = "ingest.source.path") -> IO[bytes]:
    """Open a log for reading bytes; gzip is recognised by its magic bytes, not the name."""
    if path is None:
        raise DistillError(f"{what} is not set: point it at the log file")
    p = Path(path)
    if not p.is_file():
        raise DistillError(f"log file not found: {p} ({what})")
    try:
        f = open(p, "rb")
    except OSError as e:
        raise DistillError(f"cannot read log file {p}: {e.strerror}") from None
    if f.peek(2)[:2] == b"\x1f\x8b":
        f.close()
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return f


def log_files(path: str | Path | None) -> list[Path]:
    """The files a source path names: itself, or the sorted matches of a glob."""
    if path is None:
        raise DistillError("ingest.source.path is not set: point it at the log file")
    p = str(path)
    if not any(c in p for c in "*?["):
        return [Path(p)]
    root = Path(p).anchor or "."
    matches = sorted(Path(root).glob(str(Path(p).relative_to(root)))) if Path(p).is_absolute() else sorted(Path().glob(p))
    files = [m for m in matches if m.is_file()]
    if not files:
        raise DistillError(f"no log files match {p} (ingest.source.path)")
    return files


def iter_jsonl(path: str | Path | None) -> Iterator[Item]:
    files = log_files(path)
    for p in files:  # opened up front: a missing file fails before any record is read
        open_log(p).close()
    for p in files:
        yield from _iter_file(p)


UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _iter_file(path: Path) -> Iterator[Item]:
    src = str(path)
    pos = 0
    with open_log(path) as f:
        # Bytes, decoded per line: one bad line is quarantined instead of stopping the read.
        try:
            for pos, line in enumerate(_lines(f), 1):
                yield parse_line(pos, src, line)
        except (OSError, EOFError) as e:  # a corrupt or cut-off .gz
            raise DistillError(f"log file {src} is unreadable after line {pos}: {e}") from None


def _lines(f: IO[bytes]) -> Iterator[bytes]:
    """UTF-8 lines of a log. Excel and many Windows tools start a file with a byte-order mark:
    a UTF-8 one is dropped (utf-8-sig), and a UTF-16 file (PowerShell's `>`) is transcoded line
    by line; a lone surrogate in it comes out as invalid UTF-8, so that line is quarantined."""
    # The head by read(), not peek(): a .gz whose first member holds one byte peeks one byte, and a
    # UTF-16 BOM split across members went unrecognised (found by the fuzz test).
    head = b""
    while len(head) < 3 and (chunk := f.read(3 - len(head))):
        head += chunk
    blocks = itertools.chain([head], iter(lambda: f.read(1 << 22), b""))  # big blocks: line by line cost ~20 us a line
    if head.startswith(_UTF16_BOMS):
        dec = codecs.getincrementaldecoder("utf-16")("surrogatepass")
        rest = ""
        try:
            for block in blocks:
                parts = (rest + dec.decode(block)).split("\n")
                rest = parts.pop()
                for part in parts:
                    yield (part + "\n").encode("utf-8", "surrogatepass")
            rest += dec.decode(b"", final=True)
        except UnicodeDecodeError as e:  # an odd trailing byte: not a UTF-16 file after all
            raise OSError(f"not valid UTF-16 although it starts with a UTF-16 byte-order mark ({e.reason})") from None
        if rest:
            yield rest.encode("utf-8", "surrogatepass")
        return
    rest = b""
    first = True
    for block in blocks:
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        if first and lines:
            first = False
            if lines[0].startswith(UTF8_BOM):
                lines[0] = lines[0][len(UTF8_BOM):]
        yield from lines
    if rest:
        yield rest[len(UTF8_BOM):] if first and rest.startswith(UTF8_BOM) else rest


def parse_line(pos: int, src: str, line: bytes) -> Item:
    if not line.strip():
        return Item(pos, src, None)  # blank: no record, no error (counted apart)
    line = line.rstrip(b"\r\n")  # the terminator is not part of the record (nor of its raw form)
    obj = _fast_loads(line)
    if obj is _FAILED:
        return _parse_slow(pos, src, line)
    try:
        return Item(pos, src, line, record=from_log_object(obj))
    except RecordError as e:
        return Item(pos, src, line, error=e)


def _parse_slow(pos: int, src: str, line: bytes) -> Item:
    """The stdlib path: slower, but it says exactly what is wrong with a line."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return Item(pos, src, line, error=RecordError("invalid_utf8", f"byte {e.start} of the line is not valid UTF-8 ({line[e.start:e.start + 1]!r})"))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return Item(pos, src, text, error=RecordError("malformed_json", f"{e.msg} at column {e.colno}"))
    except RecursionError:
        return Item(pos, src, text, error=RecordError("malformed_json", "nested too deeply"))
    if _SURROGATE_ESCAPE.search(text) and not _encodable(obj):
        # json.loads accepts "\ud800"; such a string cannot be written back out as UTF-8.
        return Item(pos, src, text, error=RecordError("invalid_unicode", "a \\u escape encodes a lone surrogate"))
    try:
        return Item(pos, src, text, record=from_log_object(obj))
    except RecordError as e:
        return Item(pos, src, text, error=e)


_FAILED = object()
try:
    # orjson (installed with prefect) parses 3x faster and, like our checks, rejects invalid
    # UTF-8 and lone surrogates; anything it refuses goes the stdlib way for a precise reason.
    import orjson

    def _fast_loads(line: bytes):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            return _FAILED
except ImportError:  # pragma: no cover - plain stdlib install
    def _fast_loads(line: bytes):
        return _FAILED


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(obj) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
