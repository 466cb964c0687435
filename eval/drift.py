"""Drift between new prompt logs and a student's training prompts.

The distance is the Jensen-Shannon divergence (base 2, so 0 = same distribution, 1 = disjoint)
between smoothed unigram token distributions of the user turns. It is cheap, needs no model, and
moves when users start asking about new things, which is what makes a student stale.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def user_text(messages: list[dict]) -> str:
    return " ".join(m.get("content", "") for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str))


def token_counts(texts: Iterable[str]) -> Counter:
    c: Counter = Counter()
    for t in texts:
        c.update(_TOKEN.findall(t.lower()))
    return c


def js_divergence(p: Counter, q: Counter, alpha: float = 0.5) -> float:
    """JSD in bits with add-alpha smoothing over the union vocabulary (empty sides give 1.0)."""
    if not p or not q:
        return 1.0
    vocab = set(p) | set(q)
    n_p = sum(p.values()) + alpha * len(vocab)
    n_q = sum(q.values()) + alpha * len(vocab)
    jsd = 0.0
    for w in vocab:
        a = (p.get(w, 0) + alpha) / n_p
        b = (q.get(w, 0) + alpha) / n_q
        m = (a + b) / 2
        jsd += 0.5 * a * math.log2(a / m) + 0.5 * b * math.log2(b / m)
    return max(0.0, min(1.0, jsd))


def drift_report(new_texts: list[str], ref_texts: list[str], threshold: float) -> dict:
    new_c, ref_c = token_counts(new_texts), token_counts(ref_texts)
    d = js_divergence(new_c, ref_c)
    novel = [w for w, _ in new_c.most_common() if w not in ref_c][:10]
    return {"distance": round(d, 5), "metric": "jensen_shannon_unigram_bits", "threshold": threshold,
            "drifted": d > threshold, "new_records": len(new_texts), "reference_records": len(ref_texts),
            "top_novel_tokens": novel}
