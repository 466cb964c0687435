"""Register the distillation deployments on a Prefect server (the one PREFECT_API_URL names).

Deployments on a process work pool (plus 'drift-watch/nightly-drift', the drift check):
  - nightly: on a cron schedule, distils the newest logs with the given config;
  - manual:  no schedule, triggered with parameters:
        prefect deployment run 'distill/manual' --param config=/abs/path/distill.yaml
  - 'distill-train/gpu' (with train_pool): the train stage alone, on a GPU work pool.
`prefect.yaml` declares the same two for `prefect deploy --all`.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/distill_flow.py:distill_flow"


def ensure_work_pool(name: str, pool_type: str = "process") -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
        except ObjectAlreadyExists:
            pass


def deploy(config: str | Path, *, pool: str = "distill-process", cron: str = "0 2 * * *",
           timezone: str = "UTC", source: str | Path = PROJECT_ROOT, drift_cron: str = "0 1 * * *",
           train_pool: str | None = None) -> dict[str, str]:
    """Create/update the nightly and manual deployments (and 'distill-train/gpu' on `train_pool`
    when given); returns {name: deployment id}."""
    config = str(Path(config).resolve())
    ensure_work_pool(pool)
    remote = flow.from_source(source=str(source), entrypoint=ENTRYPOINT)
    ids = {}
    from prefect.client.schemas.schedules import CronSchedule

    ids["nightly"] = str(remote.deploy(
        name="nightly", work_pool_name=pool, build=False, push=False, print_next_steps=False,
        schedules=[CronSchedule(cron=cron, timezone=timezone)],
        parameters={"config": config}, tags=["distill", "scheduled"],
        description="Nightly distillation of the newest prompt logs.",
    ))
    ids["manual"] = str(remote.deploy(
        name="manual", work_pool_name=pool, build=False, push=False, print_next_steps=False,
        parameters={"config": config}, tags=["distill", "manual"],
        description="Manually triggered distillation: prefect deployment run 'distill/manual' --param config=...",
    ))
    drift = flow.from_source(source=str(source), entrypoint="flows/drift_flow.py:drift_flow")
    ids["nightly-drift"] = str(drift.deploy(
        name="nightly-drift", work_pool_name=pool, build=False, push=False, print_next_steps=False,
        schedules=[CronSchedule(cron=drift_cron, timezone=timezone)],
        parameters={"config": config}, tags=["distill", "drift"],
        description="Compare new logs with the production student's training data; start a distillation above the threshold.",
    ))
    if train_pool:
        ensure_work_pool(train_pool)
        train = flow.from_source(source=str(source), entrypoint="flows/train_flow.py:train_flow")
        ids["gpu"] = str(train.deploy(
            name="gpu", work_pool_name=train_pool, build=False, push=False, print_next_steps=False, tags=["distill", "train"],
            description="The train stage alone, on an accelerator pool; started by the distill flow when orchestration.train_deployment names it.",
        ))
    return ids
