"""run_filters: replay/responses.jsonl -> filter/kept.jsonl + filter/dropped.jsonl (+ data report).

Nothing is lost: every replayed record ends in exactly one of the two files, a dropped one with
"dropped_by" (the filter's name, or "replay" for failed calls) and "reason". The counts are
checked to add up before the stage is recorded.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from core.base import DistillError, write_json, write_jsonl
from core.rundir import RunDir
from teacher.filter_config import FilterConfig
from teacher.filters.base import Filter, reason_code
from teacher.filters.conflicts import ConflictFilter, DedupFilter
from teacher.filters.consistency import ConsistencyFilter
from teacher.filters.empty import EmptyFilter
from teacher.filters.format import FormatFilter
from teacher.filters.length import LengthFilter
from teacher.filters.refusal import RefusalFilter
from teacher.filters.toolcall import ToolCallFilter
from teacher.filters.truncation import TruncationFilter


def build_filters(cfg: FilterConfig, teacher: Any = None, ledger_path: str | Path | None = None) -> list[Filter]:
    """The filters in order: cheap and most specific first (a truncated JSON answer is reported as
    truncated, not as invalid JSON), group filters after record filters, the paid judge last so
    it only sees what survived everything else."""
    filters: list[Filter] = [
        EmptyFilter(cfg.empty),
        TruncationFilter(cfg.truncation),
        ToolCallFilter(cfg.tool_call),
        RefusalFilter(cfg.refusal),
        FormatFilter(cfg),
        LengthFilter(cfg.length),
        ConsistencyFilter(cfg.consistency),
        ConflictFilter(cfg.conflicts),
        DedupFilter(cfg.conflicts),
    ]
    if cfg.judge.enabled:
        from teacher.filters.judge import JudgeFilter

        filters.append(JudgeFilter(cfg.judge, teacher=teacher, ledger_path=ledger_path))
    return filters


def _dropped(record: dict, by: str, reason: str) -> dict:
    return {**record, "dropped_by": by, "reason": reason}


def apply_filters(records: list[dict], filters: list[Filter]) -> tuple[list[dict], list[dict], list[dict]]:
    """(kept, dropped, per-filter stats). Pure: no files, so tests can call it directly."""
    dropped: list[dict] = []
    alive: list[dict] = []
    for r in records:
        if r.get("status") == "ok":
            alive.append(r)
        else:
            dropped.append(_dropped(r, "replay", f"replay_failed: {r.get('error') or 'status ' + str(r.get('status'))}"))
    stats = []
    for f in filters:
        st: dict[str, Any] = {"name": f.name, "active": f.active, "seen": len(alive)}
        if f.active and alive:
            f.setup(alive)
        # setup may switch a filter off (format on free text), so ask again.
        if f.active and alive:
            verdicts = f.check_all(alive)
            if len(verdicts) != len(alive):
                raise RuntimeError(f"filter {f.name} returned {len(verdicts)} verdicts for {len(alive)} records")
            nxt, reasons = [], Counter()
            for r, v in zip(alive, verdicts):
                if v.keep:
                    for k, val in v.update.items():
                        if k in r and r[k] != val and f"original_{k}" not in r:
                            r = {**r, f"original_{k}": r[k]}
                        r = {**r, k: val}
                    nxt.append(r)
                else:
                    dropped.append(_dropped(r, f.name, v.reason))
                    reasons[reason_code(v.reason)] += 1
            alive = nxt
            st["dropped_by_reason"] = dict(reasons)
        st.update(active=f.active, kept=len(alive), dropped=st["seen"] - len(alive), note=f.note)
        stats.append(st)
    return alive, dropped, stats


def _read_replay(path: Path) -> list[dict]:
    if not path.is_file():
        raise DistillError(f"filter: {path} not found; run the replay stage first")
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DistillError(f"filter: {path}:{n} is not valid JSON: {e}") from None
            if not isinstance(rec, dict):
                raise DistillError(f"filter: {path}:{n} is not a JSON object")
            out.append(rec)
    return out


def run_filters(cfg: FilterConfig, rd: RunDir, teacher: Any = None, ledger_path: str | Path | None = None) -> dict:
    """Filter the replayed records; write kept/dropped, the data report, and the manifest entry.

    `teacher` (TeacherConfig) and `ledger_path` are only needed when the LLM judge is on.
    Returns the counts recorded in the manifest.
    """
    t0 = time.time()
    src = rd.replay_responses
    records = _read_replay(src)
    filters = build_filters(cfg, teacher=teacher, ledger_path=ledger_path)
    kept, dropped, stats = apply_filters(records, filters)

    kept_path, dropped_path = rd.filter_kept, rd.filter_dropped
    write_jsonl(kept_path, kept)
    write_jsonl(dropped_path, dropped)
    outputs = [kept_path, dropped_path]
    fmt = next((f for f in filters if isinstance(f, FormatFilter)), None)
    if fmt is not None and fmt.schema is not None:
        # The schema the kept answers were checked against (configured or inferred): what a
        # student decodes under downstream, whichever way the filter got it.
        write_json(rd.output_schema, {"source": fmt.schema_source, "schema": fmt.schema})
        outputs.append(rd.output_schema)

    counts = {
        "replayed": len(records),
        "kept": len(kept),
        "dropped": len(dropped),
        "dropped_by_filter": dict(Counter(d["dropped_by"] for d in dropped)),
        "dropped_by_reason": dict(Counter(reason_code(d["reason"]) for d in dropped)),
        "kept_train": sum(1 for r in kept if r.get("split", "train") == "train"),
        "kept_holdout": sum(1 for r in kept if r.get("split", "train") != "train"),
    }
    if counts["replayed"] != counts["kept"] + counts["dropped"]:  # would be a bug here, never data
        raise RuntimeError(f"filter counts do not add up: {counts}")

    from teacher.data_report import build_data_report

    report = build_data_report(rd, cfg, stats=stats)
    outputs += [rd.data_report, rd.data_report_md]
    figures = {
        "filters": stats,
        "format": fmt.note if fmt is not None else None,
        "sufficiency": report.get("sufficiency", {}).get("status"),
        "retrieval_hint": report.get("retrieval_hint", {}).get("hint", False),
    }
    rd.record_stage("filter", counts=counts, figures=figures, inputs=[src], outputs=outputs, config=cfg, started=t0)
    return counts
