"""Scale-out replay: shards in parallel (threads, as the Prefect task runner runs them) and two
replay worker processes against one PostgreSQL ledger never pay for the same prompt twice."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from core.base import read_jsonl
from teacher.config import TeacherConfig
from teacher.replay import merge_shards, replay_shard

ROOT = Path(__file__).resolve().parents[2]


def _cfg(url: str, **kw) -> TeacherConfig:
    return TeacherConfig(api_base=url, concurrency=8, progress=False, timeout_s=5, backoff_base_s=0.01,
                         input_cost_per_token=1e-6, output_cost_per_token=2e-6, **kw)


def test_shards_in_parallel_then_merge(dataset, serve, tmp_path):
    rd, answers = dataset(40, holdout=8)
    t = serve(answers, latency_ms=2)
    cfg = _cfg(t.base_url, shards=3)
    results = {}
    threads = [threading.Thread(target=lambda k=k: results.setdefault(k, replay_shard(cfg, rd, tmp_path / "l.db", k, 3)))
               for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(r["prompts"] for r in results.values()) == [16, 16, 16]
    out = merge_shards(cfg, rd, 3)
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert [r["id"] for r in recs] == [f"p{i}" for i in range(48)]  # input order restored
    assert out["counts"]["ok"] == 48 and out["counts"]["shards"] == 3
    assert out["figures"]["cost_usd_total"] == pytest.approx(sum(r["cost_usd"] for r in results.values()))
    assert max(t.answered.values()) == 1 and len(t.answered) == 48


WORKER = """
import json, sys
from pathlib import Path
from core.rundir import RunDir
from teacher.config import TeacherConfig
from teacher.replay import replay_shard
cfg = TeacherConfig(**json.loads(sys.argv[1]))
print(json.dumps(replay_shard(cfg, RunDir(sys.argv[2]), Path("unused.db"), 0, 1)))
"""


@pytest.mark.postgres
def test_two_replay_workers_share_a_postgres_ledger(dataset, serve, tmp_path):
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({type(e).__name__}: {e})")
    conn.autocommit = True
    db = f"replay_ledger_{uuid.uuid4().hex[:8]}"
    conn.cursor().execute(f'CREATE DATABASE "{db}"')
    try:
        rd, answers = dataset(150)
        t = serve(answers, latency_ms=10)
        cfg = _cfg(t.base_url, ledger_url=f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}")
        # Both workers are given ALL the prompts (the worst case: no sharding at all).
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, cfg.model_dump_json(), str(rd.path)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=240) for p in procs]
        for p, (so, se) in zip(procs, outs):
            assert p.returncode == 0, se[-3000:]
        results = [json.loads(so.strip().splitlines()[-1]) for so, _ in outs]
        assert all(r["ok"] == 150 for r in results)  # each worker ends with every answer...
        assert sum(r["paid"] for r in results) == 150  # ...but together they paid for each prompt once
        assert len(t.answered) == 150 and max(t.answered.values()) == 1
    finally:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
