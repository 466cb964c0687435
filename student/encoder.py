"""Encoder plumbing for the classifier student: loading, LoRA on the top layers, the split
forward behind the frozen-prefix cache, heads, the linear-probe fit and length-aware batching."""
from __future__ import annotations

import random


def head_key(field_name: str) -> str:
    # ModuleDict keys cannot contain "."; field names are arbitrary JSON keys, so add a stable
    # hash to keep two names that sanitise alike apart.
    from core.base import stable_hash

    return "f_" + "".join(c if c.isalnum() else "_" for c in field_name)[:40] + "_" + stable_hash(field_name, 6)


def load_encoder(name_or_path: str):
    from transformers import AutoModel, AutoTokenizer

    from core.base import DistillError

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        encoder = AutoModel.from_pretrained(name_or_path)
    except OSError as e:
        raise DistillError(f"student.base_model: cannot load {name_or_path!r} (not a local model dir, and no hub access with HF_HUB_OFFLINE): {e}") from None
    return encoder, tokenizer


def add_lora(encoder, lcfg, layers: list[int] | None = None):
    from peft import LoraConfig, get_peft_model

    targets = lcfg.target_modules
    if targets is None and encoder.config.model_type in ("bert", "roberta", "xlm-roberta", "electra"):
        # All linear layers: attention and the FFN ("dense" also matches the unused pooler,
        # which layers_to_transform then excludes).
        targets = ["query", "key", "value", "dense"]
    extra = {"layers_to_transform": layers, "layers_pattern": "layer"} if layers is not None else {}
    conf = LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout, target_modules=targets, **extra)
    return get_peft_model(encoder, conf)


def _base(encoder):
    """The plain transformers model under a PeftModel (or the model itself once merged)."""
    return encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder


def layer_list(encoder):
    enc = getattr(_base(encoder), "encoder", None)
    return getattr(enc, "layer", None)


def run_layers(encoder, hidden, mask, start: int, stop: int | None, input_ids=None):
    """Run encoder layers [start, stop) (embeddings first when input_ids is given): the split
    forward behind the frozen-prefix cache. Same mask construction as BertModel.forward."""
    model = _base(encoder)
    layers = model.encoder.layer
    if input_ids is not None:
        hidden = model.embeddings(input_ids=input_ids)
    if hasattr(model, "_create_attention_masks"):
        ext, _ = model._create_attention_masks(attention_mask=mask, encoder_attention_mask=None, embedding_output=hidden,
                                               encoder_hidden_states=None, past_key_values=None)
    else:  # older layouts: additive [B, 1, 1, T] mask
        ext = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * _dtype_min(hidden.dtype)
    for layer in layers[start:stop]:
        out = layer(hidden, ext)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def _dtype_min(dtype):
    import torch

    return torch.finfo(dtype).min


def make_heads(hidden: int, vocab: dict[str, list[str]]):
    import torch

    heads = torch.nn.ModuleDict({head_key(f): torch.nn.Linear(hidden, len(labs)) for f, labs in vocab.items()})
    for h in heads.values():  # zero init: before the linear probe every label is equally likely
        torch.nn.init.zeros_(h.weight)
        torch.nn.init.zeros_(h.bias)
    return heads


def fit_linear(head, X, y, steps: int = 300, weight_decay: float = 1e-4, loss=None) -> float:
    """Multinomial logistic regression on fixed features, written straight into `head`; `loss`
    (logits, y) -> scalar replaces cross-entropy (the set heads pass their per-label BCE). Returns
    the train accuracy: argmax == y, or for a float multi-label y every label right at logit 0."""
    import torch

    loss = loss or torch.nn.functional.cross_entropy
    mu, sd = X.mean(0), X.std(0).clamp(min=1e-6)
    Xs = (X - mu) / sd  # standardise for a well-conditioned fit, then fold back into W, b
    lin = torch.nn.Linear(X.shape[1], head.out_features, device=X.device)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss(lin(Xs), y) + weight_decay * lin.weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        head.weight.copy_(lin.weight / sd)
        head.bias.copy_(lin.bias - (lin.weight * mu / sd).sum(1))
        if y.is_floating_point():
            return ((head(X) > 0) == (y > 0.5)).all(-1).float().mean().item()
        return (head(X).argmax(-1) == y).float().mean().item()


def length_sorted_chunks(ids: list[list[int]], size: int) -> list[list[int]]:
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def length_bucketed_batches(ids: list[list[int]], size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: little padding (speed) while staying random."""
    order = list(range(len(ids)))
    rng.shuffle(order)
    pool = size * 50
    batches = []
    for s in range(0, len(order), pool):
        chunk = sorted(order[s : s + pool], key=lambda i: len(ids[i]))
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches
