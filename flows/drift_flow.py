"""Drift watch: compare the newest prompt logs with the production student's training prompts
and start a new distillation when they have moved apart. Schedulable like the main flow
(`distill deploy` registers it as 'drift-watch/nightly-drift')."""
from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from distill import stages
from distill.config import load_config


@task(cache_policy=NO_CACHE)
def drift_task(config: str, threshold: float, window: int) -> dict:
    return stages.drift_check(load_config(config), threshold, window)


@flow(name="drift-watch", log_prints=True)
def drift_flow(config: str, threshold: float = 0.15, window: int = 2000, start_run: bool = True) -> dict:
    report = drift_task(config, threshold, window)
    md = (f"# Drift watch\n\nJS divergence of user-turn token distributions: **{report['distance']:.4f}** "
          f"(threshold {threshold}) over {report['new_records']} newest vs {report['reference_records']} training prompts.\n\n"
          f"Drifted: **{report['drifted']}**. Most frequent new tokens: {', '.join(report['top_novel_tokens']) or 'none'}.\n")
    create_markdown_artifact(key="drift-report", markdown=md, description="Drift of new logs vs the production student's training data")
    print(md)
    if report["drifted"] and start_run:
        get_run_logger().warning("drift above threshold: starting a new distillation run")
        report["started"] = _start_distillation(config)
    return report


def _start_distillation(config: str) -> str:
    """On a server, trigger the manual deployment (its own flow run, worker, approval); otherwise
    run the distillation in-process as a subflow."""
    from prefect.deployments import run_deployment

    try:
        fr = run_deployment("distill/manual", parameters={"config": config}, timeout=0)
        return f"deployment run {fr.id}"
    except Exception:  # noqa: BLE001 - no server/deployment: fall back to running it here
        from flows.distill_flow import distill_flow

        return f"in-process run {distill_flow(config=config)['run_dir']}"
