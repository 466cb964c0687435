"""orchestration.task_runner / max_workers reach the runner the replay shards run on, in the flow's
own code path (tasks.replay_sharded), not only through `distill run`'s with_options."""
from __future__ import annotations

import pytest
from prefect import flow

from core.base import read_jsonl
from distill.config import load_config
from flows import tasks


@flow(name="replay-sharded-probe")
def _replay(config_overrides: list[str], run_dir: str) -> dict:
    return tasks.replay_sharded(load_config(None, config_overrides), run_dir)


@pytest.mark.parametrize("max_workers", [1, 3])
def test_max_workers_is_the_width_of_the_shard_runner(prefect_server, dataset, serve, tmp_path, max_workers):
    rd, answers = dataset(30)
    t = serve(answers, latency_ms=40)  # long enough for three shards to overlap
    out = _replay([f"data_dir={tmp_path / 'data'}", f"teacher.api_base={t.base_url}", "teacher.shards=3",
                   "teacher.progress=false", f"orchestration.max_workers={max_workers}"], str(rd.path))
    assert len(out["shard_workers"]) == max_workers
    assert out["counts"]["prompts"] == 30 == len(list(read_jsonl(rd.replay_responses)))
    assert sum(t.answered.values()) == 30  # every prompt paid once across the shards
