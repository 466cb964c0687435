"""Builders for tiny run directories and reference-answer files (shared by the teacher tests and bench)."""
from __future__ import annotations

from pathlib import Path

from core.base import write_jsonl
from core.rundir import RunDir


def make_dataset(root: Path, n: int, holdout: int = 0, unknown: int = 0) -> tuple[RunDir, Path]:
    """A run dir with n train (+holdout) prompts and an answers file covering all but `unknown` of them."""
    answers, train, hold = [], [], []
    for i in range(n + holdout):
        user = f"Question number {i}: what is {i} plus {i}?"
        rec = {"id": f"p{i}", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user}],
               "response": None, "model": None, "timestamp": None, "metadata": {}, "split": "train" if i < n else "holdout"}
        (train if i < n else hold).append(rec)
        if i >= unknown:
            answers.append({"id": f"p{i}", "user": user, "response": f"{i} plus {i} is {2 * i}."})
    rd = RunDir.create(root / "runs", "t")
    write_jsonl(rd.path / "ingest" / "train.jsonl", train)
    write_jsonl(rd.path / "ingest" / "holdout.jsonl", hold)
    ans = root / "answers.jsonl"
    write_jsonl(ans, answers)
    return rd, ans
