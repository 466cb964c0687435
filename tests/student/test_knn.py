"""The kNN mix of the classifier student (student/knn.py) on small hand-built embeddings."""
import pytest

torch = pytest.importorskip("torch")

from student.knn import knn_probs, mixed_probs, select  # noqa: E402


def _unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


MEMORY = _unit([1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9])  # two tight clusters
LABELS = torch.tensor([0, 0, 1, 1])


def test_knn_probs_vote_of_the_nearest_labels():
    p = knn_probs(_unit([1, 0.05], [0.05, 1]), MEMORY, LABELS, n_labels=3, k=2, temperature=0.05)
    assert torch.allclose(p.sum(-1), torch.ones(2))
    assert p.argmax(-1).tolist() == [0, 1] and float(p[:, 2].max()) == 0.0  # a label no neighbour has gets nothing


def test_mix_weight_zero_is_the_head_alone():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    q = _unit([0, 1])
    head = mixed_probs(logits, q, MEMORY, LABELS, {"k": 2, "temperature": 0.05, "lambda": 0.0})
    assert torch.allclose(head, torch.softmax(logits, -1))
    mixed = mixed_probs(logits, q, MEMORY, LABELS, {"k": 2, "temperature": 0.05, "lambda": 0.75})
    assert mixed.argmax(-1).tolist() == [1]  # the neighbours outvote a wrong head


def test_select_uses_knn_only_where_it_helps_on_validation():
    q = _unit([1, 0.1], [0.1, 1], [0.95, 0.05], [0.05, 0.95])
    y = {"f": torch.tensor([0, 1, 0, 1])}
    right = {"f": torch.nn.functional.one_hot(y["f"], 2).float() * 8}
    wrong = {"f": right["f"].flip(-1)}
    noisy = {"f": torch.tensor([0, 1, 1, 0])}  # each cluster's neighbours split between the labels
    assert select(right, q, y, MEMORY, noisy)["lambda"] == 0.0  # a sure, right head: a split vote only blurs it
    pick = select(wrong, q, y, MEMORY, {"f": LABELS})
    assert pick["lambda"] > 0 and pick["val_accuracy"] == 1.0 and pick["val_accuracy_head_only"] == 0.0
    assert pick["val_log_loss"] < pick["val_log_loss_head_only"] and pick["criterion"] == "val_log_loss"


def test_select_scores_the_distribution_not_only_the_argmax():
    """A head that is right but unsure ties the mix on accuracy; the clean neighbour vote makes the
    right answers surer, which log loss (the criterion) rewards - the confidence the cascade reads."""
    q = _unit([1, 0.1], [0.1, 1], [0.95, 0.05], [0.05, 0.95])
    y = {"f": torch.tensor([0, 1, 0, 1])}
    unsure = {"f": torch.nn.functional.one_hot(y["f"], 2).float() * 0.4}
    pick = select(unsure, q, y, MEMORY, {"f": LABELS})
    assert pick["val_accuracy"] == pick["val_accuracy_head_only"] == 1.0
    assert pick["lambda"] > 0 and pick["val_log_loss"] < pick["val_log_loss_head_only"]
