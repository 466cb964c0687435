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


COPY = ["Repeat exactly: my card 4242 was charged 19.99 euros at Tesco on 3 May",
        "Say back the words: blue green red blue green red blue green red"]


class _Oracle:
    """A drafter that knows the answer and guesses wrong on purpose every third token: rounds
    with all guesses kept, rounds cut short, and the cache rolled back, in one answer."""

    def __init__(self, answers: dict[tuple, list[int]]):
        self.answers = answers

    def draft(self, context: list[int], k: int) -> list[int]:
        for prompt, ans in self.answers.items():
            if tuple(context[:len(prompt)]) == prompt:
                done = len(context) - len(prompt)
                guess = list(ans[done:done + k])
                return [g if (done + i) % 3 else g + 1 for i, g in enumerate(guess)]
        return []

    def remember(self, answer: list[int]) -> None:
        pass


@pytest.mark.parametrize("which", ["free", "saved"])
def test_lookup_decoding_returns_plain_greedy_tokens(which, request):
    """The served decoder (grammar-first greedy picks, prompt-lookup speculative decoding) gives
    llama-cpp-python's own greedy generate loop's tokens exactly, with and without the schema
    grammar: with lookup drafts (the copy prompts make them land), with drafts wrong every third
    token, and for a repeated prompt (served from the cached prefix)."""
    pytest.importorskip("llama_cpp")
    import numpy as np

    from student.llamacpp import LlamaCppSettings, LlamaCppStudent

    d, _ = request.getfixturevalue(which)
    ref = LlamaCppStudent.load(d, threads=1, settings=LlamaCppSettings(decoder="generate"))
    prompts = [ref._prompt_ids(_msgs(t)) for t in PROMPTS + COPY]
    prompts.append(prompts[0])
    want = [ref.decode_ids(p) for p in prompts]
    assert ref._gbnf is None if which == "free" else ref._gbnf
    del ref
    for settings in (LlamaCppSettings(max_draft=0), LlamaCppSettings(max_draft=8)):
        lc = LlamaCppStudent.load(d, threads=1, settings=settings)
        got = [lc.decode_ids(p) for p in prompts]
        assert [g for g, _ in got] == [w for w, _ in want]
        # confidences from logits of batched passes: equal to rounding (f16 logits within ~0.05;
        # 0.021 seen on a token at log-prob -14.3 on an AVX-512 CPU without AMX)
        for (_, a), (_, b) in zip(got, want):
            assert np.allclose(a, b, atol=0.05), max(abs(x - y) for x, y in zip(a, b))
    assert lc.drafted > 0 and 0 < lc.accepted <= lc.drafted and lc.forward_passes < lc.tokens_generated
    lc._decoder.drafter = _Oracle({tuple(p): w for p, (w, _) in zip(prompts, want)})
    lc.drafted = lc.accepted = 0
    assert [lc.decode_ids(p)[0] for p in prompts] == [w for w, _ in want]
    assert 0 < lc.accepted < lc.drafted  # some guesses kept, every third one refused


def test_weight_type_choice_refuses_a_type_whose_agreement_drops(free, tmp_path):
    """choose_weight_type serves a type only when its validation agreement stays within MAX_DROP
    of the current export's: here the targets are the f16 answers, so f32 (the same answers) is
    kept and q4_0 (which changes answers of this untrained model) is refused and removed."""
    pytest.importorskip("llama_cpp")
    import shutil

    from student import engine
    from student.llamacpp import LlamaCppStudent

    d = tmp_path / "m"
    shutil.copytree(free[0], d)
    msgs = [_msgs(t) for t in PROMPTS + COPY]
    f16 = LlamaCppStudent.load(d, threads=1).predict(msgs)
    before = (d / "gguf" / "student.gguf").read_bytes()
    refused = engine.choose_weight_type(d, msgs, f16, f16, ("q4_0",))
    assert refused["choice"] == "f16" and refused["tried"]["q4_0"]["agreement"] < 1.0 - engine.MAX_DROP, refused
    assert (d / "gguf" / "student.gguf").read_bytes() == before and sorted(p.name for p in (d / "gguf").iterdir()) == ["student.gguf"]
    assert "gguf_weight_type" not in json.loads((d / "student.json").read_text())
    kept = engine.choose_weight_type(d, msgs, f16, f16, ("q4_0", "f32"))
    assert kept["choice"] == "f32" and kept["tried"]["f32"]["agreement"] == 1.0, kept
    assert json.loads((d / "student.json").read_text())["gguf_weight_type"] == "f32"
    assert LlamaCppStudent.load(d, threads=1).predict(msgs) == f16


def test_drafts_survive_a_rounding_flip_but_not_a_change(free, tmp_path, monkeypatch):
    """check_speculative keeps prompt-lookup drafts when their validation answers lose no agreement
    with the teacher and at least MIN_SAME of them equal one-token decoding's (a near tie decided
    by rounding is allowed); it turns them off, in student.json, when a changed answer costs
    agreement or too many answers change."""
    pytest.importorskip("llama_cpp")
    import shutil

    from student import engine
    from student.llamacpp import LlamaCppSettings, LlamaCppStudent

    monkeypatch.setattr(engine, "MIN_SAME", 0.8)  # 6 prompts: one changed answer is 83 % the same, two are 67 %
    d = tmp_path / "m"
    shutil.copytree(free[0], d)
    meta0 = (d / "student.json").read_text()
    msgs = [_msgs(t) for t in PROMPTS + COPY]
    plain = LlamaCppStudent.load(d, threads=1, settings=LlamaCppSettings(max_draft=0)).predict(msgs)
    one_flip = plain[:-1] + ["flipped"]

    def max_draft():
        return json.loads((d / "student.json").read_text()).get("llamacpp", {}).get("max_draft")

    kept = engine.check_speculative(d, msgs, plain[:-1] + ["neither"], one_flip)
    assert kept["kept"] and kept["same_answers"] == round(5 / 6, 5) and max_draft() is None, kept
    lost = engine.check_speculative(d, msgs, plain, one_flip)
    assert not lost["kept"] and lost["agreement"] == {"drafted": round(5 / 6, 5), "one_token": 1.0} and max_draft() == 0, lost
    assert "drafts off" in lost["reason"]
    (d / "student.json").write_text(meta0)
    changed = engine.check_speculative(d, msgs, ["neither"] * 6, plain[:-2] + ["a", "b"])
    assert not changed["kept"] and max_draft() == 0, changed
