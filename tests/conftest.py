"""Test-wide setup: offline, no telemetry, one Prefect server for the whole session."""
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest  # noqa: E402

from postgres_required import pytest_runtest_makereport  # noqa: E402,F401 - the hook: CI fails, never skips, without PostgreSQL


@pytest.fixture(scope="session")
def prefect_server():
    """One ephemeral Prefect server per test session (it takes 7-14 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
