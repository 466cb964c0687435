"""student/onnx_path.py: the ONNX Runtime encoder gives the torch encoder's answers, is tried by the
fast-path choice when int8 is refused, is recorded and exported into the saved student, and is what
the server loads."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from student import fast_path, onnx_path  # noqa: E402
from student.classifier import ClassifierStudent  # noqa: E402
from student.serve import StudentServer  # noqa: E402

def test_onnx_encoder_matches_torch(saved):
    model_dir, ex = saved
    msgs = [e.messages for e in ex] + [[{"role": "user", "content": "a longer message about my card that never came"}]]
    ref = ClassifierStudent.load(model_dir).predict_scored(msgs)
    st = onnx_path.use_onnx(ClassifierStudent.load(model_dir), model_dir)  # no saved export: a temporary one
    assert isinstance(st.encoder, onnx_path.OrtEncoder)
    got = st.predict_scored(msgs)
    assert [t for t, _ in got] == [t for t, _ in ref]
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(got, ref))


def test_onnx_chosen_when_int8_refused_and_served(saved, tmp_path, monkeypatch):
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    real = fast_path._agreement

    def int8_worse(student, messages, targets):  # int8 answers one in ten wrong: refused; the others as measured
        a = real(student, messages, targets)
        quantized = any("quantized" in type(m).__module__ for m in getattr(student.encoder, "modules", lambda: [])())
        return a - 0.1 if quantized else a

    monkeypatch.setattr(fast_path, "_agreement", int8_worse)
    choice = fast_path.select_and_record(d, ex)
    assert choice["choice"] == "onnx", choice
    assert choice["agreement"]["onnx"] == choice["agreement"]["fp32"] == 1.0 and choice["agreement"]["int8"] == 0.9
    assert "onnx agreement" in choice["reason"] and (d / onnx_path.ONNX_FILE).is_file()
    assert json.loads((d / "student.json").read_text())["fast_path"]["choice"] == "onnx"
    srv = StudentServer(d, num_threads=1)
    srv.start()
    try:
        assert srv.served == "onnx" and isinstance(srv.student.encoder, onnx_path.OrtEncoder)
        assert srv.student.encoder.path == d / onnx_path.ONNX_FILE  # the saved export, not a new one
    finally:
        srv.stop()


def test_onnx_refused_when_it_agrees_worse(saved, tmp_path, monkeypatch):
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    real = fast_path._agreement
    monkeypatch.setattr(fast_path, "_agreement", lambda s, m, t: real(s, m, t) - (0.0 if type(s.encoder).__name__ != "OrtEncoder"
                                                                              and not any("quantized" in type(x).__module__ for x in s.encoder.modules())
                                                                              else 0.05))
    choice = fast_path.choose(d, [e.messages for e in ex], [e.target for e in ex])
    assert choice["choice"] == "fp32" and "onnx agreement" in choice["reason"] and "below" in choice["reason"]
    assert not (d / onnx_path.ONNX_FILE).exists()
