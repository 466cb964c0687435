"""Output-format detection and exact re-rendering for the classifier student (no torch needed)."""
import json

import pytest

from student.classifier_format import PLAIN, categorical_labels, detect_format


@pytest.mark.parametrize(
    "dump",
    [
        lambda o: json.dumps(o),  # {"intent": "x", "urgency": "high"}
        lambda o: json.dumps(o, separators=(",", ":")),
        lambda o: json.dumps(o, indent=2),
        lambda o: json.dumps(o, indent=4),
        lambda o: "```json\n" + json.dumps(o) + "\n```",
        lambda o: json.dumps(o, ensure_ascii=True) + "\n",
    ],
)
def test_json_format_is_detected_and_rendered_exactly(dump):
    objs = [{"urgency": u, "intent": i} for u in ("high", "low") for i in ("card_arrival", "refund", "café")] * 3
    outputs = [dump(o) for o in objs]
    found = categorical_labels(outputs, max_labels=50, min_per_label=1)
    assert found is not None
    fmt, vocab = found
    assert fmt.mode == "json" and fmt.fields == ["urgency", "intent"]  # teacher's key order, not sorted
    assert vocab["intent"] == sorted({json.dumps(i, ensure_ascii=False) for i in ("card_arrival", "refund", "café")})
    for text in outputs:
        assert fmt.render(fmt.labels_of(text)) == text


def test_non_string_values_keep_their_json_type():
    outputs = [json.dumps({"ok": b, "n": n, "tag": None}) for b in (True, False) for n in (1, 2)] * 2
    fmt, vocab = categorical_labels(outputs, 10, 1)
    assert vocab["ok"] == ["false", "true"] and vocab["n"] == ["1", "2"]
    for text in outputs:
        assert fmt.render(fmt.labels_of(text)) == text


def test_plain_labels():
    outputs = ["positive", "negative", "neutral "] * 5  # trailing space is part of the label
    fmt, vocab = categorical_labels(outputs, 10, 2)
    assert fmt.mode == "plain" and vocab == {PLAIN: ["negative", "neutral ", "positive"]}
    assert fmt.render({PLAIN: "neutral "}) == "neutral "


def test_free_text_is_not_categorical():
    outputs = [f"The answer is {i} because reasons." for i in range(100)]
    assert categorical_labels(outputs, max_labels=500, min_per_label=2) is None
    # bounded cardinality: too many distinct values for a head
    assert categorical_labels([json.dumps({"id": i}) for i in range(100)] * 3, max_labels=50, min_per_label=1) is None


def test_mixed_keys_are_not_categorical():
    outputs = [json.dumps({"intent": "a"})] * 10 + [json.dumps({"intent": "a", "extra": "b"})] * 10
    assert categorical_labels(outputs, 10, 1) is None


def test_unknown_style_falls_back_to_default_spacing():
    fmt = detect_format(['{ "intent" : "a" }', '{ "intent" : "b" }'])
    assert fmt.mode == "json" and fmt.item_sep == ", " and fmt.key_sep == ": "
