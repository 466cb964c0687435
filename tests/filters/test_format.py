import json

import pytest

from core.base import DistillError
from teacher.filter_config import FilterConfig, FormatFilterConfig
from teacher.filters.format import FormatFilter
from teacher.filters.schema_infer import infer_schema

from filter_records import rec

INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed"]


def run(f: FormatFilter, responses):
    records = [rec(r) for r in responses]
    f.setup(records)
    return f.check_all(records)


def test_config_schema(intent_schema):
    f = FormatFilter(FilterConfig(json_schema=str(intent_schema)))
    v = run(f, ['{"intent": "card_arrival"}', '{"intent": "card_arival"}', '{"intent": "exchange_rate", "confidence": 0.9}',
                '{"label": "card_arrival"}', "The intent is card_arrival.", '{"intent": "top_up_failed"',
                'Sure! Here is the JSON: {"intent": "exchange_rate"}'])
    assert [x.keep for x in v] == [True, False, False, False, False, False, False]
    assert v[1].reason.startswith("schema_violation: 'card_arival' is not one of") and v[1].reason.endswith("at intent")
    assert "Additional properties" in v[2].reason
    assert "'intent' is a required property" in v[3].reason
    assert all(x.reason.startswith("invalid_json") for x in v[4:])
    assert f.note == "json, schema: config"


def test_banking77_schema_file_validates():
    from pathlib import Path

    p = Path(__file__).resolve().parents[2] / "examples" / "banking77" / "output_schema.json"
    if not p.is_file():
        pytest.skip("example schema not present")
    f = FormatFilter(FilterConfig(json_schema=str(p)))
    v = run(f, ['{"intent": "card_arrival"}', '{"intent": "Refund_not_showing_up"}', '{"intent": "refund"}'])
    assert [x.keep for x in v] == [True, True, False]


def test_code_fence_unwrapped_or_dropped(intent_schema):
    fenced = '```json\n{"intent": "card_arrival"}\n```'
    v = run(FormatFilter(FilterConfig(json_schema=str(intent_schema))), [fenced])[0]
    assert v.keep and v.update == {"response": '{"intent": "card_arrival"}'}
    cfg = FilterConfig(json_schema=str(intent_schema), format=FormatFilterConfig(unwrap_code_fences=False))
    assert run(FormatFilter(cfg), [fenced])[0].reason.startswith("code_fence")


def test_schema_inferred_from_majority():
    good = [json.dumps({"intent": INTENTS[i % 4], "urgent": i % 3 == 0}) for i in range(40)]
    bad = ['{"intent": "card_arrival", "urgent": "yes"}',          # wrong type
           '{"intent": "made_up_label", "urgent": false}',         # one-off label, not in the inferred enum
           '{"intent": "card_arrival", "urgent": false, "note": "x"}',  # stray key
           '{"urgent": true}',                                      # missing key
           "card_arrival"]                                          # not JSON
    f = FormatFilter(FilterConfig())
    v = run(f, good + bad)
    assert all(x.keep for x in v[:40])
    assert [x.keep for x in v[40:]] == [False] * 5
    assert f.schema_source == "inferred" and f.schema["properties"]["intent"]["enum"] == sorted(INTENTS)
    assert f.schema["properties"]["urgent"] == {"type": "boolean"}
    assert f.schema["required"] == ["intent", "urgent"] and f.schema["additionalProperties"] is False


def test_infer_no_enum_for_high_cardinality():
    vals = [{"summary": f"customer {i} asks about card"} for i in range(30)]
    s = infer_schema(vals, FormatFilterConfig())
    assert s["properties"]["summary"] == {"type": "string"}


def test_free_text_is_not_format_checked():
    f = FormatFilter(FilterConfig())
    v = run(f, ["Your card should arrive in 3-5 working days.", "You can top up by bank transfer.", '{"a": 1}'])
    assert all(x.keep for x in v) and f.mode == "off" and "free text" in f.note


def test_regex_mode():
    f = FormatFilter(FilterConfig(format=FormatFilterConfig(regex=r"(positive|negative|neutral)")))
    assert [x.keep for x in run(f, ["positive", " neutral\n", "Positive!", "mixed"])] == [True, True, False, False]


def test_labels_mode_text_and_field(tmp_path):
    f = FormatFilter(FilterConfig(format=FormatFilterConfig(labels=INTENTS)))
    v = run(f, ["card_arrival", "card arrival"])
    assert v[0].keep and v[1].reason.startswith("unknown_label: 'card arrival'")
    lf = tmp_path / "labels.txt"
    lf.write_text("\n".join(INTENTS) + "\n")
    f = FormatFilter(FilterConfig(format=FormatFilterConfig(mode="labels", labels_file=str(lf), label_field="intent")))
    v = run(f, ['{"intent": "exchange_rate"}', '{"intent": "fx"}', "exchange_rate"])
    assert [x.keep for x in v] == [True, False, False]


def test_config_errors_are_user_errors(tmp_path):
    with pytest.raises(DistillError, match="filter.format.regex"):
        FormatFilter(FilterConfig(format=FormatFilterConfig(regex="(")))
    with pytest.raises(DistillError, match="labels"):
        FormatFilter(FilterConfig(format=FormatFilterConfig(mode="labels")))
    bad = tmp_path / "bad_schema.json"
    bad.write_text('{"type": "nonsense"}')
    with pytest.raises(DistillError, match="not a valid JSON Schema"):
        FormatFilter(FilterConfig(json_schema=str(bad)))
