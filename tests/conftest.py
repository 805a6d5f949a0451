"""Session set-up: Prefect offline and quiet, one test harness for the whole session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="yibao-tests-"))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ["PREFECT_HOME"] = str(_TMP / "prefect")
os.environ.setdefault("HOME", str(_TMP))


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect backend for every flow-level test (about 10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):  # uses the 180 s setting above
        yield
