"""GGUF -> safetensors cache for the bundled offline causal LM (SmolLM2-135M-Instruct).

transformers can read the GGUF directly but dequantises it to float32 on every load (~20 s on
2 cores); converting once into an ordinary HF directory (config + safetensors + tokenizer) makes
every later load a plain `from_pretrained(dir)`. The cache key includes the GGUF's size and
mtime so a package upgrade produces a fresh conversion instead of reusing a stale one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from core.base import default_cache_dir, stable_hash

def convert_gguf(gguf: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Dequantise `gguf` once into `<cache_dir>/<stem>-<key>/`; return that HF model directory."""
    gguf = Path(gguf)
    st = gguf.stat()
    key = stable_hash([gguf.name, st.st_size, int(st.st_mtime)], 10)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Write to a temp dir and rename: two processes converting at once (or one killed midway)
    # never leave a half-written directory that later loads would trust.
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}."))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the cache is shared
    try:
        # transformers marks GGUF-loaded models as quantized and refuses to serialise them, but
        # the weights are already plain float32 tensors: drop the marker, then save normally.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its copy is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def loadable_base_model(base_model: str | None, cache_dir: str | Path | None = None) -> str:
    """What `from_pretrained` should load for a causal-LM student: a hub id / local dir as given,
    or, for the bundled model (base_model None) or any .gguf file, its cached safetensors conversion."""
    from student.models import resolve_base_model

    ref = resolve_base_model(base_model, "causal_lm")
    if ref.gguf_file:
        return str(convert_gguf(Path(ref.name_or_path) / ref.gguf_file, cache_dir))
    return ref.name_or_path


if __name__ == "__main__":  # python -m student.convert  -> converts (once) and prints the cached dir
    print(loadable_base_model(None))
