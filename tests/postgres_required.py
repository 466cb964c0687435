"""A pytest hook (imported by tests/conftest.py): with DISTILL_REQUIRE_POSTGRES=1 - .ci/run sets
it - a test marked `postgres` that skips because no database is reachable fails instead, so CI
cannot go green without having run the PostgreSQL tests. Without the flag they skip as usual."""
from __future__ import annotations

import os

import pytest


def required() -> bool:
    return os.environ.get("DISTILL_REQUIRE_POSTGRES", "") not in ("", "0", "false")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and item.get_closest_marker("postgres") is not None and required():
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reason = reason.removeprefix("Skipped: ")
        rep.outcome = "failed"
        rep.longrepr = f"DISTILL_REQUIRE_POSTGRES is set, but this PostgreSQL test skipped: {reason}"
