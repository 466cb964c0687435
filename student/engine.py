"""Which engine serves a saved student: "hf" (transformers, in process: every kind) or "llamacpp"
(llama.cpp through llama-cpp-python: causal-LM students, student/llamacpp.py).

The choice is made once, at the end of training (select_and_record, from
`student.causal_lm.serve_engine`), and written into student.json as "serve_engine"; every server
of the model (`distill serve`, the eval's own-process server, the cascade) loads what it says, so
the eval measures the engine the registry version is served with. `distill serve --engine`
overrides it. With serve_engine auto, llama.cpp is chosen when it is installed and its answers
on the validation split agree with the teacher within MAX_DROP of the HF engine's (the GGUF
export is then kept in the student, <student>/gguf/student.gguf); otherwise hf, with the reason.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.base import DistillError
from core.base import write_json
from core.rundir import STUDENT_META

ENGINES = ("hf", "llamacpp")
MAX_DROP = 0.002  # as student/fast_path.py: 0.2 points of agreement
MAX_VAL = 128  # validation examples the engines are compared on (the HF answers come from the train stage's val scores)


def recorded(model_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(model_dir) / STUDENT_META).read_text()).get("serve_engine")
    except (OSError, ValueError):
        return None


def served_engine(model_dir: str | Path, override: str | None = None) -> str:
    """The engine a server of this student runs: `override`, else the recorded choice, else hf."""
    if override:
        if override not in ENGINES:
            raise DistillError(f"engine {override!r}: expected one of {', '.join(ENGINES)}")
        return override
    rec = recorded(model_dir)
    return rec["choice"] if rec and rec.get("choice") in ENGINES else "hf"


def load_served(model_dir: str | Path, engine: str | None = None, num_threads: int | None = None) -> tuple[Any, str]:
    """(the loaded student, its engine) for serving `model_dir`."""
    from student.kinds import load_student

    eng = served_engine(model_dir, engine)
    if eng == "llamacpp":
        from student.llamacpp import LlamaCppStudent

        return LlamaCppStudent.load(model_dir, threads=num_threads), eng
    return load_student(model_dir), eng


def record(model_dir: str | Path, choice: dict[str, Any]) -> None:
    meta_file = Path(model_dir) / STUDENT_META
    write_json(meta_file, {**json.loads(meta_file.read_text()), "serve_engine": choice})  # atomic: readers see old or new


def _agreement(outs: list[str], targets: list[str]) -> float:
    return sum(o == t for o, t in zip(outs, targets)) / len(targets)


def choose(model_dir: str | Path, val: list[Any], mode: str = "auto", hf_answers: list[str] | None = None) -> dict[str, Any]:
    """The engine for a saved student: mode hf/llamacpp as asked (llamacpp: a clear error when it
    cannot be used), auto as the module docstring says. `val`: student.base.Example rows;
    `hf_answers`: the HF engine's answers to them, in order, when already generated (the train
    stage's validation scores: HF greedy decoding is ~11 tokens/s on 2 cores), else generated here."""
    from student import llamacpp
    from student.gguf_export import GGUF_FILE

    kind = json.loads((Path(model_dir) / STUDENT_META).read_text()).get("kind")
    if mode == "hf" or kind != "causal_lm":
        return {"choice": "hf", "reason": "serve_engine=hf" if mode == "hf" else f"llama.cpp serves causal LMs, not {kind!r}"}
    if not llamacpp.available():
        if mode == "llamacpp":
            raise DistillError(f"student.causal_lm.serve_engine=llamacpp: {llamacpp.INSTALL_HINT}")
        return {"choice": "hf", "reason": "llama-cpp-python is not installed"}
    try:
        lc = llamacpp.LlamaCppStudent.load(model_dir)
    except DistillError as e:
        if mode == "llamacpp":
            raise
        return {"choice": "hf", "reason": f"llama.cpp cannot serve it: {e}"}
    if mode == "llamacpp":
        return {"choice": "llamacpp", "reason": "serve_engine=llamacpp", "gguf": str(GGUF_FILE)}
    val = val[:MAX_VAL] if hf_answers is None else val[:min(MAX_VAL, len(hf_answers))]
    if not val:
        return {"choice": "hf", "reason": "no validation examples to compare the engines on"}
    from student.kinds import load_student

    msgs, targets = [e.messages for e in val], [e.target for e in val]
    hf_out = list(hf_answers[:len(val)]) if hf_answers is not None else load_student(model_dir).predict(msgs)
    lc_out = lc.predict(msgs)
    a_hf, a_lc = _agreement(hf_out, targets), _agreement(lc_out, targets)
    ok = a_lc >= a_hf - MAX_DROP
    return {
        "choice": "llamacpp" if ok else "hf", "gguf": str(GGUF_FILE) if ok else None,
        "agreement": {"hf": round(a_hf, 5), "llamacpp": round(a_lc, 5)}, "same_answers": round(_agreement(lc_out, hf_out), 5),
        "val_examples": len(val), "max_drop": MAX_DROP,
        "reason": (f"llama.cpp agreement {a_lc:.4f} within {MAX_DROP * 100:.1f} points of HF's {a_hf:.4f}" if ok
                   else f"llama.cpp agreement {a_lc:.4f} more than {MAX_DROP * 100:.1f} points below HF's {a_hf:.4f}"),
    }


def select_and_record(model_dir: str | Path, val: list[Any], mode: str = "auto", hf_answers: list[str] | None = None) -> dict[str, Any]:
    """The end-of-training step (student/train.py): choose and write it into student.json. A
    refused export is removed, so the version carries only what it serves."""
    from student.gguf_export import GGUF_FILE

    choice = choose(model_dir, val, mode, hf_answers)
    if choice["choice"] != "llamacpp":
        (Path(model_dir) / GGUF_FILE).unlink(missing_ok=True)
    record(model_dir, choice)
    return choice
