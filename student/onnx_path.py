"""The ONNX Runtime path for classifier students: the merged encoder exported once to ONNX and
run by onnxruntime (CPU), the heads, pooling and kNN mix staying in torch (they are a tiny share
of the cost and carry the decision boundary, as on the int8 path).

student/fast_path.py owns the choice: "onnx" is one more candidate beside fp32 and int8, served
only when its validation agreement is within `max_drop` (fast_path.MAX_DROP) of fp32's. The export lives in the
saved student (`onnx/encoder.onnx`, written by the choice at the end of training, so servers load
it without exporting); a student without one is exported into a temporary directory on load.

Order of preference (fast_path.candidates): onnx_int8 (static int8 ONNX, student/onnx_quant.py),
then onnx, then torch int8, then fp32 - fastest first; the first within max_drop (and, for the int8
paths, with answers that do not depend on the batch) is served. bench/serve_classifier.py measures them all.

onnxruntime and onnx (torch's TorchScript exporter, `dynamo=False`, writes the graph through it)
are pinned in requirements.lock.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ONNX_FILE = Path("onnx") / "encoder.onnx"  # inside a saved student directory
OPSET = 17


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


RUN_COST_TOKENS = 48  # one extra Session.run costs about as much as this many padded tokens (MiniLM-L6, 2 cores)


def length_groups(lens: list[int], run_cost: int = RUN_COST_TOKENS) -> list[list[int]]:
    """Row indices split into groups of similar length, minimising padded tokens (each group padded
    to its longest row) plus `run_cost` per group: exact DP over the rows sorted by length."""
    order = sorted(range(len(lens)), key=lambda i: lens[i])
    n = len(order)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):  # best[j]: cheapest split of the j shortest rows; group (i, j] padded to row j-1
        for i in range(j):
            c = best[i] + lens[order[j - 1]] * (j - i) + run_cost
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


class OrtEncoder:
    """Stands in for the HF encoder in ClassifierStudent.token_states: called with input_ids and
    attention_mask (torch), returns an object whose last_hidden_state is a torch tensor."""

    def __init__(self, onnx_path: str | Path, threads: int | None = None):
        import onnxruntime as ort
        import torch

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the torch thread count the server chose (idle cores): ORT's default takes every core
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        self.path = Path(onnx_path)
        self._torch = torch

    def __call__(self, input_ids: Any, attention_mask: Any) -> Any:
        import numpy as np

        ids = input_ids.cpu().numpy().astype("int64")
        mask = attention_mask.cpu().numpy().astype("int64")
        lens = mask.sum(1)
        groups = length_groups(lens.tolist())
        if len(groups) == 1:
            out = self._run(ids, mask)
        else:  # each group cut to its own longest row: the server's batch is padded to its longest request
            out = None
            for rows in groups:
                n = int(lens[rows].max())
                part = self._run(ids[rows, :n], mask[rows, :n])
                if out is None:
                    out = np.zeros((ids.shape[0], ids.shape[1], part.shape[-1]), dtype=part.dtype)
                out[rows, :n] = part  # positions past a row's length stay 0: masked out of pooling, as padding is
        return SimpleNamespace(last_hidden_state=self._torch.from_numpy(out))

    def _run(self, ids: Any, mask: Any) -> Any:
        return self.session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]

    # what ClassifierStudent calls on its encoder outside the forward
    def train(self, mode: bool = True) -> "OrtEncoder":
        return self

    def eval(self) -> "OrtEncoder":
        return self

    def to(self, device: Any) -> "OrtEncoder":
        return self


def export(student: Any, out_file: str | Path) -> Path:
    """Export the student's (merged) encoder to `out_file`: inputs input_ids, attention_mask
    [batch, seq] (both dynamic), output last_hidden_state [batch, seq, hidden]."""
    import warnings

    import torch

    enc = student.encoder
    if isinstance(enc, OrtEncoder):
        return enc.path
    if hasattr(enc, "merge_and_unload"):  # a PeftModel: the exported graph has LoRA folded in
        enc = enc.merge_and_unload()

    class _Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_suffix(".onnx.tmp")
    ids = torch.ones((2, 8), dtype=torch.long)
    enc.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes: shapes are dynamic axes here
        torch.onnx.export(_Wrap(enc), (ids, torch.ones_like(ids)), str(tmp), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        "last_hidden_state": {0: "batch", 1: "seq"}})
    tmp.replace(out_file)
    return out_file


def use_onnx(student: Any, model_dir: str | Path | None = None, threads: int | None = None) -> Any:
    """Swap the student's encoder for the ONNX Runtime one (the saved export when model_dir has
    it, else a fresh export in a temporary directory). Returns the student."""
    saved = Path(model_dir) / ONNX_FILE if model_dir is not None else None
    if saved is not None and saved.is_file():
        path = saved
    else:
        path = export(student, Path(tempfile.mkdtemp(prefix="distill-onnx-")) / "encoder.onnx")
    student.encoder = OrtEncoder(path, threads)
    return student


def export_saved(model_dir: str | Path) -> Path:
    """Write <model_dir>/onnx/encoder.onnx from the saved student (what the fast-path choice does
    at the end of training, so every server of the version loads the same graph)."""
    from student.kinds import load_student

    return export(load_student(model_dir), Path(model_dir) / ONNX_FILE)
