import pytest

from core.base import DistillError
from distill.config import dump_yaml, load_config


def _write(tmp_path, text):
    p = tmp_path / "distill.yaml"
    p.write_text(text)
    return p


def test_defaults_yaml_env_cli_precedence(tmp_path):
    p = _write(tmp_path, "name: demo\nstudent:\n  epochs: 2\nteacher:\n  model: openai/gpt-4o\n")
    env = {"DISTILL__STUDENT__EPOCHS": "5", "DISTILL__TEACHER__CONCURRENCY": "3"}
    cfg = load_config(p, ["student.epochs=7"], env=env)
    assert cfg.name == "demo"
    assert cfg.student.epochs == 7  # CLI beats env beats YAML
    assert cfg.teacher.concurrency == 3
    assert cfg.teacher.model == "openai/gpt-4o"
    assert cfg.ingest.holdout_fraction == 0.15


def test_unknown_key_is_named(tmp_path):
    p = _write(tmp_path, "teacher:\n  modle: x\n")
    with pytest.raises(DistillError, match=r"unknown key 'teacher.modle'"):
        load_config(p, env={})


def test_bad_value_is_named(tmp_path):
    p = _write(tmp_path, "ingest:\n  holdout_fraction: 2\n")
    with pytest.raises(DistillError, match=r"ingest.holdout_fraction"):
        load_config(p, env={})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(DistillError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", env={})
    with pytest.raises(DistillError, match="not valid YAML"):
        load_config(_write(tmp_path, "a: [1,\n"), env={})
    with pytest.raises(DistillError, match="mapping at the top level"):
        load_config(_write(tmp_path, "- 1\n- 2\n"), env={})


def test_paths_resolve_relative_to_config(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.yaml"
    p.write_text("ingest:\n  source:\n    path: log.jsonl\n")
    cfg = load_config(p, env={})
    assert cfg.ingest.source.path == str((tmp_path / "sub" / "log.jsonl").resolve())


def test_secret_is_masked(tmp_path):
    p = _write(tmp_path, "teacher:\n  api_key: sk-very-secret\n")
    cfg = load_config(p, env={})
    assert cfg.teacher.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in dump_yaml(cfg)
    assert "sk-very-secret" not in repr(cfg)


def test_config_hash_ignores_location(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "c.yaml").write_text("name: x\n")
    (b / "c.yaml").write_text("name: x\n")
    assert load_config(a / "c.yaml", env={}).hash() == load_config(b / "c.yaml", env={}).hash()
    assert load_config(a / "c.yaml", ["name=y"], env={}).hash() != load_config(a / "c.yaml", env={}).hash()


def test_config_reference_is_current():
    """docs/CONFIG.md is generated from the typed configs; regenerate it when a field changes:
    python -m distill.config_docs > docs/CONFIG.md"""
    from pathlib import Path

    from distill.config_docs import render

    assert (Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md").read_text() == render()


def test_example_configs_load():
    from pathlib import Path

    for p in sorted((Path(__file__).resolve().parents[1] / "examples").glob("*/distill.yaml")):
        load_config(p, env={})
