"""`yibao server start|stop|status` and the Prefect API every other command uses (issue 16.5).

- A real local Prefect server (127.0.0.1, UI included) started by `yibao server start`, detached, its state in
  `<PREFECT_HOME>/yibao-server.json`; every yibao command uses it while it runs (about 2 s a flow instead of
  10–20 s for a temporary server, STACK-NOTES.md).
- Without one (and without PREFECT_API_URL), a command starts a temporary server of its own, as Prefect would,
  but tied to the command's process: the kernel ends it when the command ends, killed or not (PR_SET_PDEATHSIG),
  so no server outlives a killed run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 4200
STATE = "yibao-server.json"


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")


def _state_file() -> Path:
    return prefect_home() / STATE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(url: str, timeout: float = 2.0) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def running() -> dict | None:
    """The state of the server `yibao server start` left running, or None."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(state["pid"]) else None


def start(port: int = DEFAULT_PORT, timeout: float = 180) -> str:
    state = running()
    if state:
        return f"Prefect server already running: {state['url']} (pid {state['pid']})"
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    if _healthy(url, 0.5):
        raise RuntimeError(f"something else already answers on {url}: choose another --port")
    log = open(home / "yibao-server.log", "ab")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "true",
           "PREFECT_UI_API_URL": f"{url}/api"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)  # its own session: it outlives this command, on purpose
    t0 = time.monotonic()
    while not _healthy(url, 1.0):
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}: see {home / 'yibao-server.log'}")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGTERM)
            raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s: see "
                               f"{home / 'yibao-server.log'}")
        time.sleep(0.5)
    _state_file().write_text(json.dumps({"pid": proc.pid, "url": url, "port": port,
                                         "started_at": time.strftime("%Y-%m-%d %H:%M:%S")}))
    return (f"Prefect server running: {url} (UI and API, pid {proc.pid}, state in {home}); yibao commands use it "
            f"until `yibao server stop`")


def stop(timeout: float = 30) -> str:
    state = running()
    if not state:
        _state_file().unlink(missing_ok=True)
        return "no Prefect server started by yibao is running"
    os.killpg(state["pid"], signal.SIGTERM)  # the server and its workers: the session start() gave it
    t0 = time.monotonic()
    while _alive(state["pid"]) and time.monotonic() - t0 < timeout:
        try:
            os.waitpid(state["pid"], os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if _alive(state["pid"]):
        os.killpg(state["pid"], signal.SIGKILL)
    _state_file().unlink(missing_ok=True)
    return f"Prefect server stopped ({state['url']}, pid {state['pid']})"


def status() -> tuple[str, bool]:
    state = running()
    if not state:
        return "no Prefect server started by yibao is running (commands start a temporary one each)", False
    ok = _healthy(state["url"])
    return (f"Prefect server {'running' if ok else 'not answering'}: {state['url']} (pid {state['pid']}, since "
            f"{state['started_at']})"), ok


def api_url() -> str | None:
    """PREFECT_API_URL if set (environment or Prefect's settings), else the API of the server `yibao server start`
    left running."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import PREFECT_API_URL
    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    state = running()
    return f"{state['url']}/api" if state else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def temporary_server() -> str:
    """Start Prefect's temporary server from this (main) thread with its process tied to ours: the kernel sends
    it SIGTERM when this process ends, however it ends. Returns its API URL."""
    import types

    import prefect.server.api.server as srv

    real = srv.subprocess

    def popen(*args, **kwargs):
        if sys.platform.startswith("linux"):
            kwargs.setdefault("preexec_fn", _die_with_parent)
        return real.Popen(*args, **kwargs)

    shim = types.ModuleType("subprocess")
    shim.__dict__.update(real.__dict__)
    shim.Popen = popen  # type: ignore[attr-defined]
    srv.subprocess = shim  # only Prefect's server module sees it
    try:
        server = srv.SubprocessASGIServer()
        server.start()
    finally:
        srv.subprocess = real
    return server.api_url


def use_prefect_api() -> None:
    """Before a command that runs flows: the running server's API, else a temporary server tied to this process."""
    url = api_url()
    if url is not None and url == os.environ.get("PREFECT_API_URL"):
        return
    if url is None:
        url = temporary_server()
    os.environ["PREFECT_API_URL"] = url
    from prefect.settings import PREFECT_API_URL, temporary_settings
    temporary_settings(updates={PREFECT_API_URL: url}).__enter__()  # for the rest of this process
