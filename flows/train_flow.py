"""The train stage alone, as a flow of its own: deployed on a GPU work pool (`distill deploy
--train-pool POOL`) so training runs where the accelerators are while the rest of the
distillation flow stays on cheap workers. The main flow starts it when
`orchestration.train_deployment` names it, and both read and write the same run directory.
"""
from __future__ import annotations

from prefect import flow

from distill.config import load_config
from flows import tasks


@flow(name="distill-train", log_prints=True)
def train_flow(config: str, run_dir: str, overrides: list[str] | None = None) -> dict:
    """Train the student of the run directory `run_dir` with the student section of `config`."""
    cfg = load_config(config, overrides or [])
    return tasks.train_task(cfg, run_dir)
