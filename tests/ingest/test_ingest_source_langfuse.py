"""Langfuse generation observations exported as JSON."""
import json

from ingest.config import IngestConfig
from ingest_testkit import assert_balanced


def obs(i: int, **kw) -> dict:
    o = {"id": f"obs-{i}", "traceId": f"trace-{i}", "type": "GENERATION", "name": "route",
         "startTime": f"2026-10-02T10:00:{i:02d}.000Z", "endTime": f"2026-10-02T10:00:{i:02d}.800Z",
         "model": "gpt-4o-mini", "input": [{"role": "system", "content": "Route."},
                                           {"role": "user", "content": f"langfuse question {i} on {i * 13}"}],
         "output": {"role": "assistant", "content": f"route-{i}"}, "metadata": {"feature": "router"},
         "usageDetails": {"input": 12, "output": 3}, "costDetails": {"total": 0.0001}, "latency": 0.8}
    o.update(kw)
    return o


def run(runner, tmp_path, doc, name="export.json"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    cfg = IngestConfig.model_validate({"source": {"kind": "langfuse", "path": str(p)}, "parquet": False,
                                       "holdout_fraction": 0.0})
    return runner.run(cfg)


def test_api_page_export(runner, tmp_path):
    doc = {"data": [obs(1), obs(2, input={"messages": [{"role": "user", "content": "dict input"}]}, output="plain"),
                    obs(3, type="SPAN"), obs(4, input=None), obs(5, level="ERROR")],
           "meta": {"page": 1, "totalItems": 5}}
    c = run(runner, tmp_path, doc)
    assert_balanced(c)
    assert c["kept"] == 2
    assert c["skipped_by_reason"] == {"not_a_generation": 1, "request_failed": 1}
    assert c["quarantined_by_reason"] == {"bad_messages": 1}
    assert runner.out("quarantine")[0]["id"] == "obs-4"
    recs = {r["id"]: r for r in runner.out("train")}
    assert recs["obs-1"]["response"] == "route-1" and recs["obs-1"]["model"] == "gpt-4o-mini"
    assert recs["obs-1"]["metadata"] == {"feature": "router", "langfuse_traceId": "trace-1", "langfuse_name": "route"}
    assert recs["obs-1"]["timestamp"] == "2026-10-02T10:00:01.000Z"  # canonical UTC form kept as logged
    assert recs["obs-2"]["messages"] == [{"role": "user", "content": "dict input"}]
    assert recs["obs-2"]["response"] == "plain"


def test_jsonl_export_with_a_broken_line(runner, tmp_path):
    text = "\n".join([json.dumps(obs(1)), "{not json", json.dumps(obs(2))]) + "\n"
    c = run(runner, tmp_path, text, "export.jsonl")
    assert_balanced(c)
    assert (c["read"], c["kept"], c["quarantined_by_reason"]) == (3, 2, {"malformed_json": 1})
    assert runner.out("quarantine")[0]["position"] == 2
