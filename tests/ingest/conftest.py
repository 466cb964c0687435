"""Fixtures for ingest tests (helpers live in ingest_testkit.py, importable by name)."""
import pytest

from ingest_testkit import Runner


@pytest.fixture
def runner(tmp_path) -> Runner:
    return Runner(tmp_path)
