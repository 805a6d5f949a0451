"""Process-wide settings applied before Prefect is imported: offline, quiet, local (STACK-NOTES.md)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def prefect_offline_defaults() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # A loaded 2-core machine can take longer than the default 20 s to start the temporary server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("HOME", str(PROJECT_ROOT))
    # Prefect's state (its database, the server's) in the project, not ~/.prefect (issue 16.8), whatever runs yibao
    os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))


def default_input() -> Path:
    return Path(os.environ.get("YIBAO_INPUT", "data/sample"))


def default_db() -> Path:
    return Path(os.environ.get("YIBAO_DB", "yibao.duckdb"))
