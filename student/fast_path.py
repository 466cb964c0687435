"""A faster CPU inference path for classifier students, chosen per model on its validation split.

fp32 eager torch is the serving ceiling for a classifier student (Banking77, MiniLM-L6: ~220
req/s in process on 2 cores). int8 dynamic quantisation of the encoder's Linear layers
(torch.ao.quantization.quantize_dynamic: weights int8 once, activations quantised per call)
cuts the matmul cost, but it changes the numbers, so it is served only when the quantised
model's agreement with the teacher on the validation split is within `MAX_DROP` (0.2 points) of
fp32's; ONNX Runtime paths (student/onnx_choice.py) are the other candidates, tried first
(candidates()). The choice is made once, at the end of training (select_and_record), written into
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
PATHS = ("fp32", "int8", "onnx", "onnx_int8")  # onnx(_int8): student/onnx_path.py, onnx_quant.py (tried first: candidates())


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
    return _share_equal(student.predict(messages), targets)


def _share_equal(answers: list[str], targets: list[str]) -> float:
    return sum(o == t for o, t in zip(answers, targets)) / len(targets)


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


def candidates() -> tuple[str, ...]:
    """The faster paths in the order they are tried: fastest first, so the first that keeps fp32's
    agreement is served and the slower ones are not scored at all. bench/serve_classifier.py on the
    Banking77 demo student at concurrency 32 (README): onnx_int8 326, onnx 298, fp32 172 req/s in
    one idle run. Torch int8 comes last: it quantises activations per batch, so 2-3 % of the demo's
    answers depended on the batch and it was refused on every real student here; tried first, it
    cost each Banking77 train stage ~8 s, and fp32 ONNX ~5 s more, scored after onnx_int8 had won."""
    from student.onnx_path import available

    return ("onnx_int8", "onnx", "int8") if available() else ("int8",)


def _verdict(name: str, a: float, a32: float, flips: float | None) -> str:
    v = (f"{name} agreement {a:.4f} within {MAX_DROP * 100:.1f} points of fp32's {a32:.4f}" if a >= a32 - MAX_DROP
         else f"{name} agreement {a:.4f} more than {MAX_DROP * 100:.1f} points below fp32's {a32:.4f}")
    if flips is not None:
        v += f", {flips:.1%} batch flips"
        if flips > MAX_DROP:
            v += " (a request's answer must not depend on its neighbours)"
    return v


def score_path(name: str, model_dir: str | Path, messages: list[list[dict]], targets: list[str], n_train: int | None,
               calibration: list[list[dict]], time_it: bool = False) -> tuple[float, float | None, float | None]:
    """(agreement, batch flips - int8 paths only -, predictions/s when time_it) of the saved
    student on path `name` ("int8", or an ONNX path built by onnx_choice.candidate from the
    `calibration` inputs), the val examples scored against the kNN memory's training rows only
    (ClassifierStudent.against_training_rows: otherwise a val example finds itself there)."""
    from student.kinds import load_student
    from student.onnx_choice import candidate

    st = quantize_int8(load_student(model_dir)) if name == "int8" else candidate(name, model_dir, calibration)
    with st.against_training_rows(n_train):
        return (_agreement(st, messages, targets), _batch_flips(st, messages) if name.endswith("int8") else None,
                _rate(st, messages) if time_it else None)


def choose(model_dir: str | Path, messages: list[list[dict]], targets: list[str], time_it: bool = False,
           n_train: int | None = None, calibration: list[list[dict]] | None = None,
           fp32_answers: list[str] | None = None) -> dict[str, Any]:
    """Score fp32 on (messages, targets) - the validation split, teacher answers as targets - then
    each faster path in `candidates()` order, and serve the first whose agreement is within
    MAX_DROP of fp32's (an int8 path also needs answers that do not depend on the batch:
    _batch_flips <= MAX_DROP). n_train: how many kNN memory rows are training rows (the rest are
    the val examples themselves). calibration: inputs for onnx_int8's activation ranges (default:
    messages). fp32_answers: the saved student's own answers to `messages`, when the caller has
    them already (the train stage scored val for the cascade: ~5 s of Banking77's train stage)."""
    from student.kinds import load_student

    kind = json.loads((Path(model_dir) / STUDENT_META).read_text()).get("kind")
    if kind != "classifier":  # read before loading: a causal LM takes ~20 s to load
        return {"choice": "fp32", "reason": f"no fast path for kind {kind!r}"}
    if not messages:
        return {"choice": "fp32", "reason": "no validation examples to compare on"}
    from student.onnx_choice import keep_only

    if fp32_answers is not None and not time_it:
        a32, rates = round(_share_equal(fp32_answers, targets), 5), {}
    else:
        fp32 = load_student(model_dir)
        with fp32.against_training_rows(n_train):
            a32 = round(_agreement(fp32, messages, targets), 5)
            rates = {"fp32": _rate(fp32, messages) if time_it else None}
    out: dict[str, Any] = {"choice": "fp32", "agreement": {"fp32": a32}, "val_examples": len(messages), "max_drop": MAX_DROP}
    verdicts = []
    for name in candidates():
        a, flips, rates[name] = score_path(name, model_dir, messages, targets, n_train, calibration or messages, time_it)
        out["agreement"][name] = round(a, 5)
        if flips is not None:
            out[f"{name}_batch_flips"] = round(flips, 5)
        verdicts.append(_verdict(name, a, a32, flips))
        if a >= a32 - MAX_DROP and (flips or 0.0) <= MAX_DROP:
            out["choice"] = name
            break
    keep_only(model_dir, out["choice"])
    if time_it:
        out["rate_c1_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    out["reason"] = "; ".join(verdicts)
    return out


def record(model_dir: str | Path, choice: dict[str, Any]) -> None:
    """Write `choice` into student.json as "fast_path" (atomic replace: readers see old or new)."""
    meta_file = Path(model_dir) / STUDENT_META
    write_json(meta_file, {**json.loads(meta_file.read_text()), "fast_path": choice})  # atomic: readers see old or new


def select_and_record(model_dir: str | Path, val: list[Any], n_train: int | None = None, train: list[Any] | None = None,
                      fp32_answers: list[str] | None = None) -> dict[str, Any]:
    """The end-of-training step: choose on the validation examples (student.base.Example) and
    record. train: calibrate onnx_int8's activation ranges on (up to 256 of) these inputs, so the
    split that judges the path did not also shape it. fp32_answers: see choose()."""
    choice = choose(model_dir, [e.messages for e in val], [e.target for e in val], n_train=n_train,
                    calibration=[e.messages for e in train] if train else None, fp32_answers=fp32_answers)
    record(model_dir, choice)
    return choice
