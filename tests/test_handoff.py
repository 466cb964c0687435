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


def test_a_version_with_a_cascade_threshold_points_the_app_at_the_cascade_endpoint(tmp_path):
    out = write_handoff(_version(tmp_path, "classifier"), app_model_alias="intents", teacher_model="openai/gpt-4o", teacher_api_base=None,
                        registry_name="b77", version="v0001", cascade={"threshold": 0.8125})
    router_text = open(out["litellm_router"]).read()
    assert "cascade endpoint" in router_text and "0.8125" in router_text
    router = yaml.safe_load(router_text)
    assert router["router_settings"]["fallbacks"] == [{"intents": ["intents-teacher"]}]  # teacher still covers an outage
    script = open(out["serve_script"]).read()
    assert "distill serve --cascade" in script and "--threshold 0.8125" in script and "forwarded.jsonl" in script


def test_the_promoted_version_records_the_validation_chosen_threshold(tmp_path):
    from core.rundir import RunDir
    from registry.promote import cascade_operating_point

    rd = RunDir.create(tmp_path, "r")
    assert cascade_operating_point(rd) is None  # no eval report
    rd.eval_report.parent.mkdir(parents=True)
    rd.eval_report.write_text(json.dumps({"cascade": {"reachable": True, "threshold": 0.91, "target": "target_agreement=0.99",
                                                       "coverage": 0.85, "choice": {"val_coverage": 0.86}, "config": {"teacher_timeout_s": 30}}}))
    op = cascade_operating_point(rd)
    assert op["threshold"] == 0.91 and op["chosen_on"] == "validation" and op["val_coverage"] == 0.86
    rd.eval_report.write_text(json.dumps({"cascade": {"reachable": False, "threshold": None, "reason": "no threshold reaches"}}))
    assert cascade_operating_point(rd) is None
