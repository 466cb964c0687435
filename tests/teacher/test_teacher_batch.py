"""Batch mode against the reference teacher's /v1/files + /v1/batches (openai SDK in the loop)."""
from __future__ import annotations

import json

import pytest

from core.base import DistillError, read_jsonl
from teacher.config import TeacherConfig
from teacher.replay import run_replay


def bcfg(url: str, **kw) -> TeacherConfig:
    return TeacherConfig(**{**dict(api_base=url, model="openai/gpt-4o-mini", mode="batch", batch_poll_s=0.05, progress=False), **kw})


def test_batch_replay_half_price_and_ledgered(dataset, serve, tmp_path):
    rd, answers = dataset(6, holdout=2, unknown=1)
    t = serve(answers, batch_delay_s=0.1)
    out = run_replay(bcfg(t.base_url), rd, tmp_path / "l.db")
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert [r["id"] for r in recs] == [f"p{i}" for i in range(8)]
    assert out["counts"]["ok"] == 7 and out["counts"]["failed_by_reason"] == {"http_404": 1}
    r = recs[3]
    assert r["response"] == "3 plus 3 is 6." and r["status"] == "ok"
    # gpt-4o-mini batch price from litellm's map: $0.075 / 1M in, $0.30 / 1M out (half the online price)
    assert r["cost_usd"] == pytest.approx(r["prompt_tokens"] * 0.075e-6 + r["completion_tokens"] * 0.3e-6)
    assert out["figures"]["cost_usd_total"] == pytest.approx(sum(x["cost_usd"] for x in recs))
    assert len(t.batches) == 1 and max(t.answered.values()) == 1
    again = run_replay(bcfg(t.base_url), rd, tmp_path / "l.db")  # only the unanswerable prompt is re-sent
    assert again["counts"]["ledger_hits"] == 7 and len(t.batches) == 2 and max(t.answered.values()) == 1


def test_batch_resumes_by_saved_id_without_paying_twice(dataset, serve, tmp_path):
    rd, answers = dataset(5)
    t = serve(answers, batch_delay_s=1.0)
    with pytest.raises(DistillError, match="rerun the replay to resume"):
        run_replay(bcfg(t.base_url, batch_timeout_s=0.2), rd, tmp_path / "l.db")
    state = json.loads((rd.path / "replay" / "batch.json").read_text())
    assert state["batch_id"] in t.batches
    out = run_replay(bcfg(t.base_url), rd, tmp_path / "l.db")
    assert out["counts"]["ok"] == 5 and len(t.batches) == 1  # the same batch, collected, not resubmitted
    assert not (rd.path / "replay" / "batch.json").exists()
    assert sum(t.answered.values()) == 5


def test_batch_mode_against_a_dead_endpoint_names_the_url(dataset, tmp_path):
    rd, _ = dataset(3)
    with pytest.raises(DistillError, match="127.0.0.1:9"):
        run_replay(bcfg("http://127.0.0.1:9/v1", max_retries=0), rd, tmp_path / "l.db")
