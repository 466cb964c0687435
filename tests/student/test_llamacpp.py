"""The llama.cpp engine for causal-LM students: the GGUF export (student/gguf_export.py) holds the
student's own weights (read back by transformers' GGUF loader), llama.cpp (student/llamacpp.py)
answers as the HF path does under the same JSON schema, the engine choice is recorded
(student/engine.py) and the server loads it (student/serve.py, `--engine`). The bundled
SmolLM2-135M-Instruct stands in for a trained student (merged = base: the export and the engines
do not care whether LoRA moved the weights). Tests needing llama-cpp-python skip without it."""
from __future__ import annotations

import json
import urllib.request

import pytest

pytest.importorskip("torch")
pytest.importorskip("gguf")

from student.base import Example  # noqa: E402

pytestmark = pytest.mark.slow  # loads the 135M model (and llama.cpp)

SCHEMA = {"type": "object", "required": ["intents"], "additionalProperties": False,
          "properties": {"intents": {"type": "array", "uniqueItems": True, "maxItems": 2,
                                                 "items": {"enum": ["card", "pin", "transfer", "refund"]}}}}
PROMPTS = ["block my card please", "I forgot my pin", "send 20 euros to my sister", "I want a refund for the last payment"]
SYSTEM = "Answer with JSON: the intents of the message."


def _msgs(t: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": t}]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from student.causal_lm import CausalLMStudent
    from student.config import CausalLMStudentConfig

    d = tmp_path_factory.mktemp("lm") / "model"
    ex = [Example(f"e{i}", _msgs(t), json.dumps({"intents": ["card"]})) for i, t in enumerate(PROMPTS)]
    st = CausalLMStudent.create(CausalLMStudentConfig(max_new_tokens=24, max_seq_length=96), ex)
    st.set_output_schema(SCHEMA, "on", [e.target for e in ex])
    st.save(d)
    return d, st


@pytest.fixture(scope="module")
def free(saved, tmp_path_factory):
    """The same student decoding freely (no schema): llama.cpp must then give HF's tokens exactly."""
    import shutil

    from student.causal_lm import CausalLMStudent

    d = tmp_path_factory.mktemp("lmfree") / "model"
    shutil.copytree(saved[0], d, ignore=shutil.ignore_patterns("gguf"))
    meta = json.loads((d / "student.json").read_text())
    meta["constrained_decoding"] = "off"
    (d / "student.json").write_text(json.dumps(meta))
    return d, CausalLMStudent.load(d)


def test_gguf_export_holds_the_students_weights(saved, tmp_path):
    """f32 export read back by transformers' GGUF loader (which undoes llama.cpp's q/k layout): every
    weight equals the merged student's; tokenizer and chat template come along from the base GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from student.gguf_export import export_gguf

    d, st = saved
    f = export_gguf(d, tmp_path / "s.gguf", "f32")
    back = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name)
    want = st.model.state_dict()
    got = back.state_dict()
    assert set(want) <= set(got)
    for k, w in want.items():
        assert torch.equal(got[k], w), k
    tok = AutoTokenizer.from_pretrained(str(f.parent), gguf_file=f.name)
    assert tok("block my card")["input_ids"] == st.tok("block my card")["input_ids"]
    with pytest.raises(Exception, match="weight type"):
        export_gguf(d, tmp_path / "x.gguf", "q2_k")


def test_llamacpp_answers_as_hf_does(free):
    """f16 GGUF, greedy: HF's answer token for token, and its confidence (mean answer log-prob)."""
    pytest.importorskip("llama_cpp")
    from student.llamacpp import LlamaCppStudent

    d, st = free
    lc = LlamaCppStudent.load(d, threads=1)
    assert lc.gguf_path == d / "gguf" / "student.gguf"  # exported on first load into the student dir
    msgs = [_msgs(t) for t in PROMPTS]
    hf = st.predict_scored(msgs)
    got = lc.predict_scored(msgs)
    assert [t for t, _ in got] == [t for t, _ in hf]
    for (_, a), (_, b) in zip(got, hf):  # f16 weights: the same tokens, confidences close
        assert abs(a - b) < 0.02
    assert lc.count_tokens(["block my card"]) == [len(st.tok("block my card")["input_ids"])]


def test_llamacpp_decodes_under_the_schema(saved):
    """Under the schema every answer parses and holds it. (Not asserted equal to HF here: on this
    untrained model the two grammars' token sets let greedy decoding part at a low-probability
    step - llguidance and llama.cpp's GBNF admit different non-canonical tokenizations; the
    train stage's engine choice compares the trained student's answers on validation instead.)"""
    pytest.importorskip("llama_cpp")
    from student.llamacpp import LlamaCppStudent

    d, _ = saved
    got = LlamaCppStudent.load(d, threads=1).predict_scored([_msgs(t) for t in PROMPTS])
    for t, c in got:
        assert 0.0 <= c <= 1.0
        obj = json.loads(t)  # the schema held: parseable, known labels only, no duplicates
        assert set(obj) == {"intents"} and set(obj["intents"]) <= {"card", "pin", "transfer", "refund"}
        assert len(obj["intents"]) == len(set(obj["intents"])) and t.startswith('{"intents": [')  # the teacher's separators


def test_engine_choice_is_recorded_and_served(free, tmp_path):
    pytest.importorskip("llama_cpp")
    import shutil

    from student import engine
    from student.serve import StudentServer

    d0, st = free
    d = tmp_path / "m"
    shutil.copytree(d0, d)
    val = [Example(f"v{i}", _msgs(t), a) for i, (t, a) in enumerate(zip(PROMPTS, st.predict([_msgs(t) for t in PROMPTS])))]
    choice = engine.select_and_record(d, val, "auto", hf_answers=[e.target for e in val])
    assert choice["choice"] == "llamacpp" and choice["agreement"] == {"hf": 1.0, "llamacpp": 1.0}, choice
    assert engine.served_engine(d) == "llamacpp" and engine.served_engine(d, "hf") == "hf"
    with StudentServer(d, num_threads=1) as url:
        body = json.dumps({"model": "student", "messages": _msgs(PROMPTS[0])}).encode()
        req = urllib.request.Request(f"{url}/chat/completions", body, {"Content-Type": "application/json"})
        resp = json.loads(urllib.request.urlopen(req, timeout=120).read())
    assert resp["choices"][0]["message"]["content"] == val[0].target
    refused = engine.select_and_record(d, [Example("w", val[0].messages, "something else")], "auto", hf_answers=["something else"])
    assert refused["choice"] == "hf" and "below" in refused["reason"] and not (d / "gguf" / "student.gguf").exists()


def test_engine_falls_back_to_hf_without_llama_cpp(saved, tmp_path, monkeypatch):
    import shutil

    from core.base import DistillError
    from student import engine, llamacpp

    d = tmp_path / "m"
    shutil.copytree(saved[0], d)
    monkeypatch.setattr(llamacpp, "available", lambda: False)
    assert engine.select_and_record(d, [], "auto") == {"choice": "hf", "reason": "llama-cpp-python is not installed"}
    with pytest.raises(DistillError, match="llama-cpp-python is not installed"):
        engine.choose(d, [], "llamacpp")
    assert engine.choose(d, [], "hf")["choice"] == "hf"
