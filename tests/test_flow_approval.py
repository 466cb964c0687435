"""Approval through the real distill_flow on the ephemeral Prefect server (no PostgreSQL): a
candidate that passed the gate and is rejected - by a person, or by nobody answering in time -
is recorded as rejected, and nothing reaches the registry. A late `distill approve` is refused."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from prefect import get_client

from approval_helpers import answer_when_paused
from core.base import DistillError
from registry.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "banking77" / "distill.yaml"
pytestmark = pytest.mark.slow


def _overrides(tmp_path, timeout_s: float) -> list[str]:
    return [
        f"data_dir={tmp_path / 'data'}", "ingest.max_records=200", "reference_teacher.port=0", "reference_teacher.latency_ms=1",
        "teacher.progress=false", "filter.report.min_train_examples=50", "student.epochs=1",
        "eval.latency_requests=10", "eval.warmup_requests=1",
        "gate.min_agreement=0.0", "gate.max_p95_latency_ms=null", "gate.max_cost_ratio=null",  # the gate passes
        "cascade.target_agreement=0.5",
        "approval.approver=null", f"approval.timeout_s={timeout_s}", "approval.mode=pause",    # a person must answer
    ]


def _the_run(tmp_path) -> tuple[Path, dict, dict]:
    (run,) = (tmp_path / "data" / "runs").iterdir()
    return run, json.loads((run / "manifest.json").read_text())["stages"], json.loads((run / "outcome.json").read_text())


def _flow_run(run_dir: Path):
    with get_client(sync_client=True) as client:
        return next(r for r in client.read_flow_runs() if run_dir.name.endswith(str(r.id)[:8]))


def test_no_answer_in_time_rejects_fails_the_run_and_refuses_a_late_approve(prefect_server, tmp_path, capsys):
    from distill.cli import main
    from flows.distill_flow import distill_flow

    with pytest.raises(DistillError, match="approval timed out after 4s: candidate rejected, nothing promoted"):
        distill_flow(config=str(CONFIG), overrides=_overrides(tmp_path, 4))
    run_dir, stages, outcome = _the_run(tmp_path)
    assert stages["approve"]["figures"]["approved"] is False and stages["approve"]["figures"]["source"] == "timeout"
    assert outcome["gate_passed"] is True and outcome["approved"] is False and outcome["promoted"] is None
    assert "promote" not in stages
    assert Registry(tmp_path / "data" / "registry").models() == []
    fr = _flow_run(run_dir)
    assert fr.state.is_failed()
    capsys.readouterr()
    assert main(["approve", str(fr.id), "--approver", "late-larry", "--data-dir", str(tmp_path / "data")]) == 2
    assert "not waiting for approval" in capsys.readouterr().err
    assert Registry(tmp_path / "data" / "registry").models() == []


def test_a_person_rejects_and_nothing_is_promoted(prefect_server, tmp_path):
    from flows.distill_flow import distill_flow

    human = threading.Thread(target=answer_when_paused, args=(False, "bob", "p95 too close"), kwargs={"wait_s": 600}, daemon=True)
    human.start()
    out = distill_flow(config=str(CONFIG), overrides=_overrides(tmp_path, 600))
    human.join(10)
    assert out["gate_passed"] is True and out["approved"] is False and out["promoted"] is None
    run_dir, stages, outcome = _the_run(tmp_path)
    assert outcome == out
    assert stages["approve"]["figures"] == {"approved": False, "approver": "bob", "comment": "p95 too close", "source": "human"}
    assert "promote" not in stages
    assert Registry(tmp_path / "data" / "registry").models() == []
    assert "**Rejected** at approval" in (run_dir / "summary.md").read_text()
    assert _flow_run(run_dir).state.is_completed()
