"""The human approval step: a Prefect pause with a RunInput form.

On a server the UI renders the form (approved, approver, comment) with the gate report above it;
`distill approve <flow-run-id>` answers the same form from the CLI. For unattended demos the
config may name an approver: a watcher thread answers the form as soon as the run is paused, and
the log says loudly that the approval came from config, not from a person.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from uuid import UUID

from prefect import get_run_logger
from prefect.flow_runs import pause_flow_run, resume_flow_run, suspend_flow_run
from prefect.input import RunInput


class Approval(RunInput):
    approved: bool = False
    approver: str = ""
    comment: str = ""


def request_approval(description_md: str, *, timeout_s: float, auto_approver: str | None, flow_run_id: UUID,
                     suspend: bool = False) -> Approval:
    """Block until someone answers the form; on timeout Prefect raises and nothing is promoted.

    suspend=True (runs from a deployment) ends the process while waiting, so no compute is held;
    on resume the flow reruns from the top, finished stages are skipped from the run directory,
    and this call returns the submitted form.
    """
    logger = get_run_logger()
    if auto_approver:
        logger.warning(
            "!!! APPROVAL COMES FROM CONFIG (approval.approver=%r), NOT FROM A PERSON. "
            "Use this for unattended demos only; unset it to require a human. !!!",
            auto_approver,
        )
        threading.Thread(target=_answer_when_paused, args=(flow_run_id, auto_approver), daemon=True).start()
    else:
        logger.info("Waiting for approval of flow run %s: answer the form in the Prefect UI or run "
                    "`distill approve %s --approver NAME [--reject]` (timeout %ss).", flow_run_id, flow_run_id, int(timeout_s))
    form = Approval.with_initial_data(description=description_md, approved=False, approver="", comment="")
    if suspend and not auto_approver:
        return suspend_flow_run(wait_for_input=form, timeout=int(timeout_s), key="approval")
    return pause_flow_run(wait_for_input=form, timeout=int(timeout_s), poll_interval=1 if auto_approver else 5)


def submit_approval(flow_run_id: UUID | str, *, approver: str, approved: bool, comment: str = "") -> None:
    """Answer a paused run's approval form (used by `distill approve` and the auto-approver)."""
    if not approver.strip():
        raise ValueError("an approval needs a non-empty approver name")
    from prefect import get_client

    from core.base import DistillError

    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(UUID(str(flow_run_id))).state
        except Exception as e:  # noqa: BLE001 - unknown id, unreachable server: say which
            raise DistillError(f"cannot read flow run {flow_run_id}: {type(e).__name__}: {e}") from None
    # Only a candidate that passed the gate is ever paused for approval, so "is it paused" is the check.
    if state is None or not state.is_paused():
        raise DistillError(f"flow run {flow_run_id} is not waiting for approval (state: {state.name if state else 'none'})")
    # Past its timeout the run is rejected even while it still shows Paused (the flow is about to
    # record the rejection and fail): a late answer must not look accepted.
    deadline = state.state_details.pause_timeout
    if deadline is not None and deadline < datetime.now(timezone.utc):
        raise DistillError(f"flow run {flow_run_id}: the approval window closed at {deadline.isoformat(timespec='seconds')} "
                           "(no answer in time is a rejection); start a new run to approve this candidate")
    from prefect.exceptions import FlowPauseTimeout, NotPausedError

    try:
        resume_flow_run(UUID(str(flow_run_id)), run_input={"approved": approved, "approver": approver, "comment": comment})
    except (FlowPauseTimeout, NotPausedError) as e:  # it timed out or moved on between our read and the resume
        raise DistillError(f"flow run {flow_run_id} is no longer waiting for approval: {e}") from None


def _answer_when_paused(flow_run_id: UUID, approver: str, deadline_s: float = 600) -> None:
    from prefect import get_client

    end = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.is_paused():
                break
            time.sleep(0.5)
        else:
            return
    # The pause saves its input schema just after the state turns Paused; the server rejects
    # input until then, so retry briefly instead of racing it.
    for _ in range(40):
        try:
            submit_approval(flow_run_id, approver=approver, approved=True, comment="auto-approved from config (approval.approver)")
            return
        except Exception:  # noqa: BLE001 - retried, the last failure is visible as a pause timeout
            time.sleep(0.5)
