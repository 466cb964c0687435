"""`distill predict` and `distill serve` from the command line over a tiny saved classifier
student in a real registry: predict writes one line per input, in order, whether the model is
named by alias, version or path; serve enforces DISTILL_SERVE_API_KEY and refuses to expose an
unauthenticated student on a non-loopback address unless asked to."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch")

from distill.cli import main  # noqa: E402
from registry.registry import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"refund": "i want my money back", "card": "where is my new card", "pin": "my pin is blocked"}
KEY = "sk-serve-test-42"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """<data>/registry holding the student as v0001, promoted to production; the saved path too."""
    from student.base import Example
    from student.classifier import ClassifierStudent
    from student.config import ClassifierStudentConfig
    from student.models import make_tiny_encoder

    tmp = tmp_path_factory.mktemp("cli-serve")
    enc = make_tiny_encoder(tmp / "enc", list(LABELS.values()))
    ex = [Example(f"{k}{i}", [{"role": "user", "content": t}], json.dumps({"intent": k})) for i in range(4) for k, t in LABELS.items()]
    st = ClassifierStudent.create(ClassifierStudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0}), ex)
    st.warm_start(ex)
    st.save(tmp / "model")
    reg = Registry(tmp / "data" / "registry")
    reg.promote("intent", reg.register("intent", tmp / "model", {"run_id": "r1"}), approver="alice")
    return tmp / "data"


def _requests(path: Path, order: list[str]) -> list[str]:
    path.write_text("".join(json.dumps({"messages": [{"role": "system", "content": "Classify."},
                                                     {"role": "user", "content": LABELS[k]}]}) + "\n" for k in order))
    return [json.dumps({"intent": k}) for k in order]


@pytest.mark.parametrize("spec", ["production", "v0001", "1", "path"])
def test_predict_writes_one_line_per_input_in_order(data_dir, tmp_path, spec):
    model = str(data_dir.parent / "model") if spec == "path" else spec
    order = ["pin", "refund", "card", "card", "pin", "refund", "pin"]
    want = _requests(tmp_path / "in.jsonl", order)
    assert main(["predict", "--model", model, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                 "--data-dir", str(data_dir)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["response"] for r in rows] == want
    assert all(set(r) == {"response", "latency_ms", "confidence"} and r["latency_ms"] > 0 and 0 < r["confidence"] <= 1 for r in rows)


def _serve(data_dir: Path, *args: str, key: str | None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("DISTILL_SERVE_API_KEY", None)
    if key:
        env["DISTILL_SERVE_API_KEY"] = key
    p = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "--model", "production", "--port", "0",
                          "--data-dir", str(data_dir), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)
    line = p.stdout.readline()  # blocks until the server says where it listens (or exits)
    m = re.search(r"at (http://\S+?):(\d+)/v1", line)
    if not m:
        p.kill()
        raise AssertionError(f"serve did not start: {line!r} {p.communicate()[1][-2000:]}")
    return p, f"http://127.0.0.1:{m.group(2)}/v1"


def _chat(url: str, key: str | None) -> tuple[int, dict]:
    body = json.dumps({"model": "student", "messages": [{"role": "user", "content": LABELS["card"]}]}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/chat/completions", body, headers), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


@pytest.mark.slow
def test_serve_from_the_command_line_needs_the_key(data_dir):
    p, url = _serve(data_dir, key=KEY)
    try:
        assert _chat(url, None)[0] == 401
        assert _chat(url, "sk-wrong")[0] == 401
        status, body = _chat(url, KEY)
        assert status == 200 and body["choices"][0]["message"]["content"] == json.dumps({"intent": "card"})
    finally:
        p.terminate()
        p.wait(30)


def test_serve_refuses_a_non_loopback_address_without_a_key(data_dir, capsys, monkeypatch):
    monkeypatch.delenv("DISTILL_SERVE_API_KEY", raising=False)
    t0 = time.monotonic()
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0 without an API key" in err and "--allow-unauthenticated" in err
    assert time.monotonic() - t0 < 30  # refused up front, before loading the model


@pytest.mark.slow
def test_serve_on_a_non_loopback_address_when_asked_explicitly(data_dir):
    p, url = _serve(data_dir, "--host", "0.0.0.0", "--allow-unauthenticated", key=None)
    try:
        assert _chat(url, None)[0] == 200
    finally:
        p.terminate()
        p.wait(30)
