"""Hostile logs: every bad line is quarantined with its position and one reason, nothing is
lost (the counts add up), and a source that cannot be read fails clearly with nothing written."""
import gzip
import json
import socket

import pytest

from core.base import DistillError
from ingest.config import IngestConfig
from ingest.records import RecordError
from ingest.sources.litellm_spend import row_record
from ingest_testkit import assert_balanced, chat, write_log


def test_every_kind_of_bad_line_is_quarantined_with_position_and_reason(runner, tmp_path):
    lines = [
        chat(1),                                                        # 1 ok
        '{"id": "x", "messages": [',                                    # 2 malformed JSON
        "",                                                             # 3 blank: not a record
        b'{"prompt": "caf\xe9 au lait"}',                               # 4 Latin-1 byte, not UTF-8
        '[1, 2, 3]',                                                    # 5 not an object
        {"id": "t1", "messages": "hello"},                              # 6 messages not a list
        {"id": "t2", "messages": [{"role": "user", "content": 42}]},    # 7 content not text
        {"id": "t3", "messages": [{"content": "no role"}]},             # 8 no role
        {"id": "t4", "messages": [{"role": "system", "content": "only system"}]},           # 9 no user turn
        {"id": "t5", "messages": [{"role": "user", "content": "   \n "}]},                # 10 empty user turn
        {"id": "t6", "messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}]},  # 11 tool result, no call
        {"id": {"nested": 1}, "prompt": "id is an object"},             # 12 wrong id type
        {"id": "t7", "prompt": "bad time", "timestamp": "yesterday"},   # 13 bad timestamp
        {"id": "t8", "prompt": "meta", "metadata": ["not", "a", "dict"]},  # 14 bad metadata
        {"unrelated": True},                                            # 15 unknown shape
        '{"prompt": "lone \\ud800 surrogate"}',                         # 16 invalid unicode
        chat(1, "a different question, same id"),                       # 17 duplicate id
        {"id": "t9", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},  # 18
        "[" * 100000 + "]" * 100000,                                    # 19 nested too deep / malformed
        chat(2, "a fine question about cards"),                         # 20 ok
        {"id": "tc1", "tools": [_TOOL], "messages": [{"role": "user", "content": "card 1234?"}, _call(), _result()]},  # 21 ok: tools
        {"id": "tc2", "tools": [_TOOL], "messages": [{"role": "user", "content": "card 1?"}, _call('{"last4": 12'), _result()]},  # 22
        {"id": "tc3", "messages": [{"role": "user", "content": "card 2?"}, _call(), _result()]},  # 23 calls an undeclared tool
        {"id": "tc4", "tools": [_TOOL], "messages": [{"role": "user", "content": "card 3?"}, _call(), _result("c9")]},  # 24 orphan result
    ]
    log = write_log(tmp_path / "log.jsonl", lines)
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert_balanced(c)
    assert c["read"] + c["blank_lines"] == len(lines)
    assert (c["kept"], c["quarantined"], c["blank_lines"]) == (3, 20, 1)
    q = {row["position"]: row for row in runner.out("quarantine")}
    expect = {2: "malformed_json", 4: "invalid_utf8", 5: "unknown_shape", 6: "bad_messages", 7: "bad_messages",
              8: "bad_messages", 9: "no_user_turn", 10: "no_user_turn", 11: "bad_tool_result", 12: "bad_id",
              13: "bad_timestamp", 14: "bad_metadata", 15: "unknown_shape", 16: "invalid_unicode",
              17: "duplicate_id", 18: "bad_messages", 19: "malformed_json",
              22: "bad_tool_arguments", 23: "undeclared_tool", 24: "bad_tool_result"}
    assert {p: r["reason"].split(":")[0] for p, r in q.items()} == expect
    assert c["quarantined_by_reason"]["bad_messages"] == 4
    for row in q.values():
        assert row["source"] == str(log) and len(row["reason"]) > len(row["reason"].split(":")[0]) + 2
    assert "byte 15 of the line" in q[4]["reason"] and "caf\\xe9" in q[4]["raw"]
    assert "req_1" in q[17]["reason"] and "position 1" in q[17]["reason"]
    assert len(q[19]["raw"]) < 2100  # raw is cut


_TOOL = {"type": "function", "function": {"name": "get_card", "parameters": {"type": "object", "properties": {"last4": {"type": "string"}}}}}


def _call(args='{"last4": "1234"}'):
    return {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_card", "arguments": args}}]}


def _result(cid="c1"):
    return {"role": "tool", "tool_call_id": cid, "content": '{"status": "shipped"}'}


def test_one_megabyte_prompt_is_quarantined_and_cut(runner, tmp_path):
    huge = "x" * (1 << 20)
    log = write_log(tmp_path / "log.jsonl", [chat(1, huge), chat(2)])
    c = runner.run(runner.cfg(log, quarantine_raw_chars=500))
    assert_balanced(c)
    assert c["quarantined_by_reason"] == {"too_long": 1} and c["kept"] == 1
    row = runner.out("quarantine")[0]
    assert row["id"] == "req_1" and "limit 16000" in row["reason"] and len(row["raw"]) <= 510


def test_empty_file_gives_empty_outputs(runner, tmp_path):
    log = tmp_path / "empty.jsonl"
    log.write_bytes(b"")
    c = runner.run(runner.cfg(log, parquet=True))
    assert_balanced(c)
    assert c["read"] == 0 and c["kept"] == 0
    d = runner.rd.path / "ingest"
    for name in ("train.jsonl", "holdout.jsonl", "quarantine.jsonl", "train.parquet"):
        assert (d / name).exists()
    assert (d / "train.jsonl").read_text() == ""


def test_truncated_litellm_row_is_never_trained_on():
    body = {"messages": [{"role": "user", "content": "abc... (litellm_truncated skipped 9000 chars. note) ...xyz"}]}
    with pytest.raises(RecordError) as e:
        row_record({"request_id": "r1", "status": "success", "proxy_server_request": json.dumps(body),
                    "response": "{}", "startTime": None})
    assert e.value.code == "litellm_truncated"
    # An answer cut by LiteLLM is just as unusable as a cut prompt.
    with pytest.raises(RecordError, match="litellm_truncated"):
        row_record({"request_id": "r2", "proxy_server_request": {"messages": [{"role": "user", "content": "q"}]},
                    "response": {"choices": [{"message": {"content": "a [litellm_truncated 5 chars]"}}]}})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("source", [
    {"kind": "litellm_spend_logs", "url": "postgresql+psycopg2://ingest:s3cret@127.0.0.1:{port}/test"},
    {"kind": "sql", "url": "postgresql+psycopg2://ingest:s3cret@127.0.0.1:{port}/test", "query": "SELECT 1",
     "columns": {"prompt": "p"}},
    {"kind": "openai_stored", "base_url": "http://127.0.0.1:{port}/v1", "api_key": "k", "max_retries": 0},
])
def test_unreachable_source_fails_clearly_and_writes_nothing(runner, tmp_path, source):
    port = _closed_port()
    src = {k: v.format(port=port) if isinstance(v, str) else v for k, v in source.items()}
    cfg = IngestConfig.model_validate({"source": src, "window": {"incremental": True, "state_dir": str(tmp_path / "state")}})
    with pytest.raises(DistillError) as e:
        runner.run(cfg)
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "s3cret" not in msg
    assert not (runner.rd.path / "ingest").exists()
    assert "ingest" not in runner.rd.manifest()["stages"]
    # No watermark, no golden holdout: only the workers' lock file (ingest/state.py) may be there.
    assert [f.suffix for f in (tmp_path / "state").rglob("*")] in ([], [".lock"])


def test_cut_off_gzip_fails_clearly_and_writes_nothing(runner, tmp_path):
    data = gzip.compress(b"".join(json.dumps(chat(i)).encode() + b"\n" for i in range(2000)))
    log = tmp_path / "log.jsonl.gz"
    log.write_bytes(data[: len(data) // 2])
    with pytest.raises(DistillError, match="log.jsonl.gz is unreadable"):
        runner.run(runner.cfg(log))
    assert not (runner.rd.path / "ingest").exists()


def test_unknown_config_keys_and_kinds_are_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="extra"):
        IngestConfig.model_validate({"source": {"path": "x", "pth": "y"}})
    with pytest.raises(ValidationError, match="source.kind must be one of"):
        IngestConfig.model_validate({"source": {"kind": "kafka"}})
    assert IngestConfig.model_validate({"source": {"path": "x"}}).source.kind == "jsonl"



def test_utf8_byte_order_mark_on_the_first_line_is_not_a_lost_record(runner, tmp_path):
    # What Excel and many Windows tools write: the BOM once, before the first line.
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\xef\xbb\xbf" + json.dumps(chat(1)).encode() + b"\r\n" + json.dumps(chat(2)).encode() + b"\r\n")
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert_balanced(c)
    assert (c["read"], c["kept"], c["quarantined"]) == (2, 2, 0), c
    assert [r["id"] for r in runner.out("train")] == ["req_1", "req_2"]
    # ... also gzipped, and a BOM later in the file is still an error (it is not a line start mark).
    gz = tmp_path / "log.jsonl.gz"
    gz.write_bytes(gzip.compress(b"\xef\xbb\xbf" + json.dumps(chat(1)).encode() + b"\n\xef\xbb\xbf" + json.dumps(chat(2)).encode() + b"\n"))
    c = runner.run(runner.cfg(gz, holdout_fraction=0.0))
    assert_balanced(c)
    assert (c["kept"], c["quarantined"]) == (1, 1) and runner.out("quarantine")[0]["position"] == 2


def test_utf16_log_from_powershell_is_read(runner, tmp_path):
    log = tmp_path / "log.jsonl"
    text = json.dumps(chat(1, "caf\u00e9 \U0001f600 question")) + "\r\n" + json.dumps(chat(2)) + "\r\n"
    log.write_bytes(text.encode("utf-16"))  # BOM + UTF-16LE, what `>` writes in Windows PowerShell 5
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert_balanced(c)
    assert (c["read"], c["kept"]) == (2, 2), c
    assert "caf\u00e9 \U0001f600" in runner.out("train")[0]["messages"][-1]["content"]


def test_langfuse_export_with_byte_order_mark(runner, tmp_path):
    log = tmp_path / "export.json"
    obs = {"id": "g1", "type": "GENERATION", "input": [{"role": "user", "content": "hello there"}], "output": "hi",
           "startTime": "2026-10-01T00:00:00Z"}
    log.write_bytes(b"\xef\xbb\xbf" + json.dumps({"data": [obs]}).encode())
    c = runner.run(IngestConfig.model_validate({"source": {"kind": "langfuse", "path": str(log)}, "parquet": False,
                                                "holdout_fraction": 0.0}))
    assert (c["read"], c["kept"]) == (1, 1), c
