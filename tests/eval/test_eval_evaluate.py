"""run_eval end to end against real local HTTP stubs for teacher and student."""
from __future__ import annotations

import json

import pytest
from eval_stub_server import StubServer

from core.base import DistillError, read_jsonl
from eval.config import EvalConfig, GateConfig
from eval.evaluate import run_eval
from eval.gate import decide
from eval.report import summary_markdown, table_rows
from teacher.config import TeacherConfig


def student_answer(answers):
    """Right on 36 of 40 holdout prompts: wrong intent when the question number ends in 9."""
    def f(messages):
        user = messages[-1]["content"]
        right = json.loads(answers[user])
        if int(user.split()[-1]) % 10 == 9:
            right["intent"] = "other" if right["intent"] != "other" else "billing"
        return json.dumps(right, separators=(",", ":"))  # different spacing: parsed-JSON match must ignore it
    return f


def fast_cfg(**kw) -> EvalConfig:
    return EvalConfig(latency_requests=6, warmup_requests=1, latency_concurrency=3, bootstrap_samples=200, **kw)


def test_run_eval_end_to_end(run_dir):
    rd, answers = run_dir
    with StubServer(lambda m: answers[m[-1]["content"]], delay_s=0.02) as t_url, \
            StubServer(student_answer(answers)) as s_url:
        teacher = TeacherConfig(api_base=t_url, input_cost_per_token=1e-6, output_cost_per_token=2e-6)
        report = run_eval(fast_cfg(student_usd_per_hour=0.36), rd, teacher, s_url)

    c = report["counts"]
    assert (c["evaluated"], c["excluded_teacher_failed"], c["excluded_filtered"], c["holdout_total"]) == (40, 1, 1, 42)
    m = report["metrics"]
    assert m["agreement"] == pytest.approx(0.9)
    lo, hi = report["intervals"]["agreement"]
    assert lo < 0.9 < hi
    assert report["task_kind"] == "json"
    assert report["details"]["field_accuracy"] == {"intent": pytest.approx(0.9), "urgent": 1.0}
    assert m["json_valid_rate"] == 1.0 and m["format_compliance"] == 1.0
    # Gold = recorded production responses (p0 has none): the teacher matches them all.
    assert c["gold_items"] == 39 and m["teacher_gold_agreement"] == 1.0
    # Latency measured the same way for both; the teacher stub sleeps 20 ms.
    assert m["teacher_latency_p50_ms"] >= 20 and m["latency_p50_ms"] is not None
    assert m["ttft_p50_ms"] is not None and m["ttft_p50_ms"] <= m["latency_p50_ms"]
    assert m["latency_p95_ms_at_c3"] is not None and m["ttft_p95_ms_at_c3"] is not None
    # Teacher: 10 prompt x 1e-6 + 5 completion x 2e-6 per request = $0.02 per 1k.
    assert m["teacher_cost_per_1k_usd"] == pytest.approx(0.02)
    assert m["cost_per_1k_usd"] == pytest.approx(0.36 / (m["throughput_rps"] * 3600) * 1000)
    assert m["cost_ratio"] == pytest.approx(m["cost_per_1k_usd"] / 0.02)
    assert m["training_cost_usd"] == pytest.approx(0.036)
    assert m["teacher_timing_cost_usd"] > 0
    assert report["prompted_baseline"]["ran"] is False

    files = {p.name for p in (rd.path / "eval").iterdir()}
    assert {"report.json", "report.md", "predictions.jsonl", "latency.png", "cost.png", "fields.png"} <= files
    preds = list(read_jsonl(rd.path / "eval" / "predictions.jsonl"))
    assert len(preds) == 40 and set(preds[0]) >= {"id", "messages", "teacher", "student"}
    assert json.loads((rd.path / "eval" / "report.json").read_text())["metrics"]["agreement"] == pytest.approx(0.9)
    md = (rd.path / "eval" / "report.md").read_text()
    assert "No prompted baseline was run" in md
    assert rd.stage("eval")["counts"]["evaluated"] == 40

    decision = decide(GateConfig(min_agreement=0.85), report)
    # 36/40 = 0.90, but any 95 % interval on 40 examples reaches below 0.85 (Wilson: 0.77) and
    # stays above 0.70: the gate must judge the lower bound, not the point estimate.
    lo = report["intervals"]["agreement"][0]
    assert 0.70 < lo < 0.85, lo
    assert decision["passed"] is False
    assert [c["passed"] for c in decision["checks"] if c["metric"] == "agreement"] == [False]
    assert decide(GateConfig(min_agreement=0.70), report)["passed"] is True
    summary = summary_markdown(rd.manifest(), report, decision)
    assert "Agreement with teacher: 90.0%" in summary and "min_agreement" in summary and "| eval |" in summary
    rows = table_rows(report, decision)
    assert any(r["metric"] == "agreement" for r in rows["metrics"]) and rows["gate"][0]["check"] == "min_agreement"


def test_run_eval_missing_inputs_names_file(tmp_path):
    from core.rundir import RunDir

    rd = RunDir.create(tmp_path, "x")
    with pytest.raises(DistillError, match="kept.jsonl"):
        run_eval(fast_cfg(), rd, TeacherConfig(), "http://127.0.0.1:9/v1")


def test_run_eval_unpriced_teacher_no_streaming_judge_and_baseline(run_dir):
    """Reference teacher with no prices: cost ratio is missing with a reason, and the gate says so.
    A student server that refuses streaming is timed without TTFT instead of failing.
    The judge (stub) and the prompted baseline (a callable) fill their slots."""
    rd, answers = run_dir
    with StubServer(lambda m: answers[m[-1]["content"]]) as t_url, \
            StubServer(lambda m: answers[m[-1]["content"]], refuse_stream=True) as s_url, \
            StubServer(lambda m: "A") as j_url:
        cfg = fast_cfg(plots=False, baseline_k=2, judge={"enabled": True, "model": "openai/judge", "api_base": j_url})
        report = run_eval(cfg, rd, TeacherConfig(api_base=t_url), s_url, baseline_predict=lambda msgs: "nope")
    assert report["judge"]["identical"] == 40 and report["metrics"]["judge_score"] == 0.5
    pb = report["prompted_baseline"]
    assert pb["ran"] and pb["agreement"] == 0.0 and "beat the prompted baseline by 100.0 points" in pb["verdict"]
    assert "beat the prompted baseline" in (rd.path / "eval" / "report.md").read_text()
    m = report["metrics"]
    assert m["agreement"] == 1.0
    assert m["latency_p50_ms"] is not None and m["ttft_p50_ms"] is None
    assert any("streaming failed" in n for n in report["notes"])
    assert m["cost_ratio"] is None and "price map" in report["missing"]["cost_ratio"]
    d = decide(GateConfig(min_agreement=0.5, max_cost_ratio=0.5), report)
    assert d["passed"] is False
    cost_check = next(c for c in d["checks"] if c["name"] == "max_cost_ratio")
    assert not cost_check["passed"] and "price map" in cost_check["reason"]
