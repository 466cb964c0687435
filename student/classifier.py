"""Classifier student: a small encoder + LoRA + one head per output field.

Used when every teacher output is a JSON object of categorical fields (Banking77:
{"intent": "card_arrival"}) or a bare label, and - through a Layout (student/fields.py,
student/structured.py) - when its fields are label sets (multi-label) and spans copied from the
user's message (NLU++: {"intents": [...], "slots": {"date": "next week"}}). Predictions are
rendered back into the teacher's exact text (key order, separators, indent, omitted keys,
surrounding text), so the eval compares like with like.

The input is the last user turn only: in a logged production prompt the system prompt (and any
few-shot preamble) is the same for every record, so it adds tokens and compute but no signal,
and it would push the user's words past max_length.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from student.base import Example, Messages
from student.classifier_format import PLAIN, OutputFormat, categorical_labels, detect_format  # noqa: F401 (re-exported)
from core.answer_shape import has_structure
from core.answer_shape import last_user_text as input_text  # noqa: F401 (the encoder's input; re-exported)
from student.classifier_finalize import FinalizeMixin
from student.classifier_persist import PersistMixin
from student.encoder import (add_lora, fit_linear, head_key, layer_list, length_sorted_chunks, load_encoder, make_heads,
                             run_layers, length_bucketed_batches)
from student.fields import Layout
from student.structured import OK, StructuredMixin


# ----------------------------------------------------------------------------- the student
@dataclass
class _Batch:
    attention_mask: Any
    input_ids: Any = None  # token ids (full forward), or
    hidden: Any = None  # cached frozen-prefix states [B, T, H] (top-layers-only forward)
    targets: dict[str, Any] = field(default_factory=dict)
    span_ok: Any = None  # [B, T] bool: positions a span pointer may use (span fields only)

    def __len__(self) -> int:
        return int(self.attention_mask.shape[0])

    def to(self, device) -> "_Batch":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return _Batch(mv(self.attention_mask), mv(self.input_ids), mv(self.hidden), {k: v.to(device) for k, v in self.targets.items()}, mv(self.span_ok))


class ClassifierStudent(FinalizeMixin, StructuredMixin, PersistMixin):
    kind = "classifier"

    def __init__(self, encoder, tokenizer, heads, fmt: OutputFormat, vocab: dict[str, list[str]], *, pooling: str, max_length: int, base_ref: dict, predict_batch_size: int = 64, layout: Layout | None = None):
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
        self.use_lexical = False  # fit and weigh a TF-IDF model in finalize() (student/lexical.py; set by create())
        self.lexical: Any = None  # LexicalModel, mixed into field_probs at self.lexical_weight (field -> w)
        self.lexical_weight: dict[str, float] = {}
        self.calibration: dict[str, Any] | None = None  # per-field temperatures fitted on the val split in finalize(); None = T 1
        self._torch = torch
        self._init_structured(layout)  # set / span fields (none without a layout)

    # ---- construction
    @classmethod
    def create(cls, cfg, examples: list[Example]) -> "ClassifierStudent":
        """A fresh student for `examples`: label vocab from the data, base encoder + LoRA, zeroed heads."""
        import torch

        from core.base import DistillError
        from student.models import resolve_base_model

        targets = [e.target for e in examples]
        found = None if has_structure(targets) else categorical_labels(targets, cfg.max_labels, cfg.min_examples_per_label)
        layout = None
        if found is None:  # not all-categorical: label sets and spans need a layout
            layout, fit = Layout.detect(targets, [input_text(e.messages) for e in examples], cfg.max_labels, cfg.min_examples_per_label)
            if layout is None:
                raise DistillError(f"student.kind=classifier, but the teacher outputs' field {fit['decided_by']!r} is {fit['reason']}: "
                                   "the encoder student produces categorical fields, label sets and spans of the input only; use kind auto or causal_lm")
            found = (layout.style, layout.cats)
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
        st = cls(encoder, tokenizer, heads, fmt, vocab, pooling=cfg.pooling, max_length=cfg.max_length, base_ref=base_ref,
                 predict_batch_size=cfg.predict_batch_size, layout=layout)
        st.span_tags = cfg.span_tags
        st.add_structured_heads(heads, encoder.config.hidden_size)
        st.label_smoothing = cfg.label_smoothing
        st.probe_weight_decay = cfg.probe_weight_decay
        st.interpolate = cfg.interpolate
        st.use_knn = cfg.knn
        st.use_lexical = cfg.lexical
        st.frozen_layers = len(layers) - n_train if layers is not None else 0
        return st

    # ---- tensors
    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def encode_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Token ids and each token's character offsets in its text (span fields cut text by them)."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        return enc["input_ids"], [[tuple(o) for o in offs] for offs in enc["offset_mapping"]]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts for usage reporting (no truncation, no special tokens)."""
        return [len(x) for x in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _mask(self, lengths: list[int]):
        torch = self._torch
        return (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()

    def _targets(self, targets: list[dict[str, str]]) -> dict[str, Any]:
        return {**{f: self._torch.tensor([self.index[f][t[f]] for t in targets]) for f in self.vocab}, **self._structured_tensors(targets)}

    def _ok(self, oks: list[list[bool]] | None, width: int):
        return self.span_ok_tensor(oks, width) if self.spans and oks is not None else None

    def collate(self, ids: list[list[int]], targets: list[dict[str, str]] | None = None, oks: list[list[bool]] | None = None) -> _Batch:
        torch = self._torch
        mask = self._mask([len(x) for x in ids])
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full(mask.shape, pad, dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
        # Built on the CPU, handed out on the model's device (a no-op on the CPU): every batch is
        # where the model is, so nothing downstream moves tensors.
        if oks is None and targets is not None and self.spans:
            oks = [t[OK] for t in targets]
        return _Batch(mask, input_ids=input_ids, targets=self._targets(targets) if targets is not None else {},
                      span_ok=self._ok(oks, mask.shape[1])).to(self.device)

    def collate_hidden(self, states: list[Any], targets: list[dict[str, str]]) -> _Batch:
        mask = self._mask([s.shape[0] for s in states])
        hidden = self._torch.nn.utils.rnn.pad_sequence(states, batch_first=True)
        oks = [t[OK] for t in targets] if self.spans else None
        return _Batch(mask, hidden=hidden, targets=self._targets(targets), span_ok=self._ok(oks, mask.shape[1])).to(self.device)

    def _pool(self, out, mask):
        if self.pooling == "cls":
            return out[:, 0]
        m = mask.unsqueeze(-1).to(out.dtype)
        return (out * m).sum(1) / m.sum(1).clamp(min=1.0)

    def token_states(self, b: _Batch):
        if b.hidden is not None:  # training fast path: only the LoRA layers run
            return run_layers(self.encoder, b.hidden, b.attention_mask, self.frozen_layers, None)
        return self.encoder(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state

    def embed(self, b: _Batch):
        return self._pool(self.token_states(b), b.attention_mask)

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

    def forward_all(self, b: _Batch) -> tuple[Any, dict[str, Any]]:
        """(pooled embedding, categorical logits per field + set logits and span pointers)."""
        out = self.token_states(b)
        z = self._pool(out, b.attention_mask)
        return z, {**self.head_logits(z), **self.structured_logits(z, out, b.span_ok)}

    def logits(self, b: _Batch) -> dict[str, Any]:
        return self.forward_all(b)[1]

    # ---- training hooks (the loop in student/train.py drives these; see base.TrainableStudent)
    def _tensors(self, examples: list[Example]) -> tuple[list[list[int]], list[dict[str, str]]]:
        """Token ids and label dicts, tokenised once per example (the loop asks every epoch)."""
        uncached = [e for e in examples if e.id not in self._cache]
        if uncached and self.layout is not None:
            users = [input_text(e.messages) for e in uncached]
            ids, offs = self.encode_offsets(users)
            for e, x, u, o in zip(uncached, ids, users, offs):
                labs = self._structured_targets(e.target, u, o, e.id)
                if any(labs[f] not in self.index[f] for f in self.vocab):
                    raise ValueError(f"record {e.id}: output does not fit the learned label format: {e.target[:200]!r}")
                self._cache[e.id] = (x, labs)
        elif uncached:
            ids = self.encode([input_text(e.messages) for e in uncached])
            for e, x in zip(uncached, ids):
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
        uncached = [e for e in examples if e.id not in self._prefix]
        if uncached:
            ids, _ = self._tensors(uncached)
            self.train_mode(False)
            from tqdm import tqdm

            with torch.inference_mode():
                for chunk in tqdm(length_sorted_chunks(ids, 128), desc="frozen layers", unit="batch", mininterval=2.0, leave=False):
                    b = self.collate([ids[i] for i in chunk])
                    h = run_layers(self.encoder, None, b.attention_mask, 0, self.frozen_layers, input_ids=b.input_ids)
                    for row, i in enumerate(chunk):
                        self._prefix[uncached[i].id] = h[row, : len(ids[i])].clone()
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
        return sum(F.cross_entropy(lg[f], b.targets[f], label_smoothing=self.label_smoothing) for f in self.vocab) + self.structured_loss(lg, b.targets)

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
                total += float(self.structured_loss(lg, b.targets, "sum"))
                ok = torch.ones(len(b), dtype=torch.bool, device=self.device)
                for f in self.vocab:
                    ok &= lg[f].argmax(-1) == b.targets[f]
                if self.sets or self.spans:
                    ok &= self.structured_correct(lg, b.targets)
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
        acc.update(self.structured_warm_start(X, targets, examples))
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
        # Temperatures never move an argmax, so the scored path gives exactly these answers.
        return [text for text, _ in self.predict_scored(batch)]

    def field_probs(self, lg: dict[str, Any], q, memory: tuple[Any, dict[str, Any]] | None = None,
                    texts: list[str] | None = None) -> dict[str, Any]:
        """Per-field label probabilities as predict() ranks them: softmax, mixed with the kNN vote
        when one was chosen (q: L2-normalised embeddings; memory defaults to the deployed one),
        then with the lexical model's when one was chosen (texts: the encoder's inputs)."""
        from student.knn import mixed_probs
        from student.lexical import mix

        mem = memory if memory is not None else self.memory
        probs = {f: mixed_probs(lg[f], q, mem[0] if mem else None, mem[1][f] if mem else None, self.knn) for f in self.vocab}
        if self.lexical is None:
            return probs
        if texts is None:
            raise ValueError("field_probs: this student mixes in a lexical model, pass the input texts")
        lex = self.lexical.probs(texts)
        return {f: mix(p, lex.get(f), self.lexical_weight.get(f, 0.0)) for f, p in probs.items()}

    def predict_scored(self, batch: list[Messages]) -> list[tuple[str, float]]:
        """predict()'s answers, each with its calibrated confidence: the product over fields of the
        chosen answer's probability - a categorical field's label (after the kNN mix, tempered by
        the field's temperature fitted on the validation split: student/calibration.py; T = 1 when
        the model has none), a set field's p or 1 - p per label, a span's start x end probability."""
        return [(t, c) for t, c, _ in self.predict_scored_raw(batch)]

    def predict_scored_raw(self, batch: list[Messages]) -> list[tuple[str, float, float]]:
        """predict_scored's (answer, confidence), plus the confidence before calibration (every
        temperature 1), from the same forward pass: the eval's holdout ECE before calibration
        needed a second pass over the holdout for it (7 s of the Banking77 demo's eval)."""
        if not batch:
            return []
        from student.calibration import temper

        torch = self._torch
        temps = (self.calibration or {}).get("temperature", {})
        texts = [input_text(m) for m in batch]
        if self.spans:
            ids, offsets = self.encode_offsets(texts)
        else:
            ids, offsets = self.encode(texts), None
        out: list[tuple[str, float, float] | None] = [None] * len(batch)
        self.train_mode(False)
        with torch.inference_mode():
            for chunk in length_sorted_chunks(ids, self.predict_batch_size):
                oks = [[i == 0 or b > a for i, (a, b) in enumerate(offsets[c])] for c in chunk] if offsets else None
                z, lg = self.forward_all(self.collate([ids[i] for i in chunk], oks=oks))
                conf = torch.ones(len(chunk), dtype=torch.float64)
                raw = torch.ones(len(chunk), dtype=torch.float64)
                best = {}
                if self.vocab:
                    probs = self.field_probs(lg, torch.nn.functional.normalize(z, dim=-1), texts=[texts[i] for i in chunk])
                    for f in self.vocab:
                        p = temper(probs[f], float(temps.get(f, 1.0)))
                        b = p.argmax(-1)  # a temperature never moves the argmax: raw's pick is the same
                        best[f] = b.tolist()
                        conf *= p.gather(1, b[:, None])[:, 0].double().cpu()
                        raw *= probs[f].gather(1, b[:, None])[:, 0].double().cpu()
                if self.layout is None:
                    rows = [self.fmt.render({f: self.vocab[f][best[f][r]] for f in self.vocab}) for r in range(len(chunk))]
                else:
                    vals, c2, r2 = self.structured_decode(lg, [texts[i] for i in chunk], [offsets[i] for i in chunk] if offsets else [])
                    conf *= c2
                    raw *= r2
                    rows = [self.layout.render({**{f: self.vocab[f][best[f][r]] for f in self.vocab}, **vals[r]}) for r in range(len(chunk))]
                conf_l, raw_l = conf.tolist(), raw.tolist()
                for row, i in enumerate(chunk):
                    out[i] = (rows[row], conf_l[row], raw_l[row])
        return out  # type: ignore[return-value]
