"""Shared student fixtures."""
from __future__ import annotations

import json

import pytest

LABELS = {"refund": "i want my money back", "card": "where is my new card", "pin": "my pin is blocked"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model dir, examples): a tiny saved classifier student that answers its 12 examples right."""
    pytest.importorskip("torch")
    from student.base import Example
    from student.classifier import ClassifierStudent
    from student.config import ClassifierStudentConfig
    from student.models import make_tiny_encoder

    tmp = tmp_path_factory.mktemp("saved")
    enc = make_tiny_encoder(tmp / "enc", list(LABELS.values()))
    ex = [Example(f"{k}{i}", [{"role": "user", "content": t}], json.dumps({"intent": k})) for i in range(4) for k, t in LABELS.items()]
    cfg = ClassifierStudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0})
    st = ClassifierStudent.create(cfg, ex)
    st.warm_start(ex)
    st.save(tmp / "model")
    return tmp / "model", ex
