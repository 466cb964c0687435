"""Writing the ingest outputs as they are produced: JSONL (the contract) and Hugging Face
datasets Parquet, both into temp files that replace the real ones only on `commit` (a failed
run leaves no half outputs and keeps the previous ones)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import orjson

_FIELDS = ("id", "messages", "response", "model", "timestamp", "metadata", "split", "tools", "tool_choice", "tool_calls")
_JSON_FIELDS = ("metadata", "tools", "tool_choice", "tool_calls")  # free-form: JSON strings (null when absent)


def dumps(row) -> bytes:
    try:
        return orjson.dumps(row)
    except TypeError:  # integers past 64 bits (json.loads reads them): the stdlib writes them
        return json.dumps(row, ensure_ascii=False).encode("utf-8")


class JsonlOut:
    """Append-only JSONL into `<tmp_dir>/<name>` (same file system); `commit()` renames it into place."""

    def __init__(self, path: Path, tmp_dir: Path):
        self.path = path
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_dir / path.name
        self.f = open(self.tmp, "wb", buffering=1 << 20)
        self.n = 0

    def write(self, row: dict) -> None:
        self.f.write(dumps(row) + b"\n")
        self.n += 1

    def write_raw(self, line: bytes) -> None:
        """One row already serialised by `dumps` (no newline)."""
        self.f.write(line + b"\n")
        self.n += 1

    def commit(self) -> Path:
        self.f.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


def _features():
    from datasets import Features, Value

    return Features({
        "id": Value("string"),
        # A tool-calling turn keeps its calls (JSON, as the top-level tool fields) and its call id.
        "messages": [{"role": Value("string"), "content": Value("string"), "tool_calls": Value("string"), "tool_call_id": Value("string")}],
        "response": Value("string"),
        "model": Value("string"),
        "timestamp": Value("string"),
        "metadata": Value("string"),
        "split": Value("string"),
        "tools": Value("string"),
        "tool_choice": Value("string"),
        "tool_calls": Value("string"),
    })


def _cell(r: dict, k: str):
    v = r.get(k)
    if k in _JSON_FIELDS:
        return None if v is None and k != "metadata" else json.dumps(v, ensure_ascii=False)
    if k == "messages" and any("tool_calls" in m or "tool_call_id" in m for m in v):
        return [{**m, "tool_calls": json.dumps(m["tool_calls"], ensure_ascii=False)} if "tool_calls" in m else m for m in v]
    return v


class ParquetOut:
    """Parquet in row groups of `batch` records with the datasets schema (loadable by
    datasets.load_dataset / Dataset.from_parquet). metadata is a JSON string: its keys differ
    per record and Arrow would otherwise infer a struct from the first rows and fail on the rest."""

    def __init__(self, path: Path, tmp_dir: Path, batch: int = 20_000):
        import pyarrow.parquet as pq

        self.path, self.batch = path, batch
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_dir / path.name
        self.schema = _features().arrow_schema
        self.writer = pq.ParquetWriter(str(self.tmp), self.schema)
        self.rows: list[dict] = []

    def write(self, rec: dict) -> None:
        self.rows.append(rec)
        if len(self.rows) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        cols = {k: [_cell(r, k) for r in self.rows] for k in _FIELDS}
        self.writer.write_table(pa.Table.from_pydict(cols, schema=self.schema))
        self.rows = []

    def commit(self) -> Path:
        if self.rows:
            self._flush()
        self.writer.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def to_parquet(records: list[dict], path: Path) -> None:
    """Atomic Parquet write of a list (kept for callers outside the stage)."""
    out = ParquetOut(path, path.parent / f".{path.name}.d")
    try:
        for r in records:
            out.write(r)
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        shutil.rmtree(path.parent / f".{path.name}.d", ignore_errors=True)
