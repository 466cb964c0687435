"""Bad input at the command line: one clear line naming the file/field/URL, exit 2, nothing
written to the registry."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISTILL = [sys.executable, "-m", "distill.cli"]


def _distill(*args, cwd=None):
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([*DISTILL, *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)


def test_missing_config(tmp_path):
    p = _distill("run", "--config", str(tmp_path / "nope.yaml"))
    assert p.returncode == 2 and "config file not found" in p.stderr and "nope.yaml" in p.stderr


def test_unknown_key_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("student:\n  epocs: 3\n")
    p = _distill("ingest", "--config", str(cfg))
    assert p.returncode == 2 and "unknown key 'student.epocs'" in p.stderr


def test_missing_log_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ningest:\n  source:\n    path: missing.jsonl\n")
    p = _distill("ingest", "--config", str(cfg))
    assert p.returncode == 2 and "missing.jsonl" in p.stderr


@pytest.mark.slow
def test_unreachable_teacher_fails_the_run_and_promotes_nothing(tmp_path):
    src = ROOT / "examples" / "banking77"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: t\ndata_dir: {tmp_path / 'data'}\n"
        f"ingest:\n  source:\n    path: {src / 'prompt_log.jsonl.gz'}\n  max_records: 50\n"
        "teacher:\n  model: openai/some-model\n  api_base: http://127.0.0.1:9/v1\n  progress: false\n"
        "approval:\n  approver: demo-bot\n")
    p = _distill("run", "--config", str(cfg))
    assert p.returncode == 2, p.stderr[-2000:]
    assert "http://127.0.0.1:9/v1" in p.stderr
    assert not (tmp_path / "data" / "registry").exists()


def test_predict_bad_request_line_named(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    model = tmp_path / "m"
    model.mkdir()
    (model / "student.json").write_text(json.dumps({"kind": "classifier"}))
    p = _distill("predict", "--model", str(model), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                 "--data-dir", str(tmp_path / "data"))
    assert p.returncode == 2 and "in.jsonl:2" in p.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
def test_too_little_data_stops_before_training_unless_forced(tmp_path, capsys):
    """ingest -> replay -> filter on 60 prompts: the data report's sufficiency check stops the
    stage (exit 2, the count and --force named); --force goes on with a warning."""
    from distill.cli import main

    src = ROOT / "examples" / "banking77"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: t\ndata_dir: {tmp_path / 'data'}\n"
        f"ingest:\n  source:\n    path: {src / 'prompt_log.jsonl.gz'}\n  max_records: 60\n"
        f"teacher:\n  model: openai/reference-teacher\n  progress: false\n"
        f"reference_teacher: {{enabled: true, answers: {src / 'reference_answers.jsonl'}, port: 0, latency_ms: 1}}\n"
        f"filter:\n  json_schema: {src / 'output_schema.json'}\n")
    assert main(["ingest", "--config", str(cfg)]) == 0
    assert main(["replay", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["filter", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "kept training examples" in err and "--force" in err
    assert main(["filter", "--config", str(cfg), "--force"]) == 0
    assert "warning:" in capsys.readouterr().err
