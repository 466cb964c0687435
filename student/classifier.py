"""Classifier student: a small encoder + LoRA + one classification head per output field.

Used when every teacher output is a JSON object of categorical fields (Banking77:
{"intent": "card_arrival"}) or a bare label. Predictions are rendered back into the teacher's
exact text (key order, separators, indent, surrounding text), so the eval compares like with like.

The input is the last user turn only: in a logged production prompt the system prompt (and any
few-shot preamble) is the same for every record, so it adds tokens and compute but no signal,
and it would push the user's words past max_length.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from student.base import STUDENT_META, Example, Messages
from student.classifier_format import PLAIN, OutputFormat, categorical_labels, detect_format  # noqa: F401 (re-exported)
from student.classifier_finalize import FinalizeMixin
from student.encoder import (add_lora, fit_linear, head_key, layer_list, length_sorted_chunks, load_encoder, make_heads,
                             run_layers, length_bucketed_batches)

def input_text(messages: Messages) -> str:
    """The last user turn (see module docstring); falls back to all non-system text."""
    for m in reversed(messages):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "system")


# ----------------------------------------------------------------------------- the student
@dataclass
class _Batch:
    attention_mask: Any
    input_ids: Any = None  # token ids (full forward), or
    hidden: Any = None  # cached frozen-prefix states [B, T, H] (top-layers-only forward)
    targets: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.attention_mask.shape[0])

    def to(self, device) -> "_Batch":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return _Batch(mv(self.attention_mask), mv(self.input_ids), mv(self.hidden), {k: v.to(device) for k, v in self.targets.items()})


class ClassifierStudent(FinalizeMixin):
    kind = "classifier"

    def __init__(self, encoder, tokenizer, heads, fmt: OutputFormat, vocab: dict[str, list[str]], *, pooling: str, max_length: int, base_ref: dict, predict_batch_size: int = 64):
        import torch

        self.encoder, self.tokenizer, self.heads = encoder, tokenizer, heads
        self.fmt, self.vocab = fmt, vocab
        self.index = {f: {lab: i for i, lab in enumerate(labs)} for f, labs in vocab.items()}
        self.pooling, self.max_length, self.base_ref = pooling, max_length, base_ref
        self.predict_batch_size = predict_batch_size
        self.label_smoothing, self.probe_weight_decay = 0.0, 3e-3  # training-only settings, set by create()
        self.frozen_layers = 0  # bottom layers without LoRA whose output is cached during training
        self._cache: dict[str, tuple[list[int], dict[str, str]]] = {}
        self._prefix: dict[str, Any] = {}  # example id -> [T, H] states after the frozen layers
        self._probe_heads: dict[str, Any] | None = None  # heads right after the linear probe (for interpolate)
        self.interpolate = False
        self.use_knn = False  # choose a kNN mix on the val split in finalize() (set by create())
        self.knn: dict[str, Any] | None = None  # chosen {"k", "temperature", "lambda"}
        self.memory: tuple[Any, dict[str, Any]] | None = None  # (normalised train embeddings [N, H], {field: labels [N]})
        self.calibration: dict[str, Any] | None = None  # per-field temperatures fitted on the val split in finalize(); None = T 1
        self._torch = torch

    # ---- construction
    @classmethod
    def create(cls, cfg, examples: list[Example]) -> "ClassifierStudent":
        """A fresh student for `examples`: label vocab from the data, base encoder + LoRA, zeroed heads."""
        import torch

        from core.base import DistillError
        from student.models import resolve_base_model

        found = categorical_labels([e.target for e in examples], cfg.max_labels, cfg.min_examples_per_label)
        if found is None:
            raise DistillError("student.kind=classifier, but the teacher outputs are not categorical (JSON objects of bounded-cardinality fields, or bare labels); use kind auto or causal_lm")
        fmt, vocab = found
        ref = resolve_base_model(cfg.base_model, "classifier")
        encoder, tokenizer = load_encoder(ref.name_or_path)
        if cfg.encoder_dropout is not None:  # before LoRA: its own dropout comes from cfg.lora
            for m in encoder.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = cfg.encoder_dropout
        layers = layer_list(encoder)
        n_train = len(layers) if (cfg.train_layers is None or layers is None) else min(cfg.train_layers, len(layers))
        # layers_to_transform even for all layers: it keeps LoRA out of the pooler, which the loss
        # never uses (its never-trained adapter would also stall DDP's gradient all-reduce).
        encoder = add_lora(encoder, cfg.lora, list(range(len(layers) - n_train, len(layers))) if layers is not None else None)
        heads = make_heads(encoder.config.hidden_size, vocab)
        base_ref = {"bundled": "classifier"} if ref.bundled else {"name_or_path": ref.name_or_path}
        st = cls(encoder, tokenizer, heads, fmt, vocab, pooling=cfg.pooling, max_length=cfg.max_length, base_ref=base_ref, predict_batch_size=cfg.predict_batch_size)
        st.label_smoothing = cfg.label_smoothing
        st.probe_weight_decay = cfg.probe_weight_decay
        st.interpolate = cfg.interpolate
        st.use_knn = cfg.knn
        st.frozen_layers = len(layers) - n_train if layers is not None else 0
        return st

    # ---- tensors
    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts for usage reporting (no truncation, no special tokens)."""
        return [len(x) for x in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _mask(self, lengths: list[int]):
        torch = self._torch
        return (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()

    def _targets(self, targets: list[dict[str, str]]) -> dict[str, Any]:
        return {f: self._torch.tensor([self.index[f][t[f]] for t in targets]) for f in self.vocab}

    def collate(self, ids: list[list[int]], targets: list[dict[str, str]] | None = None) -> _Batch:
        torch = self._torch
        mask = self._mask([len(x) for x in ids])
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full(mask.shape, pad, dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
        # Built on the CPU, handed out on the model's device (a no-op on the CPU): every batch is
        # where the model is, so nothing downstream moves tensors.
        return _Batch(mask, input_ids=input_ids, targets=self._targets(targets) if targets is not None else {}).to(self.device)

    def collate_hidden(self, states: list[Any], targets: list[dict[str, str]]) -> _Batch:
        mask = self._mask([s.shape[0] for s in states])
        hidden = self._torch.nn.utils.rnn.pad_sequence(states, batch_first=True)
        return _Batch(mask, hidden=hidden, targets=self._targets(targets)).to(self.device)

    def _pool(self, out, mask):
        if self.pooling == "cls":
            return out[:, 0]
        m = mask.unsqueeze(-1).to(out.dtype)
        return (out * m).sum(1) / m.sum(1).clamp(min=1.0)

    def embed(self, b: _Batch):
        if b.hidden is not None:  # training fast path: only the LoRA layers run
            out = run_layers(self.encoder, b.hidden, b.attention_mask, self.frozen_layers, None)
        else:
            out = self.encoder(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state
        return self._pool(out, b.attention_mask)

    @property
    def device(self):
        return next(self.heads.parameters()).device

    def to(self, device) -> None:
        self.encoder.to(device)
        self.heads.to(device)

    def torch_modules(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "heads": self.heads}

    def head_logits(self, z) -> dict[str, Any]:
        return {f: self.heads[head_key(f)](z) for f in self.vocab}

    def logits(self, b: _Batch) -> dict[str, Any]:
        return self.head_logits(self.embed(b))

    # ---- training hooks (the loop in student/train.py drives these; see base.TrainableStudent)
    def _tensors(self, examples: list[Example]) -> tuple[list[list[int]], list[dict[str, str]]]:
        """Token ids and label dicts, tokenised once per example (the loop asks every epoch)."""
        todo = [e for e in examples if e.id not in self._cache]
        if todo:
            ids = self.encode([input_text(e.messages) for e in todo])
            for e, x in zip(todo, ids):
                labs = self.fmt.labels_of(e.target)
                if labs is None or any(labs[f] not in self.index[f] for f in self.vocab):
                    raise ValueError(f"record {e.id}: output does not fit the learned label format: {e.target[:200]!r}")
                self._cache[e.id] = (x, labs)
        pairs = [self._cache[e.id] for e in examples]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _prefix_states(self, examples: list[Example]) -> list[Any]:
        """States after the frozen bottom layers, computed once per example (LoRA-free layers
        never change, so recomputing them every epoch would be pure waste)."""
        torch = self._torch
        todo = [e for e in examples if e.id not in self._prefix]
        if todo:
            ids, _ = self._tensors(todo)
            self.train_mode(False)
            from tqdm import tqdm

            with torch.inference_mode():
                for chunk in tqdm(length_sorted_chunks(ids, 128), desc="frozen layers", unit="batch", mininterval=2.0, leave=False):
                    b = self.collate([ids[i] for i in chunk])
                    h = run_layers(self.encoder, None, b.attention_mask, 0, self.frozen_layers, input_ids=b.input_ids)
                    for row, i in enumerate(chunk):
                        self._prefix[todo[i].id] = h[row, : len(ids[i])].clone()
        return [self._prefix[e.id] for e in examples]

    def _batches(self, examples: list[Example], chunks: list[list[int]]) -> list[_Batch]:
        ids, targets = self._tensors(examples)
        if self.frozen_layers:
            states = self._prefix_states(examples)
            return [self.collate_hidden([states[i] for i in c], [targets[i] for i in c]) for c in chunks]
        return [self.collate([ids[i] for i in c], [targets[i] for i in c]) for c in chunks]

    def prepare_batches(self, examples: list[Example], batch_size: int, seed: int, epoch: int) -> list[_Batch]:
        ids, _ = self._tensors(examples)
        # Seeded by (seed, epoch) so a resumed run rebuilds the same epoch order and can skip
        # the batches it already trained on.
        rng = random.Random(seed * 100_003 + epoch)
        return self._batches(examples, length_bucketed_batches(ids, batch_size, rng))

    def loss(self, b: _Batch):
        F = self._torch.nn.functional
        lg = self.logits(b)
        return sum(F.cross_entropy(lg[f], b.targets[f], label_smoothing=self.label_smoothing) for f in self.vocab)

    def eval_loss(self, examples: list[Example]) -> dict[str, float]:
        """Plain cross-entropy (no smoothing) and exact-output accuracy on held-out examples."""
        torch, F = self._torch, self._torch.nn.functional
        ids, _ = self._tensors(examples)
        batches = self._batches(examples, length_sorted_chunks(ids, self.predict_batch_size))
        self.train_mode(False)
        total, correct = 0.0, 0
        with torch.inference_mode():
            for b in batches:
                lg = self.logits(b)
                total += float(sum(F.cross_entropy(lg[f], b.targets[f], reduction="sum") for f in self.vocab))
                ok = torch.ones(len(b), dtype=torch.bool, device=self.device)
                for f in self.vocab:
                    ok &= lg[f].argmax(-1) == b.targets[f]
                correct += int(ok.sum())
        n = max(len(examples), 1)
        return {"val_loss": total / n, "val_accuracy": correct / n}

    def warm_start(self, examples: list[Example]) -> dict[str, float]:
        """Fit every head on frozen embeddings (LoRA B is zero at init, so these are the base
        model's), so fine-tuning starts from linear-probe accuracy instead of chance. Returns
        train accuracy per field."""
        torch = self._torch
        ids, targets = self._tensors(examples)
        order = [i for c in length_sorted_chunks(ids, 128) for i in c]
        batches = self._batches(examples, length_sorted_chunks(ids, 128))
        self.train_mode(False)
        with torch.inference_mode():
            X = torch.cat([self.embed(b) for b in batches])
        X = X[torch.argsort(torch.tensor(order)).to(X.device)].clone()
        acc = {f: fit_linear(self.heads[head_key(f)], X, torch.tensor([self.index[f][t[f]] for t in targets], device=X.device), weight_decay=self.probe_weight_decay)
               for f in self.vocab}
        self._probe_heads = {k: v.detach().clone() for k, v in self.heads.state_dict().items()}
        return acc

    def trainable_state(self) -> dict[str, Any]:
        """Only what training changes (LoRA + heads): small, so checkpoints are cheap."""
        sd = {f"encoder.{k}": v.detach().clone() for k, v in self.encoder.named_parameters() if v.requires_grad}
        sd.update({f"heads.{k}": v.detach().clone() for k, v in self.heads.state_dict().items()})
        if self._probe_heads is not None:  # so a resumed run can still interpolate
            sd.update({f"probe.{k}": v for k, v in self._probe_heads.items()})
        return sd

    def load_trainable_state(self, sd: dict[str, Any]) -> None:
        params = dict(self.encoder.named_parameters())
        with self._torch.no_grad():
            for k, v in sd.items():
                if k.startswith("encoder."):
                    params[k[len("encoder.") :]].copy_(v)
        self.heads.load_state_dict({k[len("heads.") :]: v for k, v in sd.items() if k.startswith("heads.")})
        probe = {k[len("probe.") :]: v for k, v in sd.items() if k.startswith("probe.")}
        self._probe_heads = probe or self._probe_heads

    def param_groups(self, cfg) -> list[dict]:
        lora = [p for p in self.encoder.parameters() if p.requires_grad]
        return [{"params": lora, "lr": cfg.learning_rate}, {"params": list(self.heads.parameters()), "lr": cfg.head_learning_rate}]

    def train_mode(self, on: bool) -> None:
        self.encoder.train(on)
        self.heads.train(on)

    # ---- inference
    def predict(self, batch: list[Messages]) -> list[str]:
        if not batch:
            return []
        from student.knn import mixed_probs

        torch = self._torch
        ids = self.encode([input_text(m) for m in batch])
        out: list[str | None] = [None] * len(batch)
        self.train_mode(False)
        with torch.inference_mode():
            for chunk in length_sorted_chunks(ids, self.predict_batch_size):
                z = self.embed(self.collate([ids[i] for i in chunk]))
                lg = self.head_logits(z)
                if self.knn and self.memory is not None:
                    q = torch.nn.functional.normalize(z, dim=-1)
                    lg = {f: mixed_probs(lg[f], q, self.memory[0], self.memory[1][f], self.knn) for f in self.vocab}
                best = {f: lg[f].argmax(-1).tolist() for f in self.vocab}
                for row, i in enumerate(chunk):
                    out[i] = self.fmt.render({f: self.vocab[f][best[f][row]] for f in self.vocab})
        return out  # type: ignore[return-value]

    def field_probs(self, lg: dict[str, Any], q, memory: tuple[Any, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Per-field label probabilities as predict() ranks them: softmax, mixed with the kNN vote
        when one was chosen (q: L2-normalised embeddings; memory defaults to the deployed one)."""
        from student.knn import mixed_probs

        mem = memory if memory is not None else self.memory
        return {f: mixed_probs(lg[f], q, mem[0] if mem else None, mem[1][f] if mem else None, self.knn) for f in self.vocab}

    def predict_scored(self, batch: list[Messages]) -> list[tuple[str, float]]:
        """predict()'s answers, each with its calibrated confidence: the product over fields of the
        chosen label's probability (after the kNN mix), tempered by the field's temperature fitted
        on the validation split (student/calibration.py; T = 1 when the model has none)."""
        if not batch:
            return []
        from student.calibration import temper

        torch = self._torch
        temps = (self.calibration or {}).get("temperature", {})
        ids = self.encode([input_text(m) for m in batch])
        out: list[tuple[str, float] | None] = [None] * len(batch)
        self.train_mode(False)
        with torch.inference_mode():
            for chunk in length_sorted_chunks(ids, self.predict_batch_size):
                z = self.embed(self.collate([ids[i] for i in chunk]))
                probs = self.field_probs(self.head_logits(z), torch.nn.functional.normalize(z, dim=-1))
                conf = torch.ones(len(chunk), dtype=torch.float64, device=z.device)
                best = {}
                for f in self.vocab:
                    p = temper(probs[f], float(temps.get(f, 1.0)))
                    b = p.argmax(-1)
                    best[f] = b.tolist()
                    conf *= p.gather(1, b[:, None])[:, 0].double()
                conf_l = conf.tolist()
                for row, i in enumerate(chunk):
                    out[i] = (self.fmt.render({f: self.vocab[f][best[f][row]] for f in self.vocab}), conf_l[row])
        return out  # type: ignore[return-value]

    # ---- persistence
    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path / "adapter")
        self.tokenizer.save_pretrained(path / "tokenizer")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}, str(path / "heads.safetensors"))
        meta = {"kind": self.kind, "format": self.fmt.to_dict(), "vocab": self.vocab, "pooling": self.pooling,
                "max_length": self.max_length, "base_model": self.base_ref, "hidden_size": self.encoder.config.hidden_size}
        if self.knn and self.memory is not None:
            mem, labels = self.memory
            save_file({"embeddings": mem.detach().cpu().contiguous(), **{f"labels.{head_key(f)}": labels[f].cpu().contiguous() for f in self.vocab}},
                      str(path / "knn.safetensors"))
            meta["knn"] = self.knn
        if self.calibration:
            meta["calibration"] = self.calibration
        # student.json last: its presence marks a complete save.
        (path / STUDENT_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path, merge: bool = True) -> "ClassifierStudent":
        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from student.models import resolve_base_model

        path = Path(path)
        meta = json.loads((path / STUDENT_META).read_text())
        ref = meta["base_model"]
        base_path = resolve_base_model(None, "classifier").name_or_path if "bundled" in ref else ref["name_or_path"]
        encoder, _ = load_encoder(base_path)
        encoder = PeftModel.from_pretrained(encoder, str(path / "adapter"))
        if merge:  # inference only: fold LoRA into the weights, no per-call adapter overhead
            encoder = encoder.merge_and_unload()
        encoder.eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
        heads = make_heads(meta["hidden_size"], meta["vocab"])
        heads.load_state_dict(load_file(str(path / "heads.safetensors")))
        heads.eval()
        st = cls(encoder, tokenizer, heads, OutputFormat(**meta["format"]), meta["vocab"], pooling=meta["pooling"],
                 max_length=meta["max_length"], base_ref=ref)
        if meta.get("knn"):
            mem = load_file(str(path / "knn.safetensors"))
            st.knn, st.memory = meta["knn"], (mem["embeddings"], {f: mem[f"labels.{head_key(f)}"] for f in meta["vocab"]})
        st.calibration = meta.get("calibration")  # absent in older saves: T = 1
        return st
