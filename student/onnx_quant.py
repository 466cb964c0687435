"""Static int8 ONNX path for classifier students ("onnx_int8"): the fp32 export of
student/onnx_path.py quantised once by onnxruntime.quantization.quantize_static (QDQ format,
per-channel int8 weights, activation scales calibrated once on training inputs).

Why static and not dynamic: dynamic int8 (torch quantize_dynamic, or ORT's) picks each
activation's scale from the batch it is in, so a request's answer depends on its batch
neighbours (Banking77 demo: 1.2 % of validation answers changed between batch 1 and batched).
With scales fixed at calibration every row is computed alone; fast_path still checks batch flips.

Only MatMul is quantised (DEFAULT_OPS): the attention mask is added to the scores after the
Q.K^T MatMul and before Softmax, in fp32, so padded positions stay at -inf whatever the
calibrated ranges are; quantising Add/Softmax too would clip the mask into the calibrated range
and let padding leak into real tokens (a batch dependency through padding).

Calibration inputs are one text at a time, unpadded (the ranges see real tokens only).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

ONNX_INT8_FILE = Path("onnx") / "encoder.int8.onnx"  # inside a saved student directory
DEFAULT_OPS = ("MatMul",)
# Kept fp32: the two projections back into the residual stream (attention output and FFN down, node
# names ".../attention/output/dense/MatMul", ".../layer.N/output/dense/MatMul"). Banking77 demo
# (852 val, MinMax): all weight MatMuls int8 0.9308 vs fp32 0.9401; FFN down kept 0.9366;
# attention output kept 0.9308; both kept 0.9401 (= fp32), with 7 of each layer's 12 384x384
# weight blocks (Q, K, V, FFN up) still int8.
KEEP_FP32 = (r"/output/dense/",)
CALIBRATION_TEXTS = 256  # how many training inputs set the activation ranges (one MinMax pass, batch 1)


class _Reader:
    """onnxruntime CalibrationDataReader over token-id lists: one unpadded example per call."""

    def __init__(self, ids: list[list[int]]):
        self._it = iter(ids)

    def get_next(self) -> dict[str, Any] | None:
        import numpy as np

        row = next(self._it, None)
        if row is None:
            return None
        a = np.asarray([row], dtype=np.int64)
        return {"input_ids": a, "attention_mask": np.ones_like(a)}


def calibration_ids(student: Any, texts: list[str], n: int = CALIBRATION_TEXTS) -> list[list[int]]:
    """Token ids of an evenly spaced sample of `texts` (the student's own tokenizer and max_length)."""
    step = max(1, len(texts) // max(1, n))
    return student.encode(texts[::step][:n])


def quantize(fp32_file: str | Path, out_file: str | Path, ids: list[list[int]],
             op_types: tuple[str, ...] | None = DEFAULT_OPS, per_channel: bool = True, reduce_range: bool = True,
             weights_only: bool = True, keep_fp32: tuple[str, ...] = KEEP_FP32, calibrate: str = "MinMax") -> Path:
    """Write the static-int8 QDQ model of `fp32_file` to `out_file`, activation ranges calibrated on `ids`.
    op_types None quantises every op type ORT supports; weights_only leaves attention's activation x
    activation MatMuls fp32; keep_fp32: regexes of node names left fp32; reduce_range: 7-bit weights
    (AVX2 without VNNI multiplies u8 x s8 pairs into saturating int16); calibrate: a CalibrationMethod
    name (Percentile/Entropy need equal-length inputs, which one-text calibration does not give)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not ids:
        raise ValueError("static int8 quantisation: no calibration inputs (the training split is empty)")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="distill-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # ORT's recommended pre-pass (shape inference + graph optimisation), without its symbolic shape
        # inference: that cannot resolve the position-ids slice Min(512, seq) of the HF export even with
        # auto_merge, and on failing it leaves sym_shape_infer_temp.onnx (+ a .data file) in the working
        # directory. ONNX's own shape inference and the optimiser still run.
        quant_pre_process(str(fp32_file), str(pre), skip_symbolic_shape=True)
        part = out_file.with_suffix(".onnx.tmp")
        exclude = (_activation_matmuls(pre) if weights_only else []) + _named(pre, keep_fp32)
        quantize_static(str(pre), str(part), _Reader(ids), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(op_types) if op_types else None, nodes_to_exclude=exclude,
                        calibrate_method=CalibrationMethod[calibrate],
                        extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True})
    part.replace(out_file)
    return out_file


def _activation_matmuls(model_file: Path) -> list[str]:
    """MatMul nodes with no weight input (attention's Q.K^T and probs.V): both sides are
    activations, so both would take a calibrated range; at ~15 tokens they are a small share of the
    FLOPs, and the Linear layers' MatMuls (one side a weight) are where int8 pays."""
    import onnx

    m = onnx.load(str(model_file), load_external_data=False)
    weights = {i.name for i in m.graph.initializer}
    consts = {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in m.graph.node if n.op_type == "MatMul" and not any(x in weights or x in consts for x in n.input)]


def _named(model_file: Path, parts: tuple[str, ...]) -> list[str]:
    """Nodes whose name matches any of the regexes `parts` (re.search)."""
    import re

    import onnx

    if not parts:
        return []
    return [n.name for n in onnx.load(str(model_file), load_external_data=False).graph.node if any(re.search(p, n.name) for p in parts)]


def build(student: Any, model_dir: str | Path, texts: list[str], out_file: str | Path | None = None, **kw: Any) -> Path:
    """Export the student's encoder (reusing a saved fp32 export) and quantise it into `out_file`
    (default <model_dir>/onnx/encoder.int8.onnx), calibrated on `texts` (training inputs)."""
    from student.onnx_path import ONNX_FILE, export

    fp32 = Path(model_dir) / ONNX_FILE
    with tempfile.TemporaryDirectory(prefix="distill-onnx-") as tmp:
        src = fp32 if fp32.is_file() else export(student, Path(tmp) / "encoder.onnx")
        return quantize(src, out_file or Path(model_dir) / ONNX_INT8_FILE, calibration_ids(student, texts), **kw)


def use_onnx_int8(student: Any, model_dir: str | Path, threads: int | None = None) -> Any:
    """Swap the student's encoder for the saved static-int8 ONNX one. Unlike the fp32 export it is
    not rebuilt on load: it needs calibration inputs, so it exists only where the choice wrote it."""
    from student.onnx_path import OrtEncoder

    path = Path(model_dir) / ONNX_INT8_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no static int8 export in this student (the fast-path choice writes it when it "
                                f"is chosen; build one with student.onnx_quant.build)")
    student.encoder = OrtEncoder(path, threads)
    return student
