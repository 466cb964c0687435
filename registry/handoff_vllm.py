"""The vLLM (GPU) hand-off of a causal-LM student: files under <version>/vllm/.

- serve.sh: `vllm serve` on the merged weights, the student's chat template, greedy defaults
  from the request (`--generation-config vllm`: the model's generation_config.json would set
  sampling), structured outputs on the guidance backend (llguidance: the engine our HF path
  decodes with, student/constrained.py);
- chat_template.jinja: the student's template; when the system prompt was baked in at training
  (student.json bake_system_prompt), it first drops the system turns and puts an empty one in
  their place, exactly as student/lm_data.py's bake_messages does for `distill serve`, so the
  application keeps sending its prompts unchanged;
- output_schema.json: the schema the student decodes under (student.json output_schema);
- litellm_router.yaml: the promotion's router with the student entry pointed at vLLM and every
  request carrying `extra_body: {structured_outputs: {json: <schema>}}` (vLLM >= 0.12; it replaced
  guided_json), temperature 0 and the student's max_new_tokens.
vLLM cannot run here (no GPU): tests/test_handoff.py checks these files (the template renders
the student's prompts exactly, the router is one litellm accepts, the schema is the student's).
"""
from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

VLLM_PORT = 8001  # beside `distill serve` on 8000
_BAKE = ("{#- the teacher-only system prompt was baked into the student at training: drop it, as distill serve does -#}\n"
         "{%- set ns = namespace(system=false, rest=[]) -%}\n"
         "{%- for m in messages -%}{%- if m['role'] == 'system' -%}{%- set ns.system = true -%}"
         "{%- else -%}{%- set ns.rest = ns.rest + [m] -%}{%- endif -%}{%- endfor -%}\n"
         "{%- set messages = ([{'role': 'system', 'content': ''}] if ns.system else []) + ns.rest -%}\n")


def student_chat_template(merged_dir: Path) -> str | None:
    """The chat template saved with the student's tokenizer (transformers 5: chat_template.jinja)."""
    f = merged_dir / "chat_template.jinja"
    if f.is_file():
        return f.read_text()
    cfg = merged_dir / "tokenizer_config.json"
    if cfg.is_file():
        t = json.loads(cfg.read_text()).get("chat_template")
        return t if isinstance(t, str) else None
    return None


def vllm_chat_template(template: str, bake_system_prompt: bool) -> str:
    return (_BAKE + template) if bake_system_prompt else template


def write_vllm_handoff(version_dir: Path, meta: dict[str, Any], router: dict, *, app_model_alias: str, served_name: str) -> dict[str, str]:
    model_dir = version_dir / "model"
    merged = model_dir / "merged"
    out_dir = version_dir / "vllm"
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    args = [f"vllm serve {shlex.quote(str(merged))}", f"--served-model-name {shlex.quote(served_name)}", f"--port {VLLM_PORT}",
            "--generation-config vllm", f"--max-model-len {int(meta.get('max_seq_length', 256)) + int(meta.get('max_new_tokens', 128))}",
            "--structured-outputs-config '{\"backend\": \"guidance\"}'", "--api-key \"$DISTILL_SERVE_API_KEY\""]
    template = student_chat_template(merged)
    if template is not None:
        t = out_dir / "chat_template.jinja"
        t.write_text(vllm_chat_template(template, bool(meta.get("bake_system_prompt"))))
        args.insert(2, f"--chat-template {shlex.quote(str(t))}")
        files["vllm_chat_template"] = str(t)
    schema = meta.get("output_schema") if meta.get("constrained_decoding") == "on" else None
    params: dict[str, Any] = {"model": f"hosted_vllm/{served_name}", "api_base": f"http://127.0.0.1:{VLLM_PORT}/v1",
                              "api_key": "os.environ/DISTILL_SERVE_API_KEY", "temperature": 0,
                              "max_tokens": int(meta.get("max_new_tokens", 128))}
    if schema is not None:
        s = out_dir / "output_schema.json"
        s.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        files["vllm_output_schema"] = str(s)
        params["extra_body"] = {"structured_outputs": {"json": schema}}
    script = out_dir / "serve.sh"
    script.write_text("#!/usr/bin/env bash\n# Generated on promotion: this causal-LM student on vLLM (GPU), OpenAI-compatible on port "
                      f"{VLLM_PORT}.\n# Requests get structured outputs from {out_dir / 'litellm_router.yaml'} (the student's JSON schema)"
                      + ("" if schema is not None else " - none: the student decodes freely") + ".\n"
                      + " \\\n  ".join(args) + "\n")
    files["vllm_serve_script"] = str(script)
    r = copy.deepcopy(router)
    r["model_list"][0]["litellm_params"] = params
    rp = out_dir / "litellm_router.yaml"
    rp.write_text("# Generated on promotion: the app's alias -> the student on vLLM (vllm/serve.sh), decoding under its\n"
                  "# output JSON schema (structured_outputs), teacher as fallback.\n" + yaml.safe_dump(r, sort_keys=False))
    files["vllm_litellm_router"] = str(rp)
    return files
