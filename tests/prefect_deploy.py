"""Shared by the tests that run the service against a real Prefect server (test_server_deploy,
test_browser_approval): a PostgreSQL-backed `prefect server start` with API auth, the tiny
Banking77 config, one-shot workers, and small API helpers.

What such a test needs and lacks (PostgreSQL, Chromium) skips it on a developer's machine and
fails it in CI (CI=true), so a missing service can never turn CI green by skipping.
"""
from __future__ import annotations

import base64
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
AUTH = "admin:test-secret"


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


def pg_connection():
    try:
        import psycopg2

        conn = psycopg2.connect(connect_timeout=3, **PG)
    except Exception as e:  # noqa: BLE001
        unavailable(f"no PostgreSQL reachable at {PG['host']}:{PG['port']} ({type(e).__name__}: {e})")
    conn.autocommit = True
    return conn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect_server(tmp_path_factory, ui: bool = False):
    """Generator for a module fixture: starts the server on a fresh database, yields the client
    env (PREFECT_API_URL, auth, offline settings; "UI_URL" too when ui=True), drops it after."""
    conn = pg_connection()
    db = f"distill_prefect_{uuid.uuid4().hex[:8]}"
    conn.cursor().execute(f'CREATE DATABASE "{db}"')
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
           "PREFECT_SERVER_API_AUTH_STRING": AUTH, "PREFECT_UI_ENABLED": "true" if ui else "false",
           "PREFECT_UI_API_URL": url}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except Exception:  # noqa: BLE001
                if proc.poll() is not None:
                    pytest.fail(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("prefect server did not become healthy in 120 s")
        client_env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": AUTH,
                      "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-client")), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                      "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if ui:
            client_env["UI_URL"] = f"http://127.0.0.1:{port}"
        yield client_env
    finally:
        stop(proc)
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` s. A Prefect 3.8.8 worker can
    hang in its own shutdown (seen here once: its cancellation observer raised NoEventLoopError
    after SIGTERM and the process never exited), which would fail a test whose flow had passed."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run(env, *args, timeout=300) -> str:
    p = subprocess.run([*args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def tiny_config(tmp_path, train_deployment: bool = True) -> Path:
    """The Banking77 example cut to 250 records, 1 epoch, a lenient gate and no auto-approver."""
    example = ROOT / "examples" / "banking77"
    cfg = yaml.safe_load((example / "distill.yaml").read_text())
    cfg["data_dir"] = str(tmp_path / "data")
    cfg["ingest"].update(max_records=250)
    cfg["ingest"]["source"]["path"] = str(example / "prompt_log.jsonl.gz")
    cfg["reference_teacher"].update(answers=str(example / "reference_answers.jsonl"), port=0, latency_ms=5)
    cfg["teacher"]["progress"] = False
    cfg["filter"] = {"json_schema": str(example / "output_schema.json"), "report": {"min_train_examples": 100}}
    cfg["student"] = {"epochs": 1}
    cfg["eval"] = {"latency_requests": 10, "warmup_requests": 1}
    cfg["gate"] = {"min_agreement": 0.0}
    cfg["cascade"] = {"enabled": True, "target_agreement": 0.5}  # reachable on a 250-record slice: the plumbing is what is tested
    cfg["approval"] = {"timeout_s": 600}  # no auto-approver: a person must answer
    if train_deployment:
        cfg["orchestration"] = {"train_deployment": "distill-train/gpu"}  # training on its own (GPU) pool
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def api(env, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{env['PREFECT_API_URL']}/{path}", data=data, headers={"Content-Type": "application/json"})
    req.add_header("Authorization", "Basic " + base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode())
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def flow_run(env, run_id: str) -> dict:
    return api(env, f"flow_runs/{run_id}")


def work_until(env, run_id: str, state_types: set[str], timeout_s: float = 420) -> dict:
    """Run a one-shot worker until the flow run reaches one of `state_types`."""
    end = time.monotonic() + timeout_s
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "distill-process", "--run-once"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while time.monotonic() < end:
            fr = flow_run(env, run_id)
            if fr["state_type"] in state_types:
                return fr
            if fr["state_type"] in {"FAILED", "CRASHED"}:
                worker.kill()
                pytest.fail(f"flow run {fr['state_type']}: {fr['state']['message']}\n{worker.communicate()[0][-4000:]}")
            time.sleep(1)
        pytest.fail(f"flow run stuck in {fr['state_type']}")
    finally:
        if worker.poll() is None and fr["state_type"] in {"COMPLETED", "PAUSED"}:
            try:
                worker.wait(60)  # --run-once: it exits once the run is handed over
            except subprocess.TimeoutExpired:
                pass  # a worker hung in its own shutdown (see stop()) is killed below
        if worker.poll() is None:
            worker.kill()


def trigger(env, cfg: Path) -> str:
    out = run(env, str(BIN / "prefect"), "deployment", "run", "distill/manual", "--param", f"config={cfg}")
    return next(w for w in out.split() if len(w) == 36 and w.count("-") == 4)
