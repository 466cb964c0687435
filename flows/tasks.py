"""Thin Prefect tasks over the plain-Python stages. Each takes the run config and the run
directory path, calls one stage function, and returns that stage's manifest entry.

A stage already recorded in the run directory (under the same run config) is skipped, so a flow
resumed from the top (a suspended run, a retried flow) redoes no finished work; the replay
ledger makes even a re-executed replay free.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.base import DistillError, write_json
from distill.config import DistillConfig
from core.rundir import RunDir


def _not_user_error(task, task_run, state) -> bool:
    """Retry transient failures only: a DistillError (bad config/input) fails the same way again."""
    try:
        state.result()
    except DistillError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return False


def _done(rd: RunDir, stage: str) -> dict | None:
    """A stage recorded in this run directory under the current run config (RunDir.set_config
    clears stages when the config changes) is finished: skip it."""
    entry = rd.stage(stage)
    if entry:
        get_run_logger().info("%s: already done in %s, skipping", stage, rd.path)
        return entry
    return None


_opts = dict(cache_policy=NO_CACHE, retry_condition_fn=_not_user_error)


# log_prints off: datasets' fingerprinting (dill) runs dis.dis() under a swapped sys.stdout,
# and Prefect's print patch would log that bytecode listing into the run log.
@task(name="ingest", log_prints=False, **_opts)
def ingest_task(cfg: DistillConfig, run_dir: str) -> dict:
    from ingest.pipeline import run_ingest

    rd = RunDir(run_dir)
    if done := _done(rd, "ingest"):
        return done
    run_ingest(cfg.ingest, rd)
    return rd.stage("ingest")


@task(name="replay", retries=2, retry_delay_seconds=5, **_opts)
def replay_task(cfg: DistillConfig, run_dir: str) -> dict:
    from teacher.replay import run_replay

    rd = RunDir(run_dir)
    if done := _done(rd, "replay"):
        return done
    run_replay(cfg.teacher, rd, ledger_path=ledger_path(cfg))
    return rd.stage("replay")


@task(name="replay-shard", retries=2, retry_delay_seconds=5, **_opts)
def replay_shard_task(cfg: DistillConfig, run_dir: str, shard: int, n_shards: int) -> dict:
    from teacher.replay import replay_shard

    return replay_shard(cfg.teacher, RunDir(run_dir), ledger_path(cfg), shard, n_shards)


@task(name="replay-merge", **_opts)
def replay_merge_task(cfg: DistillConfig, run_dir: str, n_shards: int) -> dict:
    from teacher.replay import merge_shards

    merge_shards(cfg.teacher, RunDir(run_dir), n_shards)
    return RunDir(run_dir).stage("replay")


def replay_sharded(cfg: DistillConfig, run_dir: str) -> dict:
    """Replay as cfg.teacher.shards parallel tasks on the flow's task runner, then merge."""
    n = cfg.teacher.shards
    if done := _done(RunDir(run_dir), "replay"):
        return done
    futures = [replay_shard_task.submit(cfg, run_dir, k, n) for k in range(n)]
    for f in futures:
        f.result()
    return replay_merge_task(cfg, run_dir, n)


def task_runner(cfg: DistillConfig):
    """The configured Prefect task runner (prefect-dask / prefect-ray are optional installs)."""
    kind, n = cfg.orchestration.task_runner, cfg.orchestration.max_workers
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=n)
    try:
        if kind == "dask":
            from prefect_dask import DaskTaskRunner

            return DaskTaskRunner(cluster_kwargs={"n_workers": n})
        from prefect_ray import RayTaskRunner

        return RayTaskRunner()
    except ImportError:
        raise DistillError(f"orchestration.task_runner={kind!r} needs `pip install prefect-{kind}`") from None


@task(name="filter", **_opts)
def filter_task(cfg: DistillConfig, run_dir: str, force: bool = False) -> dict:
    from teacher.data_report import build_data_report, check_sufficiency, data_report_markdown
    from teacher.filters import run_filters

    rd = RunDir(run_dir)
    entry = _done(rd, "filter")
    if entry is None:
        # The LLM judge (when enabled) calls through the replay ledger: never paid twice.
        run_filters(cfg.filter, rd, teacher=cfg.teacher, ledger_path=ledger_path(cfg))
        entry = rd.stage("filter")
    report_file = rd.data_report
    report = json.loads(report_file.read_text()) if report_file.is_file() else build_data_report(rd, cfg.filter)
    md = data_report_markdown(report)
    print(md)
    _artifact("data-report", md, "Teacher-output data report: is distillation worth it here?")
    for warning in check_sufficiency(report, force=force):
        get_run_logger().warning(warning)
    return entry


@task(name="train", **_opts)
def train_task(cfg: DistillConfig, run_dir: str) -> dict:
    from student.train import run_train

    rd = RunDir(run_dir)
    if done := _done(rd, "train"):
        return done
    run_train(cfg.student, rd)
    return rd.stage("train")


def train_remote(cfg: DistillConfig, config: str, overrides: list[str], run_dir: str) -> dict:
    """The train stage as its own deployment (a GPU work pool): start it, wait, read its result
    from the shared run directory. A rerun of the parent skips it once the stage is recorded."""
    from prefect.deployments import run_deployment

    rd = RunDir(run_dir)
    if done := _done(rd, "train"):
        return done
    name = cfg.orchestration.train_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        fr = run_deployment(name=name, parameters={"config": config, "run_dir": run_dir, "overrides": overrides}, timeout=None)
    except ObjectNotFound:
        raise DistillError(f"orchestration.train_deployment: no deployment {name!r} on the Prefect server; "
                           "register it with `distill deploy --train-pool POOL`") from None
    if not fr.state or not fr.state.is_completed():
        raise DistillError(f"orchestration.train_deployment {name!r}: flow run {fr.id} ended {fr.state.name if fr.state else 'without a state'}: "
                           f"{fr.state.message if fr.state else ''}")
    entry = rd.stage("train")  # read afresh: the other worker wrote it
    if not entry:
        raise DistillError(f"orchestration.train_deployment {name!r} completed but {run_dir} has no train stage: is the run directory on storage both workers share?")
    return entry


@task(name="evaluate", retries=1, retry_delay_seconds=5, **_opts)
def eval_task(cfg: DistillConfig, run_dir: str) -> dict:
    from prefect.artifacts import create_table_artifact

    from eval.baseline import choose_baseline
    from eval.evaluate import evaluate_run
    from eval.report import table_rows

    rd = RunDir(run_dir)
    report_file = rd.eval_report
    if _done(rd, "eval") and report_file.is_file():
        return json.loads(report_file.read_text())
    # The student is served over the same OpenAI-compatible HTTP path the teacher is called
    # through, so the two latencies are comparable; the baseline is its untuned base model.
    kind = rd.stage("train").get("figures", {}).get("kind")
    baseline = choose_baseline(cfg.eval, rd, kind, cfg.student.base_model)
    report = evaluate_run(cfg.eval, rd, cfg.teacher, baseline_predict=baseline)
    create_table_artifact(key="eval-metrics", table=table_rows(report)["metrics"], description="Student vs teacher on the holdout")
    return report


@task(name="gate", **_opts)
def gate_task(cfg: DistillConfig, run_dir: str, report: dict) -> dict:
    from eval.gate import decide

    rd = RunDir(run_dir)
    from prefect.artifacts import create_table_artifact

    from eval.report import table_rows

    decision = decide(cfg.gate, report)
    write_json(rd.gate_decision, decision)
    create_table_artifact(key="gate-checks", table=table_rows(report, decision)["gate"], description="Promotion gate checks")
    rd.record_stage("gate", counts={"checks": len(decision["checks"]), "failed": sum(not c["passed"] for c in decision["checks"])},
                    figures={"passed": decision["passed"]}, config=cfg.gate)
    return decision


@task(name="promote", **_opts)
def promote_task(cfg: DistillConfig, run_dir: str, decision: dict, approver: str, comment: str) -> dict:
    from registry.registry import Registry

    rd = RunDir(run_dir)
    if not decision.get("passed"):
        raise DistillError("refusing to promote: the candidate did not pass the gate")
    reg = Registry(cfg.registry_path)
    manifest = rd.manifest()
    meta = {
        "run_id": rd.run_id,
        "run_dir": str(rd.path),
        "config_hash": manifest.get("config_hash"),
        "data_hashes": {s: manifest["stages"].get(s, {}).get("output_hash") for s in ("ingest", "replay", "filter")},
        "student": manifest["stages"].get("train", {}).get("figures", {}),
        "gate": decision,
        "approver": approver,
        "approval_comment": comment,
    }
    version = reg.register(cfg.registry.model_name, rd.model_dir, meta, alias="candidate")
    result = reg.promote(cfg.registry.model_name, version, approver=approver, comment=comment,
                         run_id=rd.run_id, gate={c["name"]: c["value"] for c in decision["checks"]})
    from registry.handoff import write_handoff

    result["handoff"] = write_handoff(
        reg.version_dir(cfg.registry.model_name, version),
        app_model_alias=cfg.registry.app_model_alias or cfg.registry.model_name,
        teacher_model=cfg.teacher.model, teacher_api_base=cfg.teacher.api_base,
        student_api_base=cfg.registry.student_api_base, registry_name=cfg.registry.model_name, version=version)
    reg.add_files(cfg.registry.model_name, version, [Path(p) for p in result["handoff"].values()])
    rd.record_stage("promote", counts={}, figures=result, registry=str(reg.root))
    return result


def _artifact(key: str, markdown: str, description: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=key, markdown=markdown, description=description)


def record_approval(run_dir: str, approved: bool, approver: str, comment: str, source: str) -> None:
    RunDir(run_dir).record_stage("approve", figures={"approved": approved, "approver": approver, "comment": comment, "source": source})


def ledger_path(cfg: DistillConfig) -> Path:
    """One replay ledger per data directory, shared by every run: a prompt is paid for once."""
    return cfg.data_path / "ledger.sqlite"


def run_dir_for(cfg: DistillConfig, flow_run_id: str) -> Path:
    """One run directory per flow run: a resumed (suspended) run finds its own again."""
    cfg.runs_path.mkdir(parents=True, exist_ok=True)
    existing = sorted(cfg.runs_path.glob(f"{cfg.name}-*-{flow_run_id[:8]}"))
    if existing:
        return existing[-1]
    rd = RunDir.create(cfg.runs_path, cfg.name, suffix=flow_run_id[:8])
    return rd.path
