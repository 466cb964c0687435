"""The one interface every student kind implements: train, save, load, predict (messages -> text).

Protocols only: the kind -> class registry and load_student live in student/kinds.py, so this
module imports no kind (and no kind's import of it can close a cycle)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Messages = list[dict]  # [{"role": ..., "content": ...}, ...] as in the prompt log

from core.rundir import STUDENT_META  # noqa: F401  (re-exported: every saved student dir holds it)


@dataclass
class Example:
    """One training pair from filter/kept.jsonl: the prompt messages and the teacher's answer."""

    id: str
    messages: Messages  # the prompt as sent to the teacher (no final assistant turn)
    target: str  # the teacher's response text, exactly (with tool calls: student/toolcall_format.answer_text)
    tools: list[dict] | None = None  # the tools the request declared (canonical, core/toolcalls.py), if any


class TrainableStudent(Protocol):
    """What student/loop.py (checkpoints, early stopping, resume) needs from a kind.

    A kind module exposes a class with `create(cfg, examples) -> instance` (fresh model: base
    weights + LoRA) and these methods; `prepare_batches` returns opaque batch objects that
    `loss` understands. The classifier trains in our loop (student/loop.py); the causal LM
    trains through TRL's SFTTrainer instead (student/lm_trainer.py) and does not need these.
    """

    kind: str

    def prepare_batches(self, examples: list[Example], batch_size: int, seed: int, epoch: int) -> list[Any]: ...

    def loss(self, batch: Any) -> Any: ...  # scalar torch tensor, train mode

    def eval_loss(self, examples: list[Example]) -> dict[str, float]: ...  # {"val_loss": ..., optional "val_accuracy"}

    def param_groups(self, cfg: Any) -> list[dict]: ...

    def train_mode(self, on: bool) -> None: ...

    def torch_modules(self) -> dict[str, Any]: ...  # the nn.Modules loss() runs (what DDP wraps)

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
        """Write weights + STUDENT_META so `student.kinds.load_student(path)` restores it."""
        ...

