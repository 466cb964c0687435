"""Prompt-lookup (n-gram) drafts for speculative greedy decoding of JSON answers.

A causal-LM student's answer is mostly text it can see or has seen: slot values are spans copied
from the user's message, and the JSON skeleton (keys, separators, enum labels) repeats from answer
to answer. So the next few tokens can be guessed without a draft model: find the latest earlier
occurrence of the last n tokens (longest n first) in the context (prompt + answer so far), else in
a small corpus (an exemplar rendered from the output schema, then the answers served lately), and
propose the tokens that followed it. The engine (student/llamacpp_decode.py) checks every guess in
one batched forward pass and keeps a guess only where it equals the token greedy decoding picks
there, so the answer is plain greedy decoding's whatever the guesses are; good guesses only save
forward passes. Pure Python: no llama.cpp needed to build or test it.
"""
from __future__ import annotations

import json
from collections import deque
from typing import Any


def schema_exemplar(schema: dict, separators: tuple[str, str]) -> str:
    """One JSON text holding every key and enum label of `schema` in schema order, rendered with the
    answers' separators: the skeleton and the labels tokenise as they do inside real answers."""
    def value(s: dict) -> Any:
        if "enum" in s:
            return s["enum"][0] if s.get("type") != "array" else list(s["enum"])
        t = s.get("type")
        if t == "object" or "properties" in s:
            return {k: value(v) for k, v in (s.get("properties") or {}).items()}
        if t == "array":
            items = s.get("items") or {}
            return list(items["enum"]) if "enum" in items else [value(items)]
        return {"integer": 0, "number": 0, "boolean": False, "null": None}.get(t, "")
    return json.dumps(value(schema), separators=separators, ensure_ascii=False)


class NgramDrafter:
    """Guesses the next tokens of an answer from n-gram matches (module docstring).

    `corpus`: token sequences always searched (the schema exemplar); `remember` adds served answers
    to a bounded history searched after them: the newest answers' n-grams win, as the skeleton
    tokens are the same in all of them and the history tracks how this student actually writes."""

    def __init__(self, corpus: list[list[int]] | None = None, max_ngram: int = 3, history: int = 64):
        self.max_ngram = max_ngram
        self._fixed = [list(c) for c in corpus or [] if c]
        self._history: deque[list[int]] = deque(maxlen=history)
        self._index: dict[tuple[int, ...], tuple[int, int]] = {}
        self._seqs: list[list[int]] = []
        self._reindex()

    def _reindex(self) -> None:
        # n-gram -> (sequence, end of the n-gram): later sequences and later positions overwrite,
        # so the latest occurrence wins; built once per remembered answer (~50 tokens: microseconds)
        self._seqs = self._fixed + list(self._history)
        self._index = {}
        for si, seq in enumerate(self._seqs):
            for n in range(1, self.max_ngram + 1):
                for end in range(n, len(seq)):
                    self._index[tuple(seq[end - n:end])] = (si, end)

    def remember(self, answer: list[int]) -> None:
        if answer:
            self._history.append(list(answer))
            self._reindex()

    def draft(self, context: list[int], k: int) -> list[int]:
        """Up to `k` tokens that may follow `context` (empty when no n-gram matches)."""
        if k <= 0 or not context:
            return []
        L = len(context)
        for n in range(min(self.max_ngram, L), 0, -1):
            key = context[L - n:]
            for i in range(L - n - 1, -1, -1):  # latest earlier occurrence in the context itself
                if context[i:i + n] == key:
                    return context[i + n:i + n + k]
            hit = self._index.get(tuple(key))
            if hit is not None:
                si, end = hit
                return self._seqs[si][end:end + k]
        return []
