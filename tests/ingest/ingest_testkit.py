"""Helpers for ingest tests: write a log, build a config, run the stage into a temp data dir."""
from __future__ import annotations

import json
from pathlib import Path

from core.rundir import RunDir
from ingest.config import IngestConfig
from ingest.pipeline import run_ingest


def chat(i: int, user: str | None = None, *, ts: str | None = None, system: str = "Classify the intent.",
         response: str | None = "{\"intent\": \"x\"}", **extra) -> dict:
    rec = {"id": f"req_{i}", "model": "gpt-4o",
           "messages": [{"role": "system", "content": system},
                        {"role": "user", "content": user if user is not None else f"question number {i} about topic {i * 7919 % 1000}"}],
           "response": {"role": "assistant", "content": response} if response is not None else None,
           "timestamp": ts or f"2026-10-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
           "metadata": {"feature": "router"}}
    rec.update(extra)
    return rec


def write_log(path: Path, rows: list) -> Path:
    """rows: dicts (dumped as JSON), str (written as-is) or bytes (written raw)."""
    with open(path, "wb") as f:
        for r in rows:
            if isinstance(r, bytes):
                f.write(r if r.endswith(b"\n") else r + b"\n")
            elif isinstance(r, str):
                f.write((r + "\n").encode())
            else:
                f.write((json.dumps(r) + "\n").encode())
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


class Runner:
    def __init__(self, root: Path):
        self.root = root
        self.runs = root / "data" / "runs"
        self.rd: RunDir | None = None

    def cfg(self, path, **kw) -> IngestConfig:
        data = {"source": {"kind": "jsonl", "path": str(path)}, "parquet": False}
        data.update(kw)
        return IngestConfig.model_validate(data)

    def run(self, cfg: IngestConfig) -> dict:
        self.rd = RunDir.create(self.runs, "t")
        return run_ingest(cfg, self.rd)

    def out(self, name: str) -> list[dict]:
        return read(self.rd.path / "ingest" / f"{name}.jsonl")


def assert_balanced(c: dict) -> None:
    parts = ("kept", "quarantined", "skipped", "duplicates", "near_duplicates", "decontaminated", "over_tag_cap", "outside_window")
    assert c["read"] == sum(c[k] for k in parts), c
    assert c["kept"] == c["train"] + c["holdout"], c
    assert c["quarantined"] == sum(c["quarantined_by_reason"].values()), c
    assert c["skipped"] == sum(c["skipped_by_reason"].values()), c
