"""The classifier student's set and span fields (student/fields.py's Layout): their heads,
targets, losses, warm start, validation-tuned decoding and confidences. Mixed into
ClassifierStudent; a student without a layout (one or more categorical fields, the original
format) has no such fields and every method here is a no-op for it."""
from __future__ import annotations

from collections import Counter
from typing import Any

from student.base import Example
from student.encoder import head_key, length_sorted_chunks

SPAN_KEY = "span_tagger"  # the span fields' BIO tag head's key in the heads ModuleDict
SPANS = "__spans__"  # (tag logits, usable-token mask) in logits(); the tag targets in a target dict
OK = "__ok__"  # per example: which token positions are input text (a span may use them)


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
        self.span_bias: float | None = None  # the tagger's O-logit bias, tuned in finalize()
        self.span_i_bias = 0.0  # the tagger's I-logit bias (spans go on), tuned with span_bias in finalize()
        self.span_weight = 1.0  # the tag loss's weight beside the set fields' (3 did worse on an NLU++ dev fold: slot F1 .64 -> .60)
        self.span_tags = "factored"  # the tag head (student.classifier.span_tags); set before add_structured_heads
        self.span_whole_words = False  # widen decoded spans to whole words: set in finalize() when no teacher span cuts a word
        self.structured_calibration: dict[str, Any] | None = None  # set / span temperatures, fitted in finalize()
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
            heads[SPAN_KEY] = make_span_head(hidden, len(self.spans), factored=self.span_tags == "factored")

    # ---- targets
    def _structured_targets(self, text: str, user: str, offsets: list[tuple[int, int]], rid: str) -> dict[str, Any]:
        from student.fields import align_span
        from student.span import tags_of, word_aligned

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
            self.span_alignment["cuts_a_word"] += not word_aligned(user, v[0], v[1])
            spans.append(pos or "unmatched")
        ok = [b > a for a, b in offsets]  # real input tokens: special tokens have (0, 0)
        if self.spans:
            out[SPANS] = tags_of(spans, ok)
        out[OK] = ok
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
            from student.span import tags_tensor

            out[SPANS] = tags_tensor([t[SPANS] for t in targets])
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
            ok = ok.clone()
            ok[:, 0] = False  # [CLS] is no input text (the predict path passes it as usable)
            lg[SPANS] = (self.heads[SPAN_KEY](states), ok)
        return lg

    def structured_loss(self, lg: dict[str, Any], targets: dict[str, Any], reduction: str = "mean"):
        from student.labelset import set_loss
        from student.span import span_loss

        total = 0.0
        for f in self.sets:
            total = total + set_loss(lg[set_key(f)], targets[set_key(f)], reduction)
        if self.spans:
            total = total + self.span_weight * span_loss(lg[SPANS][0], targets[SPANS], reduction)
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
            from student.span import decode, gold_spans

            logits, mask = lg[SPANS]
            pred, _ = decode(logits, mask, self.span_bias or 0.0, i_bias=self.span_i_bias)
            gold = gold_spans(targets[SPANS], mask, len(self.spans))
            hit = torch.tensor([g is None or p == g for p, g in zip(pred, gold)], device=logits.device)
            ok = hit if ok is None else ok & hit
        return ok

    # ---- decoding (predict_scored)
    def _decoded(self, lg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """(label-on masks [B, L] per set field, raw answer probability [B] per set field and for
        the span fields together (key SPANS), span (first, last) tokens per row and field)."""
        torch = self._torch
        on, q = {}, {}
        for f, labs in self.sets.items():
            p = lg[set_key(f)].float().sigmoid().cpu()
            on[f] = p >= torch.tensor(self.set_thresholds.get(f) or [0.5] * len(labs))
            q[f] = torch.where(on[f], p, 1 - p).double().prod(-1)  # every label's on/off decision right
        spans = None
        if self.spans:
            from student.span import decode

            spans, q[SPANS] = decode(*lg[SPANS], self.span_bias or 0.0, i_bias=self.span_i_bias)
            q[SPANS] = q[SPANS].double()  # the whole BIO tag sequence right
        return on, q, spans

    def _calibrated(self, key: str, q):
        """A field's raw probability q of being exactly right -> its calibrated one: temperature
        scaling (student/calibration.py) of the two-outcome distribution (1 - q, q), T fitted on
        the validation split in fit_structured; unchanged before that."""
        t = ((self.structured_calibration or {}).get("temperature") or {}).get(key)
        if t is None:
            return q
        from student.calibration import temper

        return temper(self._torch.stack([1 - q, q], -1), float(t))[:, 1].double()

    def structured_decode(self, lg: dict[str, Any], texts: list[str], offsets: list[list[tuple[int, int]]]) -> tuple[list[dict[str, Any]], Any, Any]:
        """Per row {leaf: [labels] | span text or None}, and two [B] confidence factors: the product
        over set fields and the span block of each one's calibrated probability of being exactly
        right (_calibrated), and of its raw one (the product of p or 1 - p per label for a set, the
        tag sequence's probability for the spans)."""
        torch = self._torch
        from student.span import span_text

        n = len(texts)
        on, q, spans = self._decoded(lg)
        conf = torch.ones(n, dtype=torch.float64)
        raw = torch.ones(n, dtype=torch.float64)
        for key, qk in q.items():
            conf *= self._calibrated(key, qk)
            raw *= qk.double()
        values: list[dict[str, Any]] = [{} for _ in range(n)]
        for f, labs in self.sets.items():
            for r in range(n):
                values[r][f] = [labs[j] for j in on[f][r].nonzero()[:, 0].tolist()]
        for r in range(n if spans is not None else 0):
            for k, f in enumerate(self.spans):
                sp = spans[r][k]
                values[r][f] = span_text(texts[r], offsets[r], *sp, whole_words=self.span_whole_words) if sp else None
        return values, conf, raw

    # ---- warm start and validation tuning
    def structured_warm_start(self, X, targets: list[dict[str, Any]], examples: list[Example]) -> dict[str, float]:
        """Linear probes for the set heads (on the pooled embeddings X) and the tagger (on the
        frozen token states)."""
        from student.labelset import fit_multilabel

        torch = self._torch
        acc = {}
        ys = self._structured_tensors(targets)
        for f in self.sets:
            acc[f] = fit_multilabel(self.heads[head_key(set_key(f))], X, ys[set_key(f)].to(X.device), weight_decay=self.probe_weight_decay)
        if self.spans:
            from student.span import fit_span_probe

            states = self._token_states(examples)
            S = torch.nn.utils.rnn.pad_sequence(states, batch_first=True)
            acc["spans"] = fit_span_probe(self.heads[SPAN_KEY], S, ys[SPANS].to(S.device), weight_decay=self.probe_weight_decay)
        return acc

    def _token_states(self, examples: list[Example]) -> list[Any]:
        """Final token states per example (no grad)."""
        torch = self._torch
        ids, _ = self._tensors(examples)
        chunks = length_sorted_chunks(ids, self.predict_batch_size)
        states: list[Any] = [None] * len(examples)
        self.train_mode(False)
        with torch.inference_mode():
            for c, b in zip(chunks, self._batches(examples, chunks)):
                out = self.token_states(b)
                for row, i in enumerate(c):
                    states[i] = out[row, : len(ids[i])].clone()
        return states

    def fit_structured(self, val: list[Example]) -> dict[str, Any]:
        """On the validation split: per-label set thresholds and the tagger's O bias (the answers),
        then per set field and for the span block a temperature for its probability of being
        exactly right, fitted against whether it was (the confidence; see _calibrated)."""
        if not (self.sets or self.spans) or not val:
            return {}
        import numpy as np

        from student.calibration import fit_temperature
        from student.labelset import tune_thresholds
        from student.span import gold_spans, tune_biases

        torch = self._torch
        ids, _ = self._tensors(val)
        chunks = length_sorted_chunks(ids, self.predict_batch_size)
        self.train_mode(False)
        self.structured_calibration = None
        with torch.inference_mode():
            batches = [(self.logits(b), b.targets) for b in self._batches(val, chunks)]
        if self.sets:
            self.set_thresholds = {}
            for f in self.sets:
                logits = torch.cat([lg[set_key(f)].float().cpu() for lg, _ in batches])
                y = torch.cat([t[set_key(f)].cpu() for _, t in batches])
                self.set_thresholds[f] = tune_thresholds(logits.sigmoid(), y)
        if self.spans:
            self.span_whole_words = self.span_alignment["cuts_a_word"] == 0
            self.span_bias, self.span_i_bias = tune_biases([(lg[SPANS][0].float().cpu(), lg[SPANS][1].cpu(), t[SPANS].cpu()) for lg, t in batches],
                                                           len(self.spans))
        qs: dict[str, list[float]] = {}
        right: dict[str, list[bool]] = {}
        for lg, t in batches:
            on, q, spans = self._decoded(lg)
            for f in self.sets:
                right.setdefault(f, []).extend((on[f] == (t[set_key(f)].cpu() > 0.5)).all(-1).tolist())
            if self.spans:
                gold = gold_spans(t[SPANS], lg[SPANS][1], len(self.spans))
                right.setdefault(SPANS, []).extend(g is None or p == g for p, g in zip(spans, gold))
            for key, qk in q.items():
                qs.setdefault(key, []).extend(qk.tolist())
        temps = {}
        for key, q in qs.items():
            q = np.asarray(q)
            temps[key] = round(fit_temperature(np.stack([1 - q, q], -1), np.asarray(right[key], dtype=np.int64), probs=True), 5)
        cal = {"method": "temperature_scaling_per_field", "fitted_on": "validation", "n": len(val), "temperature": temps,
               "field_val_accuracy": {key: round(sum(v) / len(v), 4) for key, v in right.items()}}
        cal.update(self._confidence_ece(val, cal))
        self.structured_calibration = cal
        return {"set_thresholds": self.set_thresholds, "span_o_bias": self.span_bias, "span_i_bias": self.span_i_bias, "span_whole_words": self.span_whole_words,
                "calibration": cal, "span_alignment": dict(self.span_alignment), **self.eval_loss(val)}

    def _confidence_ece(self, val: list[Example], cal: dict[str, Any]) -> dict[str, Any]:
        """ECE of the answer confidence against exact-answer correctness on validation, raw and calibrated."""
        from student.calibration import ece

        out = {}
        msgs, targets = [e.messages for e in val], [e.target for e in val]
        for key, c in (("ece_before", None), ("ece_after", cal)):
            self.structured_calibration = c
            scored = self.predict_scored(msgs)
            out[key] = round(float(ece([s for _, s in scored], [a == t for (a, _), t in zip(scored, targets)])), 5)
        return out

    def structured_meta(self) -> dict[str, Any]:
        if self.layout is None:
            return {}
        return {"layout": self.layout.to_dict(), "set_thresholds": self.set_thresholds, "span_o_bias": self.span_bias, "span_i_bias": self.span_i_bias,
                "structured_calibration": self.structured_calibration, "span_head": "bio_tags", "span_tags": self.span_tags,
                "span_whole_words": self.span_whole_words}

    def load_structured_meta(self, meta: dict[str, Any]) -> None:
        self.set_thresholds = meta.get("set_thresholds") or {}
        self.structured_calibration = meta.get("structured_calibration")
        if self.spans and meta.get("span_head") != "bio_tags":
            raise ValueError("this student's span fields use start/end pointers (saved before BIO tagging): retrain it")
        self.span_bias = meta.get("span_o_bias")
        self.span_i_bias = float(meta.get("span_i_bias") or 0.0)  # absent in students saved before the I bias: none
        self.span_whole_words = bool(meta.get("span_whole_words"))
