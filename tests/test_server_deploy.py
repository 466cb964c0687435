"""Deploy and approve against a real Prefect server backed by the PostgreSQL at 127.0.0.1:5432.

deploy -> trigger the manual deployment -> a process worker runs it -> the run suspends for
approval (no process held) -> `distill approve` -> a worker resumes it -> the registry's
production alias moves. A rejected run promotes nothing.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")


def _pg_or_skip():
    try:
        import psycopg2

        conn = psycopg2.connect(connect_timeout=3, **PG)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL reachable at {PG['host']}:{PG['port']} ({type(e).__name__}: {e})")
    conn.autocommit = True
    return conn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    conn = _pg_or_skip()
    db = f"distill_prefect_{uuid.uuid4().hex[:8]}"
    conn.cursor().execute(f'CREATE DATABASE "{db}"')
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
           "PREFECT_SERVER_API_AUTH_STRING": "admin:test-secret", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except Exception:  # noqa: BLE001
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("prefect server did not become healthy in 120 s")
    client_env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": "admin:test-secret",
                  "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-client")), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                  "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    yield client_env
    proc.terminate()
    proc.wait(30)
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _run(env, *args, timeout=300) -> str:
    p = subprocess.run([*args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def _config(tmp_path) -> Path:
    example = ROOT / "examples" / "banking77"
    cfg = yaml.safe_load((example / "distill.yaml").read_text())
    cfg["data_dir"] = str(tmp_path / "data")
    cfg["ingest"].update(max_records=250)
    cfg["ingest"]["source"]["path"] = str(example / "prompt_log.jsonl.gz")
    cfg["teacher"]["reference_server"].update(answers=str(example / "reference_answers.jsonl"), port=0, latency_ms=5)
    cfg["teacher"]["progress"] = False
    cfg["filter"] = {"json_schema": str(example / "output_schema.json"), "report": {"min_train_examples": 100}}
    cfg["student"] = {"epochs": 1}
    cfg["eval"] = {"latency_requests": 10, "warmup_requests": 1}
    cfg["gate"] = {"min_agreement": 0.0}
    cfg["approval"] = {"timeout_s": 600}  # no auto-approver: a person must answer
    cfg["orchestration"] = {"train_deployment": "distill-train/gpu"}  # training on its own (GPU) pool
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _api(env, path: str, body: dict | None = None):
    import base64

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{env['PREFECT_API_URL']}/{path}", data=data, headers={"Content-Type": "application/json"})
    req.add_header("Authorization", "Basic " + base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode())
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def _flow_run(env, run_id: str) -> dict:
    return _api(env, f"flow_runs/{run_id}")


def _work_until(env, run_id: str, state_types: set[str], timeout_s: float = 420) -> dict:
    """Run a one-shot worker until the flow run reaches one of `state_types`."""
    end = time.monotonic() + timeout_s
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "distill-process", "--run-once"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while time.monotonic() < end:
            fr = _flow_run(env, run_id)
            if fr["state_type"] in state_types:
                return fr
            if fr["state_type"] in {"FAILED", "CRASHED"}:
                worker.kill()
                pytest.fail(f"flow run {fr['state_type']}: {fr['state']['message']}\n{worker.communicate()[0][-4000:]}")
            time.sleep(1)
        pytest.fail(f"flow run stuck in {fr['state_type']}")
    finally:
        worker.wait(60) if worker.poll() is None and fr["state_type"] in {"COMPLETED", "PAUSED"} else None
        if worker.poll() is None:
            worker.kill()


def _trigger(env, cfg: Path) -> str:
    out = _run(env, str(BIN / "prefect"), "deployment", "run", "distill/manual", "--param", f"config={cfg}")
    return next(w for w in out.split() if len(w) == 36 and w.count("-") == 4)


@pytest.mark.postgres
@pytest.mark.slow
def test_deploy_trigger_suspend_approve_promote_and_reject(server, tmp_path):
    env = server
    cfg = _config(tmp_path)
    out = _run(env, str(BIN / "distill"), "deploy", "--config", str(cfg), "--cron", "0 3 * * *", "--train-pool", "distill-train")
    assert '"nightly"' in out and '"manual"' in out and '"gpu"' in out
    # the training pool's worker (a GPU machine in production) serves the train stage of every run
    trainer = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "distill-train"], env=env, cwd=ROOT,
                               stdout=open(tmp_path / "train-worker.log", "w"), stderr=subprocess.STDOUT)
    try:
        _approve_then_reject(env, cfg, tmp_path)
    finally:
        trainer.terminate()
        trainer.wait(30)


def _approve_then_reject(env, cfg: Path, tmp_path: Path) -> None:
    # approved: suspends (no process held), `distill approve` resumes, production moves
    run_id = _trigger(env, cfg)
    fr = _work_until(env, run_id, {"PAUSED"})
    assert fr["state"]["name"] == "Suspended"
    _run(env, str(BIN / "distill"), "approve", run_id, "--approver", "alice", "--comment", "ship it")
    fr = _work_until(env, run_id, {"COMPLETED"})
    reg_dir = tmp_path / "data" / "registry"
    trains = _api(env, "flow_runs/filter", {"flows": {"name": {"any_": ["distill-train"]}}})
    assert [(t["state_type"], t["parameters"]["run_dir"][-8:]) for t in trains] == [("COMPLETED", run_id[:8])]
    listing = _run(env, str(BIN / "distill"), "registry", "list", "--data-dir", str(tmp_path / "data"))
    assert "production" in listing and "approver=alice" in listing

    # rejected: nothing new is promoted
    run_id = _trigger(env, cfg)
    _work_until(env, run_id, {"PAUSED"})
    _run(env, str(BIN / "distill"), "approve", run_id, "--approver", "bob", "--reject", "--comment", "not now")
    _work_until(env, run_id, {"COMPLETED"})
    from registry.registry import Registry

    reg = Registry(reg_dir)
    assert reg.aliases("banking77-intent")["production"] == "v0001"
    assert reg.versions("banking77-intent") == ["v0001"]

    # approving a run that is not waiting is refused with a clear message
    p = subprocess.run([str(BIN / "distill"), "approve", run_id, "--approver", "eve"], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "not waiting for approval" in p.stderr
