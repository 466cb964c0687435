"""Fixtures for the teacher tests: tiny run dirs and real reference-teacher HTTP servers."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from teacher_helpers import make_dataset  # noqa: E402

from teacher.reference.config import FaultConfig, ReferenceTeacherConfig  # noqa: E402
from teacher.reference.server import ReferenceTeacher  # noqa: E402


@pytest.fixture
def dataset(tmp_path):
    """(run dir, answers file) builder: dataset(n, holdout=0, unknown=0)."""
    return lambda n, holdout=0, unknown=0: make_dataset(tmp_path, n, holdout, unknown)


@pytest.fixture
def serve():
    """Start a ReferenceTeacher on a free port; stopped at teardown. serve(answers, **cfg) -> server."""
    started = []

    def start(answers, faults: dict | None = None, **kw):
        t = ReferenceTeacher(ReferenceTeacherConfig(answers=str(answers), faults=FaultConfig(**(faults or {})), **kw))
        t.start()
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()
