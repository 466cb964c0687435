"""The fast-path choice's ONNX candidates (fast_path.choose builds them through `candidate`):
static int8 ONNX (student/onnx_quant.py) and fp32 ONNX (student/onnx_path.py). Its own module
because it needs both, and onnx_quant builds on onnx_path's export and encoder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.answer_shape import last_user_text
from student.onnx_path import ONNX_FILE, OrtEncoder, export
from student.onnx_quant import ONNX_INT8_FILE, build

FILES = {"onnx": ONNX_FILE, "onnx_int8": ONNX_INT8_FILE}


def candidate(name: str, model_dir: str | Path, calibration: list[list[dict]]) -> Any:
    """The saved student with its encoder on the ONNX path `name` ("onnx_int8": quantised with
    activation ranges from the `calibration` inputs; "onnx": the fp32 export), its file written
    into the student directory so the server loads what was scored."""
    from student.kinds import load_student

    st = load_student(model_dir)
    path = Path(model_dir) / FILES[name]
    if name == "onnx_int8":
        build(st, model_dir, [last_user_text(m) for m in calibration])
    elif not path.is_file():
        export(st, path)
    st.encoder = OrtEncoder(path)
    return st


def keep_only(model_dir: str | Path, chosen: str) -> None:
    """Delete the ONNX files of the paths not chosen: a saved student carries what it serves."""
    for name, file in FILES.items():
        if name != chosen:
            (Path(model_dir) / file).unlink(missing_ok=True)
