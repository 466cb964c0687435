"""Acceptance: prompts through a faulty teacher, the replay SIGKILLed part-way and restarted.

Every prompt ends answered or failed with a reason, and the ledger kept every committed answer
across the kill, so only the requests in flight at the kill are sent again - and counted
(`in_doubt_resent`). Whether those few are billed twice depends on the provider: one that
honours `Idempotency-Key` answers them from its store (no prompt billed twice, first test); one
that ignores it (the large providers' chat completions) bills them again, and the second test
proves that then at most the in-doubt requests were paid twice, never a committed one.
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

import pytest

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


def _kill_midway_and_restart(t, cfg: TeacherConfig, rd, ledger: Path, n: int) -> dict:
    """Replay in a child, SIGKILL it once the server has answered a quarter, replay again to the end."""
    p = _spawn(cfg, rd, ledger)
    try:
        deadline = time.monotonic() + 150
        while _answered(t) < n // 4:  # an observable event, not a fixed sleep: a quarter is paid for
            assert p.poll() is None, f"replay ended before the kill: {p.communicate()}"
            assert time.monotonic() < deadline, f"replay too slow to reach the kill point ({_answered(t)} answered)"
            time.sleep(0.02)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    paid_first = _answered(t)
    assert paid_first < n and not (rd.path / "replay" / "responses.jsonl").exists()
    with sqlite3.connect(ledger) as db:
        status = dict(db.execute("select status, count(*) from teacher_ledger group by status").fetchall())
    p = _spawn(cfg, rd, ledger)
    try:
        stdout, stderr = p.communicate(timeout=300)
    finally:
        p.kill()
    assert p.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.split("RESULT ", 1)[1])
    recs = list(read_jsonl(rd.path / "replay" / "responses.jsonl"))
    assert [r["id"] for r in recs] == [f"p{i}" for i in range(n)]
    for r in recs:
        assert (r["status"] == "ok" and r["response"]) or (r["status"] == "failed" and r["error"]), r
    assert out["counts"]["ok"] + out["counts"]["failed"] == n
    assert out["counts"]["ledger_hits"] == status.get("done", 0)  # the restart paid nothing for committed answers
    return {"paid_first": paid_first, "committed": status.get("done", 0), "claimed": status.get("claimed", 0),
            "counts": out["counts"], "ok_ids": {r["id"] for r in recs if r["status"] == "ok"}}


@pytest.mark.slow
def test_sigkill_midway_and_restart_answers_everything_once(dataset, serve, tmp_path):
    rd, answers = dataset(N)
    t = serve(answers, latency_ms=3, latency_sigma=0.5, faults={
        "rate_429": 0.10, "rate_500": 0.05, "rate_timeout": 0.02, "rate_malformed": 0.02,
        "retry_after_s": 0.02, "hang_s": 2.0, "seed": 11})
    cfg = TeacherConfig(api_base=t.base_url, concurrency=CONCURRENCY, timeout_s=1.0, max_retries=8,
                        backoff_base_s=0.01, backoff_max_s=0.2, progress=False)
    k = _kill_midway_and_restart(t, cfg, rd, tmp_path / "ledger.db", N)
    assert k["committed"] >= k["paid_first"] - CONCURRENCY  # only the requests in flight at the kill were not committed
    ok_ids, out = k["ok_ids"], {"counts": k["counts"]}
    assert max(t.answered.values()) == 1, "a prompt was answered (billed) twice"
    assert set(t.answered) == ok_ids and _answered(t) == len(ok_ids)
    assert t.idempotent_replays <= out["counts"]["in_doubt_resent"] + out["counts"]["retries"]
    for kind in ("429", "500", "timeout", "malformed"):  # every fault kind was exercised
        assert t.faults[kind] > 0, dict(t.faults)
    assert out["counts"]["retries"] > 0


@pytest.mark.slow
def test_provider_ignoring_idempotency_key_pays_twice_only_for_requests_in_flight(dataset, serve, tmp_path, capsys):
    """The exact guarantee without provider help: a SIGKILL re-sends at most the requests in flight
    (claimed, not committed), each counted in `in_doubt_resent`; nothing committed is paid again."""
    n = 400
    rd, answers = dataset(n)
    t = serve(answers, latency_ms=3, latency_sigma=0.5, honour_idempotency_key=False,
              faults={"rate_429": 0.05, "rate_500": 0.03, "retry_after_s": 0.02, "seed": 5})
    cfg = TeacherConfig(api_base=t.base_url, concurrency=CONCURRENCY, timeout_s=5.0, max_retries=8,
                        backoff_base_s=0.01, backoff_max_s=0.2, progress=False)
    k = _kill_midway_and_restart(t, cfg, rd, tmp_path / "ledger.db", n)
    twice = {pid: c for pid, c in t.answered.items() if c > 1}
    in_doubt = k["counts"]["in_doubt_resent"]
    with capsys.disabled():
        print(f"\nprovider ignoring Idempotency-Key: {k['paid_first']} paid before SIGKILL, {k['committed']} committed, "
              f"{k['claimed']} in flight; restart re-sent {in_doubt} in doubt, {len(twice)} prompts billed twice")
    assert t.idempotent_replays == 0  # the server really ignored the key
    assert 0 < in_doubt == k["claimed"] <= CONCURRENCY  # every in-flight claim was re-sent, and counted
    assert len(twice) <= in_doubt and max(twice.values(), default=1) == 2
    assert set(t.answered) == k["ok_ids"] and _answered(t) == len(k["ok_ids"]) + len(twice)
