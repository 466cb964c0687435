"""Drift watch: compare the newest prompt logs with the production student's training prompts
and start a new distillation when they have moved apart. Schedulable like the main flow
(`distill deploy` registers it as 'drift-watch/nightly-drift')."""
from __future__ import annotations

from itertools import islice
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.base import DistillError, read_jsonl
from distill.config import DistillConfig, load_config
from registry.registry import Registry
from eval.drift import drift_report, user_text


@task(cache_policy=NO_CACHE)
def newest_prompts(cfg: DistillConfig, limit: int) -> list[str]:
    from ingest.pipeline import clean_records

    # Validated, deduplicated and redacted like the training data, so like is compared with like.
    items = sorted(clean_records(cfg.ingest), key=lambda r: r.get("timestamp") or "")
    return [user_text(r["messages"]) for r in items[-limit:]]


@task(cache_policy=NO_CACHE)
def production_training_prompts(cfg: DistillConfig, limit: int) -> list[str]:
    reg = Registry(cfg.registry_path)
    version = reg.aliases(cfg.registry.model_name).get("production")
    if not version:
        raise DistillError(f"no production version of {cfg.registry.model_name!r} in {reg.root}: nothing to compare against")
    train = Path(reg.meta(cfg.registry.model_name, version)["run_dir"]) / "ingest" / "train.jsonl"
    if not train.is_file():
        raise DistillError(f"the production version's training data is gone: {train}")
    return [user_text(r["messages"]) for r in islice(read_jsonl(train), limit)]


@flow(name="drift-watch", log_prints=True)
def drift_flow(config: str, threshold: float = 0.15, window: int = 2000, start_run: bool = True) -> dict:
    cfg = load_config(config)
    report = drift_report(newest_prompts(cfg, window), production_training_prompts(cfg, 20000), threshold)
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
