"""Ingest on several workers sharing the state directory (ingest/README.md, "More than one
machine"): each worker is a separate process, as Prefect workers are; they share only the
log and `window.state_dir`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ingest.config import IngestConfig
from ingest.state import IngestState, source_key
from ingest_testkit import assert_balanced, chat, read, write_log

ROOT = Path(__file__).resolve().parents[2]
PROC = Path(__file__).with_name("ingest_worker_proc.py")


def ts(i: int) -> str:
    return f"2026-10-{1 + i // 100:02d}T{i % 100 // 10:02d}:{i % 10:02d}:00Z"


def cfg_data(log: Path, state: Path) -> dict:
    return {"source": {"kind": "jsonl", "path": str(log)}, "parquet": False, "holdout_fraction": 0.3,
            "window": {"incremental": True, "state_dir": str(state)}}


def start(data: dict, workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "ingest")])}
    return subprocess.Popen([sys.executable, str(PROC), json.dumps(data), str(workdir)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def user(i: int) -> str:
    return f"ticket {i}: " + " ".join(f"w{(i * 31 + j * 17) % 997}" for j in range(10))  # distinct per record


def test_a_worker_waits_for_the_shared_state_then_reads_only_the_new_window(tmp_path):
    log, state = tmp_path / "log.jsonl", tmp_path / "shared_state"
    rows = [chat(i, user(i), ts=ts(i)) for i in range(30)]
    write_log(log, rows)
    data = cfg_data(log, state)
    a = finish(start(data, tmp_path / "worker_a"))
    assert (a["counts"]["read"], a["counts"]["kept"]) == (30, 30) and a["counts"]["holdout"] > 0
    held_out = read(Path(a["run"]) / "ingest" / "holdout.jsonl")

    lock = IngestState(state / source_key(IngestConfig.model_validate(data))).lock()
    lock.__enter__()  # another worker is mid-run on this source
    try:
        b_proc = start(data, tmp_path / "worker_b")
        line = b_proc.stderr.readline()  # blocks until the worker reports that it waits
        assert "waiting for" in line and "shared_state" in line
        # Records arrive while it waits: the new window, with a copy of a held-out prompt.
        copy = chat(99, held_out[0]["messages"][1]["content"], ts=ts(45))
        write_log(log, rows + [chat(i, user(i), ts=ts(i)) for i in range(30, 45)] + [copy])
    finally:
        lock.__exit__(None, None, None)
    b = finish(b_proc)["counts"]
    assert_balanced(b)
    # Only the new window is read as new; the earlier holdout is carried and decontaminates it.
    assert (b["read"], b["outside_window"], b["decontaminated"], b["kept"]) == (46, 30, 1, 15)
    assert b["holdout_carried"] == a["counts"]["holdout"]
    wm = json.loads((state / source_key(IngestConfig.model_validate(data)) / "watermark.json").read_text())
    assert wm["timestamp"] == ts(45)


def test_workers_started_together_on_one_source_never_ingest_a_record_twice(tmp_path):
    log, state = tmp_path / "log.jsonl", tmp_path / "shared_state"
    write_log(log, [chat(i, user(i), ts=ts(i)) for i in range(60)])
    data = cfg_data(log, state)
    procs = [start(data, tmp_path / f"worker_{w}") for w in "ab"]
    results = [finish(p) for p in procs]
    new = sorted(r["counts"]["kept"] for r in results)
    assert new == [0, 60]  # one took the window; the other found nothing past its watermark
    trained = [r["id"] for res in results for r in read(Path(res["run"]) / "ingest" / "train.jsonl")]
    assert len(trained) == len(set(trained))
    key = source_key(IngestConfig.model_validate(data))
    golden = [r["id"] for r in read(state / key / "golden_holdout.jsonl")]
    first = next(res for res in results if res["counts"]["kept"] == 60)
    assert golden == [r["id"] for r in read(Path(first["run"]) / "ingest" / "holdout.jsonl")]


def test_workers_on_different_sources_do_not_wait_for_each_other(tmp_path):
    state = tmp_path / "shared_state"
    log_x = write_log(tmp_path / "x.jsonl", [chat(i, user(i), ts=ts(i)) for i in range(10)])
    log_y = write_log(tmp_path / "y.jsonl", [chat(i, user(i), ts=ts(i)) for i in range(10)])
    data_x, data_y = cfg_data(log_x, state), cfg_data(log_y, state)
    assert source_key(IngestConfig.model_validate(data_x)) != source_key(IngestConfig.model_validate(data_y))
    with IngestState(state / source_key(IngestConfig.model_validate(data_x))).lock():
        p = start(data_y, tmp_path / "worker_y")
        y = finish(p)  # would hang (and time out) if it waited for x's lock
    assert y["counts"]["kept"] == 10
