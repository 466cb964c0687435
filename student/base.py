"""The one interface every student kind implements: train, save, load, predict (messages -> text)."""
from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

Messages = list[dict]  # [{"role": ..., "content": ...}, ...] as in the prompt log

from core.rundir import STUDENT_META  # noqa: F401  (re-exported: every saved student dir holds it)


@dataclass
class Example:
    """One training pair from filter/kept.jsonl: the prompt messages and the teacher's answer."""

    id: str
    messages: Messages  # the prompt as sent to the teacher (no final assistant turn)
    target: str  # the teacher's response text, exactly


class TrainableStudent(Protocol):
    """What student/train.py's loop (checkpoints, early stopping, resume) needs from a kind.

    A kind module exposes a class with `create(cfg, examples) -> instance` (fresh model: base
    weights + LoRA) and these methods; `prepare_batches` returns opaque batch objects that
    `loss` understands. Both kinds share the loop so checkpoint/resume behave the same.
    """

    kind: str

    def prepare_batches(self, examples: list[Example], batch_size: int, seed: int, epoch: int) -> list[Any]: ...

    def loss(self, batch: Any) -> Any: ...  # scalar torch tensor, train mode

    def eval_loss(self, examples: list[Example]) -> dict[str, float]: ...  # {"val_loss": ..., optional "val_accuracy"}

    def param_groups(self, cfg: Any) -> list[dict]: ...

    def train_mode(self, on: bool) -> None: ...

    def trainable_state(self) -> dict[str, Any]: ...  # tensors training changes (LoRA, heads)

    def load_trainable_state(self, sd: dict[str, Any]) -> None: ...

    def save(self, path: str | Path) -> None: ...


@runtime_checkable
class Student(Protocol):
    kind: str

    def predict(self, batch: list[Messages]) -> list[str]:
        """Assistant text for each conversation, in order (the teacher's exact output format)."""
        ...

    def save(self, path: str | Path) -> None:
        """Write weights + STUDENT_META so `load_student(path)` restores it."""
        ...


def load_student(path: str | Path) -> Student:
    """Load any saved student by reading its kind from student.json."""
    path = Path(path)
    meta_file = path / STUDENT_META
    if not meta_file.is_file():
        from core.base import DistillError

        raise DistillError(f"{path} is not a saved student (no {STUDENT_META})")
    kind = json.loads(meta_file.read_text())["kind"]
    if kind == "classifier":
        from student.classifier import ClassifierStudent

        return ClassifierStudent.load(path)
    if kind == "causal_lm":
        from student.causal_lm import CausalLMStudent

        return CausalLMStudent.load(path)
    from core.base import DistillError

    raise DistillError(f"{meta_file}: unknown student kind {kind!r}")
