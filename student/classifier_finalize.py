"""After training, the classifier student's last steps on the validation split: the WiSE-FT
blend between linear probe and fine-tuned weights, the kNN mix (student/knn.py), and the export
of the linear probe as the no-fine-tuning baseline the eval scores beside the student."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from student.base import Example
from core.answer_shape import last_user_text as input_text
from student.encoder import length_sorted_chunks


class FinalizeMixin:
    """Mixed into ClassifierStudent; uses its heads, encoder, _batches, eval_loss and save."""

    def finalize(self, val: list[Example], train: list[Example] | None = None) -> dict[str, Any]:
        """After training: the WiSE-FT blend, then the kNN mix (student/knn.py), both chosen on
        the validation split."""
        out = self._interpolate(val)
        # The weights are final from here on: embed the val split once for the three choices below
        # (each embedded it anew before: ~3 s apiece on Banking77's 1,289 rows, 2 cores).
        emb = self._embed_examples(val) if val and self.vocab else None
        if self.use_knn and train and emb:
            out["knn"] = self._fit_knn(train, emb)
        if self.use_lexical and train and emb:
            out["lexical"] = self._fit_lexical(train, val, emb)
        if emb:
            out["calibration"] = self._fit_calibration(val, len(train) if train else 0, emb)
        structured = self.fit_structured(val)  # set thresholds, span biases (student/structured.py)
        if structured:
            out["structured"] = structured
            out.update({k: structured[k] for k in ("val_loss", "val_accuracy")})
        return out

    def training_memory(self, n_train: int | None) -> tuple[Any, dict[str, Any]] | None:
        """The kNN memory cut to its first n_train rows: the training examples (finalize appends
        the validation examples after them; None = all rows)."""
        if self.memory is None or n_train is None:
            return self.memory
        mem, labels = self.memory
        return mem[:n_train], {f: y[:n_train] for f, y in labels.items()}

    @contextmanager
    def against_training_rows(self, n_train: int | None):
        """Score the validation examples against the training rows of the kNN memory only; the
        deployed memory is back on exit. After finalize the memory holds the val examples too:
        scored against it a val example finds itself and looks certain - ~2 points better than it
        is, which hid a 1.1-point int8 drop on the Banking77 holdout and would fit temperatures,
        confidences and the cascade threshold on answers the deployed student never gives new
        requests. Used by everything that scores the val split after finalize (calibration, the
        cascade's val scores, the fast-path choice)."""
        deployed = self.memory
        self.memory = self.training_memory(n_train)
        try:
            yield self
        finally:
            self.memory = deployed

    def _fit_calibration(self, val: list[Example], n_train: int, emb: tuple[Any, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
        """Per-field temperatures (student/calibration.py) on the probabilities predict_scored
        tempers. After _fit_knn the memory holds the val examples themselves, so they are mixed
        with the training rows only (as when the mix was chosen): a val example finding itself
        would look certain and fit a temperature that is too low."""
        from student.calibration import fit_field_temperatures

        self.calibration = None
        zv, lv, yv = emb
        with self.against_training_rows(n_train):
            probs = self.field_probs(lv, zv, texts=[input_text(e.messages) for e in val])
        self.calibration = fit_field_temperatures({f: p.float().cpu().numpy() for f, p in probs.items()},
                                                  {f: y.cpu().numpy() for f, y in yv.items()})
        return self.calibration

    def _fit_knn(self, train: list[Example], emb: tuple[Any, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
        """emb: the val split's _embed_examples."""
        from student.knn import select

        torch = self._torch
        zt, _, yt = self._embed_examples(train)
        zv, lv, yv = emb
        choice = select(lv, zv, yv, zt, yt)
        self.knn = {k: choice[k] for k in ("k", "temperature", "lambda")}
        # The memory the deployed student searches: every labelled example it was given.
        self.memory = (torch.cat([zt, zv]), {f: torch.cat([yt[f], yv[f]]) for f in self.vocab}) if choice["lambda"] else None
        return choice

    def _fit_lexical(self, train: list[Example], val: list[Example], emb: tuple[Any, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
        """The TF-IDF model (student/lexical.py), fit on the training rows; its weight per field by
        tempered validation log loss, the val rows scored against the kNN memory's training rows
        (as the kNN mix was chosen). Kept only for fields where a weight > 0 won."""
        import numpy as np

        from student.lexical import LexicalModel, select_weight

        self.lexical, self.lexical_weight = None, {}
        _, targets = self._tensors(train)
        labels = {f: np.array([self.index[f][t[f]] for t in targets]) for f in self.vocab}
        model = LexicalModel.fit([input_text(e.messages) for e in train], labels, {f: len(self.vocab[f]) for f in self.vocab},
                                 n_jobs=self._torch.get_num_threads())  # the cores training was given
        zv, lv, yv = emb
        with self.against_training_rows(len(train)):
            pv = self.field_probs(lv, zv)
        lex = model.probs([input_text(e.messages) for e in val])
        choice = {f: select_weight(pv[f].float().cpu().numpy(), lex[f], yv[f].cpu().numpy()) for f in lex}
        self.lexical_weight = {f: c["weight"] for f, c in choice.items() if c["weight"]}
        self.lexical = model if self.lexical_weight else None
        return {"weight": self.lexical_weight, "fields": choice}

    def _embed_examples(self, examples: list[Example]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(L2-normalised embeddings, logits per field, label ids per field), in example order."""
        torch = self._torch
        ids, targets = self._tensors(examples)
        chunks = length_sorted_chunks(ids, self.predict_batch_size)
        self.train_mode(False)
        zs, lgs = [], []
        with torch.inference_mode():
            for b in self._batches(examples, chunks):
                z = self.embed(b)
                zs.append(z)
                lgs.append(self.head_logits(z))
        inv = torch.argsort(torch.tensor([i for c in chunks for i in c])).to(self.device)
        z = torch.nn.functional.normalize(torch.cat(zs), dim=-1)[inv]
        logits = {f: torch.cat([lg[f] for lg in lgs])[inv] for f in self.vocab}
        labels = {f: torch.tensor([self.index[f][t[f]] for t in targets], device=self.device) for f in self.vocab}
        return z, logits, labels

    def _interpolate(self, val: list[Example]) -> dict[str, Any]:
        """WiSE-FT: blend the linear probe (a=0) with the fine-tuned weights (a=1). LoRA's output
        is linear in B, so scaling B by a and mixing the heads walks the line between the two;
        pick a by validation loss. Measured on Banking77: probe and fine-tuned models err on
        different examples, so a blend beats both."""
        if not self.interpolate or self._probe_heads is None or not val:
            return {}
        tuned = self._tuned_weights()
        scores = {}
        for a in (0.0, 0.25, 0.5, 0.75, 1.0):
            self._blend(tuned, a)
            scores[a] = self.eval_loss(val)
        best = min(scores, key=lambda a: scores[a]["val_loss"])
        self._blend(tuned, best)
        return {"alpha": best, **scores[best], "grid": {str(a): round(v["val_loss"], 5) for a, v in scores.items()}}

    def _tuned_weights(self) -> tuple[dict[str, Any], dict[str, Any]]:
        lora_b = {n: p.detach().clone() for n, p in self.encoder.named_parameters() if "lora_B" in n}
        return lora_b, {k: v.detach().clone() for k, v in self.heads.state_dict().items()}

    def _blend(self, tuned: tuple[dict[str, Any], dict[str, Any]], a: float) -> None:
        """Weights at `a` on the line probe (0) -> `tuned` (1)."""
        lora_b, heads = tuned
        params = dict(self.encoder.named_parameters())
        with self._torch.no_grad():
            for n, v in lora_b.items():
                params[n].copy_(v * a)
        self.heads.load_state_dict({k: (1 - a) * self._probe_heads[k] + a * heads[k] for k in heads})

    def save_probe(self, path: str | Path) -> bool:
        """Save the no-fine-tuning model: the frozen base encoder + the linear-probe heads (fit on
        the same training data). The eval scores it beside the student, so a report can say when
        fine-tuning the encoder bought nothing over a linear head. False if there is no probe."""
        if self._probe_heads is None:
            return False
        tuned, knn, calibration = self._tuned_weights(), self.knn, self.calibration
        try:
            self._blend(tuned, 0.0)
            self.knn = None  # the probe is the plain linear head
            lexical, self.lexical = self.lexical, None
            self.calibration = None  # the student's temperatures do not fit the probe
            self.save(path)
        finally:
            self._blend(tuned, 1.0)
            self.knn = knn
            self.lexical = lexical
            self.calibration = calibration
        return True
