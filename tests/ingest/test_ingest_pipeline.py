"""The ingest stage end to end on small JSONL logs."""
import gzip
import json
from pathlib import Path

import pytest

from core.base import DistillError
from ingest.pipeline import in_holdout
from ingest_testkit import assert_balanced, chat, read, write_log

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "banking77"


def test_three_shapes_become_canonical_records(runner, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [
        chat(1, "where is my card?"),
        {"id": "p1", "prompt": "how do I reset my pin?", "completion": "Use the app.", "created": 1790000000},
        {"input": [{"role": "user", "content": "can I get a refund?"}], "output": {"content": "yes"}},
    ])
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert_balanced(c)
    assert (c["read"], c["kept"], c["train"]) == (3, 3, 3)
    recs = {r["id"]: r for r in runner.out("train")}
    assert recs["req_1"]["response"] == '{"intent": "x"}'
    assert recs["req_1"]["messages"][0] == {"role": "system", "content": "Classify the intent."}
    assert recs["p1"]["messages"] == [{"role": "user", "content": "how do I reset my pin?"}]
    assert recs["p1"]["timestamp"].startswith("2026-09-21T")
    derived = [r for r in recs.values() if r["id"].startswith("rec_")]
    assert len(derived) == 1 and derived[0]["response"] == "yes"
    for r in recs.values():
        assert set(r) == {"id", "messages", "response", "model", "timestamp", "metadata", "split"}
        assert r["split"] == "train"


def test_split_is_a_stable_function_of_the_id(runner, tmp_path):
    rows = [chat(i) for i in range(200)]
    log = write_log(tmp_path / "a.jsonl", rows)
    c = runner.run(runner.cfg(log, holdout_fraction=0.3))
    assert_balanced(c)
    first = {r["id"]: r["split"] for r in runner.out("train") + runner.out("holdout")}
    assert 30 < c["holdout"] < 90
    # Reversed order, another file, another data dir: same id -> same split.
    log2 = write_log(tmp_path / "b.jsonl", rows[::-1])
    runner.runs = tmp_path / "other" / "runs"
    runner.run(runner.cfg(log2, holdout_fraction=0.3))
    second = {r["id"]: r["split"] for r in runner.out("train") + runner.out("holdout")}
    assert first == second
    assert all((s == "holdout") == in_holdout(i, 0.3) for i, s in first.items())


def test_exact_and_near_duplicates_are_counted_not_kept(runner, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [
        chat(1, "I am still waiting on my new card, it has been two weeks now"),
        chat(2, "I am still waiting on my new card, it has been two weeks now"),     # exact
        chat(3, "  I am still waiting on my new card, it has been two weeks now "),  # exact after strip
        chat(4, "I am still waiting on my new card, it has been two weeks now!"),    # near
        chat(5, "I am still waiting on my new card, it has been two weeks now", system="Other task."),  # other task
        chat(6, "How do I change my PIN?"),
    ])
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert_balanced(c)
    assert (c["duplicates"], c["near_duplicates"], c["kept"]) == (2, 1, 3)
    dropped = {d["id"]: d for d in runner.out("dropped")}
    assert dropped["req_2"]["of"] == "req_1" and dropped["req_4"]["reason"] == "near_duplicates"


def test_pii_is_redacted_everywhere_it_is_written(runner, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [
        chat(1, "my email is jane.roe@example.com and card 4111 1111 1111 1111",
             metadata={"feature": "router", "user": "jane.roe@example.com"}),
        chat(2, "please write to JANE.ROE@example.com, not bob@example.org", response="Sure, bob@example.org"),
        '{"prompt": "broken line from jane.roe@example.com',
    ])
    c = runner.run(runner.cfg(log, holdout_fraction=0.0, parquet=True))
    recs = runner.out("train")
    assert [r["messages"][1]["content"] for r in recs] == ["my email is <EMAIL_1> and card <CARD_1>",
                                                           "please write to <EMAIL_1>, not <EMAIL_2>"]
    assert recs[0]["metadata"]["user"] == "<EMAIL_1>" and recs[1]["response"] == "Sure, <EMAIL_2>"
    assert runner.out("quarantine")[0]["raw"] == '{"prompt": "broken line from <EMAIL_1>'
    assert c["redactions_by_type"] == {"card": 1, "email": 6}
    for f in (runner.rd.path / "ingest").iterdir():
        data = f.read_bytes().lower()
        assert b"jane.roe" not in data and b"bob@" not in data and b"4111" not in data, f.name


def test_no_pii_in_any_file_written_run_dir_or_ingest_state(runner, tmp_path):
    """The golden holdout in the ingest state directory outlives every run: scanned like the run dir."""
    secrets = [b"jane.roe", b"bob@", b"4111", b"gb82west", b"123-45-6789"]
    rows = [chat(i, f"case {i}: mail jane.roe@example.com, card 4111 1111 1111 1111, iban GB82 WEST 1234 5698 7654 32 "
                    f"ssn 123-45-6789 ({i * 7919 % 1000} pounds)", response=f"sure bob@example.org {i}",
                 metadata={"user": "jane.roe@example.com"}) for i in range(40)]
    log = write_log(tmp_path / "log.jsonl", [*rows, '{"prompt": "broken from jane.roe@example.com'])
    state = tmp_path / "state"
    c = runner.run(runner.cfg(log, holdout_fraction=0.5, parquet=True,
                              window={"incremental": True, "state_dir": str(state)}))
    assert_balanced(c)
    golden = list(state.rglob("golden_holdout.jsonl"))
    assert golden and c["holdout"] > 0 and golden[0].read_text().count("\n") == c["holdout"]
    files = [f for root in (runner.rd.path, state) for f in root.rglob("*") if f.is_file()]
    assert {f.name for f in files} >= {"train.jsonl", "holdout.jsonl", "quarantine.jsonl", "train.parquet",
                                        "golden_holdout.jsonl", "watermark.json", "manifest.json"}
    for f in files:
        data = f.read_bytes().lower()
        assert not [s for s in secrets if s in data], f


def test_missing_log_names_the_path_and_writes_nothing(runner, tmp_path):
    with pytest.raises(DistillError, match="no/such/log.jsonl"):
        runner.run(runner.cfg(tmp_path / "no" / "such" / "log.jsonl"))
    assert not (runner.rd.path / "ingest").exists()
    assert "ingest" not in runner.rd.manifest()["stages"]


def test_max_records_limits_reading(runner, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [chat(i) for i in range(50)])
    c = runner.run(runner.cfg(log, max_records=10))
    assert c["read"] == 10 and c["kept"] == 10


def test_manifest_records_counts_hashes_and_window(runner, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [chat(i) for i in range(20)])
    c = runner.run(runner.cfg(log, parquet=True))
    entry = runner.rd.stage("ingest")
    assert entry["counts"] == c
    assert entry["input_hash"] and entry["output_hash"] and entry["config_hash"]
    assert entry["window"]["first_record"] == "2026-10-01T00:00:00Z"
    assert entry["window"]["last_record"] == "2026-10-01T00:00:19Z"
    from datasets import Dataset
    ds = Dataset.from_parquet(str(runner.rd.path / "ingest" / "train.parquet"))
    assert len(ds) == c["train"] and ds[0]["messages"][1]["role"] == "user"
    assert json.loads(ds[0]["metadata"]) == {"feature": "router"}


def test_per_tag_caps_keep_a_sample_of_train(runner, tmp_path):
    rows = [chat(i, metadata={"feature": "a" if i % 4 else "b"}) for i in range(80)]
    log = write_log(tmp_path / "log.jsonl", rows)
    c = runner.run(runner.cfg(log, holdout_fraction=0.0, sampling={"max_per_tag": {"a": 10}, "default_max_per_tag": 5}))
    assert_balanced(c)
    tags = [r["metadata"]["feature"] for r in runner.out("train")]
    assert tags.count("a") == 10 and tags.count("b") == 5
    assert c["over_tag_cap"] == 65


def test_banking77_example_log_ingests_cleanly(runner):
    log = EXAMPLE / "prompt_log.jsonl.gz"
    c = runner.run(runner.cfg(log, max_records=300))
    assert_balanced(c)
    assert c["quarantined"] == 0 and c["kept"] >= 295
    labels = set(json.loads((EXAMPLE / "output_schema.json").read_text())["properties"]["intent"]["enum"])
    assert len(labels) == 77
    refs = {r["id"]: r for r in read(EXAMPLE / "reference_answers.jsonl")}
    for r in runner.out("train") + runner.out("holdout"):
        assert json.loads(r["response"])["intent"] in labels
        assert refs[r["id"]]["user"] == r["messages"][1]["content"]
    with gzip.open(log, "rt") as f:
        assert sum(1 for _ in f) == 10003 == len(refs)


def test_glob_reads_rotated_logs_in_name_order(runner, tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    write_log(d / "2026-10-02.jsonl", [chat(3), chat(4)])
    raw = b"".join(json.dumps(chat(i)).encode() + b"\n" for i in (1, 2))
    (d / "2026-10-01.jsonl.gz").write_bytes(gzip.compress(raw))
    c = runner.run(runner.cfg(d / "2026-10-*", holdout_fraction=0.0))
    assert c["read"] == 4
    assert [r["id"] for r in runner.out("train")] == ["req_1", "req_2", "req_3", "req_4"]
    with pytest.raises(DistillError, match="no log files match"):
        runner.run(runner.cfg(d / "2025-*"))


def test_logs_without_ids_get_stable_ids_and_retries_count_as_duplicates(runner, tmp_path):
    rows = [{"prompt": "how do I freeze my card?", "completion": "In the app."},
            {"prompt": "how do I freeze my card?", "completion": "In the app."},   # the same call logged twice
            {"prompt": "what is the fee for a transfer abroad?"}]
    log = write_log(tmp_path / "log.jsonl", rows)
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert_balanced(c)
    assert (c["kept"], c["duplicates"], c["quarantined"]) == (2, 1, 0)
    ids = [r["id"] for r in runner.out("train")]
    runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert [r["id"] for r in runner.out("train")] == ids and all(i.startswith("rec_") for i in ids)


def test_clean_records_redacts_without_writing(tmp_path):
    from ingest.config import IngestConfig
    from ingest.pipeline import clean_records

    log = write_log(tmp_path / "log.jsonl", [chat(1, "mail me at x@y.com"), chat(2, "mail me at x@y.com"), "{bad"])
    recs = clean_records(IngestConfig.model_validate({"source": {"path": str(log)}}))
    assert [r["messages"][1]["content"] for r in recs] == ["mail me at <EMAIL_1>"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]
