import json
import subprocess
import sys

import pytest

from core.base import DistillError
from registry.registry import Registry


def _model(tmp_path, tag):
    d = tmp_path / f"model-{tag}"
    d.mkdir()
    (d / "student.json").write_text(json.dumps({"kind": "classifier", "tag": tag}))
    return d


def test_register_promote_resolve_rollback(tmp_path):
    reg = Registry(tmp_path / "reg")
    v1 = reg.register("m", _model(tmp_path, 1), {"run_id": "r1"})
    v2 = reg.register("m", _model(tmp_path, 2), {"run_id": "r2"})
    assert (v1, v2) == ("v0001", "v0002")
    assert reg.aliases("m") == {"candidate": "v0002"}
    reg.promote("m", v1, approver="alice")
    reg.promote("m", v2, approver="bob", comment="better")
    assert json.loads((reg.resolve("production") / "student.json").read_text())["tag"] == 2
    assert reg.resolve("1") == reg.model_dir("m", "v0001")
    assert reg.meta("m", v2)["promotions"][0]["approver"] == "bob"
    assert reg.rollback("m", approver="carol")["version"] == "v0001"
    assert reg.aliases("m")["production"] == "v0001"
    with pytest.raises(DistillError, match="no earlier promoted version"):
        reg.rollback("m", approver="carol")
    actions = [a["action"] for a in reg.audit("m")]
    assert actions.count("promote") == 2 and actions.count("rollback") == 1


def test_unknown_version_and_empty_registry(tmp_path):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(DistillError, match="empty"):
        reg.resolve("production")
    reg.register("m", _model(tmp_path, 1), {}, alias=None)
    with pytest.raises(DistillError, match="alias 'production'"):
        reg.resolve("production")
    with pytest.raises(DistillError, match="no version 'v0009'"):
        reg.resolve("v0009")


def test_failed_copy_leaves_no_version(tmp_path):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(DistillError):
        reg.register("m", tmp_path / "missing", {})
    assert reg.versions("m") == []


PROMOTER = """
import sys
from registry.registry import Registry
reg = Registry(sys.argv[1])
for i in range(5):
    v = reg.register("m", sys.argv[2], {"i": i})
    reg.promote("m", v, approver=f"p{i}")
"""


def test_concurrent_promotions_stay_consistent(tmp_path):
    root = tmp_path / "reg"
    model = _model(tmp_path, 1)
    # Separate processes (not threads): the lock must hold across processes, as for two workers.
    procs = [subprocess.Popen([sys.executable, "-c", PROMOTER, str(root), str(model)], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    reg = Registry(root)
    assert reg.versions("m") == [f"v{i:04d}" for i in range(1, 21)]
    assert reg.aliases("m")["production"] in reg.versions("m")
    audit = reg.audit("m")
    assert sum(a["action"] == "promote" for a in audit) == 20
    assert not [p for p in (root / "m" / "versions").iterdir() if p.name.startswith(".")]


def test_fsspec_url_registry(tmp_path, monkeypatch):
    """registry.path as an fsspec URL (memory:// here; s3:// the same way): versions, aliases,
    audit and hand-off files live in the object store, models come back through a local cache."""
    import fsspec

    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    url = "memory://distill-test-registry"
    reg = Registry(url)
    try:
        v1 = reg.register("m", _model(tmp_path, 1), {"run_id": "r1"})
        v2 = reg.register("m", _model(tmp_path, 2), {"run_id": "r2"})
        reg.promote("m", v1, approver="alice")
        reg.promote("m", v2, approver="bob")
        other = Registry(url)  # a second client sees the same state
        assert other.versions("m") == ["v0001", "v0002"] and other.aliases("m")["production"] == "v0002"
        local = other.resolve("production")
        assert json.loads((local / "student.json").read_text())["tag"] == 2 and str(tmp_path / "cache") in str(local)
        (tmp_path / "serve.sh").write_text("#!/bin/sh\n")
        other.add_files("m", v2, [tmp_path / "serve.sh"])
        fs = fsspec.filesystem("memory")
        assert fs.exists("/distill-test-registry/m/versions/v0002/serve.sh")
        assert not fs.exists("/distill-test-registry/.lock")  # the lease is released
        assert other.rollback("m", approver="carol")["version"] == "v0001"
        assert [a["action"] for a in other.audit("m")].count("promote") == 2
        # a version whose copy never finished (no meta.json) is invisible and its number not reused
        fs.pipe_file("/distill-test-registry/m/versions/v0003/model/student.json", b"{}")
        assert other.versions("m") == ["v0001", "v0002"]
        assert other.register("m", _model(tmp_path, 4), {}) == "v0004"
    finally:
        fsspec.filesystem("memory").rm("/distill-test-registry", recursive=True)
