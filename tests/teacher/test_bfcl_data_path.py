"""`distill ingest`, `replay` and `filter` on the bundled BFCL example, with its reference teacher
over HTTP: every request is ingested with its tools, the teacher's calls are stored, the schema
filter drops the few reference answers that break their own tools' schemas (BFCL data quirks),
and the data report counts calls per tool."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.base import read_jsonl
from core.rundir import RunDir

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bfcl" / "distill.yaml"


@pytest.mark.slow
def test_bfcl_ingest_replay_filter(tmp_path, capsys):
    from distill.cli import main

    common = ["--config", str(EXAMPLE), "--set", f"data_dir={tmp_path / 'data'}"]
    assert main(["ingest", *common]) == 0
    assert main(["replay", *common, "--set", "reference_teacher.latency_ms=0", "--set", "teacher.progress=false"]) == 0
    assert main(["filter", *common]) == 0
    capsys.readouterr()
    rd = RunDir(next((tmp_path / "data" / "runs").iterdir()))
    ing = rd.stage("ingest")["counts"]
    assert (ing["read"], ing["kept"], ing["quarantined"], ing["duplicates"]) == (1000, 1000, 0, 0)

    replay = rd.stage("replay")["counts"]
    recs = list(read_jsonl(rd.replay_responses))
    ok = [r for r in recs if r["status"] == "ok"]
    # Prompts whose e-mail address PII redaction replaced are unknown to the reference teacher
    # (its answers hold the original text): failed with their reason, never lost.
    failed = [r for r in recs if r["status"] != "ok"]
    assert replay["ok"] == len(ok) >= 990 and all("<EMAIL_" in r["messages"][-1]["content"] and r["error"].startswith("http_404") for r in failed)
    assert all(r["tool_calls"] and r["finish_reason"] == "tool_calls" and r["tools"] for r in ok)

    filt = rd.stage("filter")["counts"]
    assert filt["replayed"] == 1000 == filt["kept"] + filt["dropped"]
    by_reason = filt["dropped_by_reason"]
    assert set(by_reason) <= {"replay_failed", "missing_argument", "unknown_argument", "argument_type", "argument_invalid"}
    assert filt["dropped_by_filter"].get("tool_call", 0) <= 10
    kept = list(read_jsonl(rd.filter_kept))
    assert all(isinstance(c["arguments"], dict) for r in kept for c in r["tool_calls"])

    report = json.loads(rd.data_report.read_text())
    tc = report["tool_calls"]
    assert tc["teacher"]["requests_with_tools"] == len(ok) and tc["teacher"]["text_answers"] == 0
    assert sum(tc["teacher"]["calls_per_tool"].values()) == sum(len(r["tool_calls"]) for r in ok)
    assert tc["teacher"]["parallel_call_answers"] > 300
    assert sum(x["kept_train_calls"] for x in tc["per_tool"]) == sum(len(r["tool_calls"]) for r in kept if r["split"] == "train")
    md = rd.data_report_md.read_text()
    assert "## Tool calls" in md and "| calculate_bmi |" in md
