"""Thin Prefect tasks: each calls one stage runner in distill/stages.py (where skip-if-done and
the manifest entry live) and adds only what is Prefect's - logging to the run, retries, artifacts.
"""
from __future__ import annotations

import threading

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from core.base import DistillError
from core.rundir import RunDir
from distill import stages
from distill.config import DistillConfig


def _not_user_error(task, task_run, state) -> bool:
    """Retry transient failures only: a DistillError (bad config/input) fails the same way again."""
    try:
        state.result()
    except DistillError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return False


def _log(msg: str) -> None:
    get_run_logger().info(msg)


def _warn(msg: str) -> None:
    get_run_logger().warning(msg)


_opts = dict(cache_policy=NO_CACHE, retry_condition_fn=_not_user_error)


# log_prints off: datasets' fingerprinting (dill) runs dis.dis() under a swapped sys.stdout,
# and Prefect's print patch would log that bytecode listing into the run log.
@task(name="ingest", log_prints=False, **_opts)
def ingest_task(cfg: DistillConfig, run_dir: str) -> dict:
    return stages.ingest(cfg, RunDir(run_dir), log=_log)


@task(name="select", **_opts)
def select_task(cfg: DistillConfig, run_dir: str) -> dict | None:
    return stages.select(cfg, RunDir(run_dir), log=_log)


@task(name="replay", retries=2, retry_delay_seconds=5, **_opts)
def replay_task(cfg: DistillConfig, run_dir: str) -> dict:
    return stages.replay(cfg, RunDir(run_dir), log=_log)


@task(name="replay-shard", retries=2, retry_delay_seconds=5, **_opts)
def replay_shard_task(cfg: DistillConfig, run_dir: str, shard: int, n_shards: int) -> dict:
    # The worker that ran it, so the flow can show (and a test can prove) how wide the runner was.
    return {**stages.replay_shard(cfg, RunDir(run_dir), shard, n_shards), "worker": threading.current_thread().name}


@task(name="replay-merge", **_opts)
def replay_merge_task(cfg: DistillConfig, run_dir: str, n_shards: int) -> dict:
    return stages.replay_merge(cfg, RunDir(run_dir), n_shards)


def replay_sharded(cfg: DistillConfig, run_dir: str) -> dict:
    """Replay as cfg.teacher.shards parallel tasks, then merge. The shards run on the runner
    `orchestration` configures (task_runner, max_workers), entered here rather than fixed on the
    flow's decorator: a deployment loads the flow before any config is read."""
    n = cfg.teacher.shards
    if entry := stages.done(RunDir(run_dir), "replay", _log):
        return entry
    with task_runner(cfg) as runner:
        futures = [runner.submit(replay_shard_task, {"cfg": cfg, "run_dir": run_dir, "shard": k, "n_shards": n}) for k in range(n)]
        workers = sorted({f.result()["worker"] for f in futures})
    _log(f"replay: {n} shards ran on {len(workers)} worker(s) of {cfg.orchestration.task_runner} x {cfg.orchestration.max_workers}")
    entry = replay_merge_task(cfg, run_dir, n)
    return {**entry, "shard_workers": workers}


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
    rd = RunDir(run_dir)
    entry = stages.filter_outputs(cfg, rd, force=force, log=_log, warn=_warn)
    create_markdown_artifact(key="data-report", markdown=rd.data_report_md.read_text(),
                             description="Teacher-output data report: is distillation worth it here?")
    return entry


@task(name="train", **_opts)
def train_task(cfg: DistillConfig, run_dir: str) -> dict:
    return stages.train(cfg, RunDir(run_dir), log=_log)


def train_remote(cfg: DistillConfig, config: str, overrides: list[str], run_dir: str) -> dict:
    """The train stage as its own deployment (a GPU work pool): start it, wait, read its result
    from the shared run directory. A rerun of the parent skips it once the stage is recorded."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    rd = RunDir(run_dir)
    if entry := stages.done(rd, "train", _log):
        return entry
    name = cfg.orchestration.train_deployment
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
    from eval.plots import plots_markdown
    from eval.report import table_rows

    report = stages.evaluate(cfg, RunDir(run_dir), log=_log)
    create_table_artifact(key="eval-metrics", table=table_rows(report)["metrics"], description="Student vs teacher on the holdout")
    if report.get("plots"):
        create_markdown_artifact(key="eval-plots", markdown=plots_markdown(report, run_dir),
                                 description="Where the student disagrees, latency distributions, cost")
    return report


@task(name="gate", **_opts)
def gate_task(cfg: DistillConfig, run_dir: str, report: dict) -> dict:
    from eval.report import table_rows

    decision = stages.gate(cfg, RunDir(run_dir), report)
    create_table_artifact(key="gate-checks", table=table_rows(report, decision)["gate"], description="Promotion gate checks")
    return decision


@task(name="promote", **_opts)
def promote_task(cfg: DistillConfig, run_dir: str, decision: dict, approver: str, comment: str) -> dict:
    return stages.promote(cfg, RunDir(run_dir), decision, approver, comment)


class FlowProgress:
    """A Prefect progress artifact for the whole flow: the share of stages the run directory
    records as done, updated after each stage (a resumed run starts where it stands)."""

    STAGES = ("ingest", "replay", "filter", "train", "eval", "gate", "approve", "promote")

    def __init__(self, rd: RunDir):
        from prefect.artifacts import create_progress_artifact

        self.rd = rd
        self.id = create_progress_artifact(self._share(), key="distill-progress", description=f"Stages done in {rd.run_id}")

    def _share(self) -> float:
        stages_done = self.rd.manifest().get("stages", {})
        return round(100.0 * sum(s in stages_done for s in self.STAGES) / len(self.STAGES), 1)

    def update(self, done: bool = False) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.id, 100.0 if done else self._share())
