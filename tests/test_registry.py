import json
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_promoting_the_current_version_again_does_not_trap_rollback(tmp_path):
    reg = Registry(tmp_path / "reg")
    v1, v2 = (reg.register("m", _model(tmp_path, i), {}) for i in (1, 2))
    reg.promote("m", v1, approver="alice")
    reg.promote("m", v2, approver="bob")
    reg.promote("m", v2, approver="bob", comment="re-approved")  # records previous = v2 itself
    assert reg.rollback("m", approver="carol")["version"] == v1


def test_unknown_version_and_empty_registry(tmp_path):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(DistillError, match="empty"):
        reg.resolve("production")
    reg.register("m", _model(tmp_path, 1), {}, alias=None)
    with pytest.raises(DistillError, match="alias 'production'"):
        reg.resolve("production")
    with pytest.raises(DistillError, match="no version 'v0009'"):
        reg.resolve("v0009")


def test_missing_model_dir_is_refused(tmp_path):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(DistillError, match="not a directory"):
        reg.register("m", tmp_path / "missing", {})
    assert reg.versions("m") == []


# A writer SIGKILLed at a chosen point. The point is reached by a stdlib audit hook (no code of
# ours is patched): when the named file operation is about to happen, the hook drops a marker and
# blocks, the test sees the marker (an observable event, no sleeps) and kills the process there.
KILLED_WRITER = """
import os, sys, time
action, root, model, marker, point = sys.argv[1:6]
busy, seen = [False], [0]

def hook(event, args):
    if busy[0] or event not in ("open", "os.rename"):
        return
    path, dst = str(args[0]), str(args[1]) if event == "os.rename" else ""
    hit = {
        "copy": event == "open" and "/.incoming-" in path and "w" in str(args[1]),   # mid-copy of the model
        "rename": event == "os.rename" and "/versions/v" in dst,                  # copied, not yet visible
        "audit": event == "open" and path.endswith("audit.jsonl"),                # before the audit line is written
        "alias": event == "os.rename" and dst.endswith("aliases.json"),           # new aliases written, not in place
        "meta": event == "open" and "/.meta.json." in path,                      # alias moved, version record not yet
    }[point]
    if hit:
        seen[0] += 1
        if point != "copy" or seen[0] == 5:
            busy[0] = True
            open(marker, "w").close()
            time.sleep(3600)

sys.addaudithook(hook)
from registry.registry import Registry
reg = Registry(root)
if action == "register":
    reg.register("m", model, {"run_id": "killed"})
else:
    reg.promote("m", "v0002", approver="killed")
"""


def _big_model(tmp_path, files=40):
    d = tmp_path / "model-big"
    d.mkdir()
    (d / "student.json").write_text(json.dumps({"kind": "classifier", "tag": "big"}))
    for i in range(files):
        (d / f"f{i:03d}.bin").write_bytes(bytes([i]) * 65536)
    return d


def _kill_at(tmp_path, action, root, model, point):
    marker = tmp_path / f"at-{point}"
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, action, str(root), str(model), str(marker), point],
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert p.poll() is None, f"the writer finished without reaching {point!r}: {p.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, f"the writer never reached {point!r}"
            time.sleep(0.01)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL


def _assert_consistent(root, model) -> Registry:
    """What any reader may rely on after a crash: every visible version is complete, the aliases
    and the audit log parse and point at visible versions."""
    reg = Registry(root)
    want = {f.name: f.read_bytes() for f in model.iterdir()}
    for v in reg.versions("m"):
        got = {f.name: f.read_bytes() for f in reg.model_dir("m", v).iterdir()}
        assert got.keys() == want.keys() or v == "v0001", f"{v} is visible but incomplete"
        assert reg.meta("m", v)["version"] == v
    aliases = json.loads((Path(root) / "m" / "aliases.json").read_text())  # valid JSON, never a torn write
    assert set(aliases.values()) <= set(reg.versions("m")), aliases
    assert all(a["version"] in reg.versions("m") for a in reg.audit("m") if a.get("version"))
    return reg


@pytest.mark.parametrize("point,visible", [("copy", False), ("rename", False), ("audit", True)])
def test_sigkill_during_register_leaves_no_partial_version_nor_reused_number(tmp_path, point, visible):
    root, model = tmp_path / "reg", _big_model(tmp_path)
    Registry(root).register("m", _model(tmp_path, 1), {"run_id": "r1"})
    _kill_at(tmp_path, "register", root, model, point)
    reg = _assert_consistent(root, model)
    assert reg.versions("m") == (["v0001", "v0002"] if visible else ["v0001"])
    assert reg.aliases("m") == {"candidate": "v0001"}  # the alias moves only after the version is in
    # The next writer gets a number no reader has ever seen used, and cleans up the dead copy.
    nxt = reg.register("m", model, {"run_id": "r3"})
    assert nxt == ("v0003" if visible else "v0002")
    assert reg.aliases("m")["candidate"] == nxt and _assert_consistent(root, model)
    assert [p.name for p in (root / "m" / "versions").iterdir()] == sorted(reg.versions("m"))


@pytest.mark.parametrize("point", ["alias", "audit", "meta"])
def test_sigkill_during_promote_leaves_valid_aliases(tmp_path, point):
    root, model = tmp_path / "reg", _big_model(tmp_path, files=2)
    reg = Registry(root)
    reg.promote("m", reg.register("m", _model(tmp_path, 1), {}), approver="alice")
    reg.register("m", model, {})
    _kill_at(tmp_path, "promote", root, model, point)
    reg = _assert_consistent(root, model)
    # The audit line is written ahead of the alias change: killed before the change lands, the
    # alias still names the old version; after it, the new one - and either way the log has it.
    assert reg.aliases("m")["production"] == ("v0002" if point == "meta" else "v0001")
    assert (reg.audit("m")[-1]["action"] == "promote") == (point != "audit")
    assert reg.versions("m") == ["v0001", "v0002"]
    reg.promote("m", "v0002", approver="bob")  # a later promotion goes through
    assert reg.aliases("m")["production"] == "v0002"
    assert reg.meta("m", "v0002")["promotions"][-1]["approver"] == "bob"
    assert reg.rollback("m", approver="carol")["version"] == "v0001"


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
