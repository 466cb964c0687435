"""Temperature scaling, Platt scaling and ECE on synthetic, deliberately miscalibrated scores."""
from __future__ import annotations

import numpy as np
import pytest

from student.calibration import ece, fit_field_temperatures, fit_platt, fit_temperature, platt, temper

try:  # the causal-LM tests' tiny Llama fixture (same directory); absent without torch
    from test_causal_lm import tiny_model_dir  # noqa: F401
except (ImportError, pytest.skip.Exception):  # pragma: no cover - no torch: that module skips itself
    pass


def synthetic(n: int, c: int, true_t: float, seed: int = 0):
    """Labels drawn from softmax(z / true_t): logits z are over- (true_t > 1) or under-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3.0, size=(n, c))
    p = np.exp(z / true_t - (z / true_t).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fitted_temperature_recovers_the_generating_one_and_ece_drops(true_t):
    z, y = synthetic(6000, 8, true_t)
    t = fit_temperature(z, y)
    assert abs(t - true_t) / true_t < 0.08, t
    raw = np.exp(z - z.max(1, keepdims=True))
    raw /= raw.sum(1, keepdims=True)
    cal = temper(z, t, probs=False)
    conf_raw, conf_cal = raw.max(1), cal.max(1)
    hit = raw.argmax(1) == y
    assert (cal.argmax(1) == raw.argmax(1)).all()  # tempering never changes the answer
    before, after = ece(conf_raw, hit), ece(conf_cal, hit)
    assert before > 0.05 and after < 0.02 and after < before / 3, (before, after)


def test_probability_inputs_are_tempered_in_log_space():
    z, y = synthetic(4000, 5, 2.0, seed=1)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert fit_temperature(p, y, probs=True) == pytest.approx(fit_temperature(z, y), rel=1e-3)
    torch = pytest.importorskip("torch")
    assert np.allclose(temper(torch.tensor(p), 2.0).numpy(), temper(p, 2.0), atol=1e-5)


def test_ece_binnings_and_edge_cases():
    conf = np.array([0.9] * 10 + [0.6] * 10)
    hit = np.array([1] * 9 + [0] + [1] * 6 + [0] * 4, dtype=bool)
    assert ece(conf, hit, n_bins=2) == pytest.approx(0.0)
    assert ece(conf, hit, n_bins=10, binning="equal_width") == pytest.approx(0.0)
    assert ece(np.full(4, 1.0), np.zeros(4, dtype=bool)) == pytest.approx(1.0)
    assert ece([], []) is None
    with pytest.raises(ValueError, match="binning"):
        ece(conf, hit, binning="quantile")
    with pytest.raises(ValueError, match="confidences"):
        ece([0.5], [True, False])


def test_platt_scaling_fixes_a_shifted_score():
    rng = np.random.default_rng(2)
    s = rng.normal(-1.0, 1.0, 5000)  # e.g. a mean token log-prob
    p_true = 1 / (1 + np.exp(-(3.0 * s + 2.0)))
    y = rng.random(5000) < p_true
    w = fit_platt(s, y)
    assert w["a"] == pytest.approx(3.0, rel=0.15) and w["b"] == pytest.approx(2.0, rel=0.15)
    assert ece(platt(s, w), y) < 0.02 < ece(np.exp(s).clip(0, 1), y)
    one_class = fit_platt(s[:50], np.ones(50, dtype=bool))
    assert np.isfinite([one_class["a"], one_class["b"]]).all() and platt(s[:50], one_class).min() > 0.8


def test_field_temperatures_and_joint_ece():
    za, ya = synthetic(3000, 4, 2.0, seed=3)
    zb, yb = synthetic(3000, 3, 0.7, seed=4)
    soft = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)  # noqa: E731
    out = fit_field_temperatures({"a": soft(za), "b": soft(zb)}, {"a": ya, "b": yb})
    assert out["temperature"]["a"] == pytest.approx(2.0, rel=0.1) and out["temperature"]["b"] == pytest.approx(0.7, rel=0.1)
    assert out["ece_after"] < out["ece_before"] and out["n"] == 3000 and out["ece_binning"] == "equal_mass"
    assert fit_temperature(np.zeros((0, 3)), []) == 1.0


def test_classifier_predict_scored_is_calibrated_on_val_saved_and_loaded(tmp_path):
    """A tiny classifier: finalize() fits per-field temperatures on the val split, predict_scored
    returns predict()'s answers with a joint confidence, and the temperatures survive save/load
    (a model saved without them loads with T = 1)."""
    pytest.importorskip("torch")
    import json

    from student.base import Example
    from student.kinds import load_student
    from student.classifier import ClassifierStudent
    try:  # the per-kind config (student/config.py's union); the flat one before it
        from student.config import ClassifierStudentConfig as StudentConfig
    except ImportError:
        from student.config import StudentConfig
    from student.models import make_tiny_encoder

    phrases = {"refund": ["i want my money back", "refund please"], "card": ["where is my new card", "card not here"],
               "pin": ["my pin is blocked", "pin locked"]}
    enc = make_tiny_encoder(tmp_path / "enc", [p for ps in phrases.values() for p in ps] + ["now later"])
    ex = [Example(f"{k}{i}{j}", [{"role": "user", "content": f"{t} {w}"}], json.dumps({"intent": k, "when": w}))
          for k, ts in phrases.items() for i, t in enumerate(ts) for j, w in enumerate(["now", "later"] * 2)]
    st = ClassifierStudent.create(StudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0}), ex)
    st.use_knn = True
    st.warm_start(ex)
    fin = st.finalize(ex[::2], ex[1::2])
    cal = fin["calibration"]
    assert set(cal["temperature"]) == {"intent", "when"} and cal["fitted_on"] == "validation" and cal["n"] == len(ex[::2])
    batch = [e.messages for e in ex] + [[{"role": "user", "content": "zzz unknown words"}]]
    scored = st.predict_scored(batch)
    assert [t for t, _ in scored] == st.predict(batch)
    assert all(0.0 < c <= 1.0 for _, c in scored)
    st.save(tmp_path / "m")
    again = load_student(tmp_path / "m")
    assert again.calibration == st.calibration
    assert [c for _, c in again.predict_scored(batch)] == pytest.approx([c for _, c in scored], abs=1e-5)
    meta = json.loads((tmp_path / "m" / "student.json").read_text())
    del meta["calibration"]
    (tmp_path / "m" / "student.json").write_text(json.dumps(meta))
    old = load_student(tmp_path / "m")
    assert old.calibration is None and [t for t, _ in old.predict_scored(batch)] == st.predict(batch)
    # one pass gives both confidences (the eval's ECE before calibration): the calibrated one is
    # predict_scored's, the raw one the same model's with every temperature 1
    both = again.predict_scored_raw(batch)
    assert [(t, c) for t, c, _ in both] == again.predict_scored(batch)
    assert [r for _, _, r in both] == pytest.approx([c for _, c in old.predict_scored(batch)], abs=1e-5)
    assert [r for _, _, r in both] != pytest.approx([c for _, c, _ in both], abs=1e-3)  # the temperatures moved them


def test_causal_lm_sequence_score_and_platt_calibration(tmp_path, tiny_model_dir):
    """predict_scored returns predict()'s answers with exp(mean answer-token log-prob) in (0, 1];
    calibrate() fits Platt scaling on the val split, stored in student.json."""
    pytest.importorskip("peft")
    import test_causal_lm as lm  # the tiny Llama of the causal-LM tests (same directory)

    from student.base import Example
    from student.causal_lm import CausalLMStudent
    from student.kinds import load_student

    d = tiny_model_dir
    data = lm.make_examples(24)
    s = CausalLMStudent()
    s.fit(data[:20], data[20:], lm.lm_cfg(d, epochs=3), tmp_path / "work", progress=False)
    batch = [e["messages"] for e in data[20:]]
    scored = s.predict_scored(batch)
    assert [t for t, _ in scored] == s.predict(batch)
    assert all(0.0 < c <= 1.0 for _, c in scored)
    assert all(mn <= mean + 1e-9 for (_, mn), (_, mean) in zip(s.predict_scored(batch, score="min"), scored))
    cal = s.calibrate([Example(e["id"], e["messages"], e["response"]) for e in data[12:]])
    assert cal["method"] == "platt" and cal["score"] == "mean" and cal["n"] == 12 and cal["fitted_on"] == "validation"
    s.save(tmp_path / "m")
    again = load_student(tmp_path / "m")
    assert again.meta["calibration"] == cal
    assert [c for _, c in again.predict_scored(batch)] == pytest.approx([float(x) for x in platt(
        [sc["mean"] for sc in _scores(again, batch)], cal)], abs=1e-6)


def _scores(s, batch):
    from student.lm_generate import generate
    from student.lm_data import bake_messages

    out: list[dict] = []
    m = s.meta
    generate(s.model, s.tok, s.fmt, [bake_messages(b, m.get("bake_system_prompt", False)) for b in batch], m["max_new_tokens"],
             m["max_seq_length"], m["generate_batch_size"], scores=out)
    return out
