"""The fast-path choice's ONNX candidates (fast_path.choose calls `consider` when torch int8 was
refused): static int8 ONNX (student/onnx_quant.py) and fp32 ONNX (student/onnx_path.py). Its own
module because it needs both, and onnx_quant builds on onnx_path's export and encoder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.answer_shape import last_user_text
from student.onnx_path import ONNX_FILE, OrtEncoder, available, export
from student.onnx_quant import ONNX_INT8_FILE, build


def consider(choice: dict[str, Any], model_dir: str | Path, messages: list[list[dict]], targets: list[str],
             n_train: int | None, agreement: Any, rate: Any = None, max_drop: float = 0.002, flips: Any = None,
             calibration: list[list[dict]] | None = None) -> dict[str, Any]:
    """fast_path.choose's result, with the ONNX paths tried when int8 was refused: static int8
    ("onnx_int8", student/onnx_quant.py) first, then fp32 ONNX ("onnx"); the first whose
    validation agreement is within `max_drop` of fp32's is served (onnx_int8 also needs
    `flips(student, messages)` <= max_drop: answers that do not depend on the batch). Both are
    scored and recorded; only the chosen one's file is kept in the saved student. `agreement`,
    `rate` and `flips` are fast_path's, so all paths are scored alike. calibration: the messages
    whose inputs set onnx_int8's activation ranges (training inputs; default the validation ones)."""
    from student.kinds import load_student

    acc = choice.get("agreement") or {}
    if choice.get("choice") != "fp32" or "fp32" not in acc or not available():
        return choice
    out_file = Path(model_dir) / ONNX_FILE
    export(load_student(model_dir), out_file)
    scores, verdicts = {}, []
    for name in ("onnx_int8", "onnx"):
        st = load_student(model_dir)
        if name == "onnx_int8":
            build(st, model_dir, [last_user_text(m) for m in (calibration or messages)])
            st.encoder = OrtEncoder(Path(model_dir) / ONNX_INT8_FILE)
        else:
            st.encoder = OrtEncoder(out_file)
        with st.against_training_rows(n_train):
            a = agreement(st, messages, targets)
            f = flips(st, messages) if flips is not None and name == "onnx_int8" else 0.0
            r = rate(st, messages) if rate is not None else None
        ok = a >= acc["fp32"] - max_drop and f <= max_drop
        scores[name] = (a, f, r, ok)
        verdicts.append(f"{name} agreement {a:.4f} within {max_drop * 100:.1f} points of fp32's {acc['fp32']:.4f}"
                        if a >= acc["fp32"] - max_drop else
                        f"{name} agreement {a:.4f} more than {max_drop * 100:.1f} points below fp32's {acc['fp32']:.4f}")
        if name == "onnx_int8" and flips is not None:
            verdicts[-1] += f", {f:.1%} batch flips"
    chosen = next((n for n in ("onnx_int8", "onnx") if scores[n][3]), "fp32")
    for name, file in (("onnx", out_file), ("onnx_int8", Path(model_dir) / ONNX_INT8_FILE)):
        if name != chosen:
            file.unlink(missing_ok=True)
    out = {**choice, "agreement": {**acc, **{n: round(v[0], 5) for n, v in scores.items()}}}
    if flips is not None:
        out["onnx_int8_batch_flips"] = round(scores["onnx_int8"][1], 5)
    if rate is not None and "rate_c1_per_s" in choice:
        out["rate_c1_per_s"] = {**choice["rate_c1_per_s"], **{n: round(v[2], 1) for n, v in scores.items()}}
    out["choice"], out["reason"] = chosen, "; ".join([str(choice.get("reason")), *verdicts])
    return out
