"""Record shapes and validation rules."""
import pytest

from ingest.config import ValidationConfig
from ingest.records import RecordError, from_log_object, normalize_timestamp, response_from_stored
from ingest.validate import validate


def test_chat_log_with_trailing_assistant_turn_uses_it_as_response():
    r = from_log_object({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    assert r["messages"] == [{"role": "user", "content": "q"}] and r["response"] == "a"


def test_content_parts_and_developer_role():
    r = from_log_object({"messages": [{"role": "developer", "content": "sys"},
                                      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert r["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "a\nb"}]


def test_response_forms():
    assert from_log_object({"prompt": "p", "completion": {"choices": [{"message": {"content": "c"}}]}})["response"] == "c"
    assert from_log_object({"input": "p", "output": {"role": "assistant", "content": "o"}})["response"] == "o"
    assert response_from_stored('{"intent": "card_arrival"}') == '{"intent": "card_arrival"}'
    assert response_from_stored('{"choices": [{"message": {"content": "x"}}]}') == "x"
    assert response_from_stored({}) is None


@pytest.mark.parametrize("ts,iso", [
    ("2026-10-01T12:00:00Z", "2026-10-01T12:00:00Z"),
    ("2026-10-01T14:00:00+02:00", "2026-10-01T12:00:00Z"),
    ("2026-10-01 12:00:00", "2026-10-01T12:00:00Z"),
    (1790000000, "2026-09-21T14:13:20Z"),
    (1790000000000, "2026-09-21T14:13:20Z"),
])
def test_timestamps(ts, iso):
    assert normalize_timestamp(ts) == iso


def test_ids_are_derived_stably_when_missing():
    a = from_log_object({"prompt": "same"})
    b = from_log_object({"prompt": "same"})
    assert a["id"] == b["id"] and a["id"].startswith("rec_")


def rec(*msgs, response=None):
    return {"messages": [{"role": r, "content": c} for r, c in msgs], "response": response}


def test_validate_rules():
    cfg = ValidationConfig(max_tokens=10, chars_per_token=4)
    validate(rec(("system", "s"), ("user", "hi")), cfg)
    with pytest.raises(RecordError, match="no_user_turn"):
        validate(rec(("system", "s"), ("assistant", "a")), cfg)
    with pytest.raises(RecordError, match="bad_role: message 1 has role 'function'"):
        validate(rec(("function", "t"), ("user", "u")), cfg)
    with pytest.raises(RecordError, match="bad_role: message 1 has role 'tool'"):  # tools can be switched off
        validate(rec(("tool", "t"), ("user", "u")), ValidationConfig(allowed_roles=["system", "user", "assistant"]))
    with pytest.raises(RecordError, match="too_long"):
        validate(rec(("user", "x" * 41)), cfg)
    validate(rec(("user", "x" * 35)), cfg)
    with pytest.raises(RecordError, match="invalid_unicode"):
        validate(rec(("user", "ok"), response="bad \ud800"), cfg)
