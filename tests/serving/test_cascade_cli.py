"""`distill serve --cascade` from the command line: the threshold comes from the registry
version, the teacher from --config (here the reference teacher, which the config enables), and
`distill registry show` shows the threshold."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from core.base import write_jsonl  # noqa: E402
from distill.cli import main  # noqa: E402
from registry.registry import Registry  # noqa: E402
from serving.cascade import ANSWERED_BY  # noqa: E402
from student.kinds import load_student  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"refund": "i want my money back", "card": "where is my new card", "pin": "my pin is blocked"}
UNSURE = "sunny weather tomorrow"


def msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from student.base import Example
    from student.classifier import ClassifierStudent
    from student.config import ClassifierStudentConfig
    from student.models import make_tiny_encoder

    tmp = tmp_path_factory.mktemp("cascade-cli")
    enc = make_tiny_encoder(tmp / "enc", list(LABELS.values()) + [UNSURE])
    ex = [Example(f"{k}{i}", msgs(t), json.dumps({"intent": k})) for i in range(4) for k, t in LABELS.items()]
    st = ClassifierStudent.create(ClassifierStudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0}), ex)
    st.warm_start(ex)
    st.save(tmp / "model")
    scored = load_student(tmp / "model").predict_scored([msgs(t) for t in [*LABELS.values(), UNSURE]])
    sure, unsure = min(c for _, c in scored[:3]), scored[3][1]
    assert unsure < sure, scored
    threshold = (sure + unsure) / 2
    data = tmp / "data"
    reg = Registry(data / "registry")
    reg.promote("intent", reg.register("intent", tmp / "model", {"run_id": "r1", "cascade": {"threshold": threshold, "chosen_on": "validation"}}),
                approver="alice")
    write_jsonl(tmp / "answers.jsonl", [{"id": "u", "user": UNSURE, "response": json.dumps({"intent": "weather"})}])
    cfg = tmp / "distill.yaml"
    cfg.write_text(f"data_dir: {data}\nreference_teacher: {{enabled: true, answers: answers.jsonl}}\n"
                   "teacher: {model: openai/reference-teacher, max_tokens: 32}\n")
    return data, cfg, threshold


def test_registry_show_has_the_threshold(setup, capsys):
    data, _, threshold = setup
    assert main(["registry", "show", "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["cascade_threshold"] == pytest.approx(threshold)


def test_serve_cascade_routes_by_the_registry_threshold_and_logs_forwarded(setup):
    data, cfg, _ = setup
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("DISTILL_SERVE_API_KEY", None)
    p = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "--cascade", "--model", "production", "--port", "0",
                          "--data-dir", str(data), "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)
    try:
        lines = []
        for line in p.stdout:  # the teacher's line, the forward log's, then the server's
            lines.append(line)
            if "as a cascade at" in line:
                break
        m = re.search(r"as a cascade at (http://\S+?)/v1", lines[-1] if lines else "")
        assert m, f"serve --cascade did not start: {lines} {p.stderr.read()[-2000:] if p.poll() is not None else ''}"
        client = openai.OpenAI(base_url=m.group(1) + "/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=msgs(LABELS["pin"]))
        assert raw.headers[ANSWERED_BY] == "student" and raw.parse().choices[0].message.content == json.dumps({"intent": "pin"})
        raw = client.chat.completions.with_raw_response.create(model="m", messages=msgs(UNSURE))
        assert raw.headers[ANSWERED_BY] == "teacher" and raw.parse().model == "openai/reference-teacher"
        assert raw.parse().choices[0].message.content == json.dumps({"intent": "weather"})
        log = data / "cascade" / "forwarded.jsonl"
        rows = [json.loads(x) for x in log.read_text().splitlines()]
        assert len(rows) == 1 and rows[0]["messages"][-1] == {"role": "assistant", "content": json.dumps({"intent": "weather"})}
        assert any("ingest.source" in x for x in lines)
    finally:
        p.terminate()
        p.wait(10)


def test_serve_cascade_without_config_or_threshold_says_why(setup, tmp_path, capsys):
    data, cfg, _ = setup
    assert main(["serve", "--cascade", "--model", "production", "--data-dir", str(data)]) == 2
    assert "needs --config" in capsys.readouterr().err
    assert main(["serve", "--threshold", "0.5", "--model", "production", "--data-dir", str(data)]) == 2
    assert "add --cascade" in capsys.readouterr().err
