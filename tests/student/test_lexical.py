"""The classifier student's lexical second opinion (student/lexical.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from student.lexical import LexicalModel, mix, select_weight
from tests.student.test_classifier import corpus, make_records, make_run, tiny_cfg

WORDS = {0: ["refund", "money back", "reimburse"], 1: ["card", "new card", "card arrive"], 2: ["pin", "pin blocked", "unlock pin"]}


def _data(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return [f"please help {rng.choice(WORDS[int(c)])} today {rng.integers(100)}" for c in y], y


def test_probabilities_are_sklearns_and_survive_a_save(tmp_path):
    from scipy.sparse import hstack
    from sklearn.linear_model import SGDClassifier

    texts, y = _data(120)
    m = LexicalModel.fit(texts, {"intent": y}, {"intent": 4})  # label 3 never seen: probability 0
    p = m.probs(texts[:20])["intent"]
    assert p.shape == (20, 4) and np.allclose(p.sum(1), 1) and (p[:, 3] == 0).all()
    assert (p.argmax(1) == y[:20]).mean() == 1.0
    ref = SGDClassifier(loss="log_loss", alpha=2e-5, max_iter=30, tol=None, random_state=0).fit(
        hstack([m.word.transform(texts), m.char.transform(texts)]).tocsr(), y)
    x_sk = hstack([m.word.transform(texts[:20]), m.char.transform(texts[:20])]).tocsr()
    assert np.allclose(m.features(texts[:20]).toarray(), x_sk.toarray(), atol=1e-6)  # our fast transform is sklearn's
    assert np.allclose(p[:, :3], ref.predict_proba(x_sk), atol=1e-5)
    assert m.features(["zzzz"]).nnz == 0 and np.allclose(m.probs(["qqqq xx"])["intent"].sum(), 1)  # nothing known: intercepts
    m.save(tmp_path)
    assert not list(tmp_path.rglob("*.pkl"))  # arrays and JSON only
    assert np.allclose(LexicalModel.load(tmp_path).probs(texts[:20])["intent"], p, atol=1e-6)


def test_threads_do_not_change_the_weights():
    texts, y = _data(120)
    one, two = (LexicalModel.fit(texts, {"intent": y}, {"intent": 3}, n_jobs=n) for n in (1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(one.heads["intent"], two.heads["intent"]))


def test_binary_field_and_single_label_field():
    texts, y = _data(60)
    m = LexicalModel.fit(texts, {"two": (y == 0).astype(int), "one": np.zeros(60, int)}, {"two": 2, "one": 1})
    assert set(m.heads) == {"two"}  # a field with one label has nothing to learn
    p = m.probs(texts)["two"]
    assert ((p[:, 1] > 0.5) == (y == 0)).mean() > 0.95


def test_weight_is_zero_for_noise_and_positive_for_signal():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    enc = np.full((400, 5), 0.1)
    right = rng.random(400) < 0.7  # an encoder right 70 % of the time
    enc[np.arange(400), np.where(right, y, (y + 1) % 5)] = 0.6
    noise = rng.dirichlet(np.ones(5), 400)
    assert select_weight(enc, noise, y)["weight"] == 0.0
    helpful = np.full((400, 5), 0.05)
    helpful[np.arange(400), y] = 0.8
    c = select_weight(enc, helpful, y)
    assert c["weight"] > 0 and c["val_accuracy"] > c["val_accuracy_encoder_only"]


def test_mix_keeps_torch_device_and_dtype():
    torch = pytest.importorskip("torch")
    p = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    out = mix(p, np.array([[0.0, 1.0]], dtype=np.float32), 0.5)
    assert out.dtype == torch.float64 and torch.allclose(out, torch.tensor([[0.45, 0.55]], dtype=torch.float64))
    assert mix(p, None, 0.5) is p


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    pytest.importorskip("torch")
    from student.models import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc", corpus())


def test_classifier_student_mixes_it_in_and_reloads_identically(tmp_path, encoder):
    from core.rundir import RunDir
    from student.kinds import load_student
    from student.train import run_train

    rd: RunDir = make_run(tmp_path, make_records(240))
    m = run_train(tiny_cfg(encoder, lexical=True), rd)
    lex = m["finalize"]["lexical"]
    assert set(lex["fields"]) == set(json.loads((rd.path / "train" / "model" / "student.json").read_text())["vocab"])
    model_dir = rd.path / "train" / "model"
    meta = json.loads((model_dir / "student.json").read_text())
    assert meta.get("lexical", {}).get("weight", {}) == lex["weight"]
    assert (model_dir / "lexical").is_dir() == bool(lex["weight"])
    st = load_student(model_dir)
    msgs = [r["messages"] for r in make_records(30, seed=5)]
    again = load_student(model_dir)
    assert st.predict_scored(msgs) == again.predict_scored(msgs)
    if lex["weight"]:
        off = load_student(model_dir)
        off.lexical = None
        assert [c for _, c in off.predict_scored(msgs)] != [c for _, c in st.predict_scored(msgs)]
