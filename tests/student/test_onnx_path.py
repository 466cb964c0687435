"""student/onnx_path.py: the ONNX Runtime encoder gives the torch encoder's answers, is tried by the
fast-path choice before torch int8 (fastest first), is recorded and exported into the saved
student, and is what the server loads."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from student import fast_path, onnx_path, onnx_quant  # noqa: E402
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


def test_onnx_chosen_when_onnx_int8_refused_and_served(saved, tmp_path, monkeypatch):
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    real = fast_path._agreement

    def int8_worse(student, messages, targets):  # both int8 paths answer one in ten wrong: refused; onnx as measured
        a = real(student, messages, targets)
        quantized = any("quantized" in type(m).__module__ for m in getattr(student.encoder, "modules", lambda: [])())
        return a - 0.1 if quantized or "int8" in getattr(getattr(student.encoder, "path", None), "name", "") else a

    monkeypatch.setattr(fast_path, "_agreement", int8_worse)
    choice = fast_path.select_and_record(d, ex)
    assert choice["choice"] == "onnx", choice
    assert choice["agreement"]["onnx"] == choice["agreement"]["fp32"] == 1.0 and "int8" not in choice["agreement"]  # torch int8 comes after onnx
    assert choice["agreement"]["onnx_int8"] == 0.9 and not (d / onnx_quant.ONNX_INT8_FILE).exists()
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
    assert "onnx_int8 agreement" in choice["reason"] and choice["agreement"]["onnx_int8"] == choice["agreement"]["fp32"] - 0.05
    assert not (d / onnx_path.ONNX_FILE).exists() and not (d / onnx_quant.ONNX_INT8_FILE).exists()


def test_static_int8_answers_do_not_depend_on_the_batch(saved, tmp_path):
    """Static int8 fixes every activation scale at calibration: a text's scores are the same alone
    and in a padded batch with longer neighbours (dynamic int8 rescales per batch)."""
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    st = ClassifierStudent.load(d)
    path = onnx_quant.build(st, d, [m["content"] for e in ex for m in e.messages])
    assert path == d / onnx_quant.ONNX_INT8_FILE and not (d / onnx_path.ONNX_FILE).exists()  # fp32 export was temporary
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    st = onnx_quant.use_onnx_int8(ClassifierStudent.load(d), d)
    msgs = [e.messages for e in ex] + [[{"role": "user", "content": "a much longer message about my card that never came at all"}]]
    batched = st.predict_scored(msgs)
    alone = [st.predict_scored([m])[0] for m in msgs]
    assert [t for t, _ in batched] == [t for t, _ in alone]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(batched, alone))
    assert fast_path._batch_flips(st, msgs) == 0.0
    assert [t for t, _ in batched[:len(ex)]] == [e.target for e in ex]


def test_static_int8_tried_first_and_served(saved, tmp_path):
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    choice = fast_path.select_and_record(d, ex)
    assert choice["choice"] == "onnx_int8", choice
    assert choice["agreement"]["onnx_int8"] == choice["agreement"]["fp32"] == 1.0 and choice["onnx_int8_batch_flips"] == 0.0
    assert set(choice["agreement"]) == {"fp32", "onnx_int8"}  # it won: the slower paths were not scored
    assert (d / onnx_quant.ONNX_INT8_FILE).is_file() and not (d / onnx_path.ONNX_FILE).exists()  # only what is served is kept
    srv = StudentServer(d, num_threads=1)
    srv.start()
    try:
        assert srv.served == "onnx_int8" and srv.student.encoder.path == d / onnx_quant.ONNX_INT8_FILE
    finally:
        srv.stop()
    with pytest.raises(FileNotFoundError, match="no static int8 export"):
        onnx_quant.use_onnx_int8(ClassifierStudent.load(model_dir), model_dir)


def test_static_int8_refused_when_its_answers_change_with_the_batch(saved, tmp_path, monkeypatch):
    """Agreement alone is not enough: an int8 path whose answers flip with the batch is refused
    (the fp32 ONNX path is served instead)."""
    model_dir, ex = saved
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    real_a, real_f = fast_path._agreement, fast_path._batch_flips
    quantized = lambda s: any("quantized" in type(m).__module__ for m in getattr(s.encoder, "modules", lambda: [])())  # noqa: E731
    monkeypatch.setattr(fast_path, "_agreement", lambda s, m, t: real_a(s, m, t) - (0.1 if quantized(s) else 0.0))
    monkeypatch.setattr(fast_path, "_batch_flips", lambda s, m: 0.01 if "int8" in getattr(getattr(s.encoder, "path", None), "name", "") else real_f(s, m))
    choice = fast_path.choose(d, [e.messages for e in ex], [e.target for e in ex])
    assert choice["choice"] == "onnx" and choice["onnx_int8_batch_flips"] == 0.01 and "1.0% batch flips" in choice["reason"]
    assert not (d / onnx_quant.ONNX_INT8_FILE).exists()


def test_length_groups_cut_padding_and_keep_answers(saved):
    """A batch padded to one long request is split into length groups (the demo's batches of 32
    carried 2.9 padded tokens per real one); every row lands in exactly one group, and the
    encoder's answers are those of the unsplit batch."""
    lens = [15] * 31 + [61]
    groups = onnx_path.length_groups(lens)
    assert groups == [list(range(31)), [31]]
    assert sum(max(lens[i] for i in g) * len(g) for g in groups) < max(lens) * len(lens) / 2
    assert onnx_path.length_groups([12] * 8) == [list(range(8))]  # equal lengths: one run
    assert sorted(i for g in onnx_path.length_groups([3, 40, 5, 60, 7, 9]) for i in g) == list(range(6))
    model_dir, ex = saved
    st = onnx_path.use_onnx(ClassifierStudent.load(model_dir), model_dir)
    long = [[{"role": "user", "content": " ".join(["my card never came and i want my money back"] * 6)}]]
    msgs = [e.messages for e in ex] + long
    batched = st.predict_scored(msgs)
    assert [t for t, _ in batched] == [t for t, _ in (st.predict_scored([m])[0] for m in msgs)]
    import torch

    ids, mask = torch.ones((3, 40), dtype=torch.long), torch.ones((3, 40), dtype=torch.long)
    mask[:2, 6:] = 0
    whole = st.encoder.session.run(["last_hidden_state"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    split = st.encoder(ids, mask).last_hidden_state.numpy()
    assert abs(split[2] - whole[2]).max() < 1e-4 and abs(split[:2, :6] - whole[:2, :6]).max() < 1e-4
    assert (split[:2, 6:] == 0).all()
