import json

import yaml

from registry.handoff import write_handoff


def _version(tmp_path, kind):
    vdir = tmp_path / "v0001"
    (vdir / "model").mkdir(parents=True)
    (vdir / "model" / "student.json").write_text(json.dumps({"kind": kind, "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    return vdir


def test_router_config_routes_alias_to_student_with_teacher_fallback(tmp_path):
    vdir = _version(tmp_path, "classifier")
    out = write_handoff(vdir, app_model_alias="intent-router", teacher_model="openai/gpt-4o", teacher_api_base=None,
                        registry_name="banking77-intent", version="v0001")
    router = yaml.safe_load(open(out["litellm_router"]))
    names = [m["model_name"] for m in router["model_list"]]
    assert names == ["intent-router", "intent-router-teacher"]
    assert router["router_settings"]["fallbacks"] == [{"intent-router": ["intent-router-teacher"]}]
    assert router["model_list"][0]["litellm_params"]["api_base"] == "http://127.0.0.1:8000/v1"
    assert "vllm" not in open(out["serve_script"]).read()

    import litellm  # the generated config is one litellm's Router accepts as is

    r = litellm.Router(model_list=router["model_list"], **router["router_settings"])
    assert set(r.get_model_names()) == set(names)


def test_causal_lm_gets_vllm_commands(tmp_path):
    out = write_handoff(_version(tmp_path, "causal_lm"), app_model_alias="nlu", teacher_model="openai/gpt-4o",
                        teacher_api_base=None, registry_name="nlu", version="v0001")
    script = open(out["serve_script"]).read()
    assert "--enable-lora --lora-modules nlu-v0001=" in script and "/merged" in script
