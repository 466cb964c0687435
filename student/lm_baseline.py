"""The few-shot prompted baseline: the untuned base model with k teacher examples as prior turns,
for eval's "did fine-tuning beat prompting" comparison.

    prompted_baseline_predictor(base_model, examples, k) -> callable(messages) -> str
        # also has .predict_batch(list[messages]) and .shots
"""
from __future__ import annotations

from typing import Callable

from core.base import stable_hash
from student.base import Messages
from student.causal_lm import _ensure_pad, load_base
from student.lm_data import ChatFormat
from student.lm_generate import generate


def prompted_baseline_predictor(base_model: str | None, examples: list[dict], k: int, *, max_new_tokens: int = 128,
                                cache_dir: str | None = None, batch_size: int = 8, max_prompt: int = 2048) -> Callable[[Messages], str]:
    """The untuned base model, prompted with the teacher's system prompt plus k teacher examples
    as prior user/assistant turns. Shots are a fixed pseudo-random pick (stable hash), so two
    evals of the same data compare the same prompt."""
    tok, model, _ = load_base(base_model, cache_dir)
    fmt = ChatFormat.detect(tok)
    _ensure_pad(tok, fmt)
    model.eval()
    shots = sorted(examples, key=lambda e: stable_hash(e.get("id") or e["messages"]))[:k]
    shot_turns: list[dict] = []
    for e in shots:
        shot_turns += [m for m in e["messages"] if m.get("role") != "system"]
        shot_turns.append({"role": "assistant", "content": e["response"]})

    def build(messages: Messages) -> Messages:
        system = [m for m in messages if m.get("role") == "system"]
        return system + shot_turns + [m for m in messages if m.get("role") != "system"]

    def predict_batch(batch: list[Messages]) -> list[str]:
        return generate(model, tok, fmt, [build(m) for m in batch], max_new_tokens, max_prompt, batch_size)

    def predict_one(messages: Messages) -> str:
        return predict_batch([messages])[0]

    predict_one.predict_batch = predict_batch  # type: ignore[attr-defined]
    predict_one.shots = shots  # type: ignore[attr-defined]
    return predict_one
