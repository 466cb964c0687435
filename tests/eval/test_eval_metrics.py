"""Each parity metric as a small unit."""
from __future__ import annotations

import numpy as np
import pytest

from eval import metrics as M
from eval.parity import parity_metrics, task_kind


def test_exact_match_parses_json_and_strips_text():
    s = ['{"b": 2, "a": 1}', " yes ", "no", None, "[1, 2]"]
    t = ['{"a":1,"b":2}', "yes", "No", "x", "[1,2]"]
    assert M.exact_match(s, t).tolist() == [1, 1, 0, 0, 1]


def test_scalar_json_is_compared_as_text():
    # "42" vs "42.0" would be equal as parsed JSON numbers; as labels they differ.
    assert not M.outputs_match("42", "42.0")


def test_json_validity():
    assert M.json_validity(['{"a": 1}', "[1]", "{bad", "plain", None]).tolist() == [1, 1, 0, 0, 0]


def test_field_accuracy_per_field_and_overall():
    t = ['{"intent": "a", "urgent": true}', '{"intent": "b", "urgent": false}', "not json"]
    s = ['{"intent": "a", "urgent": false}', '{"intent": "b", "urgent": false}', "whatever"]
    fa = M.field_accuracy(s, t)
    assert fa["per_field"] == {"intent": 1.0, "urgent": 0.5}
    assert fa["overall"] == 0.75 and fa["items"] == 2
    assert fa["per_item"].tolist() == [0.5, 1.0]


def test_label_metrics_match_sklearn_definition():
    t = ["a", "a", "b", "b", "c", "c"]
    s = ["a", "b", "b", "b", "c", "zzz"]
    lm = M.label_metrics(s, t)
    assert lm["accuracy"] == pytest.approx(4 / 6)
    # F1: a = 2*1/(2+1)=0.667, b = 2*2/(2+3)=0.8, c = 2*1/(2+1)=0.667
    assert lm["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    assert lm["per_label_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.5}


def test_chrf_identical_is_100_and_different_is_lower():
    sc = M.chrf_scores(["the cat sat on the mat", "completely unrelated"], ["the cat sat on the mat", "the cat sat"])
    assert sc[0] == pytest.approx(100.0) and sc[1] < 30


def test_format_compliance():
    t = ['{"a": 1, "b": 2}', "[1]", "free text", "lbl"]
    s = ['{"a": 5, "b": 0}', '{"x": 1}', "", "lbl"]
    assert M.format_compliance(s, t).tolist() == [1, 0, 0, 1]
    assert M.format_compliance(["lbl", "other"], ["lbl", "lbl"], label_set={"lbl"}).tolist() == [1, 0]


def test_length_ratio():
    assert M.length_ratio(["ab", None], ["abcd", "ab"]) == pytest.approx(2 / 6)
    assert M.length_ratio(["a"], [""]) is None


def test_gold_reference_prefers_metadata_label_then_recorded_response():
    keys = ["gold", "label"]
    assert M.gold_reference({"metadata": {"label": "x"}, "response": "y"}, keys) == "x"
    assert M.gold_reference({"metadata": {"gold": {"a": 1}}}, keys) == '{"a": 1}'
    assert M.gold_reference({"metadata": {}, "response": "y"}, keys) == "y"
    assert M.gold_reference({"metadata": {}, "response": None}, keys) is None


def test_task_kind():
    assert task_kind(['{"a":1}', '{"a":2}'], 10) == "json"
    assert task_kind(["x", "y", "x", "y"], 10) == "classification"
    assert task_kind(["a long answer", "another one"], 10) == "text"
    assert task_kind(["a long answer", "another one"], 10, student_kind="classifier") == "classification"


def test_parity_metrics_text_task_reports_chrf_and_says_why_labels_missing():
    p = parity_metrics(["hello world", "bye"], ["hello world", "goodbye all"], samples=100)
    assert p["metrics"]["agreement"] == 0.5 and "chrf" in p["metrics"]
    assert "macro_f1" in p["missing"] and "field_accuracy" in p["missing"]
    assert np.isclose(p["metrics"]["length_ratio"], 14 / 22)
