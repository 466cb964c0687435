"""Span fields as BIO tags over the input tokens: one softmax per token over O, B-field, I-field.

Why tagging and not start/end pointers (what this module did first): a pointer pair per field
learns each slot type from its own few dozen examples and overfit NLU++ (train loss 0.05,
validation ~3, slot micro-F1 0.64), while a tagger learns "this token is part of a time" from
every slot of every type and only the type from the field's own examples. Decoding is the
BIO-valid Viterbi path over the per-token softmax (no CRF is trained: the transition rule is the
only structure): a B-k opens a span of field k, I-k extends it; when a field gets several spans
the one with the most probable tags wins (the teacher's JSON has one value per field). The text is
cut from the input by the tokenizer's character offsets, so a span never contains text that is
not in the user's message. A bias on the O logit and one on the I- logits, tuned together on the
validation split, trade a missed slot against an invented one and a span cut short against one
run long; O tokens weigh O_WEIGHT in the loss, since they outnumber slot tokens ~8 to 1.

The head is factored by default (make_span_head): the tag softmax is P(O/B/I) x P(name), so the
boundaries are learned from every slot of every name; with a B-/I- weight vector per name, each
name learned its boundaries from its own few dozen examples (NLU++ holdout slot micro-F1 0.811
per name, 0.843 factored, same split and settings).
"""
from __future__ import annotations

from typing import Any

IGNORE = -100  # the tag target of a token no span may use (special tokens, padding) or of a row whose spans are unknown
BIAS_GRID = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
I_BIAS_GRID = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)  # only >= 0: the tagger ends spans early, never late (NLU++ holdout)
O_WEIGHT = 0.25  # the O tag's weight in the token cross-entropy (B-/I- tags weigh 1): ~8 O tokens per slot token on NLU++; 1 -> 0.25 took holdout exact JSON .642 -> .667


def n_tags(n_fields: int) -> int:
    return 1 + 2 * n_fields  # O, then B-k, I-k per field k


def factored_tags(out, n_fields: int):
    """[..., 3 + K] (O, B, I logits, then K name logits) -> [..., 1 + 2K] tag logits whose softmax
    is P(O), P(B) P(k), P(I) P(k): the boundary is learned from every slot, the name apart."""
    import torch

    names = out[..., 3:].log_softmax(-1)
    bi = torch.stack([out[..., 1:2] + names, out[..., 2:3] + names], -1).flatten(-2)
    return torch.cat([out[..., :1], bi], -1)


def make_span_head(hidden: int, n_fields: int, factored: bool = True):
    """The tag head: a Linear to 1 + 2K tag logits (per_name: each name's B-/I- tags learned from
    that name's own examples), or factored: a Linear to 3 + K outputs, expanded by factored_tags,
    so "this token begins / continues a slot" is learned from every slot and the name apart. Both
    emit the same tag logits, so decoding, biases and the ONNX path do not know which it is."""
    import torch

    lin = torch.nn.Linear(hidden, 3 + n_fields if factored else n_tags(n_fields))
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    if not factored:
        return lin

    class Factored(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.n_fields = lin, n_fields

        def forward(self, h):
            return factored_tags(self.lin(h), self.n_fields)

    return Factored()


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


def span_loss(logits, tags, reduction: str = "mean", o_weight: float | None = None):
    """Token cross-entropy summed over each example's tokens, averaged over the batch (so a span
    field block weighs like a set field, whose BCE is summed over labels); the O tag weighs
    o_weight (default O_WEIGHT)."""
    import torch
    import torch.nn.functional as F

    ow = O_WEIGHT if o_weight is None else o_weight
    w = None if ow == 1.0 else torch.cat([torch.tensor([ow]), torch.ones(logits.shape[-1] - 1)]).to(logits.device, logits.dtype)
    tot = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tags.reshape(-1), weight=w, ignore_index=IGNORE, reduction="sum")
    return tot if reduction == "sum" else tot / max(1, tags.shape[0])


def biased(logits, o_bias: float = 0.0, i_bias: float = 0.0):
    """Logits with `o_bias` added to the O tag's and `i_bias` to every I- tag's (a span goes on)."""
    if not o_bias and not i_bias:
        return logits
    lg = logits.clone()
    lg[..., 0] += o_bias
    lg[..., 2::2] += i_bias
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


def decode(logits, ok, o_bias: float = 0.0, temperature: float = 1.0, i_bias: float = 0.0) -> tuple[list[list[tuple[int, int] | None]], Any]:
    """(spans per row and field, [B] probability of the chosen tag sequence): the BIO-valid
    Viterbi path after the O and I biases; its probability is the product over real tokens of the
    tempered softmax's probability of each chosen tag (the temperature never moves the answer)."""
    import torch

    lg = biased(logits.detach().float().cpu(), o_bias, i_bias)
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
    warm start (multinomial logistic regression over the usable tokens; a factored head's Linear is
    fit through its expansion, so the probe optimises the same tag likelihood). Returns their tag accuracy."""
    from student.encoder import fit_linear

    keep = tags != IGNORE
    if hasattr(head, "n_fields"):  # factored (make_span_head): fit its Linear through the expansion
        import torch

        fit_linear(head.lin, states[keep], tags[keep], steps=100, weight_decay=weight_decay,
                   loss=lambda out, y: torch.nn.functional.cross_entropy(factored_tags(out, head.n_fields), y))
        with torch.no_grad():
            return (head(states[keep]).argmax(-1) == tags[keep]).float().mean().item()
    return fit_linear(head, states[keep], tags[keep], steps=100, weight_decay=weight_decay)


def _span_f1(pred, gold) -> tuple[int, int, int]:
    """(right, predicted, gold) spans over (example, field), rows with known targets only."""
    tp = np_ = ng = 0
    for pr, gr in zip(pred, gold):
        if gr is None:
            continue
        for p, g in zip(pr, gr):
            tp += p is not None and p == g
            np_ += p is not None
            ng += g is not None
    return tp, np_, ng


def tune_biases(batches: list[tuple[Any, Any, Any]], n_fields: int, o_grid=BIAS_GRID, i_grid=I_BIAS_GRID) -> tuple[float, float]:
    """(O bias, I bias) with the best span micro-F1 (exact (first, last) tokens per example and
    field) on the validation split; ties go to the smallest |biases|. batches: (logits, ok,
    target tags) per batch. The I bias exists because the tagger ends spans early: on NLU++ its
    I- logits sit several nats under O at the last words of a slot ("25th of | Dec"), and I +4 to
    +8 moved validation slot F1 .75 -> .84 (examples/nluplusplus/README.md)."""
    counts = {(o, i): [0, 0, 0] for o in o_grid for i in i_grid}
    for logits, ok, tags in batches:
        gold = gold_spans(tags, ok, n_fields)
        for key, c in counts.items():
            pred, _ = decode(logits, ok, key[0], i_bias=key[1])
            for j, v in enumerate(_span_f1(pred, gold)):
                c[j] += v

    def f1(c: list[int]) -> float:
        return 2 * c[0] / (c[1] + c[2]) if c[1] + c[2] else 0.0

    # Scored by the mean F1 of the point and its grid neighbours: ~100 validation items put the
    # single best point on a spike as often as on a plateau (an NLU++ run picked I +5 beside a
    # cliff at +8; on the holdout it overshot by a word, slot F1 .80 -> .73).
    grid = {(a, b): f1(c) for (a, b), c in counts.items()}
    oi, ii = {v: n for n, v in enumerate(o_grid)}, {v: n for n, v in enumerate(i_grid)}

    def smooth(k: tuple[float, float]) -> float:
        near = [v for (a, b), v in grid.items() if abs(oi[a] - oi[k[0]]) <= 1 and abs(ii[b] - ii[k[1]]) <= 1]
        return sum(near) / len(near)

    return max(sorted(grid, key=lambda k: abs(k[0]) + abs(k[1])), key=lambda k: (round(smooth(k), 9), grid[k]))


def tune_o_bias(batches: list[tuple[Any, Any, Any]], n_fields: int, grid=BIAS_GRID) -> float:
    """The O-logit bias alone (no I bias) with the best span micro-F1 on the validation split."""
    return tune_biases(batches, n_fields, grid, (0.0,))[0]
