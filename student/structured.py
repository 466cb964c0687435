"""The classifier student's set and span fields (student/fields.py's Layout): their heads,
targets, losses, warm start, validation-tuned decoding and confidences. Mixed into
ClassifierStudent; a student without a layout (one or more categorical fields, the original
format) has no such fields and every method here is a no-op for it."""
from __future__ import annotations

from collections import Counter
from typing import Any

from student.base import Example
from student.encoder import head_key, length_sorted_chunks

SPAN_KEY = "span_pointer"  # the span head's key in the heads ModuleDict
SPANS = "__spans__"  # the span logits' key in logits(); the span targets' key in a target dict
OK = "__ok__"  # per example: which token positions a span may use (position 0 = absent)


def set_key(name: str) -> str:
    return "set:" + name


class StructuredMixin:
    layout: Any
    sets: dict[str, list[str]]
    spans: list[str]

    def _init_structured(self, layout) -> None:
        self.layout = layout
        self.sets = dict(layout.sets) if layout else {}
        self.spans = list(layout.spans) if layout else []
        self.set_index = {f: {lab: i for i, lab in enumerate(labs)} for f, labs in self.sets.items()}
        self.set_thresholds: dict[str, list[float]] = {}  # tuned in finalize(); 0.5 until then
        self.span_bias: list[float] | None = None  # absent-score bias per span field, tuned in finalize()
        self.span_alignment: Counter = Counter()  # how the teacher's span values were found in the input

    def add_structured_heads(self, heads, hidden: int) -> None:
        import torch

        from student.span import make_span_head

        for f, labs in self.sets.items():
            h = torch.nn.Linear(hidden, len(labs))
            torch.nn.init.zeros_(h.weight)
            torch.nn.init.zeros_(h.bias)
            heads[head_key(set_key(f))] = h
        if self.spans:
            heads[SPAN_KEY] = make_span_head(hidden, len(self.spans))

    # ---- targets
    def _structured_targets(self, text: str, user: str, offsets: list[tuple[int, int]], rid: str) -> dict[str, Any]:
        from student.fields import align_span

        t = self.layout.targets_of(text, user)
        if t is None:
            raise ValueError(f"record {rid}: output does not fit the learned answer layout: {text[:200]!r}")
        out = {f: t[f] for f in self.vocab}
        for f in self.sets:
            bad = [lab for lab in t[f] if lab not in self.set_index[f]]
            if bad:
                raise ValueError(f"record {rid}: field {f}: label(s) {bad} not in the learned label set")
            out[set_key(f)] = t[f]
        spans = []
        for f in self.spans:
            v = t[f]
            if v is None or v == "unmatched":
                self.span_alignment["absent" if v is None else "not_in_input"] += 1
                spans.append(v)
                continue
            pos = align_span(offsets, v[0], v[1])
            self.span_alignment["truncated" if pos is None else v[2]] += 1
            spans.append(pos or "unmatched")
        out[SPANS] = spans
        out[OK] = [i == 0 or b > a for i, (a, b) in enumerate(offsets)]
        return out

    def _structured_tensors(self, targets: list[dict[str, Any]]) -> dict[str, Any]:
        torch = self._torch
        out = {}
        for f, labs in self.sets.items():
            y = torch.zeros(len(targets), len(labs))
            for r, t in enumerate(targets):
                for lab in t[set_key(f)]:
                    y[r, self.set_index[f][lab]] = 1.0
            out[set_key(f)] = y
        if self.spans:
            from student.span import targets_tensor

            out[SPANS] = targets_tensor([t[SPANS] for t in targets])
        return out

    def span_ok_tensor(self, oks: list[list[bool]], width: int):
        ok = self._torch.zeros(len(oks), width, dtype=self._torch.bool)
        for r, o in enumerate(oks):
            ok[r, : len(o)] = self._torch.tensor(o, dtype=self._torch.bool)
        return ok

    # ---- forward pieces
    def structured_logits(self, z, states, ok) -> dict[str, Any]:
        lg = {set_key(f): self.heads[head_key(set_key(f))](z) for f in self.sets}
        if self.spans:
            from student.span import span_logits

            lg[SPANS] = span_logits(self.heads[SPAN_KEY], states, ok)
        return lg

    def structured_loss(self, lg: dict[str, Any], targets: dict[str, Any], reduction: str = "mean"):
        from student.labelset import set_loss
        from student.span import span_loss

        total = 0.0
        for f in self.sets:
            total = total + set_loss(lg[set_key(f)], targets[set_key(f)], reduction)
        if self.spans:
            total = total + span_loss(*lg[SPANS], targets[SPANS], reduction)
        return total

    def structured_correct(self, lg: dict[str, Any], targets: dict[str, Any]):
        """[B] bool: every set and span field exactly right (thresholds / bias as tuned so far)."""
        torch = self._torch
        ok = None
        for f in self.sets:
            thr = torch.tensor(self.set_thresholds.get(f) or [0.5] * len(self.sets[f]), device=lg[set_key(f)].device)
            hit = ((lg[set_key(f)].sigmoid() >= thr) == (targets[set_key(f)] > 0.5)).all(-1)
            ok = hit if ok is None else ok & hit
        if self.spans:
            from student.span import IGNORE, decode

            y = targets[SPANS]
            pos, _ = decode(*lg[SPANS], self._bias())
            hit = ((pos == y.clamp(min=0)).all(-1) | (y[..., 0] == IGNORE)).all(-1)
            ok = hit if ok is None else ok & hit
        return ok

    def _bias(self):
        return None if self.span_bias is None else self._torch.tensor(self.span_bias)

    # ---- decoding (predict_scored)
    def structured_decode(self, lg: dict[str, Any], texts: list[str], offsets: list[list[tuple[int, int]]]) -> tuple[list[dict[str, Any]], Any]:
        """Per row {leaf: [labels] | span text or None} and the [B] confidence factor: per set
        label p or 1 - p, per span field the chosen answer's start x end probability."""
        torch = self._torch
        n = len(texts)
        values: list[dict[str, Any]] = [{} for _ in range(n)]
        conf = torch.ones(n, dtype=torch.float64)
        for f, labs in self.sets.items():
            p = lg[set_key(f)].float().sigmoid().cpu()
            on = p >= torch.tensor(self.set_thresholds.get(f) or [0.5] * len(labs))
            conf *= torch.where(on, p, 1 - p).double().prod(-1)
            for r in range(n):
                values[r][f] = [labs[j] for j in on[r].nonzero()[:, 0].tolist()]
        if self.spans:
            from student.span import decode, span_text

            pos, prob = decode(*lg[SPANS], self._bias())
            pos, prob = pos.cpu().tolist(), prob.cpu()
            conf *= prob.double().prod(-1)
            for r in range(n):
                for k, f in enumerate(self.spans):
                    a, b = pos[r][k]
                    values[r][f] = span_text(texts[r], offsets[r], a, b) if a > 0 else None
        return values, conf

    # ---- warm start and validation tuning
    def structured_warm_start(self, X, targets: list[dict[str, Any]], examples: list[Example]) -> dict[str, float]:
        """Linear probes for the set heads (on the pooled embeddings X) and the span pointer (on
        the frozen token states)."""
        from student.labelset import fit_multilabel

        torch = self._torch
        acc = {}
        ys = self._structured_tensors(targets)
        for f in self.sets:
            acc[f] = fit_multilabel(self.heads[head_key(set_key(f))], X, ys[set_key(f)].to(X.device), weight_decay=self.probe_weight_decay)
        if self.spans:
            from student.span import fit_span_probe

            states, oks = self._token_states(examples)
            width = max(s.shape[0] for s in states)
            S = torch.nn.utils.rnn.pad_sequence(states, batch_first=True)
            acc["spans"] = fit_span_probe(self.heads[SPAN_KEY], S, self.span_ok_tensor(oks, width).to(S.device), ys[SPANS].to(S.device))
        return acc

    def _token_states(self, examples: list[Example]) -> tuple[list[Any], list[list[bool]]]:
        """Final token states per example (no grad), and each example's span-position mask."""
        torch = self._torch
        ids, targets = self._tensors(examples)
        chunks = length_sorted_chunks(ids, self.predict_batch_size)
        states: list[Any] = [None] * len(examples)
        self.train_mode(False)
        with torch.inference_mode():
            for c, b in zip(chunks, self._batches(examples, chunks)):
                out = self.token_states(b)
                for row, i in enumerate(c):
                    states[i] = out[row, : len(ids[i])].clone()
        return states, [t[OK] for t in targets]

    def fit_structured(self, val: list[Example]) -> dict[str, Any]:
        """Per-label set thresholds and per-field span absent biases, on the validation split."""
        if not (self.sets or self.spans) or not val:
            return {}
        from student.labelset import tune_thresholds
        from student.span import tune_absent_bias

        torch = self._torch
        ids, _ = self._tensors(val)
        chunks = length_sorted_chunks(ids, self.predict_batch_size)
        probs: dict[str, list[Any]] = {f: [] for f in self.sets}
        ys: dict[str, list[Any]] = {f: [] for f in self.sets}
        span_batches = []
        self.train_mode(False)
        with torch.inference_mode():
            for b in self._batches(val, chunks):
                lg = self.logits(b)
                for f in self.sets:
                    probs[f].append(lg[set_key(f)].float().sigmoid().cpu())
                    ys[f].append(b.targets[set_key(f)].cpu())
                if self.spans:
                    span_batches.append((lg[SPANS][0].cpu(), lg[SPANS][1].cpu(), b.targets[SPANS].cpu()))
        self.set_thresholds = {f: tune_thresholds(torch.cat(probs[f]), torch.cat(ys[f])) for f in self.sets}
        if span_batches:
            self.span_bias = tune_absent_bias(span_batches)
        return {"set_thresholds": self.set_thresholds, "span_absent_bias": dict(zip(self.spans, self.span_bias or [])),
                "span_alignment": dict(self.span_alignment), **self.eval_loss(val)}

    def structured_meta(self) -> dict[str, Any]:
        if self.layout is None:
            return {}
        return {"layout": self.layout.to_dict(), "set_thresholds": self.set_thresholds, "span_bias": self.span_bias}

    def load_structured_meta(self, meta: dict[str, Any]) -> None:
        self.set_thresholds = meta.get("set_thresholds") or {}
        self.span_bias = meta.get("span_bias")
