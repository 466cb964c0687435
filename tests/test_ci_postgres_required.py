"""CI cannot go soft on PostgreSQL: with DISTILL_REQUIRE_POSTGRES=1 (set by .ci/run) a postgres
test that skips for want of a database fails the run; without the flag it skips. Checked in a
child pytest on a probe test that skips exactly like the real ones do when 5432 is closed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PROBE = """
import socket
import pytest

@pytest.mark.postgres
def test_needs_a_database():
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", {port}))
    except OSError as e:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:{port} ({{e}})")
    finally:
        s.close()

def test_unrelated():
    pytest.skip("an ordinary skip stays a skip")
"""


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path, require: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                                          "from postgres_required import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    postgres: needs PostgreSQL\n")
    (tmp_path / "test_probe.py").write_text(PROBE.format(port=_closed_port()))
    env = {k: v for k, v in os.environ.items() if k != "DISTILL_REQUIRE_POSTGRES"}
    if require is not None:
        env["DISTILL_REQUIRE_POSTGRES"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_missing_postgres_fails_when_required(tmp_path):
    p = _run(tmp_path, "1")
    assert p.returncode == 1, p.stdout
    assert "DISTILL_REQUIRE_POSTGRES is set, but this PostgreSQL test skipped: no PostgreSQL at 127.0.0.1" in p.stdout
    assert "1 failed" in p.stdout and "1 skipped" in p.stdout  # the unmarked skip is left alone


def test_missing_postgres_skips_on_a_laptop(tmp_path):
    p = _run(tmp_path, None)
    assert p.returncode == 0 and "2 skipped" in p.stdout, p.stdout


def test_ci_script_requires_postgres():
    ci = (HERE.parent / ".ci" / "run").read_text()
    assert "export DISTILL_REQUIRE_POSTGRES=1" in ci and "CREATE DATABASE test" in ci
    assert ci.index("DISTILL_REQUIRE_POSTGRES=1") < ci.index("scripts/test.sh")
