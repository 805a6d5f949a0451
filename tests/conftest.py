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


# The flow-level tests' bureau: four months of a generated sample (every reject reason, the institutions'
# reported amounts with their known errors in REPORTED.json), loaded once.
LOADED_MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04"]


@pytest.fixture(scope="session")
def bureau(tmp_path_factory) -> Path:
    from flows.sample import write_sample
    out = tmp_path_factory.mktemp("bureau")
    write_sample(out, persons=250, year=2025, months=len(LOADED_MONTHS), seed=7, fmt="mixed", invalid_rate=0.02,
                 reported=True)
    return out


@pytest.fixture(scope="session")
def loaded(bureau, tmp_path_factory, prefect_harness) -> Path:
    """The bureau's year written by one flow run (tests that change it other than by a rerun work on a copy)."""
    from flows.monthly import year_flow
    db = tmp_path_factory.mktemp("db") / "y.duckdb"
    year_flow(2025, str(bureau), str(db))
    return db
