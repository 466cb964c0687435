"""Span fields: start/end pointers over the input tokens, one pair per span field (SQuAD 2.0 style).

One linear head maps each token state to 2 logits per field; position 0 (the [CLS] token) means
"absent", so "the teacher omitted it" is learned like any other answer. Decoding takes the best
(start <= end, at most MAX_SPAN_TOKENS long) pair of real tokens and keeps it only when it beats
the absent score; the text is then cut from the input by the tokenizer's character offsets, so a
span can never contain text that is not in the user's message.
"""
from __future__ import annotations

from typing import Any

MAX_SPAN_TOKENS = 24
IGNORE = -100  # the target of a span the teacher wrote but the input does not contain (reported, not learned)


def make_span_head(hidden: int, n_fields: int):
    import torch

    head = torch.nn.Linear(hidden, 2 * n_fields)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


def span_logits(head, states, ok):
    """(start, end) logits [B, K, T]; positions that are neither [CLS] (absent) nor a real input
    token (padding, [SEP]) get -inf. ok: [B, T] bool."""
    lg = head(states)  # [B, T, 2K]
    b, t, _ = lg.shape
    lg = lg.view(b, t, -1, 2).permute(3, 0, 2, 1)  # [2, B, K, T]
    lg = lg.masked_fill(~ok[None, :, None, :], float("-inf"))
    return lg[0], lg[1]


def span_loss(start, end, targets, reduction: str = "mean"):
    """Cross-entropy of start and end positions; targets [B, K, 2] (0 = absent, IGNORE = skip)."""
    import torch.nn.functional as F

    k = start.shape[-1]
    tot = F.cross_entropy(start.reshape(-1, k), targets[..., 0].reshape(-1), ignore_index=IGNORE, reduction="sum")
    tot = tot + F.cross_entropy(end.reshape(-1, k), targets[..., 1].reshape(-1), ignore_index=IGNORE, reduction="sum")
    if reduction == "sum":
        return tot
    return tot / max(1, int((targets[..., 0] != IGNORE).sum()))


def decode(start, end, bias=None):
    """Best spans: (pos [B, K, 2] with (0, 0) = absent, prob [B, K] of the chosen answer).
    bias [K]: added to the absent score (tuned on validation; 0 = plain comparison)."""
    import torch

    ls, le = start.float().log_softmax(-1), end.float().log_softmax(-1)
    t = ls.shape[-1]
    i = torch.arange(t, device=ls.device)
    band = (i[None, :] >= i[:, None]) & (i[None, :] - i[:, None] < MAX_SPAN_TOKENS) & (i[:, None] > 0)
    score = ls[..., :, None] + le[..., None, :]  # [B, K, T, T]
    score = score.masked_fill(~band, float("-inf"))
    best, flat = score.flatten(-2).max(-1)
    null = ls[..., 0] + le[..., 0]
    if bias is not None:
        null = null + bias.to(null.device)[None, :]
    take = best > null
    pos = torch.stack([flat // t, flat % t], -1) * take[..., None]
    logp = torch.where(take, best, ls[..., 0] + le[..., 0])
    return pos, logp.exp()


def span_text(text: str, offsets: list[tuple[int, int]], first: int, last: int) -> str:
    """The input's own characters from token `first` to token `last` (inclusive)."""
    return text[offsets[first][0] : offsets[last][1]]


def fit_span_probe(head, states, ok, targets, steps: int = 100, weight_decay: float = 1e-3) -> float:
    """Fit the span head on frozen token states (states [N, T, H], ok [N, T], targets [N, K, 2]):
    the pointer's linear-probe warm start. Returns the share of (example, field) answers right."""
    import torch

    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        s, e = span_logits(head, states, ok)
        loss = span_loss(s, e, targets) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pos, _ = decode(*span_logits(head, states, ok))
        keep = targets[..., 0] != IGNORE
        right = (pos == targets.clamp(min=0)).all(-1) & keep
        return float(right.sum()) / max(1, int(keep.sum()))


def tune_absent_bias(batches: list[tuple[Any, Any, Any]], grid=(-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)) -> list[float]:
    """Per field, the absent-score bias with the most exact answers on the validation split (ties
    to 0): trades a missed slot against an invented one. batches: (start, end, targets) per batch."""
    import torch

    k_fields = batches[0][0].shape[1]
    right = {b: torch.zeros(k_fields) for b in grid}
    for start, end, targets in batches:
        keep = targets[..., 0] != IGNORE
        for b in grid:
            pos, _ = decode(start, end, torch.full((k_fields,), b))
            right[b] += ((pos == targets.clamp(min=0)).all(-1) | ~keep).float().sum(0).cpu()
    out = []
    for k in range(k_fields):
        best = max(sorted(grid, key=abs), key=lambda b: float(right[b][k]) - 1e-6 * abs(b))
        out.append(float(best))
    return out


def targets_tensor(rows: list[list[tuple[int, int] | None | str]]) -> Any:
    """[B, K, 2] long: (first, last) token, (0, 0) absent, IGNORE for an unmatched span."""
    import torch

    return torch.tensor([[(IGNORE, IGNORE) if p == "unmatched" else (0, 0) if p is None else p for p in r] for r in rows], dtype=torch.long)
