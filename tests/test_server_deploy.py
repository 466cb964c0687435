"""Deploy and approve against a real Prefect server backed by the PostgreSQL at 127.0.0.1:5432.

deploy -> trigger the manual deployment -> a process worker runs it -> the run suspends for
approval (no process held) -> `distill approve` -> a worker resumes it -> the registry's
production alias moves. A rejected run promotes nothing. (The same, answered in the Prefect UI
by a browser: test_browser_approval.py.)
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from prefect_deploy import BIN, ROOT, api, prefect_server, run, stop, tiny_config, trigger, work_until


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from prefect_server(tmp_path_factory)


@pytest.mark.postgres
@pytest.mark.slow
def test_deploy_trigger_suspend_approve_promote_and_reject(server, tmp_path):
    env = server
    cfg = tiny_config(tmp_path)
    out = run(env, str(BIN / "distill"), "deploy", "--config", str(cfg), "--cron", "0 3 * * *", "--train-pool", "distill-train")
    assert '"nightly"' in out and '"manual"' in out and '"gpu"' in out
    # the training pool's worker (a GPU machine in production) serves the train stage of every run
    trainer = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "distill-train"], env=env, cwd=ROOT,
                               stdout=open(tmp_path / "train-worker.log", "w"), stderr=subprocess.STDOUT)
    try:
        _approve_then_reject(env, cfg, tmp_path)
    finally:
        stop(trainer)


def _approve_then_reject(env, cfg: Path, tmp_path: Path) -> None:
    # approved: suspends (no process held), `distill approve` resumes, production moves
    run_id = trigger(env, cfg)
    fr = work_until(env, run_id, {"PAUSED"})
    assert fr["state"]["name"] == "Suspended"
    run(env, str(BIN / "distill"), "approve", run_id, "--approver", "alice", "--comment", "ship it")
    fr = work_until(env, run_id, {"COMPLETED"})
    reg_dir = tmp_path / "data" / "registry"
    trains = api(env, "flow_runs/filter", {"flows": {"name": {"any_": ["distill-train"]}}})
    assert [(t["state_type"], t["parameters"]["run_dir"][-8:]) for t in trains] == [("COMPLETED", run_id[:8])]
    listing = run(env, str(BIN / "distill"), "registry", "list", "--data-dir", str(tmp_path / "data"))
    assert "production" in listing and "approver=alice" in listing

    # rejected: nothing new is promoted
    run_id = trigger(env, cfg)
    work_until(env, run_id, {"PAUSED"})
    run(env, str(BIN / "distill"), "approve", run_id, "--approver", "bob", "--reject", "--comment", "not now")
    work_until(env, run_id, {"COMPLETED"})
    from registry.registry import Registry

    reg = Registry(reg_dir)
    assert reg.aliases("banking77-intent")["production"] == "v0001"
    assert reg.versions("banking77-intent") == ["v0001"]

    # approving a run that is not waiting is refused with a clear message
    p = subprocess.run([str(BIN / "distill"), "approve", run_id, "--approver", "eve"], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "not waiting for approval" in p.stderr
