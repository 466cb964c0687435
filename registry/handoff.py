"""Serving hand-off: what an application needs to start using a promoted student.

On promotion we write, next to the version in the registry:
  - litellm_router.yaml: the application's model alias routed to the student (served by
    `distill serve` or vLLM, OpenAI-compatible) with the teacher as fallback, so a student outage
    or error degrades to the old behaviour instead of failing;
  - serve.sh: how to serve it (`distill serve` always, with `--engine llamacpp` when the version
    records that engine - student/engine.py; a vLLM command for causal-LM students, with the LoRA
    adapter or the merged weights);
  - vllm/ (causal-LM students, GPU): serve.sh (`vllm serve` on the merged weights), the chat
    template (the student's own, with the teacher-only system prompt dropped as `distill serve`
    drops it when it was baked in), output_schema.json and litellm_router.yaml, whose student
    entry sends every request with `structured_outputs: {json: <schema>}` (vLLM >= 0.12's
    structured outputs; the guided_json field it replaced is gone) so vLLM decodes under the same
    JSON schema as the CPU engines.
When the version records a cascade threshold (eval's cascade section), the alias points at the
cascade endpoint (`distill serve --cascade`: the student answers what it is sure of and forwards
the rest to the teacher itself) and serve.sh starts that; the teacher stays the router's
fallback for an outage of the endpoint.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from core.rundir import STUDENT_META


def write_handoff(version_dir: Path, *, app_model_alias: str, teacher_model: str, teacher_api_base: str | None,
                  student_api_base: str = "http://127.0.0.1:8000/v1", registry_name: str, version: str,
                  cascade: dict | None = None) -> dict[str, str]:
    model_dir = version_dir / "model"
    meta_file = model_dir / STUDENT_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    kind = meta.get("kind", "unknown")
    student_entry = {
        "model_name": app_model_alias,
        "litellm_params": {"model": f"openai/{registry_name}-{version}", "api_base": student_api_base,
                           "api_key": "os.environ/DISTILL_SERVE_API_KEY"},
    }
    teacher_params = {"model": teacher_model, "api_key": "os.environ/TEACHER_API_KEY"}
    if teacher_api_base and not teacher_api_base.startswith("http://127.0.0.1"):
        teacher_params["api_base"] = teacher_api_base
    router = {
        "model_list": [student_entry, {"model_name": f"{app_model_alias}-teacher", "litellm_params": teacher_params}],
        "router_settings": {"fallbacks": [{app_model_alias: [f"{app_model_alias}-teacher"]}], "num_retries": 1},
    }
    router_path = version_dir / "litellm_router.yaml"
    threshold = (cascade or {}).get("threshold")
    head = ("# Generated on promotion: the app's alias -> the cascade endpoint (`distill serve --cascade`: the student\n"
            f"# answers when its confidence >= {threshold:.6g}, else it forwards to the teacher), teacher as fallback.\n"
            if threshold is not None else "# Generated on promotion: the app's alias -> the student, teacher as fallback.\n")
    router_path.write_text(head + yaml.safe_dump(router, sort_keys=False))
    engine = (meta.get("serve_engine") or {}).get("choice")
    engine_flag = f" --engine {engine}" if engine and engine != "hf" else ""
    lines = ["#!/usr/bin/env bash", "# Generated on promotion. Serve this student over an OpenAI-compatible API"
             + (f" (engine {engine}: chosen on validation at training, student.json serve_engine):" if engine_flag else ":")]
    if threshold is not None:
        lines += ["# as a cascade (the threshold the eval chose on validation; --config: the run config, for its teacher section;",
                  "# forwarded requests are logged for the next run's ingest under <data-dir>/cascade/forwarded.jsonl):",
                  f"distill serve --cascade --model {shlex.quote(str(model_dir))} --threshold {threshold:.6g} --config distill.yaml --port 8000",
                  "# or the student alone:",
                  f"# distill serve --model {shlex.quote(str(model_dir))}{engine_flag} --port 8000"]
    else:
        lines.append(f"distill serve --model {shlex.quote(str(model_dir))}{engine_flag} --port 8000")
    if kind == "causal_lm":
        base = meta.get("base_model") or meta.get("base_path") or "<base model>"  # bundled: its local safetensors conversion
        adapter = model_dir / "adapter"
        merged = model_dir / "merged"
        lines += ["", "# or with vLLM (GPU), LoRA adapter on the base model:",
                  f"# vllm serve {shlex.quote(str(base))} --enable-lora --lora-modules {registry_name}-{version}={shlex.quote(str(adapter))}",
                  "# or the merged weights:",
                  f"# vllm serve {shlex.quote(str(merged))} --served-model-name {registry_name}-{version}",
                  f"# with schema-constrained decoding and the student's chat template: bash {shlex.quote(str(version_dir / 'vllm' / 'serve.sh'))}",
                  f"# (route the app through {shlex.quote(str(version_dir / 'vllm' / 'litellm_router.yaml'))})"]
    serve_path = version_dir / "serve.sh"
    serve_path.write_text("\n".join(lines) + "\n")
    out = {"litellm_router": str(router_path), "serve_script": str(serve_path)}
    if kind == "causal_lm":
        from registry.handoff_vllm import write_vllm_handoff

        out.update(write_vllm_handoff(version_dir, meta, router, app_model_alias=app_model_alias, served_name=f"{registry_name}-{version}"))
    return out
