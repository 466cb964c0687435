"""The approval step against a real (ephemeral) Prefect server: pause, answer, resume."""
import threading
import time

import pytest
from prefect import flow, get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.runtime import flow_run

from flows.approval import request_approval, submit_approval


@flow
def _needs_approval(timeout_s: float = 30, auto: str | None = None) -> dict:
    a = request_approval("# gate report", timeout_s=timeout_s, auto_approver=auto, flow_run_id=flow_run.id)
    return {"approved": a.approved, "approver": a.approver, "comment": a.comment}


def _answer_paused(approved: bool):
    """Play the human: find the paused run and answer its form like `distill approve` does."""
    with get_client(sync_client=True) as client:
        for _ in range(120):
            runs = client.read_flow_runs()
            paused = sorted((r for r in runs if r.state and r.state.is_paused() and r.name),
                            key=lambda r: r.created, reverse=True)
            if paused:
                time.sleep(0.5)
                submit_approval(paused[0].id, approver="alice", approved=approved, comment="looked at the report")
                return
            time.sleep(0.25)


@pytest.mark.parametrize("approved", [True, False])
def test_human_answers_the_form(prefect_server, approved):
    t = threading.Thread(target=_answer_paused, args=(approved,), daemon=True)
    t.start()
    out = _needs_approval(timeout_s=60)
    t.join(5)
    assert out == {"approved": approved, "approver": "alice", "comment": "looked at the report"}


def test_auto_approver_from_config(prefect_server):
    out = _needs_approval(timeout_s=60, auto="demo-bot")
    assert out["approved"] and out["approver"] == "demo-bot"
    assert "config" in out["comment"]


def test_no_answer_times_out(prefect_server):
    with pytest.raises(FlowPauseTimeout):
        _needs_approval(timeout_s=3)


def test_empty_approver_refused():
    with pytest.raises(ValueError, match="approver"):
        submit_approval("00000000-0000-0000-0000-000000000000", approver=" ", approved=True)
