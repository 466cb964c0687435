"""The end-to-end distillation flow: ingest -> replay -> filter -> train -> evaluate -> gate ->
approve -> promote. Stages live in plain-Python packages; this file only wires them together.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from prefect.exceptions import FlowPauseTimeout

from core.base import DistillError, write_json
from distill.config import DistillConfig, dump_yaml, load_config
from core.rundir import RunDir
from flows import tasks
from flows.approval import request_approval


@contextlib.contextmanager
def teacher_endpoint(cfg: DistillConfig, log=print) -> Iterator[None]:
    """Start the embedded reference teacher when the config asks for it, for the whole run:
    replay and the latency measurement both call it over HTTP like any hosted model."""
    ref = cfg.teacher.reference_server
    if not ref.enabled:
        yield
        return
    from teacher.server import ReferenceTeacher

    with ReferenceTeacher(ref) as url:
        log(f"reference teacher (offline demo/test teacher, answers from {ref.answers}) listening at {url}")
        cfg.teacher.api_base = url
        yield


@flow(name="distill", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
def distill_flow(config: str, overrides: list[str] | None = None, force: bool = False) -> dict:
    """Distil the logged prompts named by `config` (a YAML path) into a promoted student."""
    cfg = load_config(config, overrides or [])
    logger = get_run_logger()
    run_dir = str(tasks.run_dir_for(cfg, str(flow_run.id)))
    rd = RunDir(run_dir)
    rd.set_config(cfg.hash(), dump_yaml(cfg))
    print(f"run directory: {run_dir}")

    with teacher_endpoint(cfg, log=logger.info):
        tasks.ingest_task(cfg, run_dir)
        if cfg.teacher.shards > 1:
            tasks.replay_sharded(cfg, run_dir)
        else:
            tasks.replay_task(cfg, run_dir)
        tasks.filter_task(cfg, run_dir, force=force)
        if cfg.orchestration.train_deployment:
            tasks.train_remote(cfg, config, overrides or [], run_dir)
        else:
            tasks.train_task(cfg, run_dir)
        report = tasks.eval_task(cfg, run_dir)
    decision = tasks.gate_task(cfg, run_dir, report)

    outcome = {"run_dir": run_dir, "gate_passed": decision["passed"], "approved": None, "promoted": None}
    if decision["passed"]:
        try:
            approval = request_approval(
                _summary(rd, report, decision),
                timeout_s=cfg.approval.timeout_s,
                auto_approver=cfg.approval.approver,
                flow_run_id=flow_run.id,
                suspend=cfg.approval.mode == "suspend" or (cfg.approval.mode == "auto" and bool(deployment.id)),
            )
        except FlowPauseTimeout:
            # No answer in time is a rejection: record it, then fail the run so it is visible.
            tasks.record_approval(run_dir, False, "", f"timed out after {cfg.approval.timeout_s:.0f}s", "timeout")
            write_json(rd.outcome, {**outcome, "approved": False, "promoted": None})
            raise DistillError(f"approval timed out after {cfg.approval.timeout_s:.0f}s: candidate rejected, nothing promoted") from None
        source = "config" if cfg.approval.approver and approval.approver == cfg.approval.approver else "human"
        tasks.record_approval(run_dir, approval.approved, approval.approver, approval.comment, source)
        outcome["approved"] = approval.approved
        if approval.approved and approval.approver.strip():
            outcome["promoted"] = tasks.promote_task(cfg, run_dir, decision, approval.approver, approval.comment)
        else:
            logger.warning("candidate rejected by %r: %s; nothing promoted", approval.approver, approval.comment)
    else:
        logger.warning("gate FAILED: the candidate is not offered for approval and nothing is promoted")

    summary = _summary(rd, report, decision, outcome)
    write_json(rd.outcome, outcome)
    (rd.summary).write_text(summary)
    create_markdown_artifact(key="distill-summary", markdown=summary, description=f"Distillation run {rd.run_id}")
    print(summary)
    return outcome


def _summary(rd: RunDir, report: dict, decision: dict, outcome: dict | None = None) -> str:
    from eval.report import summary_markdown

    md = summary_markdown(rd.manifest(), report, decision)
    if outcome is not None:
        if outcome.get("promoted"):
            p = outcome["promoted"]
            md += f"\n\n**Promoted** {p['name']} {p['version']} to `{p['alias']}` (previous: {p['previous'] or 'none'}).\n"
        elif outcome["gate_passed"] and outcome["approved"] is False:
            md += "\n\n**Rejected** at approval: nothing promoted.\n"
        elif not outcome["gate_passed"]:
            md += "\n\n**Gate failed**: not offered for approval, nothing promoted.\n"
    md += f"\n\nRun directory: `{rd.path}`\n"
    return md
