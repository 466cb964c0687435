"""`distill predict --batch-size`: batched answers equal one-at-a-time answers, in input order, and
a recorded int8 fast path is applied (student/fast_path.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from distill.cli import main  # noqa: E402

LABELS = {"refund": "i want my money back", "card": "where is my new card", "pin": "my pin is blocked"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from student.base import Example
    from student.classifier import ClassifierStudent
    from student.config import ClassifierStudentConfig
    from student.models import make_tiny_encoder

    tmp = tmp_path_factory.mktemp("predict-batch")
    enc = make_tiny_encoder(tmp / "enc", list(LABELS.values()))
    ex = [Example(f"{k}{i}", [{"role": "user", "content": t}], json.dumps({"intent": k})) for i in range(4) for k, t in LABELS.items()]
    st = ClassifierStudent.create(ClassifierStudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0}), ex)
    st.warm_start(ex)
    st.save(tmp / "model")
    return tmp / "model"


def _run(model: Path, tmp: Path, order: list[str], *extra: str) -> list[dict]:
    (tmp / "in.jsonl").write_text("".join(json.dumps({"messages": [{"role": "user", "content": LABELS[k]}]}) + "\n" for k in order))
    assert main(["predict", "--model", str(model), "--input", str(tmp / "in.jsonl"), "--output", str(tmp / "out.jsonl"),
                 "--data-dir", str(tmp / "data"), *extra]) == 0
    return [json.loads(line) for line in (tmp / "out.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("batch", ["1", "3", "64"])
def test_batched_predictions_keep_order(model, tmp_path, batch):
    order = ["pin", "refund", "card", "card", "pin", "refund", "pin"]
    rows = _run(model, tmp_path, order, "--batch-size", batch)
    assert [r["response"] for r in rows] == [json.dumps({"intent": k}) for k in order]
    assert all(r["latency_ms"] > 0 for r in rows)
    if batch == "3":  # rows of one batch share its time
        assert rows[0]["latency_ms"] == rows[2]["latency_ms"]


def test_recorded_int8_path_is_used(model, tmp_path):
    from student import fast_path

    d = tmp_path / "m"
    shutil.copytree(model, d)
    fast_path.record(d, {"choice": "int8", "reason": "test"})
    order = list(LABELS) * 3
    assert [r["response"] for r in _run(d, tmp_path, order, "--batch-size", "4")] == [json.dumps({"intent": k}) for k in order]
