"""Prompted baseline slot + verdicts, and the markdown summary."""
from __future__ import annotations

import json

from core.base import write_jsonl
from eval.baseline import attach_baseline, few_shot_messages, no_baseline, score_baseline, select_examples, verdict
from eval.config import EvalConfig
from eval.report import report_markdown, summary_markdown, table_rows


def test_few_shot_messages_keeps_system_first_and_adds_examples():
    ex = [{"messages": [{"role": "system", "content": "S0"}, {"role": "user", "content": "u1"}], "response": "a1"}]
    msgs = few_shot_messages(ex, [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"] == "S" and msgs[2]["content"] == "a1"


def test_select_examples_is_seeded():
    train = [{"messages": [], "response": str(i)} for i in range(20)]
    assert select_examples(train, 5, seed=1) == select_examples(train, 5, seed=1)
    assert len(select_examples(train, 50)) == 20


def test_verdicts():
    assert "did NOT beat" in verdict(-0.01, [-0.04, 0.02], 0.95)
    assert "includes no improvement" in verdict(0.05, [-0.01, 0.1], 0.95, 30)
    assert verdict(0.12, [0.08, 0.16], 0.95).startswith("The fine-tuned student beat the prompted baseline by 12.0 points")
    assert "No prompted baseline was run" in no_baseline()["verdict"]


def test_score_baseline_paired_with_student_hits():
    conv = [[{"role": "user", "content": str(i)}] for i in range(200)]
    teacher = ["yes"] * 200
    seen = []

    def predict(m):
        seen.append(m)
        return "yes" if int(m[-1]["content"]) % 2 else "no"

    r = score_baseline(predict, conv, teacher, [1.0] * 200, examples=[{"messages": [{"role": "user", "content": "e"}], "response": "yes"}], k=1, samples=200)
    assert r["agreement"] == 0.5 and r["diff"] == 0.5 and r["diff_ci"][0] > 0.4
    assert "beat the prompted baseline by 50.0 points" in r["verdict"]
    assert len(seen[0]) == 3  # one example (user + assistant) + the prompt


def test_attach_baseline_fills_slot_metrics_and_markdown(run_dir):
    rd, answers = run_dir
    preds = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}],
              "teacher": answers[f"question {i}"], "student": answers[f"question {i}"]} for i in range(10)]
    write_jsonl(rd.path / "eval" / "predictions.jsonl", preds)
    report = {"run_id": rd.run_id, "student": {"model": "s", "base_url": "u", "kind": None}, "teacher": {"model": "t"},
              "counts": {"evaluated": 10}, "metrics": {"agreement": 1.0}, "intervals": {}, "missing": {},
              "details": {"agreement_hits": [1.0] * 10}, "notes": []}
    # The base model gets every answer right: fine-tuning bought nothing.
    attach_baseline(EvalConfig(baseline_k=2, bootstrap_samples=200), rd, report, lambda m: answers[m[-1]["content"]])
    pb = report["prompted_baseline"]
    assert pb["ran"] and pb["agreement"] == 1.0 and pb["k"] == 2 and pb["n"] == 10
    assert report["metrics"]["agreement_vs_prompted_baseline_diff"] == 0.0
    md = report_markdown(report)
    assert "did NOT beat the prompted baseline" in md
    json.dumps(report)  # report stays JSON-able


def test_summary_markdown_one_screen():
    manifest = {"run_id": "r1", "stages": {"ingest": {"counts": {"train": 90, "holdout": 10}, "wall_s": 1.5}}}
    report = {"counts": {"evaluated": 10, "holdout_total": 12, "excluded_teacher_failed": 1, "excluded_filtered": 1},
              "metrics": {"agreement": 0.8, "latency_p95_ms": None, "cost_ratio": None},
              "intervals": {"agreement": [0.6, 0.95]}, "missing": {"cost_ratio": "teacher unpriced"},
              "prompted_baseline": no_baseline(), "confidence": 0.95}
    decision = {"passed": False, "checks": [{"name": "min_agreement", "metric": "agreement", "value": 0.8, "threshold": 0.9,
                                             "passed": False, "reason": "agreement lower bound 0.6 < min 0.9"}]}
    s = summary_markdown(manifest, report, decision)
    assert "| ingest | train=90, holdout=10 | 1.5 |" in s
    assert "80.0% [60.0%, 95.0%]" in s and "n/a: teacher unpriced" in s
    assert "No prompted baseline was run" in s and "**Gate: FAILED**" in s and "FAIL min_agreement" in s
    assert len(s.splitlines()) < 40
    rows = table_rows(report, decision)
    assert rows["gate"][0]["verdict"] == "FAIL" and {r["metric"] for r in rows["metrics"]} == {"agreement", "latency_p95_ms", "cost_ratio"}
    assert summary_markdown(manifest, None, None).count("not decided") == 1


def test_attach_baseline_uses_callables_own_shots_and_batches(run_dir):
    """A predictor like student.lm_baseline.prompted_baseline_predictor (has .shots, .predict_batch)
    gets the bare conversation, in batches."""
    rd, answers = run_dir
    preds = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}],
              "teacher": answers[f"question {i}"], "student": "wrong"} for i in range(10)]
    write_jsonl(rd.path / "eval" / "predictions.jsonl", preds)
    report = {"metrics": {}, "intervals": {}, "missing": {}, "details": {"agreement_hits": [0.0] * 10}}
    batches = []

    def predict(m):
        raise AssertionError("predict_batch should be used")

    def predict_batch(batch):
        batches.append(batch)
        return [answers[m[-1]["content"]] for m in batch]

    predict.predict_batch, predict.shots = predict_batch, [{}, {}, {}]
    attach_baseline(EvalConfig(baseline_k=5, bootstrap_samples=200), rd, report, predict)
    assert [len(b) for b in batches] == [8, 2] and all(len(m) == 1 for b in batches for m in b)
    pb = report["prompted_baseline"]
    assert pb["k"] == 3 and pb["agreement"] == 1.0 and "did NOT beat" in pb["verdict"]
