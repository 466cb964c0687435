"""student/fast_path.py: a faster path chosen only when it agrees as well as fp32 on validation,
tried fastest first, recorded in student.json and loaded by the server."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch")

from student import fast_path  # noqa: E402
from student.classifier import ClassifierStudent  # noqa: E402
from student.serve import StudentServer  # noqa: E402

def test_int8_replaces_linear_layers_and_keeps_answers(saved):
    import torch

    model_dir, ex = saved
    st = fast_path.quantize_int8(ClassifierStudent.load(model_dir))
    kinds = {type(m).__module__ for m in st.encoder.modules() if "Linear" in type(m).__name__}
    assert any("quantized" in k for k in kinds) and not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear
                                                         for m in st.encoder.modules())
    assert st.predict([e.messages for e in ex]) == [e.target for e in ex]


def test_choice_is_recorded_and_served(saved, tmp_path):
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    assert fast_path.served_path(d) == "fp32"  # nothing recorded yet
    choice = fast_path.select_and_record(d, ex)
    first = fast_path.candidates()[0]  # onnx_int8 where onnxruntime is installed (it is pinned)
    # the first candidate kept fp32's agreement: the slower ones were not scored at all
    assert choice["choice"] == first and choice["agreement"] == {"fp32": 1.0, first: 1.0}
    assert json.loads((d / "student.json").read_text())["fast_path"]["choice"] == first
    with StudentServer(d, num_threads=1) as _:
        pass
    srv = StudentServer(d, num_threads=1)
    srv.start()
    try:
        assert srv.served == first
    finally:
        srv.stop()


def test_int8_refused_when_it_agrees_worse(saved, tmp_path):
    """Targets the fp32 model gets right but int8 cannot beat: flip a label so only an exact
    score tie matters - here we force the comparison with a threshold fp32 alone meets."""
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    old = fast_path.MAX_DROP
    fast_path.MAX_DROP = -0.5  # int8 would need 50 points more than fp32: impossible
    try:
        choice = fast_path.choose(d, [e.messages for e in ex], [e.target for e in ex], time_it=False)
    finally:
        fast_path.MAX_DROP = old
    assert choice["choice"] == "fp32" and "below" in choice["reason"]


def test_causal_lm_and_empty_val_stay_fp32(saved, tmp_path):
    model_dir, _ = saved
    assert fast_path.choose(model_dir, [], [], time_it=False)["choice"] == "fp32"
    d = tmp_path / "lm"
    d.mkdir()
    (d / "student.json").write_text(json.dumps({"kind": "causal_lm"}))
    assert "no fast path" in fast_path.choose(d, [[{"role": "user", "content": "x"}]], ["y"])["reason"]


def test_val_examples_are_scored_against_the_training_rows_only(saved, tmp_path, monkeypatch):
    """One method cuts the kNN memory to its training rows (finalize appends the val examples
    after them) and puts the deployed memory back, even when scoring fails; the fast-path choice
    scores both of its paths through it."""
    import torch

    model_dir, ex = saved
    st = ClassifierStudent.load(model_dir)
    z, _, y = st._embed_examples(ex)
    st.knn = {"k": 3, "temperature": 0.05, "lambda": 0.5}
    st.memory = deployed = (z, y)
    with st.against_training_rows(5):
        assert st.memory[0].shape[0] == 5 and all(len(v) == 5 for v in st.memory[1].values())
        assert torch.equal(st.memory[0], z[:5])
    assert st.memory is deployed
    with pytest.raises(RuntimeError), st.against_training_rows(5):
        raise RuntimeError("scoring failed")
    assert st.memory is deployed
    with st.against_training_rows(None):  # no count: the whole memory
        assert st.memory is deployed

    seen = []
    real = ClassifierStudent.against_training_rows

    def spy(self, n_train):
        seen.append(n_train)
        return real(self, n_train)

    monkeypatch.setattr(ClassifierStudent, "against_training_rows", spy)
    fast_path.choose(model_dir, [e.messages for e in ex], [e.target for e in ex], n_train=7)
    assert seen == [7, 7]  # fp32 and the first candidate, which won
    # fp32's answers from the caller (the train stage scored val already): fp32 is not scored again
    seen.clear()
    wrong = fast_path.choose(model_dir, [e.messages for e in ex], [e.target for e in ex], n_train=7, fp32_answers=["no"] * len(ex))
    assert seen == [7] and wrong["agreement"]["fp32"] == 0.0


def test_int8_choice_records_that_answers_do_not_depend_on_the_batch(saved, tmp_path, monkeypatch):
    """int8 quantises activations per batch; it is served only when a request's answer is the same
    alone and batched (the Banking77 demo's int8 changed 2.7 % of validation answers: refused).
    The ONNX paths, tried before it, agree worse here, so torch int8 is reached."""
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    st = fast_path.quantize_int8(ClassifierStudent.load(d))
    assert fast_path._batch_flips(st, [e.messages for e in ex]) == 0.0
    real = fast_path._agreement
    monkeypatch.setattr(fast_path, "_agreement", lambda s, m, t: real(s, m, t) - (0.1 if type(s.encoder).__name__ == "OrtEncoder" else 0.0))
    choice = fast_path.choose(d, [e.messages for e in ex], [e.target for e in ex], time_it=False)
    assert choice["int8_batch_flips"] == 0.0 and choice["choice"] == "int8"
    assert list(choice["agreement"]) == ["fp32", *fast_path.candidates()]  # tried fastest first, int8 last
