"""The approval step against a real (ephemeral) Prefect server: pause, answer, resume."""
import threading

import pytest
from prefect import flow, get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.runtime import flow_run

from core.base import DistillError
from approval_helpers import answer_when_paused
from flows.approval import request_approval, submit_approval


@flow
def _needs_approval(timeout_s: float = 30, auto: str | None = None) -> dict:
    a = request_approval("# gate report", timeout_s=timeout_s, auto_approver=auto, flow_run_id=flow_run.id)
    return {"approved": a.approved, "approver": a.approver, "comment": a.comment}


@pytest.mark.parametrize("approved", [True, False])
def test_human_answers_the_form(prefect_server, approved):
    t = threading.Thread(target=answer_when_paused, args=(approved,), daemon=True)
    t.start()
    out = _needs_approval(timeout_s=60)
    t.join(5)
    assert out == {"approved": approved, "approver": "alice", "comment": "looked at the report"}


def test_auto_approver_from_config(prefect_server):
    out = _needs_approval(timeout_s=60, auto="demo-bot")
    assert out["approved"] and out["approver"] == "demo-bot"
    assert "config" in out["comment"]


def test_no_answer_times_out_and_a_late_answer_is_refused(prefect_server):
    with pytest.raises(FlowPauseTimeout):
        _needs_approval(timeout_s=3)
    with get_client(sync_client=True) as client:
        run = sorted(client.read_flow_runs(), key=lambda r: r.created)[-1]
    assert run.state.is_failed()
    with pytest.raises(DistillError, match="not waiting for approval"):
        submit_approval(run.id, approver="late-larry", approved=True)


@flow
def _answer_after_the_deadline() -> str:
    try:
        request_approval("# gate report", timeout_s=2, auto_approver=None, flow_run_id=flow_run.id)
    except FlowPauseTimeout:
        pass
    # The pause timed out but this run has not failed yet, so it still shows Paused to others.
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run.id).state.is_paused()
    try:
        submit_approval(flow_run.id, approver="late-larry", approved=True)
    except DistillError as e:
        return str(e)
    return "accepted"


def test_answer_inside_the_closing_window_is_refused(prefect_server):
    assert "approval window closed" in _answer_after_the_deadline()


def test_empty_approver_refused():
    with pytest.raises(ValueError, match="approver"):
        submit_approval("00000000-0000-0000-0000-000000000000", approver=" ", approved=True)
