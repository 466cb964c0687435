"""Constrained decoding (student/constrained.py): an untrained tiny causal LM, decoding under a
JSON schema with enums, only produces answers that parse and validate."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("llguidance")

from test_causal_lm import SYSTEM, lm_cfg, make_examples  # noqa: E402

try:  # the causal-LM tests' tiny Llama fixture (same directory)
    from test_causal_lm import tiny_model_dir  # noqa: F401
except ImportError:  # pragma: no cover
    pass

from core.base import DistillError  # noqa: E402

SCHEMA = {"type": "object", "properties": {"colour": {"enum": ["red", "yellow", "green"]}, "ripe": {"type": "boolean"},
                                         "tags": {"type": "array", "items": {"enum": ["sweet", "sour"]}, "maxItems": 1, "uniqueItems": True}},  # unique: trivially
          "required": ["colour", "ripe"], "additionalProperties": False}


def _untrained(model_dir):
    from student.base import Example
    from student.causal_lm import CausalLMStudent

    data = make_examples(12)
    return CausalLMStudent.create(lm_cfg(model_dir, max_new_tokens=40), [Example(d["id"], d["messages"], d["response"]) for d in data]), data


def _valid(text: str) -> bool:
    from jsonschema import Draft202012Validator

    try:
        return not list(Draft202012Validator(SCHEMA).iter_errors(json.loads(text)))
    except ValueError:
        return False


def test_untrained_model_outputs_all_validate(tiny_model_dir, tmp_path):
    from student.kinds import load_student

    s, data = _untrained(tiny_model_dir)
    batch = [d["messages"] for d in data] + [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{w} ?"}] for w in ("x", "a lemon", "")]
    free = s.predict(batch)
    assert sum(_valid(t) for t in free) < len(free) / 2  # random weights: free decoding is mostly not the schema
    note = s.set_output_schema(SCHEMA, "auto", [json.dumps({"colour": "red", "ripe": True})])
    assert note["constrained_decoding"] == "on" and s.meta["json_separators"] == [", ", ": "]
    assert "uniqueItems" in note["note"]  # a keyword llguidance lacks is named, not silently dropped
    out = s.predict(batch)
    assert all(_valid(t) for t in out), [t for t in out if not _valid(t)]
    assert out == [s.predict([b])[0] for b in batch[:4]] + out[4:]  # batching does not change the masked greedy choice
    assert s.constraint().errors == 0
    assert [t for t, _ in s.predict_scored(batch[:3])] == out[:3]

    s.save(tmp_path / "m")  # the schema and the mode travel in student.json: eval and serving decode the same way
    loaded = load_student(tmp_path / "m")
    assert loaded.meta["constrained_decoding"] == "on" and loaded.predict(batch) == out


def test_modes_and_compact_separators(tiny_model_dir):
    s, data = _untrained(tiny_model_dir)
    assert s.set_output_schema(None, "auto")["constrained_decoding"] == "off" and s.constraint() is None
    with pytest.raises(DistillError, match="no output schema"):
        s.set_output_schema(None, "on")
    assert s.set_output_schema(SCHEMA, "off")["constrained_decoding"] == "off" and s.constraint() is None
    s.set_output_schema(SCHEMA, "on", ['{"colour":"red","ripe":false}'] * 3)
    assert s.meta["json_separators"] == [",", ":"]
    assert all(": " not in t and _valid(t) for t in s.predict([d["messages"] for d in data[:4]]))


def test_unique_items_after_decoding():
    from student.constrained import unique_items

    sch = {"type": "object", "properties": {"intents": {"type": "array", "uniqueItems": True, "items": {"enum": ["a", "b"]}},
                                            "slots": {"type": "object"}}}
    assert unique_items('{"intents": ["b", "a", "b"], "slots": {}}', sch, (", ", ": ")) == '{"intents": ["b", "a"], "slots": {}}'
    assert unique_items('{"intents": ["a"], "slots": {}}', sch, (",", ":")) == '{"intents": ["a"], "slots": {}}'  # untouched
    assert unique_items("not json", sch, (", ", ": ")) == "not json"
