"""Set and span field metrics (eval/metrics.py), each unit against hand-counted figures."""
from __future__ import annotations

import json

import pytest

from eval.metrics import set_field_metrics, span_field_metrics, structured_fields, structured_metrics
from eval.parity import parity_metrics


def j(intents, slots) -> str:
    return json.dumps({"intents": intents, "slots": slots})


TEACHER = [j(["a", "b"], {"date": "today"}), j(["a"], {}), j(["c"], {"date": "May", "name": "bo"})]
STUDENT = [j(["b", "a"], {"date": "today"}), j(["a", "c"], {"date": "now"}), "not json"]


def test_set_field_micro_macro_and_exact():
    m = set_field_metrics(STUDENT, TEACHER, "intents")
    # tp: a, b, a = 3; fp: c (item 2) = 1; fn: c (item 3) = 1 -> micro 6 / 8
    assert m["micro_f1"] == pytest.approx(0.75)
    # per label: a 2tp -> 1.0, b 1tp -> 1.0, c 0tp 1fp 1fn -> 0.0
    assert m["macro_f1"] == pytest.approx(2 / 3) and m["per_class_f1"] == {'"a"': 1.0, '"b"': 1.0, '"c"': 0.0}
    assert m["exact"] == pytest.approx(1 / 3)  # list order does not matter; the non-JSON answer is empty
    assert m["items"] == 3


def test_span_field_counts_name_and_exact_value():
    m = span_field_metrics(STUDENT, TEACHER, "slots")
    # tp: date=today; fp: date=now; fn: date=May, name=bo -> micro 2 / (2 + 1 + 2)
    assert m["micro_f1"] == pytest.approx(2 / 5)
    # date: tp 1, fp 1, fn 1 -> 0.5; name: fn 1 -> 0
    assert m["macro_f1"] == pytest.approx(0.25)
    assert m["exact"] == pytest.approx(1 / 3)


def test_structured_fields_are_found_and_wired_into_parity():
    assert structured_fields(TEACHER) == {"intents": "set", "slots": "spans"}
    assert structured_fields([json.dumps({"intent": "x"})]) == {}
    assert set(structured_metrics(STUDENT, TEACHER)) == {"intents", "slots"}
    par = parity_metrics(STUDENT, TEACHER, samples=200)
    assert par["metrics"]["intents_micro_f1"] == pytest.approx(0.75) and par["metrics"]["slots_micro_f1"] == pytest.approx(0.4)
    assert par["metrics"]["slots_exact"] == pytest.approx(1 / 3) and par["details"]["structured_fields"]["intents"]["kind"] == "set"
