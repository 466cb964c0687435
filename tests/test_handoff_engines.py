"""The serving-engine parts of the hand-off (registry/handoff.py, registry/handoff_vllm.py): serve.sh
starts the engine the version records; a causal-LM version gets vLLM files whose router sends the
student's JSON schema as structured outputs (checked on the wire, against a local HTTP server) and
whose chat template renders the prompts exactly as `distill serve` does (system prompt baked)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from registry.handoff import write_handoff
from registry.handoff_vllm import vllm_chat_template

SCHEMA = {"type": "object", "required": ["intents"], "additionalProperties": False,
          "properties": {"intents": {"type": "array", "items": {"enum": ["card", "pin"]}}}}
TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nDefault<|im_end|>\\n' }}"
            "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _version(tmp_path, meta):
    vdir = tmp_path / "v0001"
    (vdir / "model" / "merged").mkdir(parents=True)
    (vdir / "model" / "student.json").write_text(json.dumps(meta))
    (vdir / "model" / "merged" / "chat_template.jinja").write_text(TEMPLATE)
    return vdir


LM = {"kind": "causal_lm", "base_model": None, "base_path": "/cache/SmolLM2", "bake_system_prompt": True, "max_seq_length": 128,
      "max_new_tokens": 96, "constrained_decoding": "on", "output_schema": SCHEMA}


def test_serve_sh_starts_the_recorded_engine(tmp_path):
    vdir = _version(tmp_path, {**LM, "serve_engine": {"choice": "llamacpp", "reason": "..."}})
    out = write_handoff(vdir, app_model_alias="nlu", teacher_model="openai/gpt-4o", teacher_api_base=None, registry_name="nlu", version="v0001")
    script = open(out["serve_script"]).read()
    assert f"distill serve --model {vdir / 'model'} --engine llamacpp --port 8000" in script
    assert "vllm serve /cache/SmolLM2 --enable-lora" in script  # the bundled base: its local conversion, not "None"
    hf = _version(tmp_path / "b", {**LM, "serve_engine": {"choice": "hf"}})
    out = write_handoff(hf, app_model_alias="nlu", teacher_model="openai/gpt-4o", teacher_api_base=None, registry_name="nlu", version="v0001")
    assert "--engine" not in open(out["serve_script"]).read()


def test_vllm_files_for_a_causal_lm(tmp_path):
    vdir = _version(tmp_path, LM)
    out = write_handoff(vdir, app_model_alias="nlu", teacher_model="openai/gpt-4o", teacher_api_base=None, registry_name="nlu", version="v0001")
    script = open(out["vllm_serve_script"]).read()
    for part in (f"vllm serve {vdir / 'model' / 'merged'}", "--served-model-name nlu-v0001", f"--chat-template {out['vllm_chat_template']}",
                 "--structured-outputs-config '{\"backend\": \"guidance\"}'", "--generation-config vllm", "--max-model-len 224"):
        assert part in script, part
    assert json.loads(open(out["vllm_output_schema"]).read()) == SCHEMA
    router = yaml.safe_load(open(out["vllm_litellm_router"]))
    student = router["model_list"][0]
    assert student["model_name"] == "nlu" and student["litellm_params"]["extra_body"] == {"structured_outputs": {"json": SCHEMA}}
    assert router["router_settings"]["fallbacks"] == [{"nlu": ["nlu-teacher"]}]
    assert "vllm_serve_script" not in write_handoff(_version(tmp_path / "c", {"kind": "classifier"}), app_model_alias="x",
                                                    teacher_model="openai/gpt-4o", teacher_api_base=None, registry_name="x", version="v0001")


def test_vllm_chat_template_renders_the_baked_prompt_as_distill_serve_does():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from student.lm_data import bake_messages

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders chat templates
    msgs = [{"role": "system", "content": "You are the teacher's long prompt."}, {"role": "user", "content": "block my card"}]
    for bake in (True, False):
        want = env.from_string(TEMPLATE).render(messages=bake_messages(msgs, bake), add_generation_prompt=True)
        got = env.from_string(vllm_chat_template(TEMPLATE, bake)).render(messages=msgs, add_generation_prompt=True)
        assert got == want
    no_system = msgs[1:]
    assert env.from_string(vllm_chat_template(TEMPLATE, True)).render(messages=no_system, add_generation_prompt=True) == \
        env.from_string(TEMPLATE).render(messages=no_system, add_generation_prompt=True)


@pytest.fixture()
def fake_vllm():
    seen: list[dict] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "nlu-v0001",
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"intents\": [\"card\"]}"},
                                            "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", seen
    srv.shutdown()


def test_the_vllm_router_sends_the_schema_on_the_wire(tmp_path, fake_vllm, monkeypatch):
    import litellm

    url, seen = fake_vllm
    monkeypatch.setenv("DISTILL_SERVE_API_KEY", "k")
    vdir = _version(tmp_path, LM)
    out = write_handoff(vdir, app_model_alias="nlu", teacher_model="openai/gpt-4o", teacher_api_base=None, registry_name="nlu", version="v0001")
    router = yaml.safe_load(open(out["vllm_litellm_router"]))
    router["model_list"][0]["litellm_params"]["api_base"] = url  # the fake vLLM instead of :8001
    r = litellm.Router(model_list=router["model_list"], **router["router_settings"])
    resp = r.completion(model="nlu", messages=[{"role": "user", "content": "block my card"}])
    assert resp.choices[0].message.content == "{\"intents\": [\"card\"]}"
    assert seen[0]["structured_outputs"] == {"json": SCHEMA} and seen[0]["temperature"] == 0 and seen[0]["max_tokens"] == 96
    assert seen[0]["model"] == "nlu-v0001"
