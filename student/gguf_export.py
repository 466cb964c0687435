"""Export a saved causal-LM student (LoRA merged: <student>/merged/) to GGUF for llama.cpp.

With the `gguf` package (pinned; the same code llama.cpp's convert_hf_to_gguf.py writes through):
the base model's own GGUF gives everything that is not a weight - architecture hyper-parameters,
the tokenizer (vocab, merges, token types, special ids, pre-tokenizer) and the chat template - so
the file llama.cpp reads tokenises and templates exactly as the base it was trained from; the
weights are the merged student's, renamed with gguf's tensor map and, for q/k projections,
permuted from HF's rotate-half layout to llama.cpp's interleaved rotary layout (what
convert_hf_to_gguf.py's LlamaModel.permute does). That needs a GGUF base: the bundled
SmolLM2-135M-Instruct (the default) or any `student.base_model: x.gguf`. For an HF-format base,
llama.cpp's convert_hf_to_gguf.py (in the llama-cpp-python sdist, vendor/llama.cpp/) converts
<student>/merged/ directly: `python convert_hf_to_gguf.py <student>/merged --outfile
<student>/gguf/student.gguf --outtype q8_0`.

Weight types: "f16" (default), "f32", "q8_0" (written here with gguf's quantiser), and "q6_k",
"q4_k_m", "q4_0" (written by llama.cpp's own llama_model_quantize from an f32 export: K-quants
need it, and tensors whose rows are not a multiple of 256 - SmolLM2's 576-wide ones - get its
fallback type). f16 and f32 gave HF's greedy answer token for token on the bundled model; the
quantised types (llama.cpp then also quantises activations to 8 bits in its dot products) change
some answers, so a type is served only when the trained student's validation agreement with it
stays within a tolerance of f16's (student/engine.py choose_weight_type). Norms stay f32, as
llama.cpp's converter keeps them.
"""
from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any

from core.base import DistillError
from core.rundir import STUDENT_META

GGUF_FILE = Path("gguf") / "student.gguf"  # inside a saved student directory
WEIGHT_TYPES = ("f16", "f32", "q8_0", "q6_k", "q4_k_m", "q4_0")
_LLAMA_QUANT = {"q6_k": 18, "q4_k_m": 15, "q4_0": 2}  # llama_ftype for llama_model_quantize
_FTYPE = {"f32": 0, "f16": 1, "q8_0": 7}  # general.file_type (llama_ftype)
_SKIP_KV = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version")


def base_gguf(meta: dict[str, Any]) -> Path:
    """The GGUF the student's base model came from (student.json's base_model: None = bundled)."""
    from student.models import resolve_base_model

    ref = resolve_base_model(meta.get("base_model"), "causal_lm")
    if not ref.gguf_file:
        raise DistillError(f"GGUF export: base model {meta.get('base_model')!r} is not a GGUF file; convert <student>/merged with "
                           "llama.cpp's convert_hf_to_gguf.py (vendor/llama.cpp in the llama-cpp-python sdist) instead")
    return Path(ref.name_or_path) / ref.gguf_file


def permute_rotary(w: Any, n_head: int) -> Any:
    """HF q/k projection rows (rotate-half pairs) -> llama.cpp's interleaved pairs (numpy)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _copy_kv(reader: Any, writer: Any) -> None:
    import gguf

    for key, field in reader.fields.items():
        if key.startswith(_SKIP_KV):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), vtype, sub)


def export_gguf(model_dir: str | Path, out_file: str | Path | None = None, weight_type: str = "f16") -> Path:
    """Write <model_dir>/gguf/student.gguf (or `out_file`) from <model_dir>/merged; returns the path."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    if weight_type not in WEIGHT_TYPES:
        raise DistillError(f"GGUF weight type {weight_type!r}: expected one of {', '.join(WEIGHT_TYPES)}")
    model_dir = Path(model_dir)
    if weight_type in _LLAMA_QUANT:
        out_file = Path(out_file) if out_file else model_dir / GGUF_FILE
        src = export_gguf(model_dir, out_file.with_name(out_file.name + ".f32"), "f32")
        try:
            return quantize_gguf(src, out_file, weight_type)
        finally:
            src.unlink(missing_ok=True)
    meta = json.loads((model_dir / STUDENT_META).read_text())
    if meta.get("kind") != "causal_lm":
        raise DistillError(f"{model_dir}: GGUF export is for causal-LM students (this one is {meta.get('kind')!r})")
    reader = gguf.GGUFReader(base_gguf(meta))
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":  # the q/k permutation and the name map below are llama's
        raise DistillError(f"GGUF export: base architecture {arch!r} is not supported (llama only); use convert_hf_to_gguf.py")
    n_head = int(reader.fields[f"{arch}.attention.head_count"].contents())
    n_kv = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    n_blocks = int(reader.fields[f"{arch}.block_count"].contents())
    weights: dict[str, Any] = {}
    for f in sorted((model_dir / "merged").glob("*.safetensors")):
        weights.update(load_file(str(f)))
    if not weights:
        raise DistillError(f"{model_dir}/merged has no safetensors weights")
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16, "f32": gguf.GGMLQuantizationType.F32}[weight_type]

    out_file = Path(out_file) if out_file else model_dir / GGUF_FILE
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    _copy_kv(reader, writer)
    writer.add_file_type(_FTYPE[weight_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tied = "lm_head.weight" in weights and np.array_equal(weights["lm_head.weight"], weights.get("model.embed_tokens.weight"))
    for hf_name, w in weights.items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd for a tied head
        name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise DistillError(f"GGUF export: no llama.cpp name for tensor {hf_name!r}")
        w = np.asarray(w, dtype=np.float32)
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            w = permute_rotary(w, n_head)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            w = permute_rotary(w, n_kv)
        if w.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, np.ascontiguousarray(w))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, w.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out_file)  # readers never see a half-written file
    return out_file


def quantize_gguf(src: str | Path, out_file: str | Path, weight_type: str) -> Path:
    """llama.cpp's quantiser (llama-cpp-python's llama_model_quantize) from an f32/f16 GGUF."""
    try:
        from llama_cpp import llama_cpp as C
    except ImportError:
        raise DistillError(f"GGUF weight type {weight_type!r} is written by llama.cpp's quantiser: llama-cpp-python is not installed") from None
    out_file = Path(out_file)
    tmp = out_file.with_name(out_file.name + ".tmp")
    params = C.llama_model_quantize_default_params()
    params.ftype = _LLAMA_QUANT[weight_type]
    params.nthread = 1  # a one-off write; the machine's other core keeps serving/training
    rc = C.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise DistillError(f"llama_model_quantize {src} -> {weight_type} failed (return code {rc})")
    os.replace(tmp, out_file)
    return out_file
