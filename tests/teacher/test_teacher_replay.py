"""run_replay end to end against a real reference teacher over HTTP (litellm in the loop)."""
from __future__ import annotations


import pytest

from core.base import DistillError, read_jsonl
from teacher.config import TeacherConfig
from teacher.replay import run_replay


def cfg(url: str | None, **kw) -> TeacherConfig:
    base = dict(api_base=url, concurrency=8, progress=False, timeout_s=5, backoff_base_s=0.01, backoff_max_s=0.2)
    return TeacherConfig(**{**base, **kw})


def test_replay_end_to_end_records_and_manifest(dataset, serve, tmp_path):
    rd, answers = dataset(12, holdout=3, unknown=1)
    t = serve(answers, latency_ms=2)
    progress = []
    out = run_replay(cfg(t.base_url, input_cost_per_token=1e-6, output_cost_per_token=2e-6), rd, tmp_path / "ledger.db",
                     on_progress=lambda d, n, s: progress.append((d, n, s)))
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert [r["id"] for r in recs] == [f"p{i}" for i in range(15)]  # input order, train then holdout
    assert [r["split"] for r in recs] == ["train"] * 12 + ["holdout"] * 3
    ok = recs[1]
    assert ok["status"] == "ok" and ok["response"] == "1 plus 1 is 2." and ok["finish_reason"] == "stop"
    assert ok["completion_tokens"] == 6 and ok["prompt_tokens"] > 0 and ok["latency_ms"] > 0 and ok["ledger_hit"] is False
    assert ok["messages"][-1]["content"].startswith("Question number 1")
    bad = recs[0]  # no reference answer: failed with its reason, not dropped, no retries burnt on a 404
    assert bad["status"] == "failed" and bad["error"].startswith("http_404") and bad["attempts"] == 1 and bad["response"] is None
    assert out["counts"] == {**out["counts"], "prompts": 15, "ok": 14, "failed": 1, "failed_by_reason": {"http_404": 1}, "ledger_hits": 0}
    # the cost total is exactly the sum of the per-request costs, and each is priced from usage
    assert out["figures"]["cost_usd_total"] == pytest.approx(sum(r["cost_usd"] for r in recs))
    assert ok["cost_usd"] == pytest.approx(ok["prompt_tokens"] * 1e-6 + ok["completion_tokens"] * 2e-6)
    stage = rd.stage("replay")
    assert stage["counts"]["ok"] == 14 and "output_hash" in stage and stage["figures"]["latency_ms_p50"] > 0
    assert progress[-1][:2] == (15, 15) and progress[-1][2] == pytest.approx(out["figures"]["cost_usd_total"])
    assert max(t.answered.values()) == 1


def test_rerun_hits_ledger_costs_zero_and_makes_no_http_calls(dataset, serve, tmp_path):
    rd, answers = dataset(10)
    t = serve(answers)
    c = cfg(t.base_url, input_cost_per_token=1e-6, output_cost_per_token=1e-6)
    first = run_replay(c, rd, tmp_path / "ledger.db")
    assert first["figures"]["cost_usd_total"] > 0
    t.stop()  # nothing listens any more: any HTTP call (even the preflight) would fail the rerun
    again = run_replay(c, rd, tmp_path / "ledger.db")
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert again["counts"]["ledger_hits"] == 10 and again["counts"]["http_requests"] == 0
    assert again["figures"]["cost_usd_total"] == 0.0 and all(r["ledger_hit"] and r["cost_usd"] == 0 for r in recs)
    assert recs[3]["response"] == "3 plus 3 is 6."


def test_changed_sampling_params_miss_the_ledger(dataset, serve, tmp_path):
    rd, answers = dataset(4)
    t = serve(answers)
    run_replay(cfg(t.base_url), rd, tmp_path / "l.db")
    out = run_replay(cfg(t.base_url, max_tokens=3), rd, tmp_path / "l.db")
    assert out["counts"]["ledger_hits"] == 0 and t.answered["p1"] == 2
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert recs[1]["response"] == "1 plus 1" and recs[1]["finish_reason"] == "length"


def test_unreachable_teacher_raises_naming_the_url(dataset, tmp_path):
    rd, _ = dataset(50)
    url = "http://127.0.0.1:9/v1"  # discard port: connection refused
    with pytest.raises(DistillError, match="127.0.0.1:9"):
        run_replay(cfg(url), rd, tmp_path / "l.db")


def test_retries_on_429_and_500_then_succeeds(dataset, serve, tmp_path):
    rd, answers = dataset(40)
    t = serve(answers, faults={"rate_429": 0.3, "rate_500": 0.2, "retry_after_s": 0.01, "seed": 3})
    out = run_replay(cfg(t.base_url, max_retries=8), rd, tmp_path / "l.db")
    assert out["counts"]["ok"] == 40 and out["counts"]["retries"] > 5
    assert t.faults["429"] > 0 and t.faults["500"] > 0 and max(t.answered.values()) == 1


def test_exhausted_retries_are_recorded_failed_with_reason(dataset, serve, tmp_path):
    rd, answers = dataset(3)
    t = serve(answers, faults={"rate_500": 1.0})
    t.answered.clear()
    out = run_replay(cfg(t.base_url, max_retries=2), rd, tmp_path / "l.db")
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert out["counts"]["failed_by_reason"] == {"server_error": 3}
    assert all(r["attempts"] == 3 and "after 3 attempts" in r["error"] for r in recs)


def test_priced_model_reports_dollars_from_litellm_price_map(dataset, serve, tmp_path):
    rd, answers = dataset(5)
    t = serve(answers, model_name="gpt-4o-mini")
    out = run_replay(cfg(t.base_url, model="openai/gpt-4o-mini"), rd, tmp_path / "l.db")
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert out["figures"]["priced"] is True and out["figures"]["price_source"] == "litellm"
    # gpt-4o-mini list price: $0.15 / 1M input tokens, $0.60 / 1M output tokens
    r = recs[2]
    assert r["cost_usd"] == pytest.approx(r["prompt_tokens"] * 0.15e-6 + r["completion_tokens"] * 0.6e-6)
    assert out["figures"]["cost_usd_total"] == pytest.approx(sum(x["cost_usd"] for x in recs)) and out["figures"]["cost_usd_total"] > 0


def test_teacher_system_prompt_and_n_samples(dataset, serve, tmp_path):
    rd, answers = dataset(3)
    t = serve(answers)
    out = run_replay(cfg(t.base_url, system_prompt="You are the teacher.", system_prompt_mode="replace", n=3), rd, tmp_path / "l.db")
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert out["counts"]["ok"] == 3
    assert recs[1]["samples"] == ["1 plus 1 is 2."] * 3 and recs[1]["response"] == "1 plus 1 is 2."
    assert recs[1]["messages"][0] == {"role": "system", "content": "Be brief."}  # the student-facing prompt is unchanged
    assert recs[1]["completion_tokens"] == 18


def test_duplicate_prompts_are_paid_once(dataset, serve, tmp_path):
    from core.base import write_jsonl

    rd, answers = dataset(3)
    rows = list(read_jsonl(rd.path / "ingest" / "train.jsonl"))
    rows.append({**rows[1], "id": "dup"})
    write_jsonl(rd.path / "ingest" / "train.jsonl", rows)
    t = serve(answers, latency_ms=50)
    out = run_replay(cfg(t.base_url, input_cost_per_token=1e-6), rd, tmp_path / "l.db")
    recs = {r["id"]: r for r in read_jsonl(rd.path / "replay" / "responses.jsonl")}
    assert out["counts"]["ok"] == 4 and t.answered["p1"] == 1
    assert recs["dup"]["response"] == recs["p1"]["response"]
    assert sorted([recs["dup"]["cost_usd"], recs["p1"]["cost_usd"]])[0] == 0.0  # one copy paid, the other free


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")  # litellm internals cancelled mid-flight
def test_teacher_going_down_mid_run_stops_the_stage(dataset, serve, tmp_path):
    rd, answers = dataset(300)
    t = serve(answers, latency_ms=20)
    c = cfg(t.base_url, concurrency=4, max_retries=3)
    with pytest.raises(DistillError, match="connection errors in a row"):  # the first answer arrives, then the endpoint disappears
        run_replay(c, rd, tmp_path / "l.db", on_progress=lambda done, total, spend: t.stop())
    from teacher.ledger import Ledger

    stats = Ledger(tmp_path / "l.db").stats()
    assert stats.get("done", 0) > 0 and "claimed" not in stats  # answers kept; no claim left dangling


def test_complete_many_helper_for_other_callers_shares_the_ledger(dataset, serve, tmp_path):
    from teacher.client import complete_many
    from teacher.ledger import Ledger
    from teacher.from_config import build_client

    _, answers = dataset(3)
    t = serve(answers)
    msgs = [[{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"}] for i in range(3)]
    ledger = Ledger(tmp_path / "judge.db")
    client = build_client(cfg(t.base_url, input_cost_per_token=1e-6), ledger, len(msgs))
    first = complete_many(client, msgs, concurrency=2, max_tokens=10)
    again = complete_many(client, msgs, concurrency=2, max_tokens=10)
    assert [r["response"] for r in first] == ["0 plus 0 is 0.", "1 plus 1 is 2.", "2 plus 2 is 4."]
    assert all(r["cost_usd"] > 0 and not r["ledger_hit"] for r in first)
    assert all(r["ledger_hit"] and r["cost_usd"] == 0 for r in again) and sum(t.answered.values()) == 3


def test_two_workers_on_one_ledger_share_the_work_and_pay_once(dataset, serve, tmp_path):
    import asyncio

    from core.base import read_jsonl as rj
    from teacher.ledger import Ledger
    from teacher.replay import Progress, build_client, replay_online

    rd, answers = dataset(120)
    t = serve(answers, latency_ms=20)
    rows = list(rj(rd.path / "ingest" / "train.jsonl"))
    c = cfg(t.base_url, input_cost_per_token=1e-6)
    clients = [build_client(c, Ledger(tmp_path / "shared.db", owner=f"worker{w}:1:1"), len(rows)) for w in "AB"]

    async def both():
        return await asyncio.gather(*[replay_online(c, rows, cl, Progress(len(rows), False, None)) for cl in clients])

    res_a, res_b = asyncio.run(both())
    assert all(r["status"] == "ok" for r in res_a + res_b)
    paid = [sum(not r["ledger_hit"] for r in res) for res in (res_a, res_b)]
    assert sum(paid) == 120 and min(paid) > 10  # both did real work ...
    assert max(t.answered.values()) == 1 and sum(t.answered.values()) == 120  # ... and nothing was paid twice
    assert [r["response"] for r in res_a] == [r["response"] for r in res_b]


def test_embedded_reference_teacher_on_a_new_port_still_hits_the_ledger(dataset, serve, tmp_path):
    from teacher.reference.config import ReferenceTeacherConfig

    rd, answers = dataset(4)
    ref = ReferenceTeacherConfig(enabled=True, answers=str(answers))
    t1 = serve(answers)
    run_replay(cfg(t1.base_url, endpoint_id=ref.endpoint_id()), rd, tmp_path / "l.db")
    t1.stop()
    t2 = serve(answers)  # the next run's embedded teacher listens on another port
    out = run_replay(cfg(t2.base_url, endpoint_id=ref.endpoint_id()), rd, tmp_path / "l.db")
    assert out["counts"]["ledger_hits"] == 4 and sum(t2.answered.values()) == 0


def test_rejected_api_key_stops_the_stage_without_leaking_it(dataset, serve, tmp_path):
    rd, answers = dataset(30)
    t = serve(answers, api_key="sk-right")
    with pytest.raises(DistillError, match="rejected the API key") as e:
        run_replay(cfg(t.base_url, api_key="sk-wrong-secret"), rd, tmp_path / "l.db")
    assert "sk-wrong-secret" not in str(e.value) and t.requests < 30
    out = run_replay(cfg(t.base_url, api_key="sk-right"), rd, tmp_path / "l.db")
    assert out["counts"]["ok"] == 30
    assert "sk-right" not in (rd.path / "manifest.json").read_text()
