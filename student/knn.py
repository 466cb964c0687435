"""kNN over the student's own training embeddings, mixed into its classifier probabilities:
p = (1 - lam) * softmax(logits) + lam * p_knn, where p_knn weights the labels of the k most
cosine-similar training examples by softmax(similarity / T).

Why: on the Banking77 holdout (bench/train.py) the fine-tuned head alone (92.1 %) tied a
frozen-feature logistic regression (92.2 %); mixed with kNN over the same embeddings it reached
92.5-93.2 % across k in 5-20 and lam in .25-.5, and with (k, T, lam) chosen on the validation
split (val 92.0 -> 93.1 %) 93.0 % on the holdout: the neighbours fix confusions between close
intents that one linear boundary per class cannot. lam = 0 (head alone) is in the grid, so kNN
is used only where it helped on validation. At inference it is one [batch, hidden] x
[hidden, N] matmul (N ~ 8.5k: well under a millisecond).
"""
from __future__ import annotations

from itertools import product
from typing import Any

GRID_K = (5, 10, 20)
GRID_T = (0.02, 0.05)
GRID_LAMBDA = (0.0, 0.25, 0.5, 0.75)


def knn_probs(q, memory, labels, n_labels: int, k: int, temperature: float):
    """[B, n_labels] label distribution from the k nearest memory rows (q and memory L2-normalised)."""
    import torch

    top, idx = (q @ memory.T).topk(min(k, memory.shape[0]), dim=-1)
    w = torch.softmax(top / temperature, dim=-1)
    return torch.zeros(q.shape[0], n_labels, dtype=w.dtype, device=q.device).scatter_add_(1, labels[idx], w)


def mixed_probs(logits, q, memory, labels, setting: dict[str, Any] | None):
    """The classifier's probabilities, mixed with kNN when `setting` asks for it."""
    import torch

    p = torch.softmax(logits.float(), dim=-1)
    if not setting or not setting.get("lambda") or memory is None:
        return p
    lam = setting["lambda"]
    return (1 - lam) * p + lam * knn_probs(q, memory, labels, p.shape[-1], setting["k"], setting["temperature"])


def select(val_logits: dict[str, Any], val_q, val_y: dict[str, Any], memory, memory_y: dict[str, Any]) -> dict[str, Any]:
    """The grid point with the best exact-output accuracy on the validation split (every field
    right); ties go to the smaller lam, so lam = 0 wins unless kNN actually helped."""
    import torch

    scores = {}
    for k, t, lam in product(GRID_K, GRID_T, GRID_LAMBDA):
        ok = torch.ones(val_q.shape[0], dtype=torch.bool, device=val_q.device)
        for f, lg in val_logits.items():
            s = {"k": k, "temperature": t, "lambda": lam}
            ok &= mixed_probs(lg, val_q, memory, memory_y[f], s).argmax(-1) == val_y[f]
        scores[(k, t, lam)] = float(ok.float().mean())
    best = max(scores, key=lambda key: (scores[key], -key[2]))
    head_only = max(v for key, v in scores.items() if key[2] == 0.0)
    return {"k": best[0], "temperature": best[1], "lambda": best[2], "val_accuracy": scores[best], "val_accuracy_head_only": head_only}
