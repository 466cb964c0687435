"""run_filters end to end: files, manifest counts, nothing lost."""
import json

from core.base import read_jsonl
from teacher.filter_config import FilterConfig
from teacher.filters import run_filters

from filter_records import rec


def test_counts_add_up_and_every_record_lands_somewhere(make_rd, intent_schema):
    records = [
        rec('{"intent": "card_arrival"}'),
        rec('{"intent": "exchange_rate"}', user="What rate do you use for EUR to GBP?", split="holdout"),
        rec('{"intent": "card_arival"}', user="Where is my card?"),                       # not in enum
        rec('{"intent": "card_arrival"', user="card not here", finish_reason="length"),    # truncated
        rec("I'm sorry, but I can't help with that request.", user="hack my ex's account"),
        rec(None, status="failed", error="RateLimitError: 429 after 4 retries", user="top up failed?"),
        rec("", user="hello"),
        rec('{"intent": "card_arrival"}'),                                                # duplicate of the first
        rec('Sure! {"intent": "top_up_failed"}', user="my top up failed"),                 # not JSON
    ]
    rd = make_rd(records)
    counts = run_filters(FilterConfig(json_schema=str(intent_schema)), rd)

    kept = list(read_jsonl(rd.path / "filter" / "kept.jsonl"))
    dropped = list(read_jsonl(rd.path / "filter" / "dropped.jsonl"))
    assert counts["replayed"] == len(records) == counts["kept"] + counts["dropped"]
    assert (len(kept), len(dropped)) == (counts["kept"], counts["dropped"])
    assert sorted(r["id"] for r in kept + dropped) == sorted(r["id"] for r in records)
    assert counts["kept"] == 2 and counts["kept_train"] == 1 and counts["kept_holdout"] == 1
    assert counts["dropped_by_filter"] == {"replay": 1, "empty": 1, "truncation": 1, "refusal": 1, "format": 2, "dedup": 1}
    assert counts["dropped_by_reason"]["replay_failed"] == 1
    assert counts["dropped_by_reason"]["schema_violation"] == 1
    assert counts["dropped_by_reason"]["invalid_json"] == 1
    assert sum(counts["dropped_by_filter"].values()) == counts["dropped"] == sum(counts["dropped_by_reason"].values())
    failed = next(d for d in dropped if d["dropped_by"] == "replay")
    assert failed["reason"] == "replay_failed: RateLimitError: 429 after 4 retries"
    assert all(d["reason"] for d in dropped)

    entry = rd.stage("filter")
    assert entry["counts"] == counts
    per = {f["name"]: f for f in entry["figures"]["filters"]}
    for f in per.values():
        assert f["seen"] == f["kept"] + f["dropped"]
    assert per["format"]["dropped"] == 2
    assert (rd.path / "filter" / "data_report.json").is_file()
    assert (rd.path / "filter" / "data_report.md").read_text().startswith("# Data report")


def test_missing_replay_file_names_it(tmp_path):
    import pytest
    from core.base import DistillError
    from core.rundir import RunDir

    rd = RunDir.create(tmp_path, "x")
    with pytest.raises(DistillError, match="responses.jsonl"):
        run_filters(FilterConfig(), rd)


def test_bad_schema_file_is_a_user_error(make_rd, tmp_path):
    import pytest
    from core.base import DistillError

    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    with pytest.raises(DistillError, match="s.json"):
        run_filters(FilterConfig(json_schema=str(bad)), make_rd([rec('{"intent": "x"}')]))
    with pytest.raises(DistillError, match="not found"):
        run_filters(FilterConfig(json_schema=str(tmp_path / "nope.json")), make_rd([rec('{"intent": "x"}')]))


def test_unwrapped_fence_keeps_original(make_rd, intent_schema):
    rd = make_rd([rec('```json\n{"intent": "card_arrival"}\n```')])
    run_filters(FilterConfig(json_schema=str(intent_schema)), rd)
    (k,) = read_jsonl(rd.path / "filter" / "kept.jsonl")
    assert json.loads(k["response"]) == {"intent": "card_arrival"}
    assert k["original_response"].startswith("```json")
