"""Playing the human in approval tests: answer a paused run's form like `distill approve` does."""
from __future__ import annotations

import time

from prefect import get_client

from flows.approval import submit_approval


def answer_when_paused(approved: bool, approver: str = "alice", comment: str = "looked at the report", wait_s: float = 120):
    """Play the human: find the paused run and answer its form like `distill approve` does.
    Waits on events: the run turning Paused, then the server accepting the input (its schema is
    saved just after the pause, so the first answers may be refused)."""
    end = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            paused = sorted((r for r in client.read_flow_runs() if r.state and r.state.is_paused() and r.name),
                            key=lambda r: r.created, reverse=True)
            if paused:
                break
            time.sleep(0.25)
        else:
            raise AssertionError("no run paused for approval")
    while True:
        try:
            submit_approval(paused[0].id, approver=approver, approved=approved, comment=comment)
            return
        except Exception:  # noqa: BLE001 - the schema is not saved yet: retried until the deadline
            if time.monotonic() > end:
                raise
            time.sleep(0.25)
