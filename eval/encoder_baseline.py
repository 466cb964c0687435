"""The no-fine-tuning baseline for encoder (classifier) students.

An encoder cannot be prompted, so its "prompted baseline" is the closest honest analogue: the
student's own frozen base encoder given k teacher examples per answer, predicting the answer
whose examples' mean embedding is nearest (cosine). No weight is trained. If the fine-tuned
student does not clearly beat this, fine-tuning was not worth it.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from core.base import read_jsonl
from core.rundir import RunDir


class EncoderFewShot:
    """predict(messages) -> the teacher's answer text of the nearest class centroid."""

    def __init__(self, examples: list[dict], base_model: str | None = None, k: int = 5, seed: int = 0, max_length: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from student.classifier import input_text
        from student.models import resolve_base_model

        ref = resolve_base_model(base_model, "classifier")
        self._torch, self._text, self.max_length = torch, input_text, max_length
        self.tok = AutoTokenizer.from_pretrained(ref.name_or_path)
        self.model = AutoModel.from_pretrained(ref.name_or_path).eval()
        by_answer: dict[str, list[dict]] = defaultdict(list)
        for ex in examples:
            by_answer[ex["response"]].append(ex)
        rng = random.Random(seed)
        self.answers = sorted(by_answer)
        self.shots = [s for a in self.answers for s in rng.sample(by_answer[a], min(k, len(by_answer[a])))]
        emb = self._embed([self._text(s["messages"]) for s in self.shots])
        index = {a: i for i, a in enumerate(self.answers)}
        owner = torch.tensor([index[s["response"]] for s in self.shots])
        cent = torch.zeros(len(self.answers), emb.shape[1]).index_add_(0, owner, emb)
        self.centroids = torch.nn.functional.normalize(cent, dim=-1)
        self.k = k
        self.description = (f"frozen base encoder, no fine-tuning: {k} teacher examples per answer, "
                            f"nearest centroid ({len(self.shots)} shots)")

    def _embed(self, texts: list[str], batch: int = 64):
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch):
                enc = self.tok(texts[i:i + batch], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
                h = self.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
                out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1))
        return torch.cat(out)

    def predict_batch(self, batch: list[list[dict]]) -> list[str]:
        sims = self._embed([self._text(m) for m in batch]) @ self.centroids.T
        return [self.answers[i] for i in sims.argmax(-1).tolist()]

    def __call__(self, messages: list[dict]) -> str:
        return self.predict_batch([messages])[0]


def encoder_baseline_predictor(rd: RunDir, base_model: str | None, k: int, seed: int = 0) -> Any:
    from student.toolcall_format import answer_rows

    train = answer_rows(r for r in read_jsonl(rd.filter_kept) if r.get("split") == "train")  # tool calls: canonical answer text
    return EncoderFewShot(train, base_model=base_model, k=k, seed=seed)
