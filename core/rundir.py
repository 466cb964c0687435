"""The run directory: how stages hand off to each other.

Layout (every stage owns one subdirectory and one manifest entry):

    <data_dir>/runs/<run_id>/
        manifest.json          run id, config hash, and per stage: input/output hashes, counts,
                               figures, package versions, start/finish times
        config.yaml            the resolved config the run used (secrets masked)
        ingest/  replay/  filter/  train/  eval/  gate/  promote/
        outcome.json summary.md

Every path a stage writes and another reads is a property of RunDir below, so the layout is
defined here once; stages never join path literals onto the run directory themselves.
Any stage can be rerun or inspected alone by pointing it at the run directory.
"""
from __future__ import annotations

import importlib.metadata
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.base import file_hash, stable_hash, write_json

STUDENT_META = "student.json"  # in every saved student dir: {"kind": ..., ...}
STAGES = ("ingest", "replay", "filter", "train", "eval", "gate", "approve", "promote")
_VERSIONED = ("torch", "transformers", "peft", "litellm", "prefect", "datasets", "distill-service")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def new_run_id(name: str = "run", suffix: str | None = None) -> str:
    return f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{suffix or stable_hash(time.time_ns(), 8)}"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, runs_root: str | Path, name: str = "run", suffix: str | None = None) -> "RunDir":
        rd = cls(Path(runs_root) / new_run_id(name, suffix))
        rd.path.mkdir(parents=True, exist_ok=False)
        rd._write({"run_id": rd.run_id, "created": _now(), "stages": {}})
        return rd

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def stage_dir(self, stage: str) -> Path:
        d = self.path / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- the layout: one property per hand-off file ---------------------------------------
    def ingest_split(self, split: str) -> Path:
        """ingest/<split>.jsonl for split in train, holdout, quarantine, dropped."""
        return self.path / "ingest" / f"{split}.jsonl"

    @property
    def ingest_train(self) -> Path:
        return self.ingest_split("train")

    @property
    def ingest_holdout(self) -> Path:
        return self.ingest_split("holdout")

    @property
    def select_train(self) -> Path:
        """The train prompts chosen for replay (the select stage); absent: all of ingest's."""
        return self.path / "select" / "train.jsonl"

    @property
    def replay_responses(self) -> Path:
        return self.path / "replay" / "responses.jsonl"

    @property
    def replay_shards(self) -> Path:
        return self.path / "replay" / "shards"

    @property
    def replay_batch_state(self) -> Path:
        return self.path / "replay" / "batch.json"

    @property
    def filter_kept(self) -> Path:
        return self.path / "filter" / "kept.jsonl"

    @property
    def filter_dropped(self) -> Path:
        return self.path / "filter" / "dropped.jsonl"

    @property
    def output_schema(self) -> Path:
        """{"source": "config"|"inferred", "schema": {...}}: the JSON schema the kept answers passed."""
        return self.path / "filter" / "output_schema.json"

    @property
    def data_report(self) -> Path:
        return self.path / "filter" / "data_report.json"

    @property
    def data_report_md(self) -> Path:
        return self.path / "filter" / "data_report.md"

    @property
    def model_dir(self) -> Path:
        """The trained student (a saved student directory with STUDENT_META)."""
        return self.path / "train" / "model"

    @property
    def probe_dir(self) -> Path:
        """The no-fine-tuning linear-probe baseline saved beside the student (classifier kind)."""
        return self.path / "train" / "probe"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "train" / "checkpoints"

    @property
    def train_metrics(self) -> Path:
        return self.path / "train" / "metrics.json"

    @property
    def val_scores(self) -> Path:
        """{id, answer, confidence, target} per example of the student's own validation split:
        what the cascade threshold is chosen on (never the holdout)."""
        return self.path / "train" / "val_scores.jsonl"

    @property
    def predictions(self) -> Path:
        return self.path / "eval" / "predictions.jsonl"

    @property
    def eval_report(self) -> Path:
        return self.path / "eval" / "report.json"

    @property
    def gate_decision(self) -> Path:
        return self.path / "gate" / "decision.json"

    @property
    def outcome(self) -> Path:
        return self.path / "outcome.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.md"

    @property
    def config_yaml(self) -> Path:
        return self.path / "config.yaml"

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"run_id": self.run_id, "stages": {}}
        return json.loads(self.manifest_path.read_text())

    def stage(self, stage: str) -> dict[str, Any]:
        return self.manifest().get("stages", {}).get(stage, {})

    def set_config(self, config_hash: str, resolved_yaml: str) -> None:
        """Record the run's config. A changed config makes every finished stage stale: they are
        kept under "stale_stages" for inspection but no longer count as done."""
        self.config_yaml.write_text(resolved_yaml)
        m = self.manifest()
        if m.get("config_hash") not in (None, config_hash) and m.get("stages"):
            m["stale_stages"] = m.pop("stages")
            m["stages"] = {}
        m["config_hash"] = config_hash
        self._write(m)

    def forget(self, stage: str) -> None:
        """Drop a stage's entry so it counts as not done (`distill <stage> --redo`); files stay."""
        m = self.manifest()
        if m.get("stages", {}).pop(stage, None) is not None:
            self._write(m)

    def record_stage(
        self,
        stage: str,
        *,
        counts: dict[str, Any] | None = None,
        figures: dict[str, Any] | None = None,
        inputs: list[str | Path] | None = None,
        outputs: list[str | Path] | None = None,
        config: Any = None,
        started: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Write one stage's entry. Hashes are of files, so a rerun on the same inputs is visible."""
        entry: dict[str, Any] = {
            "finished": _now(),
            "counts": counts or {},
            "figures": figures or {},
            "versions": package_versions(),
        }
        if started is not None:
            entry["wall_s"] = round(time.time() - started, 3)
        if config is not None:
            dumped = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
            entry["config_hash"] = stable_hash(dumped)
        if inputs:
            entry["input_hash"] = _files_hash(inputs)
        if outputs:
            entry["output_hash"] = _files_hash(outputs)
        entry.update(extra)
        m = self.manifest()
        m.setdefault("stages", {})[stage] = entry
        self._write(m)
        return entry

    def _write(self, m: dict) -> None:
        write_json(self.manifest_path, m)


def _files_hash(paths: list[str | Path]) -> str:
    return stable_hash([file_hash(p) if Path(p).is_file() else str(p) for p in paths])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
