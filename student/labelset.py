"""Set fields (multi-label): one sigmoid per label over the pooled embedding, per-label
thresholds tuned on the validation split."""
from __future__ import annotations

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(2, 19))  # 0.10 .. 0.90
MIN_POSITIVES = 5  # a label with fewer validation positives keeps the field-wide threshold


def set_loss(logits, y, reduction: str = "mean"):
    """Binary cross-entropy summed over labels (so one set field weighs like one softmax field),
    averaged over the batch."""
    import torch.nn.functional as F

    tot = F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
    return tot if reduction == "sum" else tot / max(1, y.shape[0])


def fit_multilabel(head, X, Y, steps: int = 200, weight_decay: float = 3e-3) -> float:
    """One-vs-rest logistic regression on fixed features, written into `head` (the warm start):
    student/encoder.py's fit_linear with the per-label BCE (scaled per label, so the L2 penalty
    means what it does for a softmax head). Returns the exact-set accuracy on the fit data at 0.5."""
    from student.encoder import fit_linear

    return fit_linear(head, X, Y, steps=steps, weight_decay=weight_decay, loss=lambda lg, y: set_loss(lg, y) / y.shape[1])


def _f1(pred, y) -> float:
    tp = float((pred & y).sum())
    fp, fn = float((pred & ~y).sum()), float((~pred & y).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def tune_thresholds(probs, Y) -> list[float]:
    """Per-label thresholds on validation probabilities [N, L]: first the field-wide one with the
    best micro-F1, then per label (with >= MIN_POSITIVES positives) the one with the best F1 of
    that label; ties go to the field-wide threshold."""
    y = Y > 0.5
    glob = max(THRESHOLDS, key=lambda t: (_f1(probs >= t, y), -abs(t - 0.5)))
    out = []
    for j in range(probs.shape[1]):
        if int(y[:, j].sum()) < MIN_POSITIVES:
            out.append(glob)
            continue
        out.append(max(THRESHOLDS, key=lambda t: (_f1(probs[:, j] >= t, y[:, j]), -abs(t - glob))))
    return out
