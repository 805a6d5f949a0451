"""`yibao server`, `yibao serve` and the temporary server of a killed run (issue 16.5): the real entry point in a
subprocess, with Prefect's state in a temporary PREFECT_HOME and no PREFECT_API_URL (so the command itself decides
which server it uses)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, "PREFECT_HOME": str(home)}


def yibao(args: list[str], home: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=_env(home), capture_output=True, text=True,
                          timeout=600, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    return [int(a) for a, b in (ln.split() for ln in out.splitlines()) if int(b) == pid]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_serve_without_a_real_server_refuses_with_one_line(tmp_path):
    p = yibao(["serve", "--db", str(tmp_path / "y.duckdb")], tmp_path / "prefect")
    assert p.returncode == 1
    assert p.stderr.splitlines() == ["yibao: yibao serve needs a running Prefect server (schedules do not run on a "
                                     "temporary one): start it with `yibao server start`"]


def test_server_start_status_stop(tmp_path):
    home, port = tmp_path / "prefect", _free_port()
    p = yibao(["server", "start", "--port", str(port)], home)
    try:
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"Prefect server running: http://127.0.0.1:{port} (UI and API, pid ")
        s = yibao(["server", "status"], home)
        assert s.returncode == 0 and s.stdout.startswith(f"Prefect server running: http://127.0.0.1:{port} (pid ")
    finally:
        stop = yibao(["server", "stop"], home)
    assert stop.returncode == 0 and stop.stdout.startswith(f"Prefect server stopped (http://127.0.0.1:{port}, pid ")
    s = yibao(["server", "status"], home)
    assert s.returncode == 3 and s.stdout.startswith("no Prefect server started by yibao is running")


def test_a_killed_run_leaves_no_server_behind(bureau, tmp_path):
    """The temporary server a command starts is ended by the kernel when the command is killed (SIGKILL)."""
    root = tmp_path / "in"
    shutil.copytree(bureau, root)
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--month", "2025-01", "--input", str(root),
                             "--db", str(tmp_path / "y.duckdb")], env=_env(tmp_path / "prefect"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    t0 = time.monotonic()
    while not children and time.monotonic() - t0 < 300 and proc.poll() is None:
        children = _children(proc.pid)  # the temporary server: started before any flow runs
        time.sleep(0.2)
    if proc.poll() is not None:
        pytest.fail("the run ended before its temporary server was seen")
    assert children
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    while any(_alive(c) for c in children) and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    assert not any(_alive(c) for c in children)
