"""Cost before spending: the estimate against the real bill, and teacher.max_budget_usd."""
from __future__ import annotations

import pytest

from core.base import read_jsonl, write_jsonl
from core.rundir import RunDir
from teacher.config import TeacherConfig
from teacher.estimate import estimate_replay
from teacher.replay import run_replay


def logged_run(root, n: int, holdout: int = 4) -> tuple[RunDir, object]:
    """Prompts logged with the answers the reference teacher gives (as in the demo log)."""
    rows, answers = [], []
    for i in range(n + holdout):
        user = f"Customer {i} asks: my card payment number {i} was declined twice, why?"
        answer = f'{{"intent": "declined_card_payment", "note": "case {i}"}}'
        rows.append({"id": f"p{i}", "messages": [{"role": "system", "content": "Classify the intent."}, {"role": "user", "content": user}],
                     "response": answer, "model": None, "timestamp": None, "metadata": {}, "split": "train" if i < n else "holdout"})
        answers.append({"id": f"p{i}", "user": user, "response": answer})
    rd = RunDir.create(root / "runs", "t")
    write_jsonl(rd.ingest_train, rows[:n])
    write_jsonl(rd.ingest_holdout, rows[n:])
    write_jsonl(root / "answers.jsonl", answers)
    return rd, root / "answers.jsonl"


def cfg(url, **kw) -> TeacherConfig:
    return TeacherConfig(**{**dict(api_base=url, concurrency=4, progress=False, timeout_s=5, input_cost_per_token=2.5e-6,
                                   output_cost_per_token=1e-5), **kw})


def test_estimate_is_within_5_percent_of_the_bill(tmp_path, serve):
    rd, answers = logged_run(tmp_path, 30)
    t = serve(answers)
    est = estimate_replay(cfg(t.base_url), rd)
    out = run_replay(cfg(t.base_url), rd, tmp_path / "ledger.db")
    actual = out["figures"]["cost_usd_total"]
    assert est["prompts"] == 34 and out["counts"]["ok"] == 34
    assert est["expected_cost_usd"] == pytest.approx(actual, rel=0.05)


def test_budget_stops_the_replay_and_a_rerun_continues(tmp_path, serve):
    rd, answers = logged_run(tmp_path, 60, holdout=0)
    t = serve(answers, latency_ms=5)
    c = cfg(t.base_url)
    per = estimate_replay(c, rd)["expected_cost_usd"] / 60
    budget = per * 10.5
    out = run_replay(c.model_copy(update={"max_budget_usd": budget}), rd, tmp_path / "ledger.db")
    recs = list(read_jsonl(rd.replay_responses))
    paid = [r for r in recs if r["status"] == "ok"]
    spent = out["figures"]["cost_usd_total"]
    assert budget <= spent <= budget + c.concurrency * max(r["cost_usd"] for r in paid)  # + what was in flight
    stopped = out["counts"]["failed_by_reason"]["over_budget"]
    assert stopped == 60 - len(paid) > 30 and sum(t.answered.values()) == len(paid)
    assert any("max_budget_usd" in w for w in rd.stage("replay")["warnings"])
    # the same budget again: what the first run paid counts against it, so nothing more is sent
    same = run_replay(c.model_copy(update={"max_budget_usd": budget}), rd, tmp_path / "ledger.db")
    assert same["counts"]["ledger_hits"] == len(paid) and sum(t.answered.values()) == len(paid)
    # a rerun with a higher budget pays only for the rest
    again = run_replay(c.model_copy(update={"max_budget_usd": per * 1000}), rd, tmp_path / "ledger.db")
    assert again["counts"]["ok"] == 60 and again["counts"]["ledger_hits"] == len(paid)
    assert max(t.answered.values()) == 1


def bcfg(url, **kw) -> TeacherConfig:
    return cfg(url, **{**dict(mode="batch", batch_poll_s=0.05), **kw})


def test_batch_mode_sizes_the_batch_to_the_budget_and_a_rerun_continues(tmp_path, serve):
    rd, answers = logged_run(tmp_path, 40, holdout=0)
    t = serve(answers, batch_delay_s=0.05)
    c = bcfg(t.base_url)
    per = estimate_replay(c, rd)["expected_cost_usd"] / 40  # all 40 prompts cost the same here
    out = run_replay(c.model_copy(update={"max_budget_usd": per * 10.5}), rd, tmp_path / "ledger.db")
    spent = out["figures"]["cost_usd_total"]
    assert out["counts"]["ok"] == 10 and out["counts"]["failed_by_reason"] == {"over_budget": 30}
    assert spent <= per * 10.5 * 1.05  # a submitted batch cannot be stopped: the estimate sized it
    assert len(t.batches) == 1 and sum(t.answered.values()) == 10
    assert any("max_budget_usd" in w for w in rd.stage("replay")["warnings"])
    # The same budget again: what was paid counts, so nothing more is sent.
    same = run_replay(c.model_copy(update={"max_budget_usd": per * 10.5}), rd, tmp_path / "ledger.db")
    assert same["counts"]["ledger_hits"] == 10 and same["counts"]["failed_by_reason"] == {"over_budget": 30}
    assert len(t.batches) == 1
    # A higher budget pays only for the rest, in one more batch.
    again = run_replay(c.model_copy(update={"max_budget_usd": per * 100}), rd, tmp_path / "ledger.db")
    assert again["counts"]["ok"] == 40 and again["counts"]["ledger_hits"] == 10
    assert len(t.batches) == 2 and max(t.answered.values()) == 1


def test_batch_mode_spends_what_the_estimate_over_reserved_on_a_second_batch(tmp_path, serve):
    rd, answers = logged_run(tmp_path, 30, holdout=0)
    rows = list(read_jsonl(rd.ingest_train))
    for r in rows:  # the log's answers are 4x the teacher's: the estimate reserves too much
        r["response"] = " ".join([r["response"]] * 4)
    write_jsonl(rd.ingest_train, rows)
    t = serve(answers, batch_delay_s=0.05)
    c = bcfg(t.base_url)
    budget = estimate_replay(c, rd)["expected_cost_usd"] / 30 * 12
    out = run_replay(c.model_copy(update={"max_budget_usd": budget}), rd, tmp_path / "ledger.db")
    assert len(t.batches) >= 2 and out["counts"]["ok"] > 12  # the first batch held 12; the money left bought more
    assert out["figures"]["cost_usd_total"] <= budget


def test_batch_budget_needs_a_price(tmp_path, serve):
    from core.base import DistillError

    rd, answers = logged_run(tmp_path, 3, holdout=0)
    t = serve(answers)
    c = bcfg(t.base_url, input_cost_per_token=None, output_cost_per_token=None, model="openai/no-such-priced-model", max_budget_usd=1.0)
    with pytest.raises(DistillError, match="needs a price"):
        run_replay(c, rd, tmp_path / "ledger.db")
    assert not t.batches
