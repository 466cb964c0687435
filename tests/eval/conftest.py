"""Fixtures for eval tests: a small run directory as the earlier stages would leave it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from core.base import write_jsonl
from core.rundir import RunDir

LABELS = ["billing", "shipping", "refund", "other"]


def make_items(n_hold: int = 40, n_train: int = 20) -> list[dict]:
    items = []
    for i in range(n_hold + n_train):
        split = "holdout" if i < n_hold else "train"
        label = LABELS[i % len(LABELS)]
        items.append({"id": f"p{i}", "split": split,
                      "messages": [{"role": "system", "content": "Classify as JSON."}, {"role": "user", "content": f"question {i}"}],
                      "response": json.dumps({"intent": label, "urgent": i % 3 == 0})})
    return items


@pytest.fixture
def run_dir(tmp_path) -> tuple[RunDir, dict[str, str]]:
    """Run dir with 40 holdout + 20 train prompts; holdout p40..p41 extra: one failed, one filtered.
    Returns (rd, teacher answers by user text)."""
    rd = RunDir.create(tmp_path / "runs", "t")
    items = make_items()
    extra_failed = {"id": "pf", "split": "holdout", "messages": [{"role": "user", "content": "failed q"}], "response": None}
    extra_filtered = {"id": "px", "split": "holdout", "messages": [{"role": "user", "content": "filtered q"}], "response": "junk"}
    ingest_hold = [{**it, "response": it["response"] if it["id"] != "p0" else None, "model": None, "timestamp": None,
                    "metadata": {}} for it in items if it["split"] == "holdout"]
    write_jsonl(rd.path / "ingest" / "holdout.jsonl", ingest_hold + [{**extra_failed, "metadata": {}}, {**extra_filtered, "metadata": {}}])
    replay = [{**it, "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 5, "latency_ms": 1.0,
               "cost_usd": 0.0, "ledger_hit": False, "status": "ok", "error": None} for it in items]
    replay.append({**extra_failed, "status": "failed", "error": "boom", "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0})
    replay.append({**extra_filtered, "status": "ok", "error": None, "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 0.0})
    write_jsonl(rd.path / "replay" / "responses.jsonl", replay)
    write_jsonl(rd.path / "filter" / "kept.jsonl", [r for r in replay if r["id"].startswith("p") and r["id"][1:].isdigit()])
    rd.record_stage("train", counts={"examples": 20})
    m = rd.manifest()
    m["stages"]["train"]["wall_s"] = 360.0  # 0.1 h of training
    rd._write(m)
    answers = {it["messages"][-1]["content"]: it["response"] for it in items}
    return rd, answers
