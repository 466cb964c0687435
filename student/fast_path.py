"""A faster CPU inference path for classifier students, chosen per model on its validation split.

fp32 eager torch is the serving ceiling for a classifier student (Banking77, MiniLM-L6: ~220
req/s in process on 2 cores). int8 dynamic quantisation of the encoder's Linear layers
(torch.ao.quantization.quantize_dynamic: weights int8 once, activations quantised per call)
cuts the matmul cost, but it changes the numbers, so it is served only when the quantised
model's agreement with the teacher on the validation split is within `MAX_DROP` (0.2 points) of
fp32's. The choice is made once, at the end of training (select_and_record), written into
student.json under "fast_path", and applied at load time (apply) by every server and by
`distill predict`; a model without a recorded choice is served fp32.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from core.base import write_json
from core.rundir import STUDENT_META

MAX_DROP = 0.002  # 0.2 points of agreement
PATHS = ("fp32", "int8", "onnx", "onnx_int8")  # onnx(_int8): student/onnx_path.py, onnx_quant.py, tried when int8 is refused


def recorded(model_dir: str | Path) -> dict[str, Any] | None:
    """The "fast_path" record in student.json, or None."""
    try:
        return json.loads((Path(model_dir) / STUDENT_META).read_text()).get("fast_path")
    except (OSError, ValueError):
        return None


def served_path(model_dir: str | Path) -> str:
    """What a server will run for this saved student: one of PATHS ("fp32" when nothing is recorded)."""
    rec = recorded(model_dir)
    return rec["choice"] if rec and rec.get("choice") in PATHS else "fp32"


def quantize_int8(student: Any) -> Any:
    """Quantise the student's encoder Linear layers to int8 in place (the heads stay fp32: they are
    a tiny share of the cost and carry the decision boundary). Returns the student."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch 2.13 flags torch.ao.quantization as deprecated (moving to torchao); it works
        warnings.simplefilter("ignore")
        student.encoder = torch.ao.quantization.quantize_dynamic(student.encoder, {torch.nn.Linear}, dtype=torch.qint8)
    return student


def apply(student: Any, model_dir: str | Path, choice: str | None = None) -> str:
    """Apply `choice` (default: the recorded one) to a loaded student; returns what is served.
    Students without an encoder (causal LMs) are served as they are."""
    choice = choice or served_path(model_dir)
    if choice not in PATHS:
        raise ValueError(f"fast path {choice!r}: expected one of {', '.join(PATHS)}")
    if choice == "int8" and getattr(student, "kind", None) == "classifier":
        quantize_int8(student)
        return "int8"
    if choice == "onnx" and getattr(student, "kind", None) == "classifier":
        from student.onnx_path import use_onnx

        use_onnx(student, model_dir)
        return "onnx"
    if choice == "onnx_int8" and getattr(student, "kind", None) == "classifier":
        from student.onnx_quant import use_onnx_int8

        use_onnx_int8(student, model_dir)
        return "onnx_int8"
    return "fp32"


def load_served(model_dir: str | Path) -> Any:
    """The saved student on the path its servers run (the recorded choice applied)."""
    from student.kinds import load_student

    st = load_student(model_dir)
    apply(st, model_dir)
    return st


def _agreement(student: Any, messages: list[list[dict]], targets: list[str]) -> float:
    outs = student.predict(messages)
    return sum(o == t for o, t in zip(outs, targets)) / len(targets)


def _batch_flips(student: Any, messages: list[list[dict]], n: int = 256) -> float:
    """Share of (up to n) validation answers that differ between one request at a time and the
    student's own batching: dynamic int8 quantises activations per batch, so an answer can
    depend on which other requests shared its batch - and a cascade threshold on its confidence
    would then route the same request differently under other traffic."""
    sample = messages[:n]
    alone = [student.predict([m])[0] for m in sample]
    batched = student.predict(sample)
    return sum(a != b for a, b in zip(alone, batched)) / max(1, len(sample))


def _rate(student: Any, messages: list[list[dict]], batch: int = 1, seconds: float = 1.5) -> float:
    """Predictions per second at batch size `batch` (a rough, same-run comparison)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        student.predict(messages[n % len(messages): n % len(messages) + batch] or messages[:batch])
        n += batch
    return n / (time.perf_counter() - t0)


def choose(model_dir: str | Path, messages: list[list[dict]], targets: list[str], time_it: bool = False,
           n_train: int | None = None, calibration: list[list[dict]] | None = None) -> dict[str, Any]:
    """Measure fp32 and int8 on (messages, targets) — the validation split, teacher answers as
    targets — and pick int8 when its agreement is within MAX_DROP of fp32's (else the ONNX paths:
    onnx_choice.consider). n_train: how many kNN memory rows are training rows (the rest are the val
    examples themselves). calibration: inputs for onnx_int8's activation ranges (default: messages)."""
    from student.kinds import load_student

    kind = json.loads((Path(model_dir) / STUDENT_META).read_text()).get("kind")
    if kind != "classifier":  # read before loading: a causal LM takes ~20 s to load
        return {"choice": "fp32", "reason": f"no fast path for kind {kind!r}"}
    if not messages:
        return {"choice": "fp32", "reason": "no validation examples to compare on"}
    # Both paths score the val examples against the kNN memory's training rows only
    # (ClassifierStudent.against_training_rows: otherwise a val example finds itself there).
    fp32 = load_student(model_dir)
    with fp32.against_training_rows(n_train):
        a32 = _agreement(fp32, messages, targets)
        r32 = _rate(fp32, messages) if time_it else None
    int8 = quantize_int8(load_student(model_dir))
    with int8.against_training_rows(n_train):
        a8 = _agreement(int8, messages, targets)
        r8 = _rate(int8, messages) if time_it else None
        flips = _batch_flips(int8, messages)
    ok = a8 >= a32 - MAX_DROP and flips <= MAX_DROP
    from student.onnx_choice import consider

    return consider({
        "choice": "int8" if ok else "fp32",
        "agreement": {"fp32": round(a32, 5), "int8": round(a8, 5)},
        **({"rate_c1_per_s": {"fp32": round(r32, 1), "int8": round(r8, 1)}} if time_it else {}),
        "val_examples": len(messages), "max_drop": MAX_DROP,
        "int8_batch_flips": round(flips, 5),
        "reason": (f"int8 agreement {a8:.4f} within {MAX_DROP * 100:.1f} points of fp32's {a32:.4f}" if ok
                   else f"int8 agreement {a8:.4f} more than {MAX_DROP * 100:.1f} points below fp32's {a32:.4f}"
                   if a8 < a32 - MAX_DROP else
                   f"int8 answers depend on the batch: {flips:.1%} of validation answers change between batch 1 and "
                   f"batched (activations are quantised per batch; a request's answer must not depend on its neighbours)"),
    }, model_dir, messages, targets, n_train, _agreement, _rate if time_it else None, max_drop=MAX_DROP, flips=_batch_flips,
        calibration=calibration)


def record(model_dir: str | Path, choice: dict[str, Any]) -> None:
    """Write `choice` into student.json as "fast_path" (atomic replace: readers see old or new)."""
    meta_file = Path(model_dir) / STUDENT_META
    write_json(meta_file, {**json.loads(meta_file.read_text()), "fast_path": choice})  # atomic: readers see old or new


def select_and_record(model_dir: str | Path, val: list[Any], n_train: int | None = None, train: list[Any] | None = None) -> dict[str, Any]:
    """The end-of-training step: choose on the validation examples (student.base.Example) and
    record. train: calibrate onnx_int8's activation ranges on (up to 256 of) these inputs, so the
    split that judges the path did not also shape it."""
    choice = choose(model_dir, [e.messages for e in val], [e.target for e in val], n_train=n_train,
                    calibration=[e.messages for e in train] if train else None)
    record(model_dir, choice)
    return choice
