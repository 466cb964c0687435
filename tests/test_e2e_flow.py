"""The whole flow on a small slice of the Banking77 example: every stage's counts add up and a
version lands in the registry; an impossible gate stops before approval and promotion."""
import json
from pathlib import Path

import pytest

from registry.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "banking77" / "distill.yaml"


def _overrides(tmp_path, *extra):
    return [
        f"data_dir={tmp_path / 'data'}",
        "ingest.max_records=300",
        "teacher.reference_server.port=0",
        "teacher.reference_server.latency_ms=5",
        "teacher.progress=false",
        "filter.report.min_train_examples=100",
        "student.epochs=1",
        "eval.latency_requests=20",
        "eval.warmup_requests=2",
        *extra,
    ]


@pytest.mark.slow
def test_flow_end_to_end_promotes(prefect_server, tmp_path):
    from flows.distill_flow import distill_flow

    # A 300-prompt slice cannot reach 90 % agreement: the gate here checks the plumbing.
    out = distill_flow(config=str(CONFIG), overrides=_overrides(tmp_path, "gate.min_agreement=0.0",
                                                                 "gate.max_p95_latency_ms=null", "gate.max_cost_ratio=null"))
    assert out["gate_passed"] and out["approved"] and out["promoted"]["alias"] == "production"
    m = json.loads((Path(out["run_dir"]) / "manifest.json").read_text())["stages"]

    ing = m["ingest"]["counts"]
    assert ing["read"] == 300
    assert ing["read"] == ing["kept"] + ing["quarantined"] + ing["duplicates"] + ing["near_duplicates"]
    assert ing["kept"] == ing["train"] + ing["holdout"] and ing["holdout"] > 0

    rep = m["replay"]["counts"]
    assert rep["prompts"] == ing["kept"] == rep["ok"] + rep["failed"]
    cost = sum(json.loads(line)["cost_usd"] for line in (Path(out["run_dir"]) / "replay" / "responses.jsonl").open())
    assert m["replay"]["figures"]["cost_usd_total"] == pytest.approx(cost)

    fil = m["filter"]["counts"]
    assert fil["replayed"] == rep["prompts"] == fil["kept"] + fil["dropped"]
    assert fil["kept"] == fil["kept_train"] + fil["kept_holdout"]

    tr = m["train"]["counts"]
    assert tr["train_examples"] + tr["val_examples"] == fil["kept_train"]
    assert m["train"]["figures"]["kind"] == "classifier"

    assert m["eval"]["counts"]["evaluated"] == fil["kept_holdout"]
    assert m["approve"]["figures"]["approver"] == "demo-bot"

    reg = Registry(tmp_path / "data" / "registry")
    assert reg.aliases("banking77-intent")["production"] == out["promoted"]["version"]
    meta = reg.meta("banking77-intent", out["promoted"]["version"])
    assert meta["approver"] == "demo-bot" and meta["gate"]["passed"] and meta["run_id"] == Path(out["run_dir"]).name
    assert (Path(out["run_dir"]) / "summary.md").read_text().count("Promoted") == 1


@pytest.mark.slow
def test_impossible_gate_never_reaches_approval(prefect_server, tmp_path):
    from flows.distill_flow import distill_flow

    out = distill_flow(config=str(CONFIG), overrides=_overrides(tmp_path, "gate.min_agreement=1.0", "gate.max_p95_latency_ms=0.001"))
    assert not out["gate_passed"] and out["approved"] is None and out["promoted"] is None
    m = json.loads((Path(out["run_dir"]) / "manifest.json").read_text())["stages"]
    assert "approve" not in m and "promote" not in m
    decision = json.loads((Path(out["run_dir"]) / "gate" / "decision.json").read_text())
    assert [c["passed"] for c in decision["checks"] if c["metric"] == "agreement"] == [False]
    assert Registry(tmp_path / "data" / "registry").models() == []
