"""The eval stage's cascade section on a real tiny classifier student in a run directory: the
threshold comes from the student's validation split only, the gate fails an unreachable target
with its reason, the report and summary say it, the registry records it."""
from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("torch")

from core.base import read_jsonl, write_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402
from eval.cascade import choose_threshold  # noqa: E402
from eval.cascade_config import CascadeConfig  # noqa: E402
from eval.cascade_eval import attach_cascade, load_local_student, recompute_val_scores, validation_pairs  # noqa: E402
from eval.config import GateConfig  # noqa: E402
from eval.gate import decide  # noqa: E402
from eval.report import report_markdown, summary_markdown  # noqa: E402
from student.base import Example  # noqa: E402
from student.classifier import ClassifierStudent  # noqa: E402
from student.models import make_tiny_encoder  # noqa: E402
from student.train import calibrate_and_score, split_validation  # noqa: E402

try:  # the per-kind config (student/config.py's union); the flat one before it
    from student.config import ClassifierStudentConfig as StudentConfig
except ImportError:  # pragma: no cover
    from student.config import StudentConfig

PHRASES = {"refund": ["i want my money back", "refund please"], "card": ["where is my new card", "card not here"],
           "pin": ["my pin is blocked", "pin locked"]}
NOISE = ["sunny weather", "tomorrow maybe", "my money card", "new pin card"]  # ambiguous: the student is unsure and often wrong


def msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def record(i: int, text: str, label: str, split: str) -> dict:
    return {"id": f"{split}{i}", "split": split, "messages": msgs(text), "response": json.dumps({"intent": label})}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run dir with kept train + holdout records and a tiny saved classifier student (no
    val_scores.jsonl: the eval rebuilds the val split from the training records)."""
    tmp = tmp_path_factory.mktemp("cascade_eval")
    rng = random.Random(0)
    labels = list(PHRASES)
    texts = [(t, k) for k, ts in PHRASES.items() for t in ts]
    train = [record(i, *texts[i % len(texts)], "train") for i in range(36)]
    train += [record(100 + i, NOISE[i % len(NOISE)], rng.choice(labels), "train") for i in range(24)]
    hold = [record(i, *texts[i % len(texts)], "holdout") for i in range(18)] + \
           [record(100 + i, NOISE[i % len(NOISE)], rng.choice(labels), "holdout") for i in range(12)]
    rd = RunDir.create(tmp / "runs", "c")
    write_jsonl(rd.filter_kept, train + hold)
    rd.train_metrics.parent.mkdir(parents=True, exist_ok=True)
    rd.train_metrics.write_text(json.dumps({"config": {"val_fraction": 0.4}}))
    enc = make_tiny_encoder(tmp / "enc", [t for ts in PHRASES.values() for t in ts] + NOISE)
    ex = [Example(r["id"], r["messages"], r["response"]) for r in train]
    st = ClassifierStudent.create(StudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0}), ex)
    st.warm_start(ex)
    st.save(rd.model_dir)
    return rd, hold, train


def skeleton() -> dict:
    lat = {"levels": {"c1": {"latency_samples_ms": [5.0, 6.0, 7.0, 8.0]}}}
    return {"run_id": "r", "metrics": {"cost_per_1k_usd": 0.01, "teacher_cost_per_1k_usd": 1.0}, "intervals": {}, "missing": {},
            "details": {"latency": {"student": lat, "teacher": {"levels": {"c1": {"latency_samples_ms": [100.0, 120.0]}}}}}}


def test_threshold_is_chosen_on_validation_whatever_the_holdout(run):
    rd, hold, train = run
    cfg = CascadeConfig(enabled=True, max_teacher_share=0.5)
    first = attach_cascade(cfg, rd, skeleton(), hold, [None] * len(hold), samples=200)
    # another holdout: shuffled, half of it dropped, every teacher answer changed
    other = [{**r, "response": json.dumps({"intent": "card"})} for r in random.Random(1).sample(hold, 15)]
    second = attach_cascade(cfg, rd, skeleton(), other, [None] * len(other), samples=200)
    assert first["reachable"] and first["threshold"] == second["threshold"] and first["choice"] == second["choice"]
    assert first["cascade_agreement"] != second["cascade_agreement"] or first["coverage"] != second["coverage"]
    # ... and it is exactly the validation-only choice, on the training records' own val split
    student = load_local_student(rd)
    rows = recompute_val_scores(rd, student)
    _, val = split_validation([Example(r["id"], r["messages"], r["response"]) for r in train], 0.4)
    assert {r["id"] for r in rows} == {e.id for e in val} and not {r["id"] for r in rows} & {r["id"] for r in hold}
    vc, va = validation_pairs(rows)
    assert choose_threshold(vc, va, max_teacher_share=0.5).threshold == first["threshold"]


def test_val_scores_file_is_what_the_threshold_reads(run, tmp_path):
    rd, hold, _ = run
    rows = [{"id": f"v{i}", "answer": "a", "confidence": i / 100, "target": "a" if i >= 30 else "b"} for i in range(100)]
    write_jsonl(rd.val_scores, rows)
    try:
        cfg = CascadeConfig(enabled=True, target_agreement=0.999, criterion="point")
        report = skeleton()
        res = attach_cascade(cfg, rd, report, hold, [None] * len(hold), samples=200)
        assert res["threshold"] == pytest.approx(0.30) and res["val"]["n"] == 100 and "train stage" in res["val"]["source"]
        assert report["metrics"]["cascade_threshold"] == pytest.approx(0.30)
        assert report["intervals"]["cascade_agreement"] == list(res["cascade_agreement_ci"])
        assert report["metrics"]["cascade_cost_per_1k_usd"] == pytest.approx(0.01 + res["teacher_share"] * 1.0)
        assert report["metrics"]["cascade_latency_p95_ms"] is not None
        assert "Cascade:" in summary_markdown({"run_id": "r", "stages": {}}, {**report, "counts": {}}, None)
        md = report_markdown({**report, "counts": {}, "student": {"model": "s", "base_url": "u"}, "teacher": {"model": "t"}})
        assert "## Cascade" in md and "never on the holdout" in md
    finally:
        rd.val_scores.unlink()


def test_predictions_carry_the_confidence(run):
    rd, hold, _ = run
    write_jsonl(rd.predictions, [{"id": r["id"], "student": None} for r in hold])
    res = attach_cascade(CascadeConfig(enabled=True, max_teacher_share=0.3), rd, skeleton(), hold, [None] * len(hold), samples=100)
    rows = list(read_jsonl(rd.predictions))
    assert all(0 < r["confidence"] <= 1 and r["cascade"] in ("student", "teacher") for r in rows)
    assert sum(r["cascade"] == "student" for r in rows) == res["answered_by_student"]


def test_unreachable_target_fails_the_gate_with_its_reason(run):
    rd, hold, _ = run
    report = skeleton()
    res = attach_cascade(CascadeConfig(enabled=True, target_agreement=0.999, min_coverage=0.99), rd, report, hold, [None] * len(hold),
                         samples=100)
    assert not res["reachable"] and report["metrics"]["cascade_agreement"] is None
    assert "unreachable" in report["missing"]["coverage"]
    report["metrics"]["agreement"], report["intervals"]["agreement"] = 1.0, [1.0, 1.0]
    d = decide(GateConfig(min_agreement=0.5), report)
    assert not d["passed"]
    check = next(c for c in d["checks"] if c["name"] == "cascade_target")
    assert not check["passed"] and "no threshold reaches validation cascade agreement 99.90%" in check["reason"]
    # and a policy bounding the cascade metrics fails on them too, saying why they are missing
    d2 = decide(GateConfig(min_agreement=None, checks=[{"metric": "coverage", "min": 0.8}]), report)
    assert not d2["passed"] and "unreachable" in d2["checks"][0]["reason"]


def test_validation_scores_exclude_the_val_examples_from_the_knn_memory(tmp_path):
    """After finalize the kNN memory holds the val examples themselves: scored against it they
    would look certain. calibrate_and_score scores them against the training rows only and puts
    the deployed memory back."""
    enc = make_tiny_encoder(tmp_path / "enc", [t for ts in PHRASES.values() for t in ts] + NOISE)
    rng = random.Random(3)
    ex = [Example(f"e{i}", msgs(f"{NOISE[i % 4]} {i % 3}"), json.dumps({"intent": rng.choice(list(PHRASES))})) for i in range(40)]
    st = ClassifierStudent.create(StudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0}), ex)
    st.use_knn = True
    st.warm_start(ex)
    train, val = ex[:24], ex[24:]
    st.finalize(val, train)
    if st.memory is None:  # the mix was not chosen on this data: deploy one as finalize would (training rows first)
        import torch

        (zt, _, yt), (zv, _, yv) = st._embed_examples(train), st._embed_examples(val)
        st.knn = {"k": 3, "temperature": 0.1, "lambda": 0.9}
        st.memory = (torch.cat([zt, zv]), {f: torch.cat([yt[f], yv[f]]) for f in st.vocab})
    deployed = st.memory
    rows = calibrate_and_score(st, val, len(train))
    assert st.memory is deployed
    with_self = [c for _, c in st.predict_scored([e.messages for e in val])]
    assert [r["confidence"] for r in rows] != pytest.approx(with_self)


def test_the_train_stage_writes_the_validation_scores_the_eval_reads(tmp_path):
    from student.train import run_train

    rd = RunDir.create(tmp_path / "runs", "t")
    texts = [(t, k) for k, ts in PHRASES.items() for t in ts]
    kept = [record(i, f"{texts[i % 6][0]} {i % 5}", texts[i % 6][1], "train") for i in range(40)] + \
           [record(i, texts[i % 6][0], texts[i % 6][1], "holdout") for i in range(6)]
    write_jsonl(rd.filter_kept, kept)
    enc = make_tiny_encoder(tmp_path / "enc", [t for ts in PHRASES.values() for t in ts])
    cfg = StudentConfig(base_model=str(enc), train_layers=1, epochs=1, batch_size=8, val_fraction=0.3,
                        lora={"r": 2, "alpha": 4, "dropout": 0.0})
    m = run_train(cfg, rd)
    rows = list(read_jsonl(rd.val_scores))
    assert len(rows) == m["val_examples"] > 0 and all(r["id"].startswith("train") and 0 < r["confidence"] <= 1 for r in rows)
    assert m["calibration"]["fitted_on"] == "validation"
    # scored on the path the server runs (int8 moves confidences), against the training rows only
    assert m["served"] == "onnx_int8"  # the tiny model's static int8 agrees as well as fp32 on val
    from student import load_student
    from student.fast_path import load_served

    train, val = split_validation([Example(r["id"], r["messages"], r["response"]) for r in kept if r["split"] == "train"], 0.3)
    served = calibrate_and_score(load_served(rd.model_dir), val, len(train))
    # the choice's fp32 reference came from the stage's own val answers: the saved fp32 agrees
    fp32 = calibrate_and_score(load_student(rd.model_dir), val, len(train))
    recorded = json.loads((rd.model_dir / "student.json").read_text())["fast_path"]["agreement"]["fp32"]
    assert recorded == round(sum(r["answer"] == e.target for r, e in zip(fp32, val)) / len(val), 5)
    assert [r["confidence"] for r in rows] == [r["confidence"] for r in served] and [r["id"] for r in rows] == [e.id for e in val]
    res = attach_cascade(CascadeConfig(enabled=True, max_teacher_share=0.5), rd, skeleton(), kept[-6:], [None] * 6, samples=100)
    assert "train stage" in res["val"]["source"] and res["val"]["n"] == len(rows)
