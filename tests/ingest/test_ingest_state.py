"""Incremental windows (watermark), the golden holdout kept across runs, and decontamination."""
import gzip
import json

import pytest

from core.base import DistillError
from core.rundir import RunDir
from ingest.pipeline import in_holdout, run_ingest
from ingest.state import source_key
from ingest_testkit import assert_balanced, chat, write_log


_WORDS = ("card pin refund transfer fee account limit app top cash rate euro dollar pound atm branch loan "
          "savings cheque wire salary rent phone email address statement balance overdraft interest").split()


def sentence(i: int) -> str:
    """Distinct, non-templated text (templated ones are near-duplicates of each other)."""
    import random

    rng = random.Random(i)
    return " ".join(rng.choice(_WORDS) for _ in range(12))


def ts(i: int) -> str:
    return f"2026-10-{1 + i // 100:02d}T{i % 100 // 10:02d}:{i % 10:02d}:00Z"


def test_watermark_reads_only_newer_records(runner, tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [chat(i, ts=ts(i)) for i in range(30)]
    write_log(log, rows)
    cfg = runner.cfg(log, window={"incremental": True})
    c1 = runner.run(cfg)
    assert (c1["read"], c1["kept"], c1["outside_window"]) == (30, 30, 0)
    state = runner.root / "data" / "ingest_state" / source_key(cfg)
    wm = json.loads((state / "watermark.json").read_text())
    assert wm["timestamp"] == ts(29) and wm["run_id"] == runner.rd.run_id
    # The log grows; the next scheduled run takes only the new tail.
    write_log(log, rows + [chat(i, ts=ts(i)) for i in range(30, 40)])
    c2 = runner.run(cfg)
    assert_balanced(c2)
    assert (c2["read"], c2["kept"], c2["outside_window"]) == (40, 10, 30)
    assert runner.rd.stage("ingest")["window"]["watermark_before"] == ts(29)
    fresh = {f"req_{i}" for i in range(30, 40)}
    out_ids = {r["id"] for r in runner.out("train") + runner.out("holdout")}
    assert fresh <= out_ids
    assert {r["id"] for r in runner.out("train")} <= fresh  # nothing old is trained on again
    assert c2["holdout_carried"] == c1["holdout"]
    # Records without a time cannot be windowed: quarantined, not silently re-read forever.
    write_log(log, [{"id": "nots", "prompt": "no time here"}])
    assert runner.run(cfg)["quarantined_by_reason"] == {"no_timestamp": 1}


@pytest.mark.parametrize("failure", ["cut_off_gzip", "write_fails"])
def test_a_failed_run_does_not_move_the_watermark(runner, tmp_path, failure):
    """A run that read newer records and then failed (mid-read, or writing its outputs) leaves
    the watermark and the golden holdout exactly as they were."""
    log = write_log(tmp_path / "log.jsonl", [chat(i, sentence(i), ts=ts(i)) for i in range(20)])
    cfg = runner.cfg(log, holdout_fraction=0.3, window={"incremental": True, "state_dir": str(tmp_path / "st")})
    runner.run(cfg)
    st = tmp_path / "st" / source_key(cfg)
    before = {f.name: f.read_bytes() for f in st.iterdir()}
    assert set(before) == {"watermark.json", "golden_holdout.jsonl"}
    newer = b"".join(json.dumps(chat(i, sentence(i), ts=ts(i))).encode() + b"\n" for i in range(20, 2000))
    rd = RunDir.create(runner.runs, "t")
    if failure == "cut_off_gzip":
        data = gzip.compress(log.read_bytes() + newer)  # the same path (gzip is told by its magic bytes)
        log.write_bytes(data[: len(data) * 3 // 4])
        with pytest.raises(DistillError, match="unreadable after line"):
            run_ingest(cfg, rd)
    else:
        log.write_bytes(log.read_bytes() + newer)
        rd.ingest_split("holdout").mkdir(parents=True)  # the output cannot be replaced: the write fails
        with pytest.raises(OSError):
            run_ingest(cfg, rd)
        assert rd.ingest_split("train").exists()  # it failed after reading everything and writing part
    assert {f.name: f.read_bytes() for f in st.iterdir()} == before
    assert "ingest" not in rd.manifest()["stages"]


def test_golden_holdout_is_kept_and_guards_train(runner, tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [chat(i, sentence(i), ts=ts(i)) for i in range(60)]
    write_log(log, rows)
    cfg = runner.cfg(log, holdout_fraction=0.25, window={"incremental": True})
    c1 = runner.run(cfg)
    golden = {r["id"]: r for r in runner.out("holdout")}
    assert golden and c1["holdout"] == len(golden)
    # Next window: brand-new records, one of them a near copy of an old holdout prompt.
    hid, h = next(iter(golden.items()))
    copy_text = h["messages"][1]["content"] + "!!"
    new = [chat(100 + i, sentence(100 + i), ts=ts(100 + i)) for i in range(20)]
    copy_id = next(f"copy_{k}" for k in range(1000) if not in_holdout(f"copy_{k}", 0.25))
    new.append(chat(0, copy_text, ts=ts(199), id=copy_id))
    write_log(log, rows + new)
    c2 = runner.run(cfg)
    assert_balanced(c2)
    holdout2 = {r["id"] for r in runner.out("holdout")}
    assert set(golden) <= holdout2  # earlier holdout records stay in the holdout
    assert c2["holdout_carried"] == len(golden)
    assert c2["decontaminated"] == 1
    assert copy_id not in {r["id"] for r in runner.out("train")}
    d = [x for x in runner.out("dropped") if x["reason"] == "decontaminated"]
    assert d == [{"id": copy_id, "position": 81, "reason": "decontaminated", "of": hid}]
    # A holdout-fraction change later cannot move a golden record into train.
    cfg2 = runner.cfg(log, holdout_fraction=0.0)
    runner.run(cfg2.model_copy(update={"window": cfg.window}))
    assert set(golden) <= {r["id"] for r in runner.out("holdout")}


def test_since_bounds_the_window_without_state(runner, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [chat(i, ts=ts(i)) for i in range(0, 300, 10)])
    c = runner.run(runner.cfg(log, window={"since": "2026-10-02"}))
    assert_balanced(c)
    assert (c["read"], c["outside_window"], c["kept"]) == (30, 10, 20)
    assert not (runner.root / "data" / "ingest_state").exists()
