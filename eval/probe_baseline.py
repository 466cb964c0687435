"""The linear-probe baseline for classifier students: the frozen base encoder with a linear
head fit on the same kept training examples, no encoder weight changed.

It costs a fraction of fine-tuning (one pass of frozen embeddings and a convex fit), so it is
the cheap alternative a fine-tuned encoder has to beat, on the same data, beyond the few-shot
prompted baseline. The train stage saves it to <run>/train/probe (the student's own a=0 point);
it is scored on every holdout item and compared with a paired bootstrap like the prompted one.
"""
from __future__ import annotations

from core.base import read_jsonl
from core.rundir import STUDENT_META, RunDir
from eval.baseline import record_baseline, score_baseline, verdict
from eval.config import EvalConfig

NAME = "the linear-probe baseline"
ENOUGH = "A linear head on the frozen encoder may be enough (cheaper to train, same serving cost)"


class ProbePredictor:
    """Batched predict over the saved probe model."""

    batch_size = 256

    def __init__(self, path, n_train: int | None):
        from student import load_student

        self.student = load_student(path)
        self.description = ("frozen base encoder + linear head fit on the same "
                            f"{n_train if n_train is not None else ''} kept training examples, no fine-tuning").replace("  ", " ")

    def predict_batch(self, batch: list[list[dict]]) -> list[str]:
        out = self.student.predict(batch)
        if getattr(self.student, "accepts_tools", False):  # a classifier of tool calls answers in fields: as answer text
            from student.toolcall_format import answer_text

            out = [answer_text(*self.student.decode_answer(t)) for t in out]
        return out

    def __call__(self, messages: list[dict]) -> str:
        return self.predict_batch([messages])[0]


def attach_probe_baseline(cfg: EvalConfig, rd: RunDir, report: dict) -> dict:
    """Score <run>/train/probe on the holdout and add slot "probe_baseline" and metrics
    probe_baseline_agreement, agreement_vs_probe_baseline_diff. No probe saved: nothing added."""
    path = rd.probe_dir
    if cfg.baseline == "off" or not (path / STUDENT_META).is_file():
        return report
    n_train = (rd.stage("train") or {}).get("counts", {}).get("train_examples")
    predict = ProbePredictor(path, n_train)
    preds = list(read_jsonl(rd.predictions))
    res = score_baseline(predict, [p["messages"] for p in preds], [p["teacher"] for p in preds], report["details"]["agreement_hits"],
                         examples=None, k=0, samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed,
                         progress=cfg.progress, desc="eval: linear-probe baseline")
    res.pop("predictions")
    res["verdict"] = verdict(res["diff"], res["diff_ci"], cfg.confidence, res["n"], name=NAME, enough=ENOUGH)
    res["method"] = predict.description
    return record_baseline(report, "probe", res)
