"""The promote stage: register a run's gated and approved student, move the alias, and write the
serving hand-off beside the version. The flow and `distill registry promote` both promote through
`promote_version`, so a version promoted by hand gets the same hand-off files as one the flow
promoted.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.base import DistillError
from core.rundir import RunDir
from registry.handoff import write_handoff
from registry.registry import Registry


def handoff_settings(*, app_model_alias: str, teacher_model: str, teacher_api_base: str | None,
                     student_api_base: str) -> dict[str, Any]:
    """What the hand-off needs to know, stored in the version's record at register time so a later
    manual promotion (no run config at hand) writes the same files."""
    return {"app_model_alias": app_model_alias, "teacher_model": teacher_model,
            "teacher_api_base": teacher_api_base, "student_api_base": student_api_base}


def promote_version(reg: Registry, name: str, version: str, *, approver: str, alias: str = "production",
                    comment: str = "", **audit: Any) -> dict:
    """Point `alias` at `version` (audited) and write litellm_router.yaml + serve.sh beside it."""
    result = reg.promote(name, version, approver=approver, alias=alias, comment=comment, **audit)
    h = reg.meta(name, version).get("handoff") or {}
    files = write_handoff(
        reg.version_dir(name, version),
        app_model_alias=h.get("app_model_alias") or name,
        teacher_model=h.get("teacher_model") or "<teacher model>",
        teacher_api_base=h.get("teacher_api_base"),
        student_api_base=h.get("student_api_base") or "http://127.0.0.1:8000/v1",
        registry_name=name, version=version, cascade=reg.meta(name, version).get("cascade"))
    reg.add_files(name, version, [Path(p) for p in files.values()])
    return {**result, "handoff": files}


def cascade_operating_point(rd: RunDir) -> dict[str, Any] | None:
    """The cascade threshold chosen on validation by the eval, with its holdout figures: what
    `distill serve --cascade` routes by. None when the eval ran no cascade or its target was
    unreachable."""
    try:
        c = json.loads(rd.eval_report.read_text()).get("cascade") or {}
    except (OSError, ValueError):
        return None
    if not c.get("reachable"):
        return None
    return {"threshold": c["threshold"], "target": c.get("target"), "chosen_on": "validation", "coverage": c.get("coverage"),
            "cascade_agreement": c.get("cascade_agreement"), "cascade_agreement_ci": c.get("cascade_agreement_ci"),
            "cascade_cost_ratio": c.get("cascade_cost_ratio"), "val_coverage": (c.get("choice") or {}).get("val_coverage"),
            "teacher_timeout_s": (c.get("config") or {}).get("teacher_timeout_s")}


def promote_run(rd: RunDir, registry_root: str | Path, *, model_name: str, decision: dict, approver: str,
                comment: str, handoff: dict[str, Any]) -> dict:
    """Register <run>/train/model as a new version (alias `candidate`), promote it to production,
    record the promote stage. Refuses a candidate that did not pass the gate."""
    if not decision.get("passed"):
        raise DistillError("refusing to promote: the candidate did not pass the gate")
    if not approver.strip():
        raise DistillError("refusing to promote: no approver")
    reg = Registry(registry_root)
    manifest = rd.manifest()
    meta = {
        "run_id": rd.run_id,
        "run_dir": str(rd.path),
        "config_hash": manifest.get("config_hash"),
        "data_hashes": {s: manifest["stages"].get(s, {}).get("output_hash") for s in ("ingest", "replay", "filter")},
        "student": manifest["stages"].get("train", {}).get("figures", {}),
        "gate": decision,
        "approver": approver,
        "approval_comment": comment,
        "handoff": handoff,
        "cascade": cascade_operating_point(rd),
    }
    version = reg.register(model_name, rd.model_dir, meta, alias="candidate")
    result = promote_version(reg, model_name, version, approver=approver, comment=comment, run_id=rd.run_id,
                             gate={c["name"]: c["value"] for c in decision["checks"]})
    rd.record_stage("promote", counts={}, figures=result, registry=str(reg.root))
    return result
