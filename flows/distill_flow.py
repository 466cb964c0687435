"""The end-to-end distillation flow: ingest -> replay -> filter -> train -> evaluate -> gate ->
approve -> promote. Stages live in plain-Python packages; this file only wires them together.
"""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.runtime import deployment, flow_run

from core.base import DistillError, write_json
from core.rundir import RunDir
from distill import stages
from distill.config import dump_yaml, load_config
from flows import tasks
from flows.approval import request_approval


# Parallel work (replay shards) runs on the runner orchestration.* configures, entered where it is
# needed (tasks.replay_sharded): a decorator-level runner would be fixed before the config is read.
@flow(name="distill", log_prints=True)
def distill_flow(config: str, overrides: list[str] | None = None, force: bool = False) -> dict:
    """Distil the logged prompts named by `config` (a YAML path) into a promoted student."""
    cfg = load_config(config, overrides or [])
    logger = get_run_logger()
    rd = stages.run_dir_for(cfg, str(flow_run.id))
    run_dir = str(rd.path)
    rd.set_config(cfg.hash(), dump_yaml(cfg))
    print(f"run directory: {run_dir}")
    progress = tasks.FlowProgress(rd)

    with stages.teacher_endpoint(cfg, log=logger.info):
        tasks.ingest_task(cfg, run_dir)
        if cfg.select is not None:  # no select: section, no task: every prompt is replayed
            tasks.select_task(cfg, run_dir)
        progress.update()
        if cfg.teacher.shards > 1:
            tasks.replay_sharded(cfg, run_dir)
        else:
            tasks.replay_task(cfg, run_dir)
        progress.update()
        tasks.filter_task(cfg, run_dir, force=force)
        progress.update()
        if cfg.orchestration.train_deployment:
            tasks.train_remote(cfg, config, overrides or [], run_dir)
        else:
            tasks.train_task(cfg, run_dir)
        progress.update()
        report = tasks.eval_task(cfg, run_dir)
        progress.update()
    decision = tasks.gate_task(cfg, run_dir, report)
    progress.update()

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
            stages.record_approval(rd, False, "", f"timed out after {cfg.approval.timeout_s:.0f}s", "timeout")
            write_json(rd.outcome, {**outcome, "approved": False, "promoted": None})
            raise DistillError(f"approval timed out after {cfg.approval.timeout_s:.0f}s: candidate rejected, nothing promoted") from None
        source = "config" if cfg.approval.approver and approval.approver == cfg.approval.approver else "human"
        stages.record_approval(rd, approval.approved, approval.approver, approval.comment, source)
        outcome["approved"] = approval.approved
        outcome["approver"], outcome["approval_comment"] = approval.approver, approval.comment
        if approval.approved and approval.approver.strip():
            outcome["promoted"] = tasks.promote_task(cfg, run_dir, decision, approval.approver, approval.comment)
        else:
            logger.warning("candidate rejected by %r: %s; nothing promoted", approval.approver, approval.comment)
    else:
        logger.warning("gate FAILED: the candidate is not offered for approval and nothing is promoted")

    progress.update(done=True)
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
            md += (f"\n\n**Promoted** {p['name']} {p['version']} to `{p['alias']}` (previous: {p['previous'] or 'none'}), "
                   f"approved by {outcome.get('approver')}: {outcome.get('approval_comment') or '(no comment)'}.\n")
        elif outcome["gate_passed"] and outcome["approved"] is False:
            md += "\n\n**Rejected** at approval: nothing promoted.\n"
        elif not outcome["gate_passed"]:
            md += "\n\n**Gate failed**: not offered for approval, nothing promoted.\n"
    md += f"\n\nRun directory: `{rd.path}`\n"
    return md
