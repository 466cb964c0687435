"""student/loop.py keeps the checkpoint `student.best_metric` names and stops early on it: with a
validation loss that rises from overconfidence while the answers still improve (what the NLU++
encoder did), val_loss keeps an early checkpoint and val_accuracy trains on to the best answers.
The student here is a one-weight torch model whose validation figures are scripted: the loop's
decisions are what is under test."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from core.base import DistillError  # noqa: E402
from student.base import Example  # noqa: E402
from student.config import SharedStudentConfig  # noqa: E402
from student.loop import train_loop  # noqa: E402

# (val_loss, val_accuracy) at step 0, then after every validation
SCRIPT = [(1.0, 0.1), (0.9, 0.3), (1.2, 0.5), (1.3, 0.6), (1.4, 0.55), (1.1, 0.6), (1.6, 0.5), (1.7, 0.5)]


class ScriptedStudent:
    def __init__(self, with_accuracy: bool = True):
        self.lin = torch.nn.Linear(1, 1)
        self.evals, self.loaded, self.with_accuracy = 0, None, with_accuracy

    def torch_modules(self):
        return {"lin": self.lin}

    def to(self, device):
        self.lin.to(device)

    def param_groups(self, cfg):
        return [{"params": list(self.lin.parameters()), "lr": cfg.learning_rate}]

    def prepare_batches(self, train, batch_size, seed, epoch):
        return [torch.ones(batch_size, 1) for _ in range(0, len(train), batch_size)]

    def train_mode(self, on):
        self.lin.train(on)

    def loss(self, batch):
        return (self.lin(batch) ** 2).mean()

    def eval_loss(self, val):
        loss, acc = SCRIPT[self.evals]
        self.evals += 1
        return {"val_loss": loss, "val_accuracy": acc} if self.with_accuracy else {"val_loss": loss}

    def trainable_state(self):
        return {"validation": self.evals - 1}  # which validation these weights were scored at

    def load_trainable_state(self, state):
        self.loaded = state


def _run(tmp_path, metric, student=None):
    cfg = SharedStudentConfig(epochs=len(SCRIPT) - 1, batch_size=1, eval_every_steps=1, early_stopping_patience=2,
                              best_metric=metric, checkpoint_every_steps=1000, warmup_ratio=0.0, resume=False, device="cpu")
    ex = [Example("e0", [{"role": "user", "content": "x"}], "y")]
    student = student or ScriptedStudent()
    return train_loop(student, cfg, ex, ex, tmp_path, "fp"), student


def test_val_loss_keeps_the_lowest_loss(tmp_path):
    hist, st = _run(tmp_path, "val_loss")
    assert hist["best_step"] == 1 and st.loaded == {"validation": 1}
    assert hist["stopped_early"] and hist["step"] == 3  # two validations without a lower loss


def test_val_accuracy_trains_on_to_the_best_answers(tmp_path):
    hist, st = _run(tmp_path, "val_accuracy")
    # 0.6 first at validation 3; validation 5 ties it at a lower loss, so it wins the tie
    assert hist["best_step"] == 5 and st.loaded == {"validation": 5}, hist["val"]
    assert hist["stopped_early"] and hist["step"] == 7


def test_val_accuracy_needs_a_student_that_reports_it(tmp_path):
    with pytest.raises(DistillError, match="student.best_metric=val_accuracy"):
        _run(tmp_path, "val_accuracy", ScriptedStudent(with_accuracy=False))


def test_the_nluplusplus_example_keeps_its_most_exact_checkpoint():
    """The README's NLU++ figures come from this setting (its loss plateaued early)."""
    from pathlib import Path

    from distill.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "nluplusplus" / "distill.yaml", env={})
    assert cfg.student.best_metric == "val_accuracy"
