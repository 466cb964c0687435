"""One function per stage: skip it when the run directory already records it, run the stage
package's function, return its manifest entry (or its result). The `distill <stage>` verbs and the
Prefect tasks in flows/tasks.py are both one-line callers of these, so a stage run by hand and the
same stage run by the flow write the same files and the same manifest entry.

`log` is print for the CLI and the Prefect run logger inside a task.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Iterator

from core.base import DistillError, write_json
from core.rundir import RunDir
from distill.config import DistillConfig

Log = Callable[[str], None]


def done(rd: RunDir, stage: str, log: Log = print) -> dict | None:
    """A stage recorded in this run directory under the current run config (RunDir.set_config
    clears stages when the config changes) is finished: skip it. A flow resumed from the top (a
    suspended run, a retried flow) thereby redoes no finished work."""
    entry = rd.stage(stage)
    if entry:
        log(f"{stage}: already done in {rd.path}, skipping")
        return entry
    return None


def ledger_path(cfg: DistillConfig) -> Path:
    """One replay ledger per data directory, shared by every run: a prompt is paid for once."""
    return cfg.data_path / "ledger.sqlite"


@contextlib.contextmanager
def teacher_endpoint(cfg: DistillConfig, log: Log = print) -> Iterator[None]:
    """Start the reference teacher when `reference_teacher.enabled` (offline demos, tests) and
    point teacher.api_base at it for the block: replay, the judge and the eval's latency probes
    then call it over HTTP like any hosted model. Without it nothing is started here or anywhere."""
    ref = cfg.reference_teacher
    if not ref.enabled:
        yield
        return
    from teacher.reference.server import ReferenceTeacher

    with ReferenceTeacher(ref) as url:
        log(f"reference teacher (offline demo/test teacher, answers from {ref.answers}) listening at {url}")
        cfg.teacher.api_base = url
        cfg.teacher.endpoint_id = ref.endpoint_id()
        yield


def ingest(cfg: DistillConfig, rd: RunDir, log: Log = print) -> dict:
    from ingest.pipeline import run_ingest

    if entry := done(rd, "ingest", log):
        return entry
    run_ingest(cfg.ingest, rd)
    return rd.stage("ingest")


def select(cfg: DistillConfig, rd: RunDir, log: Log = print) -> dict | None:
    """Choose the train prompts to replay (ingest/selection.py); no `select:` section: a no-op,
    every ingested prompt is replayed."""
    from ingest.selection import select_prompts

    if cfg.select is None:
        return None
    if entry := done(rd, "select", log):
        return entry
    embed = _embedder(cfg) if cfg.select.strategy == "diversity" else None
    select_prompts(cfg.select, rd, embed=embed)
    return rd.stage("select")


def _embedder(cfg: DistillConfig):
    """embed(texts) -> (n, d) mean-pooled encoder states, with the encoder student's base model
    (select.embed_model first; the bundled MiniLM when the student is not an encoder)."""
    from student.encoder import load_encoder
    from student.models import resolve_base_model

    name = cfg.select.embed_model
    if name is None:
        kind = getattr(cfg.student, "kind", None)
        name = resolve_base_model(cfg.student.base_model if kind == "classifier" else None, "classifier").name_or_path

    loaded: list = []

    def embed(texts: list[str]):
        import numpy as np
        import torch

        if not loaded:
            loaded.extend(load_encoder(name))
            loaded[0].eval()
        encoder, tok = loaded
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), 64):
                b = tok(texts[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
                h = encoder(**b).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                out.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).numpy())
        return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)

    return embed


def estimate(cfg: DistillConfig, rd: RunDir) -> dict:
    """Expected replay cost of the run's prompts (teacher/estimate.py); spends nothing."""
    from teacher.estimate import estimate_replay

    return estimate_replay(cfg.teacher, rd)


def replay(cfg: DistillConfig, rd: RunDir, log: Log = print) -> dict:
    from teacher.replay import run_replay

    if entry := done(rd, "replay", log):
        return entry
    run_replay(cfg.teacher, rd, ledger_path=ledger_path(cfg))
    return rd.stage("replay")


def replay_shard(cfg: DistillConfig, rd: RunDir, shard: int, n_shards: int) -> dict:
    from teacher.replay import replay_shard as run_shard

    return run_shard(cfg.teacher, rd, ledger_path(cfg), shard, n_shards)


def replay_merge(cfg: DistillConfig, rd: RunDir, n_shards: int) -> dict:
    from teacher.replay import merge_shards

    merge_shards(cfg.teacher, rd, n_shards)
    return rd.stage("replay")


def filter_outputs(cfg: DistillConfig, rd: RunDir, force: bool = False, log: Log = print, warn: Log | None = None) -> dict:
    """Filter the teacher's outputs and write the data report; too little data stops here
    (InsufficientDataError) unless `force`. The report is logged either way."""
    from teacher.data_report import build_data_report, check_sufficiency, data_report_markdown
    from teacher.filters import run_filters

    entry = done(rd, "filter", log)
    if entry is None:
        # The LLM judge (when enabled) calls through the replay ledger: never paid twice.
        run_filters(cfg.filter, rd, teacher=cfg.teacher, ledger_path=ledger_path(cfg))
        entry = rd.stage("filter")
    report = json.loads(rd.data_report.read_text()) if rd.data_report.is_file() else build_data_report(rd, cfg.filter)
    log(data_report_markdown(report))
    for warning in check_sufficiency(report, force=force):
        (warn or log)(f"warning: {warning}")
    return entry


def train(cfg: DistillConfig, rd: RunDir, log: Log = print) -> dict:
    from student.train import run_train

    if entry := done(rd, "train", log):
        return entry
    run_train(cfg.student, rd)
    return rd.stage("train")


def evaluate(cfg: DistillConfig, rd: RunDir, log: Log = print) -> dict:
    """Score the student against the teacher on the holdout; returns the eval report. The student
    is served over the same OpenAI-compatible HTTP path the teacher is called through, so the two
    latencies are comparable; the baseline is the student's base model without fine-tuning."""
    from eval.baseline import choose_baseline
    from eval.evaluate import evaluate_run

    if done(rd, "eval", log) and rd.eval_report.is_file():
        return json.loads(rd.eval_report.read_text())
    kind = rd.stage("train").get("figures", {}).get("kind")
    baseline = choose_baseline(cfg.eval, rd, kind, cfg.student.base_model)
    return evaluate_run(cfg.eval, rd, cfg.teacher, baseline_predict=baseline, cascade=cfg.cascade)


def gate(cfg: DistillConfig, rd: RunDir, report: dict | None = None) -> dict:
    """Apply the promotion policy to the eval report; writes gate/decision.json. Cheap and pure,
    so it is always recomputed (a changed report or policy is never hidden by a stale decision)."""
    from eval.gate import decide

    if report is None:
        if not rd.eval_report.is_file():
            raise DistillError(f"no eval report at {rd.eval_report}: run the evaluate stage first")
        report = json.loads(rd.eval_report.read_text())
    decision = decide(cfg.gate, report)
    write_json(rd.gate_decision, decision)
    rd.record_stage("gate", counts={"checks": len(decision["checks"]), "failed": sum(not c["passed"] for c in decision["checks"])},
                    figures={"passed": decision["passed"]}, config=cfg.gate)
    return decision


def record_approval(rd: RunDir, approved: bool, approver: str, comment: str, source: str) -> dict:
    return rd.record_stage("approve", figures={"approved": approved, "approver": approver, "comment": comment, "source": source})


def promote(cfg: DistillConfig, rd: RunDir, decision: dict, approver: str, comment: str) -> dict:
    from registry.promote import handoff_settings, promote_run

    return promote_run(
        rd, cfg.registry_path, model_name=cfg.registry.model_name, decision=decision, approver=approver, comment=comment,
        handoff=handoff_settings(app_model_alias=cfg.registry.app_model_alias or cfg.registry.model_name,
                                 teacher_model=cfg.teacher.model, teacher_api_base=cfg.teacher.api_base,
                                 student_api_base=cfg.registry.student_api_base))


def drift_check(cfg: DistillConfig, threshold: float, window: int, reference_limit: int = 20000) -> dict:
    """Compare the newest `window` logged prompts (validated, deduplicated and redacted like the
    training data, so like is compared with like) with the production student's training prompts."""
    from itertools import islice

    from core.base import read_jsonl
    from eval.drift import drift_report, user_text
    from ingest.pipeline import clean_records
    from registry.registry import Registry

    items = sorted(clean_records(cfg.ingest), key=lambda r: r.get("timestamp") or "")
    new = [user_text(r["messages"]) for r in items[-window:]]
    reg = Registry(cfg.registry_path)
    version = reg.aliases(cfg.registry.model_name).get("production")
    if not version:
        raise DistillError(f"no production version of {cfg.registry.model_name!r} in {reg.root}: nothing to compare against")
    train = RunDir(reg.meta(cfg.registry.model_name, version)["run_dir"]).ingest_train
    if not train.is_file():
        raise DistillError(f"the production version's training data is gone: {train}")
    reference = [user_text(r["messages"]) for r in islice(read_jsonl(train), reference_limit)]
    return drift_report(new, reference, threshold)


def run_dir_for(cfg: DistillConfig, flow_run_id: str) -> RunDir:
    """One run directory per flow run: a resumed (suspended) run finds its own again."""
    cfg.runs_path.mkdir(parents=True, exist_ok=True)
    existing = sorted(cfg.runs_path.glob(f"{cfg.name}-*-{flow_run_id[:8]}"))
    if existing:
        return RunDir(existing[-1])
    return RunDir.create(cfg.runs_path, cfg.name, suffix=flow_run_id[:8])


def newest_run_dir(cfg: DistillConfig) -> RunDir:
    runs = sorted(cfg.runs_path.glob(f"{cfg.name}-*"), key=lambda p: p.stat().st_mtime) if cfg.runs_path.is_dir() else []
    if not runs:
        raise DistillError(f"no run directory for {cfg.name!r} under {cfg.runs_path}: pass --run DIR or run `distill ingest` first")
    return RunDir(runs[-1])
