"""What ingest keeps between runs: the incremental watermark and the golden holdout.

    <state_dir>/<source_key>/watermark.json        {"timestamp", "run_id", "updated", "source"}
    <state_dir>/<source_key>/golden_holdout.jsonl  every record ever put in the holdout

state_dir defaults to <data_dir>/ingest_state, beside <data_dir>/runs. The source key is a hash
of the source config (secrets masked), so two log sources never share a watermark or holdout.
Both are used by incremental runs only (window.incremental): a full read derives the same
holdout from the id hashes by itself. State is only written after a run's outputs are, so a
failed run leaves it untouched.

Workers that share the state directory (a nightly deployment picked up by whichever Prefect
worker is free) take turns on it: an incremental run holds an exclusive lock on
<state_dir>/<source_key>.lock (flock; released by the kernel if the worker dies) from reading
the watermark to saving it, so a second worker started on the same source waits and then
reads only what the first did not. Different sources have different keys and never wait.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from core.base import DistillError, read_jsonl, stable_hash, write_json, write_jsonl
from core.rundir import RunDir
from ingest.config import IngestConfig


def state_dir(cfg: IngestConfig, rd: RunDir) -> Path:
    if cfg.window.state_dir:
        root = Path(cfg.window.state_dir)
    else:
        # RunDir lives at <data_dir>/runs/<run_id>.
        root = rd.path.parent.parent / "ingest_state"
    return root / source_key(cfg)


def source_key(cfg: IngestConfig) -> str:
    from ingest.sources import describe

    # SecretStr dumps masked, so the URL's host/database come from describe() (password
    # hidden): two databases must not share a watermark.
    dumped = cfg.source.model_dump(mode="json")
    return f"{cfg.source.kind}-{stable_hash([dumped, describe(cfg.source)], 10)}"


class IngestState:
    def __init__(self, root: Path):
        self.root = root

    @contextmanager
    def lock(self):
        """Hold this source's state for one incremental run (blocks while another worker has it)."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.with_name(self.root.name + ".lock"), "a+") as f:  # beside the state: not part of it
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another worker"
                print(f"ingest: waiting for {self.root} (held by {holder})", file=sys.stderr, flush=True)
                fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            f.truncate()
            f.write(f"{socket.gethostname()}:{os.getpid()}\n")
            f.flush()
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @property
    def watermark_path(self) -> Path:
        return self.root / "watermark.json"

    @property
    def holdout_path(self) -> Path:
        return self.root / "golden_holdout.jsonl"

    def watermark(self) -> str | None:
        p = self.watermark_path
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())["timestamp"]
        except (ValueError, KeyError, TypeError) as e:
            raise DistillError(f"ingest watermark {p} is corrupt ({e}); delete it to re-read the whole source") from None

    def save_watermark(self, ts: str, run_id: str, source: str) -> None:
        write_json(self.watermark_path, {"timestamp": ts, "run_id": run_id, "source": source,
                                         "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    def golden_holdout(self) -> list[dict]:
        p = self.holdout_path
        if not p.exists():
            return []
        try:
            return list(read_jsonl(p))
        except (ValueError, UnicodeDecodeError) as e:
            raise DistillError(f"golden holdout {p} is corrupt ({e}); restore or delete it") from None

    def save_golden_holdout(self, records: list[dict]) -> None:
        write_jsonl(self.holdout_path, records)

    def save_golden_holdout_file(self, path: Path) -> None:
        """The run's holdout.jsonl (earlier golden records + this run's) becomes the golden holdout."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.holdout_path.with_name(f".{self.holdout_path.name}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, self.holdout_path)
