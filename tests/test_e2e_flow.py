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
        "reference_teacher.port=0",
        "reference_teacher.latency_ms=5",
        "teacher.progress=false",
        "filter.report.min_train_examples=100",
        "student.epochs=1",
        "eval.latency_requests=20",
        "eval.warmup_requests=2",
        "cascade.target_agreement=0.5",  # a 300-prompt slice cannot reach the example's 0.99: the plumbing is tested
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

    # The same stages by hand (`distill <stage>`) write the same files and manifest entries.
    _stages_by_hand_match_the_flow(tmp_path, Path(out["run_dir"]))
    # A manual promotion writes the serving hand-off too (not only the flow's promote).
    vdir = reg.version_dir("banking77-intent", out["promoted"]["version"])
    for f in ("litellm_router.yaml", "serve.sh"):
        (vdir / f).unlink()
    from distill.cli import main

    assert main(["registry", "promote", out["promoted"]["version"], "--alias", "staging", "--approver", "alice",
                 "--data-dir", str(tmp_path / "data")]) == 0
    assert (vdir / "litellm_router.yaml").is_file() and (vdir / "serve.sh").is_file()
    assert reg.aliases("banking77-intent")["staging"] == out["promoted"]["version"]


HAND_STAGES = ("ingest", "replay", "filter", "train", "eval", "gate")


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for s in HAND_STAGES for p in (run_dir / s).rglob("*") if p.is_file()}


def _stages_by_hand_match_the_flow(tmp_path: Path, flow_dir: Path) -> None:
    from distill.cli import main

    overrides = [a for o in _overrides(tmp_path / "hand", "gate.min_agreement=0.0", "gate.max_p95_latency_ms=null",
                                        "gate.max_cost_ratio=null") for a in ("--set", o)]
    for verb in ("ingest", "replay", "filter", "train", "evaluate", "gate"):
        assert main([verb, "--config", str(CONFIG), *overrides]) == 0, verb
    hand_dir = next((tmp_path / "hand" / "data" / "runs").iterdir())
    assert _files(hand_dir) == _files(flow_dir)
    flow_m, hand_m = (json.loads((d / "manifest.json").read_text()) for d in (flow_dir, hand_dir))
    assert hand_m["config_hash"] != flow_m["config_hash"]  # another data_dir: a different config ...
    for stage in HAND_STAGES:
        f, h = flow_m["stages"][stage], hand_m["stages"][stage]
        assert set(f) == set(h), stage  # ... but the same entries, with the same counts
        assert set(f["figures"]) == set(h["figures"]), stage
        if stage != "eval":  # eval counts include timing-dependent latency samples
            assert f["counts"] == h["counts"], stage
    for key in ("input_hash", "output_hash"):  # ingest is deterministic: byte-identical files
        assert flow_m["stages"]["ingest"][key] == hand_m["stages"]["ingest"][key], key


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
