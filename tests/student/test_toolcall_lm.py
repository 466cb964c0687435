"""Students that call tools (issue #12): the answer format, tools in the prompt, a tiny causal LM
that learns to call, the classifier over tool-call fields. No downloads: a tiny Llama and a
tokenizer trained in-test."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from student.toolcall_format import ToolFormat, answer_text, documented_messages, parse_calls, split_answer

TEMPLATE = (  # SmolLM2-135M-Instruct's template: ChatML, no tool format of its own
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template that renders tools and tool-call turns itself (the shape of Qwen2.5's).
TOOLS_TEMPLATE = """{%- if tools %}<|im_start|>system
# Tools
<tools>{%- for tool in tools %}
{{ tool | tojson }}{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{% if message.content %}{{ message.content }}{% endif %}
{%- for tool_call in message.tool_calls %}
<tool_call>
{"name": "{{ tool_call.function.name }}", "arguments": {{ tool_call.function.arguments | tojson }}}
</tool_call>{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]
CITIES = ["Paris", "Rome", "Oslo", "Lima"]


def tool_rows(n: int) -> list[dict]:
    """Filtered rows in the shape core/toolcalls.py documents: tools, tool_calls beside response."""
    out = []
    for i in range(n):
        city = CITIES[i % 4]
        if i % 3 == 2:
            out.append({"id": f"t{i}", "messages": [{"role": "user", "content": f"hello {i}"}], "tools": TOOLS, "response": "Hi!"})
            continue
        tool = "get_weather" if i % 3 == 0 else "get_time"
        q = f"weather in {city}?" if tool == "get_weather" else f"time in {city}?"
        out.append({"id": f"t{i}", "messages": [{"role": "user", "content": q}], "tools": TOOLS, "response": None,
                    "tool_calls": [{"id": f"call_{i}", "name": tool, "arguments": {"city": city}}]})
    return out


def test_answer_text_round_trip_and_parsing():
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]
    t = answer_text(None, calls)
    assert t == '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]</tool_call>'
    assert split_answer(t) == (None, calls)
    assert split_answer(answer_text("Checking.", calls)) == ("Checking.", calls)
    assert split_answer("just text") == ("just text", None) and answer_text("just text", None) == "just text"
    # Hermes/Qwen blocks (one call each, arguments as a string too) and Llama 3.1's bare JSON
    two = '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": "{}"}\n</tool_call>'
    assert parse_calls(two)["tool_calls"] == [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]
    assert parse_calls('{"name": "a", "parameters": {"x": 1}}')["tool_calls"] == [{"name": "a", "arguments": {"x": 1}}]
    assert parse_calls('{"intent": "x"}')["tool_calls"] is None  # JSON that is not a call is text
    cut = parse_calls('<tool_call>[{"name": "a", "argu')  # the length limit cut it
    assert cut["tool_calls"] is None and cut["error"] == "unparsed_tool_call"


def test_documented_format_renders_tools_history_and_baking():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    out = documented_messages(msgs, TOOLS)
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be brief.") and '"name": "get_time"' in out[0]["content"]
    assert out[2]["content"] == answer_text(None, msgs[2]["tool_calls"]) and out[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    baked = ToolFormat("json", fixed=TOOLS, bake=True)
    assert baked.shown_tools(TOOLS) is None and baked.shown_tools(None) is None  # the fixed list is learned
    assert baked.shown_tools(TOOLS[:1]) == TOOLS[:1]  # another list is still shown
    assert ToolFormat("json", fixed=TOOLS, bake=False).shown_tools(TOOLS) == TOOLS


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-llama-tools")
    rows = tool_rows(12)
    corpus = [TEMPLATE, json.dumps(TOOLS), documented_messages([], TOOLS)[0]["content"]] + \
        [m["content"] for r in rows for m in r["messages"]] + [answer_text(r["response"], r.get("tool_calls")) for r in rows]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = TEMPLATE
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.5)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def test_template_tool_format_detected_and_round_trips(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert ToolFormat.detect(tok, "<|im_end|>").mode == "json"  # plain ChatML: the documented format
    tok.chat_template = TOOLS_TEMPLATE
    tf = ToolFormat.detect(tok, "<|im_end|>")
    assert tf.mode == "template", tf.note
    msgs = [{"role": "user", "content": "weather in Rome?"}]
    target = answer_text(None, [{"name": "get_weather", "arguments": {"city": "Rome"}}])
    prompt = tf.prompt(tok, msgs, TOOLS)
    assert "# Tools" in prompt and prompt.endswith("<|im_start|>assistant\n")
    comp = tf.completion(tok, msgs, TOOLS, target, "<|im_end|>")
    assert comp.startswith("<tool_call>\n{") and tf.canonical(comp) == target  # the template's own form, read back canonical


def _lm_cfg(model_dir: Path, **kw):
    from student.config import CausalLMStudentConfig

    base = dict(base_model=str(model_dir), batch_size=4, epochs=40, learning_rate=1e-2, max_seq_length=320, max_new_tokens=40,
                checkpoint_every_steps=10000, early_stopping_patience=0, warmup_ratio=0.0, num_threads=1, val_fraction=0.0)
    base.update(kw)
    return CausalLMStudentConfig(**base)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A tiny causal LM fitted on 12 rows of a fixed tool list, saved: (path, student, figures)."""
    from student.causal_lm import CausalLMStudent

    tmp = tmp_path_factory.mktemp("tool-lm")
    s = CausalLMStudent()
    figs = s.fit(tool_rows(12), [], _lm_cfg(tiny_model_dir), tmp / "work", progress=False)
    s.save(tmp / "model")
    return tmp / "model", s, figs


def _want(rows):
    return [(r["response"], [{"name": c["name"], "arguments": c["arguments"]} for c in r["tool_calls"]] if r.get("tool_calls") else None)
            for r in rows]


@pytest.mark.slow
def test_causal_lm_learns_to_call_tools(trained):
    """Trained on a fixed tool list (baked: the tools are not in the prompt), the tiny LM answers
    with calls that parse back, saves its tool format, and reloads with it."""
    from student import load_student
    from student.causal_lm import _examples
    from student.toolcall_lm import encode_rows

    path, s, figs = trained
    rows = tool_rows(12)
    assert s.meta["tool_format"]["mode"] == "json" and s.meta["tool_format"]["fixed_tools"] == TOOLS
    exs = _examples(rows)
    assert exs[0].tools == TOOLS and split_answer(exs[0].target)[1] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    enc, _ = encode_rows(s.tool_format, s.tok, s.fmt, exs[:1], 320, True)
    prompt_len = enc[0]["labels"].count(-100)
    assert "get_time" not in s.tok.decode(enc[0]["input_ids"][:prompt_len])  # the fixed list is baked, not sent
    assert figs["train_loss"] < figs["first_train_loss"] * 0.3
    assert figs["prompt_tokens_saved_per_request"] > 50  # the tool list's JSON schemas are no longer sent

    loaded = load_student(path)
    assert loaded.accepts_tools and loaded.tool_format.fixed == TOOLS
    preds = loaded.predict([r["messages"] for r in rows], tools=[r["tools"] for r in rows])
    decoded = [loaded.decode_answer(p) for p in preds]
    hits = sum(d == w for d, w in zip(decoded, _want(rows)))
    assert hits >= 10, list(zip(decoded, _want(rows)))  # memorised: calls (and the text answers) come back


def _serve(path: Path):
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ}
    env.pop("DISTILL_SERVE_API_KEY", None)
    p = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "--model", str(path), "--port", "0", "--data-dir", str(path.parent / "data")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    line = p.stdout.readline()
    m = re.search(r"at http://\S+?:(\d+)/v1", line)
    if not m:
        p.kill()
        raise AssertionError(f"serve did not start: {line!r} {p.communicate()[1][-2000:]}")
    return p, f"http://127.0.0.1:{m.group(1)}/v1"


@pytest.mark.slow
def test_openai_sdk_gets_tool_calls_from_distill_serve(trained):
    """A client written for the teacher (openai SDK, tools in the request) works unchanged against
    `distill serve`: tool_calls with JSON arguments, content None, finish_reason tool_calls; the
    stream carries the same calls; a text answer stays text."""
    import openai

    path, _, _ = trained
    rows = tool_rows(12)
    p, url = _serve(path)
    try:
        client = openai.OpenAI(base_url=url, api_key="unused")
        want = _want(rows)
        got_calls = 0
        for r, (text, calls) in zip(rows[:3], want[:3]):
            resp = client.chat.completions.create(model="student", messages=r["messages"], tools=TOOLS)
            ch = resp.choices[0]
            if calls:
                assert ch.finish_reason == "tool_calls" and ch.message.content is None
                assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in ch.message.tool_calls] == \
                    [("function", c["name"], c["arguments"]) for c in calls]
                assert all(c.id.startswith("call_") for c in ch.message.tool_calls)
                got_calls += 1
            else:
                assert ch.finish_reason == "stop" and ch.message.content == text and not ch.message.tool_calls
        assert got_calls == 2

        # streaming: the deltas add up to the same calls, the way SDK users accumulate them
        stream = client.chat.completions.create(model="student", messages=rows[0]["messages"], tools=TOOLS, stream=True)
        acc: dict[int, dict] = {}
        finish = None
        for chunk in stream:
            if not chunk.choices:
                continue
            d = chunk.choices[0].delta
            for tc in d.tool_calls or []:
                a = acc.setdefault(tc.index, {"name": "", "arguments": ""})
                a["name"] += (tc.function.name or "") if tc.function else ""
                a["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = chunk.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        assert [(a["name"], json.loads(a["arguments"])) for _, a in sorted(acc.items())] == [(c["name"], c["arguments"]) for c in want[0][1]]

        # a history with a call and its result reads as it did for the teacher; a dangling tool result is a 400
        hist = rows[0]["messages"] + [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}]
        assert client.chat.completions.create(model="student", messages=hist, tools=TOOLS).choices[0].finish_reason in ("stop", "tool_calls")
        with pytest.raises(openai.BadRequestError, match="tool_call_id"):
            client.chat.completions.create(model="student", messages=rows[0]["messages"] + [{"role": "tool", "tool_call_id": "nope", "content": "x"}],
                                           tools=TOOLS)
    finally:
        p.terminate()
        p.wait(30)


@pytest.mark.slow
def test_distill_predict_writes_openai_tool_calls(trained, tmp_path):
    from distill.cli import main

    path, _, _ = trained
    rows = tool_rows(3)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"messages": r["messages"], "tools": TOOLS}) + "\n" for r in rows))
    assert main(["predict", "--model", str(path), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                 "--data-dir", str(tmp_path / "data")]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for o, (text, calls) in zip(out, _want(rows)):
        if calls:
            assert o["response"] is None and o["finish_reason"] == "tool_calls"
            assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in o["tool_calls"]] == [(c["name"], c["arguments"]) for c in calls]
        else:
            assert o["response"] == text and "tool_calls" not in o


@pytest.mark.slow
def test_a_template_with_its_own_tool_format_is_trained_in_it(tiny_model_dir, tmp_path):
    """A base model whose template renders tools is trained on the template's own tool-call turns
    (not the documented format), and its answers still come back as canonical calls."""
    import shutil

    from transformers import AutoTokenizer

    from student import load_student
    from student.causal_lm import CausalLMStudent, _examples
    from student.toolcall_lm import encode_rows

    d = tmp_path / "base"
    shutil.copytree(tiny_model_dir, d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = TOOLS_TEMPLATE
    tok.save_pretrained(d)
    rows = tool_rows(12)
    s = CausalLMStudent()
    s.fit(rows, [], _lm_cfg(d, bake_system_prompt=False, epochs=30), tmp_path / "work", progress=False)
    assert s.meta["tool_format"]["mode"] == "template"
    enc, _ = encode_rows(s.tool_format, s.tok, s.fmt, _examples(rows[:1]), 320, False)
    labelled = s.tok.decode([t for t in enc[0]["input_ids"][enc[0]["labels"].count(-100):]])
    assert labelled.startswith("<tool_call>\n{\"name\": \"get_weather\"")  # the template's form, one call per block
    assert "# Tools" in s.tok.decode(enc[0]["input_ids"])  # the template rendered the tools
    s.save(tmp_path / "model")
    loaded = load_student(tmp_path / "model")
    preds = loaded.predict([r["messages"] for r in rows], tools=[r["tools"] for r in rows])
    decoded = [loaded.decode_answer(p) for p in preds]
    assert all(c is not None for _, c in decoded[:2])  # the template's blocks parsed back into calls
    # the tools are in every prompt here (not baked): the 48-wide LM memorises fewer rows than above
    assert sum(d == w for d, w in zip(decoded, _want(rows))) >= 5, list(zip(decoded, _want(rows)))


@pytest.mark.slow
def test_constrained_decoding_keeps_calls_to_the_declared_schemas(trained, tiny_model_dir):
    """Under the per-request tool grammar (student/constrained.py) a call names a declared tool with
    schema-valid arguments; even an untrained LM held to calls (no text branch) writes one that parses."""
    from jsonschema import validate

    from student.causal_lm import CausalLMStudent
    from student.lm_generate import generate
    from student.constrained import ToolCallConstraint, tool_call_grammar

    _, s, _ = trained
    rows = tool_rows(12)
    assert s.set_output_schema(None, "auto")["constrained_decoding"] == "tools"
    preds = s.predict([r["messages"] for r in rows], tools=[r["tools"] for r in rows])
    decoded = [s.decode_answer(p) for p in preds]
    assert sum(d == w for d, w in zip(decoded, _want(rows))) >= 10  # the mask leaves the learned answers alone
    s.set_output_schema(None, "off")

    fresh = CausalLMStudent.create(_lm_cfg(tiny_model_dir), [])  # untrained weights: random text unless held
    fresh.meta["tool_format"] = {"mode": "json", "fixed_tools": None, "bake": False, "note": ""}
    c = ToolCallConstraint(fresh.tok, fresh.fmt.eot_id, fresh._n_vocab())
    conv = fresh._convs([rows[0]["messages"]], [TOOLS])
    out = generate(fresh.model, fresh.tok, fresh.fmt, conv, 120, 320, 1, constraint=c, grammars=[tool_call_grammar(TOOLS, allow_text=False)])
    _, calls = split_answer(out[0])
    if calls is not None:  # 120 tokens may end it mid-call; whatever it wrote follows the schemas
        params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
        for call in calls:
            validate(call["arguments"], params[call["name"]])
    assert out[0].startswith("<tool_call>[{\"name\": \"get_")
