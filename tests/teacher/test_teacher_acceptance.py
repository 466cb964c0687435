"""Acceptance: 2,000 prompts through a faulty teacher, the replay SIGKILLed part-way and restarted.

Every prompt ends answered or failed with a reason, and the server's own count shows no prompt
answered (billed) twice: the ledger kept every committed answer across the kill, and the few
requests in flight at the kill were resent with their Idempotency-Key.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from core.base import read_jsonl
from teacher.config import TeacherConfig

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
N, CONCURRENCY = 2000, 32


def _spawn(cfg: TeacherConfig, rd, ledger: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, str(HERE / "replay_proc.py"), cfg.model_dump_json(), str(rd.path), str(ledger)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _answered(t) -> int:
    return sum(list(t.answered.values()))  # list(): a GIL-atomic snapshot of the server thread's counter


def test_sigkill_midway_and_restart_answers_everything_once(dataset, serve, tmp_path):
    rd, answers = dataset(N)
    t = serve(answers, latency_ms=3, latency_sigma=0.5, faults={
        "rate_429": 0.10, "rate_500": 0.05, "rate_timeout": 0.02, "rate_malformed": 0.02,
        "retry_after_s": 0.02, "hang_s": 2.0, "seed": 11})
    cfg = TeacherConfig(api_base=t.base_url, concurrency=CONCURRENCY, timeout_s=1.0, max_retries=8,
                        backoff_base_s=0.01, backoff_max_s=0.2, progress=False)
    ledger = tmp_path / "ledger.db"

    p = _spawn(cfg, rd, ledger)
    try:
        deadline = time.monotonic() + 150
        while _answered(t) < N // 4:  # let it pay for a quarter, then kill it without warning
            assert p.poll() is None, f"replay ended before the kill: {p.communicate()}"
            assert time.monotonic() < deadline, f"replay too slow to reach the kill point ({_answered(t)} answered)"
            time.sleep(0.02)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    paid_first = _answered(t)
    assert paid_first < N and not (rd.path / "replay" / "responses.jsonl").exists()
    with sqlite3.connect(ledger) as db:
        committed = db.execute("select count(*) from teacher_ledger where status='done'").fetchone()[0]
    assert committed >= paid_first - CONCURRENCY  # only the requests in flight at the kill were not committed

    p = _spawn(cfg, rd, ledger)
    try:
        stdout, stderr = p.communicate(timeout=300)
    finally:
        p.kill()
    assert p.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.split("RESULT ", 1)[1])

    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert [r["id"] for r in recs] == [f"p{i}" for i in range(N)]
    for r in recs:
        assert (r["status"] == "ok" and r["response"]) or (r["status"] == "failed" and r["error"]), r
    ok_ids = {r["id"] for r in recs if r["status"] == "ok"}
    assert max(t.answered.values()) == 1, "a prompt was answered (billed) twice"
    assert set(t.answered) == ok_ids and _answered(t) == len(ok_ids)
    assert out["counts"]["ledger_hits"] == committed  # the restart paid nothing for committed answers
    assert out["counts"]["ok"] + out["counts"]["failed"] == N
    assert t.idempotent_replays <= out["counts"]["in_doubt_resent"] + out["counts"]["retries"]
    for kind in ("429", "500", "timeout", "malformed"):  # every fault kind was exercised
        assert t.faults[kind] > 0, dict(t.faults)
    assert out["counts"]["retries"] > 0
