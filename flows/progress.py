"""Progress of long work (issue 16.4): month, stage, lines, rate, time left.

On a terminal (stderr is a tty) one status line is rewritten in place on stderr and erased at the end; when the
output is a file, plain lines on stdout. Every message also goes to the Prefect run's logs (the run page in the UI)
when called inside a flow. Off unless the command line turns it on (`enable`): library calls and tests stay quiet.
"""

from __future__ import annotations

import sys
import time

_state: dict = {"on": False, "tty": False, "t0": 0.0, "months": [], "done": 0, "last": ""}


def enable() -> None:
    _state.update(on=True, tty=sys.stderr.isatty(), t0=time.monotonic(), months=[], done=0, last="")


def plan(months: list[str]) -> None:
    """The months a flow will run, for 'time left'."""
    _state.update(months=list(months), done=0, t0=time.monotonic())


def _duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def report(month: str, stage: str, detail: str = "") -> None:
    text = f"{month} {stage}" + (f": {detail}" if detail else "")
    _log(text)
    if not _state["on"]:
        return
    elapsed = time.monotonic() - _state["t0"]
    total, done = len(_state["months"]), _state["done"]
    where = f" [month {min(done + 1, total)} of {total}, {_duration(elapsed)}" if total > 1 else f" [{_duration(elapsed)}"
    if total > 1 and done:
        where += f", about {_duration(elapsed / done * (total - done))} left"
    line = f"… {text}{where}]"
    if _state["tty"]:
        sys.stderr.write("\r\033[K" + line[:200])
        sys.stderr.flush()
    else:
        print(line, flush=True)


def month_done(month: str, lines: int, seconds: float) -> None:
    _state["done"] += 1
    rate = f", {lines / seconds:,.0f} lines/s" if seconds > 0 and lines else ""
    report(month, "written", f"{lines:,} lines in {_duration(seconds)}{rate}")


def finish() -> None:
    """Erase the status line (a terminal) before the summary is printed."""
    if _state["on"] and _state["tty"]:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def _log(text: str) -> None:
    try:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError
        try:
            get_run_logger().info(text)
        except MissingContextError:
            pass
    except Exception:  # noqa: BLE001 - progress never fails a run
        pass
