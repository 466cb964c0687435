"""Property-based fuzzing of the JSONL ingest (hypothesis): random and mutated log lines, plain
or split into gzip members (sometimes cut off), in UTF-8, UTF-8 with a byte-order mark or UTF-16.

For every input the stage either reads it - and then every line is accounted for:
    read + blank_lines = lines, read = kept + quarantined + skipped + duplicates + ...
- or, only for a cut-off gzip stream, fails with one clear DistillError and writes nothing.
Anything else (a crash, a lost line) fails the test with the input that caused it.
The number of inputs tried is printed (visible without -s).
"""
from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.base import DistillError
from ingest_testkit import Runner, assert_balanced, chat

EXAMPLES = 150

# A few valid records, drawn again and again so exact and near duplicates happen too.
_POOL = [json.dumps(chat(i, user)).encode() for i, user in enumerate(
    ["reset my card pin", "reset my card pin please", "where is my refund", "caf\u00e9 \U0001f600 bill", "x"])]
_TOOL = {"type": "function", "function": {"name": "get_card", "parameters": {"type": "object", "properties": {"last4": {"type": "string"}}}}}
_POOL += [json.dumps({"id": "tc1", "tools": [_TOOL], "messages": [  # tool-calling lines: mutations break calls, arguments, ids
    {"role": "user", "content": "status of card 1234?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_card", "arguments": "{\"last4\": \"1234\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"shipped\"}"}], "response": "It shipped."}).encode(),
    json.dumps({"id": "tc2", "tools": [_TOOL], "messages": [{"role": "user", "content": "card 9876?"}],
                "response": {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c2", "type": "function", "function": {"name": "get_card", "arguments": "{\"last4\": \"9876\"}"}}]}}).encode()]

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(
        ["id", "messages", "prompt", "role", "content", "response", "timestamp", "metadata", "model", "input",
         "tools", "tool_calls", "tool_call_id", "function_call", "functions", "tool_choice"]) | st.text(max_size=5),
        kids, max_size=4),
    max_leaves=12)


@st.composite
def _mutated(draw) -> bytes:
    """A valid record with bytes deleted, inserted or flipped (cut JSON, stray bytes, bad UTF-8)."""
    b = bytearray(draw(st.sampled_from(_POOL)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(b)))
        op = draw(st.sampled_from(["delete", "insert", "flip", "truncate"]))
        if op == "delete":
            del b[i:i + draw(st.integers(1, 8))]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=6))
        elif op == "flip" and i < len(b):
            b[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del b[i:]
    return bytes(b)


def _chat_line(user: str, ts: str | None) -> bytes:
    rec = {"id": f"r-{abs(hash(user)) % 10**6}", "messages": [{"role": "user", "content": user}]}
    if ts is not None:
        rec["timestamp"] = ts
    return json.dumps(rec, ensure_ascii=False).encode("utf-8", "surrogatepass")


_line = st.one_of(
    st.sampled_from(_POOL),                                                    # valid (and repeated)
    _mutated(),                                                                # damaged
    st.builds(_chat_line, st.text(max_size=40), st.none() | st.sampled_from(   # odd but well-formed
        ["2026-10-01T00:00:00Z", "yesterday", "1790000000", "", "2026-13-45T99:00:00"])),
    _json_values.map(lambda v: json.dumps(v).encode()),                        # any JSON value
    st.binary(max_size=60),                                                    # noise
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),    # text, lone surrogates
    st.sampled_from([b"", b"   ", b"\r", b"\t \r"]),                           # blank
).map(lambda b: b.replace(b"\n", b" "))  # one line each: the line count is what the counts must explain


def _encode(lines: list[bytes], encoding: str, trailing_newline: bool) -> tuple[bytes, int]:
    """The file's bytes and how many lines a reader finds in it."""
    body = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    n = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
    if encoding == "utf-8-sig":
        return b"\xef\xbb\xbf" + body, max(n, 1)  # a lone BOM is one (blank) line
    if encoding == "utf-16":
        # Bytes that are not UTF-8 become lone surrogates, which UTF-16 can carry: they must come
        # back out as invalid UTF-8 and be quarantined, not crash the transcoding.
        return body.decode("utf-8", "surrogateescape").encode("utf-16", "surrogatepass"), n
    if body[:2] in (b"\x1f\x8b", b"\xff\xfe", b"\xfe\xff"):
        return b"\n" + body, n + 1  # noise that happens to open like gzip / UTF-16 is not what this draws
    return body, n


def _gzip_members(data: bytes, cuts: list[int]) -> bytes:
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return b"".join(gzip.compress(data[a:b]) for a, b in zip(bounds, bounds[1:])) or gzip.compress(b"")


def test_fuzzed_logs_never_crash_and_every_line_is_accounted_for(capsys):
    tried = {"inputs": 0, "read_ok": 0, "clear_error": 0, "lines": 0, "kept": 0, "quarantined": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(lines=st.lists(_line, max_size=25), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
           gz=st.booleans(), cuts=st.lists(st.integers(0, 4000), max_size=3), cut_off=st.integers(0, 64) | st.none(),
           trailing_newline=st.booleans())
    def check(lines, encoding, gz, cuts, cut_off, trailing_newline):
        tried["inputs"] += 1
        data, n = _encode(lines, encoding, trailing_newline)
        truncated = False
        if gz:
            data = _gzip_members(data, cuts)
            if cut_off:  # cut the stream short: a copy that did not finish
                truncated = True
                data = data[: max(0, len(data) - cut_off)]
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / ("log.jsonl.gz" if gz else "log.jsonl")
            log.write_bytes(data)
            runner = Runner(Path(tmp))
            try:
                c = runner.run(runner.cfg(log, holdout_fraction=0.2))
            except DistillError as e:
                assert truncated, f"a clear error on an intact input: {e}"
                assert "unreadable" in str(e) and not (runner.rd.path / "ingest").exists()
                tried["clear_error"] += 1
                return
            assert_balanced(c)
            if not truncated:
                assert c["read"] + c["blank_lines"] == n, (c, lines)
            else:
                assert c["read"] + c["blank_lines"] <= n
            tried["read_ok"] += 1
            tried["lines"] += n
            tried["kept"] += c["kept"]
            tried["quarantined"] += c["quarantined"]

    check()
    with capsys.disabled():
        print(f"\ningest fuzz: {tried['inputs']} inputs tried ({tried['read_ok']} read, {tried['clear_error']} cut-off gzip "
              f"refused clearly); {tried['lines']} lines: {tried['kept']} kept, {tried['quarantined']} quarantined")
    assert tried["inputs"] >= EXAMPLES // 2 and tried["kept"] > 0 and tried["quarantined"] > 0


def test_a_utf16_bom_split_across_gzip_members_is_still_a_bom(tmp_path):
    """The fuzz test's find: a .gz whose first member holds one byte of the BOM (peek() saw one
    byte and the file was read as UTF-8: one garbage line)."""
    for lines in ([], [_POOL[0]]):
        data, n = _encode(lines, "utf-16", trailing_newline=False)
        log = tmp_path / f"log{len(lines)}.jsonl.gz"
        log.write_bytes(_gzip_members(data, [1]))
        (tmp_path / f"r{len(lines)}").mkdir()
        runner = Runner(tmp_path / f"r{len(lines)}")
        c = runner.run(runner.cfg(log, holdout_fraction=0.2))
        assert_balanced(c)
        assert c["read"] + c["blank_lines"] == n and c["quarantined"] == 0, c
