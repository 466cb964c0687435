"""Train stage: filter/kept.jsonl -> train/model/ (a saved student), metrics.json, loss_curve.png.

Picks the kind (kind auto: from the data), resolves the concrete config and trains with the one
loop every kind shares (student/loop.py).
"""
from __future__ import annotations

import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

from core.base import DistillError, read_jsonl, stable_hash, write_json, write_jsonl
from core.rundir import STUDENT_META, RunDir
from student.base import Example
from student.classifier_format import categorical_labels
from student.config import AnyStudentConfig, AutoStudentConfig, resolve_kind
from student.kinds import student_class
from student.threads import auto_threads  # noqa: F401 - re-exported: callers import it from here


# ----------------------------------------------------------------------------- data
def load_examples(rd: RunDir) -> list[Example]:
    """Training pairs from filter/kept.jsonl (split == "train"; the holdout is for eval only)."""
    path = rd.filter_kept
    if not path.is_file():
        raise DistillError(f"{path} not found: run the filter stage first")
    out = []
    for n, r in enumerate(read_jsonl(path), 1):
        if r.get("split", "train") != "train":
            continue
        if r.get("tool_calls") or r.get("tools"):  # tool calling: canonical answer text (student/toolcall_format.py)
            from student.toolcall_format import row_answer_text

            r = {**r, "response": row_answer_text(r)}
        if not isinstance(r.get("response"), str) or not isinstance(r.get("messages"), list):
            raise DistillError(f"{path}:{n}: record {r.get('id')!r} lacks a response string or a messages list")
        out.append(Example(str(r["id"]), r["messages"], r["response"], r.get("tools")))
    if not out:
        raise DistillError(f"{path}: no kept training records (split == 'train'); nothing to train on")
    return out


def in_fraction(key: str, fraction: float, salt: str) -> bool:
    """Stable pseudo-random membership: the same key lands on the same side on every run.
    Salted so the validation split is independent of ingest's holdout split (which hashes the
    bare id: unsalted, every training id would sit above the holdout cut)."""
    return int(stable_hash([salt, key]), 16) / 16**16 < fraction


def split_validation(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    if fraction <= 0 or len(examples) < 10:
        return examples, []
    val = [e for e in examples if in_fraction(e.id, fraction, "student-val")]
    train = [e for e in examples if not in_fraction(e.id, fraction, "student-val")]
    return (train, val) if train else (examples, [])


def kind_decision(cfg: AnyStudentConfig, examples: list[Example]) -> dict:
    """{"kind", "decided_by", "reason", "types"}. auto: the encoder (kind classifier) when every
    output field is categorical, a label set or a span of the user's message (core/answer_shape.py);
    else the causal LM, naming the first field the encoder cannot produce."""
    if not isinstance(cfg, AutoStudentConfig):
        return {"kind": cfg.kind, "decided_by": None, "reason": f"student.kind={cfg.kind}"}
    from core.answer_shape import answer_shape, encoder_fit, has_structure, last_user_text
    from student.toolcall_shape import decide

    tool_decision = decide(cfg, examples)  # tool calls: classifier for a fixed tool list with field-shaped arguments
    if tool_decision is not None:
        return tool_decision
    opts = cfg.classifier
    targets = [e.target for e in examples]
    if not has_structure(targets) and categorical_labels(targets, opts.max_labels, opts.min_examples_per_label) is not None:
        return {"kind": "classifier", "decided_by": None, "reason": "every field is categorical"}
    shape = answer_shape(targets, [last_user_text(e.messages) for e in examples], opts.max_labels, opts.min_examples_per_label)
    fit = encoder_fit(shape)
    ok = fit["encoder"] and shape["mode"] == "json"
    return {"kind": "classifier" if ok else "causal_lm", **fit}


def calibrate_and_score(student, val: list[Example], n_train: int, max_examples: int = 512) -> list[dict]:
    """{id, answer, confidence, target} per validation example (a causal LM: the first max_examples): what the
    eval's cascade chooses its threshold on (rd.val_scores), so the holdout is never read for it.

    A causal LM is first calibrated here (Platt scaling of the mean answer-token log-prob,
    CausalLMStudent.calibrate: one generation pass over val, then a second to score; the
    classifier fitted its temperatures in finalize()). A classifier scores them against its kNN
    memory's training rows only (ClassifierStudent.against_training_rows), as its temperatures
    were fitted: the memory holds the val examples themselves after finalize."""
    if not val or not hasattr(student, "predict_scored"):
        return []
    if hasattr(student, "calibrate"):  # generation is the cost: cap it (a classifier scores its whole val split in seconds)
        val = val[:max_examples]
        student.calibrate(val, max_examples=max_examples)
    rows_only = student.against_training_rows(n_train) if hasattr(student, "against_training_rows") else nullcontext()
    with rows_only:
        tools = {"tools": [e.tools for e in val]} if getattr(student, "accepts_tools", False) else {}  # student/toolcall_format.py
        scored = student.predict_scored([e.messages for e in val], **tools)
    return [{"id": e.id, "answer": t, "confidence": round(float(c), 8), "target": e.target} for e, (t, c) in zip(val, scored)]


def choose_kind(cfg: AnyStudentConfig, examples: list[Example]) -> str:
    """The student kind for these examples (see kind_decision)."""
    return kind_decision(cfg, examples)["kind"]


# ----------------------------------------------------------------------------- the stage
def run_train(cfg: AnyStudentConfig, rd: RunDir) -> dict:
    """The train stage for the `student` section `cfg` (any variant; kind auto is resolved here)."""
    import torch

    from student.loop import train_loop

    t0 = time.time()
    threads = cfg.num_threads or auto_threads()
    torch.set_num_threads(threads)
    examples = load_examples(rd)
    decision = kind_decision(cfg, examples)
    kind = decision["kind"]
    cfg = resolve_kind(cfg, kind)
    train, val = split_validation(examples, cfg.val_fraction)
    out_dir = rd.stage_dir("train")
    ckpt_dir = rd.checkpoints_dir
    fingerprint = stable_hash([cfg.model_dump(mode="json"), kind, [e.id for e in train], [e.id for e in val], [e.target for e in examples]])
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    from student.toolcall_shape import for_kind

    train, val, examples, cls = for_kind(kind, train, val, examples, student_class(kind))  # a classifier of tool calls learns fields
    if hasattr(cls, "prepare_batches"):
        student = cls.create(cfg, examples)
        hist = train_loop(student, cfg, train, val, ckpt_dir, fingerprint)
    elif hasattr(cls, "train_stage"):  # a kind with its own trainer (causal_lm: TRL) -> (student, history)
        student, hist = cls.train_stage(cfg, train, val, ckpt_dir)
    else:
        raise DistillError(f"student kind {kind!r}: {cls.__name__} has neither the TrainableStudent hooks nor train_stage()")
    if not hist.get("is_main_process", True):
        return {}  # under `accelerate launch`, only the main process writes the model and figures
    if hasattr(student, "set_output_schema"):  # causal LM: decode under the answers' JSON schema (student/constrained.py)
        from student.constrained import run_output_schema

        hist["constrained_decoding"] = student.set_output_schema(run_output_schema(cfg, rd), cfg.constrained_decoding,
                                                                 [e.target for e in examples])

    val_scores = calibrate_and_score(student, val, len(train))  # before save: a causal LM's calibration goes into student.json
    model_dir = rd.model_dir
    tmp_dir = model_dir.with_name("model.tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    student.save(tmp_dir)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp_dir, model_dir)  # readers never see a half-written model
    from student.fast_path import select_and_record

    # A faster path only if it agrees as well as fp32 on val (student/fast_path.py); fp32's val
    # answers are val_scores' when it scored every val example (a causal LM's is capped).
    whole = bool(val_scores) and len(val_scores) == len(val)
    fast = select_and_record(model_dir, val, n_train=len(train), train=train,
                             fp32_answers=[r["answer"] for r in val_scores] if whole else None)
    if fast["choice"] != "fp32" and val_scores:
        # The cascade's threshold must be chosen on the confidences the server gives: int8 moves
        # them (Banking77 val: mean -0.017; at a threshold chosen on fp32 scores val coverage fell
        # 77.7 -> 72.4 %), so the val split is scored again on the served path.
        from student.fast_path import load_served

        val_scores = calibrate_and_score(load_served(model_dir), val, len(train))
    if kind == "causal_lm":  # hf or llama.cpp, recorded for every server of the model (student/engine.py)
        from student.engine import select_and_record as select_engine

        hist["serve_engine"] = select_engine(model_dir, val, getattr(cfg, "serve_engine", "auto"),
                                             [r["answer"] for r in val_scores] if val_scores else None)
    write_jsonl(rd.val_scores, val_scores)
    if hasattr(student, "save_probe"):  # the no-fine-tuning comparator the eval scores beside the student
        shutil.rmtree(rd.probe_dir, ignore_errors=True)
        student.save_probe(rd.probe_dir)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: a rerun should train afresh, not resume

    wall = time.time() - t0
    tl = hist.get("train_losses") or []
    tail = tl[-max(1, min(50, len(tl) // 10 or 1)):]
    vals = hist.get("val", [])
    best_val = next((v for v in vals if v.get("final")), None) or next((v for v in vals if v["step"] == hist.get("best_step")), None)
    figures = {
        "kind": kind,
        "steps": hist.get("step"),
        "examples_per_s": hist.get("examples_per_s"),
        "train_loss": round(sum(tail) / len(tail), 5) if tail else None,
        "val_loss": round(best_val["val_loss"], 5) if best_val else None,
        "val_accuracy": round(best_val["val_accuracy"], 5) if best_val and "val_accuracy" in best_val else None,
        "wall_s": round(wall, 2),
        "threads": threads,
        "device": hist.get("device", "cpu"),
        "processes": hist.get("processes", 1),
        "served": fast["choice"],
    }
    metrics = {**figures, "train_examples": len(train), "val_examples": len(val), "best_step": hist.get("best_step"),
               "stopped_early": hist.get("stopped_early"), "resumed_from_step": hist.get("resumed_from_step"),
               "warm_start_train_accuracy": hist.get("warm_start"), "total_steps": hist.get("total_steps"),
               "finalize": hist.get("finalize"), "stop_reason": hist.get("stop_reason"), "wrapped_as": hist.get("wrapped_as"),
               "constrained_decoding": hist.get("constrained_decoding"),
               "serve_engine": hist.get("serve_engine"),
               "kind_decision": decision, "calibration": getattr(student, "calibration", None) or getattr(student, "meta", {}).get("calibration"),
               "val_history": hist.get("val"), "train_losses": tl, "config": cfg.model_dump(mode="json")}
    write_json(rd.train_metrics, metrics)
    plot_loss_curve(tl, hist.get("val", []), out_dir / "loss_curve.png", title=f"{kind} student ({rd.run_id})")
    rd.record_stage("train", counts={"train_examples": len(train), "val_examples": len(val)}, figures=figures,
                    inputs=[rd.filter_kept], outputs=[model_dir / STUDENT_META, rd.train_metrics],
                    config=cfg, started=t0)
    return metrics


def plot_loss_curve(train_losses: list[float], val: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless; never opens a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train_losses:
        w = max(1, len(train_losses) // 50)  # moving average: per-batch loss is noisy
        smooth = [sum(train_losses[max(0, i - w + 1) : i + 1]) / len(train_losses[max(0, i - w + 1) : i + 1]) for i in range(len(train_losses))]
        ax.plot(range(1, len(smooth) + 1), smooth, label="train loss (smoothed)")
    steps = [v for v in val if not v.get("final")]
    if steps:
        ax.plot([v["step"] for v in steps], [v["val_loss"] for v in steps], "o-", label="val loss")
    for v in val:
        if v.get("final"):
            ax.plot([v["step"]], [v["val_loss"]], "r*", markersize=12, label="val loss, final weights")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
