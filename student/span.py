"""Span fields as BIO tags over the input tokens: one softmax per token over O, B-field, I-field.

Why tagging and not start/end pointers (what this module did first): a pointer pair per field
learns each slot type from its own few dozen examples and overfit NLU++ (train loss 0.05,
validation ~3, slot micro-F1 0.64), while a tagger learns "this token is part of a time" from
every slot of every type and only the type from the field's own examples. Decoding is the
BIO-valid Viterbi path over the per-token softmax (no CRF is trained: the transition rule is the
only structure): a B-k opens a span of field k, I-k extends it; when a field gets several spans
the one with the most probable tags wins (the teacher's JSON has one value per field). The text is
cut from the input by the tokenizer's character offsets, so a span never contains text that is
not in the user's message. A bias on the O logit, tuned on the validation split, trades a missed
slot against an invented one.
"""
from __future__ import annotations

from typing import Any

IGNORE = -100  # the tag target of a token no span may use (special tokens, padding) or of a row whose spans are unknown
BIAS_GRID = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0)


def n_tags(n_fields: int) -> int:
    return 1 + 2 * n_fields  # O, then B-k, I-k per field k


def make_span_head(hidden: int, n_fields: int):
    import torch

    head = torch.nn.Linear(hidden, n_tags(n_fields))
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


def tags_of(spans: list[tuple[int, int] | None | str], ok: list[bool]) -> list[int]:
    """Token tags for one example: spans per field ((first, last) token, None = absent,
    "unmatched" = the teacher's value is not in the input); ok per token (a real input token).
    A row with an unmatched span is IGNORE throughout: its other tokens cannot be called O."""
    if any(s == "unmatched" for s in spans):
        return [IGNORE] * len(ok)
    tags = [0 if o else IGNORE for o in ok]
    for k, s in enumerate(spans):
        if s is None:
            continue
        first, last = s
        tags[first] = 1 + 2 * k
        for i in range(first + 1, last + 1):
            tags[i] = 2 + 2 * k
    return tags


def tags_tensor(rows: list[list[int]]):
    """[B, T] long, padded with IGNORE."""
    import torch

    width = max((len(r) for r in rows), default=0)
    return torch.tensor([r + [IGNORE] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)


def span_loss(logits, tags, reduction: str = "mean"):
    """Token cross-entropy summed over each example's tokens, averaged over the batch (so a span
    field block weighs like a set field, whose BCE is summed over labels)."""
    import torch.nn.functional as F

    tot = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tags.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return tot if reduction == "sum" else tot / max(1, tags.shape[0])


def biased(logits, o_bias: float = 0.0):
    """Logits with `o_bias` added to the O tag's."""
    if not o_bias:
        return logits
    lg = logits.clone()
    lg[..., 0] += o_bias
    return lg


def spans_of(tags: list[int], ok: list[bool], n_fields: int, logp: list[float] | None = None) -> list[tuple[int, int] | None]:
    """Per field, the (first, last) token of its decoded span or None; tags per token, ok = a
    real input token; logp (per token, of its tag) picks among several spans of one field."""
    found: list[list[tuple[int, int, float]]] = [[] for _ in range(n_fields)]
    cur: list[Any] | None = None  # [field, first, last, score]
    for i, (t, o) in enumerate(zip(tags, ok)):
        field, inside = ((t - 1) // 2, (t - 1) % 2 == 1) if (o and t > 0) else (None, False)
        if cur is not None and (field != cur[0] or not inside):
            found[cur[0]].append((cur[1], cur[2], cur[3]))
            cur = None
        if field is not None:
            s = logp[i] if logp is not None else 0.0
            if cur is None:
                cur = [field, i, i, s]
            else:
                cur[2], cur[3] = i, cur[3] + s
    if cur is not None:
        found[cur[0]].append((cur[1], cur[2], cur[3]))
    return [max(f, key=lambda x: x[2] / (x[1] - x[0] + 1))[:2] if f else None for f in found]


def _transitions(n_fields: int):
    """[C, C] (previous tag, tag) 0 or -inf: I-k only after B-k or I-k (BIO's one rule)."""
    import numpy as np

    c = n_tags(n_fields)
    t = np.zeros((c, c))
    for k in range(n_fields):
        i_k = 2 + 2 * k
        t[:, i_k] = -np.inf
        t[1 + 2 * k, i_k] = t[i_k, i_k] = 0.0
    return t


def viterbi(lp, ok):
    """The most probable tag sequence per row that obeys BIO (lp [B, T, C] log-probs, ok [B, T];
    numpy): argmax per token lets one span switch type midway ("Dec" B-date_to, "31"
    I-date_period) or start with an I-; this cannot. Positions not ok are skipped. numpy, not
    torch: ~25 steps of [C, C] work per row, where torch's per-op overhead dominated serving."""
    import numpy as np

    b, t, c = lp.shape
    trans = _transitions((c - 1) // 2)
    score = np.full((b, c), -np.inf)
    score[:, 0] = 0.0  # before the first token: as if after an O
    keep = np.broadcast_to(np.arange(c), (b, c))
    back = np.empty((t, b, c), dtype=np.int64)
    for i in range(t):
        cand = score[:, :, None] + trans[None]
        arg = cand.argmax(1)
        best = np.take_along_axis(cand, arg[:, None, :], 1)[:, 0]
        m = ok[:, i, None]
        score = np.where(m, best + lp[:, i], score)
        back[i] = np.where(m, arg, keep)
    cur = score.argmax(-1)
    tags = np.empty((b, t), dtype=np.int64)
    rows = np.arange(b)
    for i in range(t - 1, -1, -1):
        tags[:, i] = cur
        cur = back[i][rows, cur]
    return tags


def decode(logits, ok, o_bias: float = 0.0, temperature: float = 1.0) -> tuple[list[list[tuple[int, int] | None]], Any]:
    """(spans per row and field, [B] probability of the chosen tag sequence): the BIO-valid
    Viterbi path after the O bias; its probability is the product over real tokens of the
    tempered softmax's probability of each chosen tag (the temperature never moves the answer)."""
    import torch

    lg = biased(logits.detach().float().cpu(), o_bias)
    okm = ok.cpu()
    tags = torch.from_numpy(viterbi(lg.log_softmax(-1).numpy(), okm.numpy()))
    lp = (lg / temperature).log_softmax(-1).gather(-1, tags[..., None])[..., 0]
    seq_logp = (lp * okm).sum(-1)
    k = (logits.shape[-1] - 1) // 2
    tl, ol, pl = tags.tolist(), okm.tolist(), lp.tolist()
    spans = [spans_of(t, o, k, p) for t, o, p in zip(tl, ol, pl)]
    return spans, torch.exp(seq_logp)


def gold_spans(tags, ok, n_fields: int) -> list[list[tuple[int, int] | None] | None]:
    """The spans the target tags encode, per row and field (None for an all-IGNORE row)."""
    return [None if all(x == IGNORE for x in t) else spans_of(t, o, n_fields) for t, o in zip(tags.cpu().tolist(), ok.cpu().tolist())]


def word_aligned(text: str, start: int, end: int) -> bool:
    """Characters [start, end) start and end at letter/digit-run boundaries (no word is cut)."""
    return not ((start > 0 and text[start - 1].isalnum() and text[start].isalnum())
                or (end < len(text) and text[end].isalnum() and text[end - 1].isalnum()))


def span_text(text: str, offsets: list[tuple[int, int]], first: int, last: int, whole_words: bool = False) -> str:
    """The input's own characters from token `first` to token `last` (inclusive); whole_words:
    widened to letter/digit-run boundaries - a tagger may stop inside a word split into subwords
    ("5ish" -> "ish"), which a teacher whose spans never cut a word would not write."""
    a, b = offsets[first][0], offsets[last][1]
    if not whole_words:
        return text[a:b]
    while a > 0 and text[a - 1].isalnum() and text[a].isalnum():
        a -= 1
    while b < len(text) and text[b].isalnum() and text[b - 1].isalnum():
        b += 1
    return text[a:b]


def fit_span_probe(head, states, tags, weight_decay: float = 1e-3) -> float:
    """Fit the tag head on frozen token states (states [N, T, H], tags [N, T]): the linear-probe
    warm start (multinomial logistic regression over the usable tokens). Returns their tag accuracy."""
    from student.encoder import fit_linear

    keep = tags != IGNORE
    return fit_linear(head, states[keep], tags[keep], steps=100, weight_decay=weight_decay)


def tune_o_bias(batches: list[tuple[Any, Any, Any]], n_fields: int, grid=BIAS_GRID) -> float:
    """The O-logit bias with the most (example, field) spans exactly right on the validation
    split (ties to 0). batches: (logits, ok, target tags) per batch."""
    right = dict.fromkeys(grid, 0)
    for logits, ok, tags in batches:
        gold = gold_spans(tags, ok, n_fields)
        for b in grid:
            pred, _ = decode(logits, ok, b)
            right[b] += sum(p == g for pr, gr in zip(pred, gold) if gr is not None for p, g in zip(pr, gr))
    return float(max(sorted(grid, key=abs), key=lambda b: right[b]))
