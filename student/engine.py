"""Which engine serves a saved student: "hf" (transformers, in process: every kind) or "llamacpp"
(llama.cpp through llama-cpp-python: causal-LM students, student/llamacpp.py).

The choice is made once, at the end of training (select_and_record, from
`student.causal_lm.serve_engine`), and written into student.json as "serve_engine"; every server
of the model (`distill serve`, the eval's own-process server, the cascade) loads what it says, so
the eval measures the engine the registry version is served with. `distill serve --engine`
overrides it. With serve_engine auto, llama.cpp is chosen when it is installed and its answers
on the validation split agree with the teacher within MAX_DROP of the HF engine's (the GGUF
export is then kept in the student, <student>/gguf/student.gguf); otherwise hf, with the reason.

Weight type (choose_weight_type, after llama.cpp is chosen): the f16 export is the reference; a
faster type from WEIGHT_CANDIDATES replaces it only when its validation agreement with the teacher
is within MAX_DROP of f16's (the pattern of student/fast_path.py's int8) and at least MIN_SAME of its
answers equal f16's, recorded in student.json as "gguf_weight_type" with every type's figures.
Prompt-lookup drafts (check_speculative) stay on under the same two conditions against one-token
decoding.
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
# Rounding-level flips at near ties are allowed, a systematic change is not: f16 drafts left 63 of 64
# validation answers of bench/serve_lm.py's 60-step NLU++ student as one-token decoding gave them,
# q8_0 drafts 61, q8_0 without drafts 56 of f16's (teacher agreement the same, 9 of 64, for all).
MIN_SAME = 0.95
MAX_VAL = 128  # validation examples the engines are compared on (the HF answers come from the train stage's val scores)
# Tried fastest first; f16 is kept when none agrees as well. Measured (bench/serve_lm.py's NLU++
# student, 60 steps, 40 holdout requests, 1 thread, load 5): with prompt-lookup decoding q4_0 ran
# 43.3 tokens/s vs f16's 27.9-30.2 but agreed with the teacher on 5 vs 8 and with HF on 13 vs 39
# answers (refused); q8_0 ran 26.1-26.9 (no faster: its batched verification passes cost more)
# and its drafts changed answers, so it is not a candidate. On the 12-step student (teacher
# agreement 6 %) q4_0 passed the agreement gate (3/32 vs 2/32) yet served answers equal to HF's on
# 10 % of holdout requests: agreement with a weak student is too noisy a guard (hence MIN_SAME).
# On the 60-step student q8_0 ran 1.35x f16 per request without drafts, 1.11x with them, but only
# 56 of 64 answers were f16's: none is tried by default (f16 + prompt-lookup decoding is served);
# pass weight_candidates to try some.
WEIGHT_CANDIDATES: tuple[str, ...] = ()


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


def load_served(model_dir: str | Path, engine: str | None = None, num_threads: int | None = None,
                adaptive_threads: bool = False) -> tuple[Any, str]:
    """(the loaded student, its engine) for serving `model_dir`; adaptive_threads: llama.cpp
    re-picks its thread count between requests (num_threads was chosen automatically)."""
    from student.kinds import load_student

    eng = served_engine(model_dir, engine)
    if eng == "llamacpp":
        from student.llamacpp import LlamaCppStudent

        return LlamaCppStudent.load(model_dir, threads=num_threads, adaptive_threads=adaptive_threads), eng
    return load_student(model_dir), eng


def record(model_dir: str | Path, choice: dict[str, Any]) -> None:
    meta_file = Path(model_dir) / STUDENT_META
    write_json(meta_file, {**json.loads(meta_file.read_text()), "serve_engine": choice})  # atomic: readers see old or new


def _agreement(outs: list[str], targets: list[str]) -> float:
    return sum(o == t for o, t in zip(outs, targets)) / len(targets)


def choose(model_dir: str | Path, val: list[Any], mode: str = "auto", hf_answers: list[str] | None = None,
           weight_candidates: tuple[str, ...] = WEIGHT_CANDIDATES) -> dict[str, Any]:
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
    out = {
        "choice": "llamacpp" if ok else "hf", "gguf": str(GGUF_FILE) if ok else None,
        "agreement": {"hf": round(a_hf, 5), "llamacpp": round(a_lc, 5)}, "same_answers": round(_agreement(lc_out, hf_out), 5),
        "val_examples": len(val), "max_drop": MAX_DROP,
        "reason": (f"llama.cpp agreement {a_lc:.4f} within {MAX_DROP * 100:.1f} points of HF's {a_hf:.4f}" if ok
                   else f"llama.cpp agreement {a_lc:.4f} more than {MAX_DROP * 100:.1f} points below HF's {a_hf:.4f}"),
    }
    if ok:
        del lc  # one llama.cpp model in memory at a time
        served = lc_out
        if weight_candidates:
            out["weight_type"] = choose_weight_type(model_dir, msgs, targets, lc_out, weight_candidates)
            served = out["weight_type"].pop("answers")
        out["speculative"] = check_speculative(model_dir, msgs, targets, served)
    return out


def check_speculative(model_dir: str | Path, msgs: list[Any], targets: list[str], served: list[str]) -> dict[str, Any]:
    """Prompt-lookup decoding is greedy decoding's answer in exact arithmetic, but llama.cpp's
    batched pass rounds differently from a one-token pass (measured: logits within 0.05 on f16,
    up to ~1 on q8_0/q4_0, whose 8-bit activations amplify it), so an answer can part at a near
    tie. Such a tie is decided by rounding whichever way it is computed (the one-token decoder's
    own answer flipped when the same prompt was prefilled in another chunking), so equality on
    every validation answer is a lottery: one answer of 32 turned drafts off, 1.4x slower. Kept
    when the drafted answers (`served`) agree with the teacher (`targets`) within MAX_DROP of the
    one-token decoder's and at least MIN_SAME of them equal its answers; else student.json's
    "llamacpp" gets max_draft 0."""
    from student import llamacpp

    meta_file = Path(model_dir) / STUDENT_META
    meta = json.loads(meta_file.read_text())
    settings = llamacpp.LlamaCppSettings.model_validate(meta.get("llamacpp") or {})
    if settings.decoder != "lookup" or settings.max_draft == 0:
        return {"kept": False, "reason": "off in the settings"}
    plain = llamacpp.LlamaCppStudent.load(model_dir, settings=settings.model_copy(update={"max_draft": 0})).predict(msgs)
    same, a_plain, a_draft = _agreement(plain, served), _agreement(plain, targets), _agreement(served, targets)
    differ = round((1 - same) * len(msgs))
    kept = same >= MIN_SAME and a_draft >= a_plain - MAX_DROP
    if not kept:
        write_json(meta_file, {**meta, "llamacpp": {**(meta.get("llamacpp") or {}), "max_draft": 0}})
    why = (f"{differ} of {len(msgs)} validation answers differ from one-token greedy decoding's; agreement with the teacher "
           f"{a_draft:.4f} drafted vs {a_plain:.4f} one token at a time")
    rule = f"(kept when at least {MIN_SAME:.0%} are the same and agreement is within {MAX_DROP * 100:.1f} points)"
    return {"kept": kept, "same_answers": round(same, 5), "agreement": {"drafted": round(a_draft, 5), "one_token": round(a_plain, 5)},
            "max_draft": settings.max_draft, "reason": f"{why} {rule}" + ("" if kept else ": drafts off")}


def choose_weight_type(model_dir: str | Path, msgs: list[Any], targets: list[str], ref_out: list[str],
                       candidates: tuple[str, ...] = WEIGHT_CANDIDATES) -> dict[str, Any]:
    """Serve the first of `candidates` whose validation agreement with the teacher is within
    MAX_DROP of the current export's (`ref_out`: its answers to `msgs`) and at least MIN_SAME of
    whose answers equal the export's (a weak student's agreement is too noisy a guard alone); it then replaces
    <student>/gguf/student.gguf and student.json's "gguf_weight_type". Refused exports are removed.
    "answers": the served type's answers to `msgs`."""
    from student import llamacpp
    from student.gguf_export import GGUF_FILE, export_gguf

    model_dir = Path(model_dir)
    meta_file = model_dir / STUDENT_META
    ref_type = json.loads(meta_file.read_text()).get("gguf_weight_type", "f16")
    a_ref = _agreement(ref_out, targets)
    tried: dict[str, Any] = {ref_type: {"agreement": round(a_ref, 5)}}
    for wt in candidates:
        f = model_dir / GGUF_FILE.with_name(f"student.{wt}.gguf")
        export_gguf(model_dir, f, wt)
        q_out = llamacpp.LlamaCppStudent.load(model_dir, gguf_path=f, weight_type=wt).predict(msgs)
        a_q = _agreement(q_out, targets)
        same = _agreement(q_out, ref_out)
        tried[wt] = {"agreement": round(a_q, 5), "same_answers_as_" + ref_type: round(same, 5)}
        if a_q >= a_ref - MAX_DROP and same >= MIN_SAME:
            f.replace(model_dir / GGUF_FILE)
            write_json(meta_file, {**json.loads(meta_file.read_text()), "gguf_weight_type": wt})
            return {"choice": wt, "tried": tried, "answers": q_out,
                    "reason": f"{wt} agreement {a_q:.4f} within {MAX_DROP * 100:.1f} points of {ref_type}'s {a_ref:.4f}, "
                              f"{same:.0%} of its answers the same"}
        f.unlink(missing_ok=True)
    return {"choice": ref_type, "tried": tried, "answers": ref_out,
            "reason": f"no faster weight type agreed within {MAX_DROP * 100:.1f} points of {ref_type}'s {a_ref:.4f} "
                      f"with at least {MIN_SAME:.0%} of its answers the same"}


def select_and_record(model_dir: str | Path, val: list[Any], mode: str = "auto", hf_answers: list[str] | None = None,
                      weight_candidates: tuple[str, ...] = WEIGHT_CANDIDATES) -> dict[str, Any]:
    """The end-of-training step (student/train.py): choose and write it into student.json. A
    refused export is removed, so the version carries only what it serves."""
    from student.gguf_export import GGUF_FILE

    choice = choose(model_dir, val, mode, hf_answers, weight_candidates)
    if choice["choice"] != "llamacpp":
        (Path(model_dir) / GGUF_FILE).unlink(missing_ok=True)
    record(model_dir, choice)
    return choice
