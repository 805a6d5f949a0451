"""`yibao serve`: the monthly deployment — on the 1st of every month at 02:00 (Asia/Shanghai) it runs
the previous month with the configured input folder and database.

Needs a Prefect server (`prefect server start`; point PREFECT_API_URL at it): a served deployment
on the temporary server makes no runs (STACK-NOTES.md).
"""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

from prefect import flow
from prefect.schedules import Cron

CRON = os.environ.get("YIBAO_CRON", "0 2 1 * *")  # 02:00 on the 1st of every month
TIMEZONE = "Asia/Shanghai"
DEPLOYMENT = "yibao-monthly"


def previous_month(today: dt.date) -> str:
    """The settlement month a run on `today` adjudicates: the calendar month before."""
    last = today.replace(day=1) - dt.timedelta(days=1)
    return f"{last.year}-{last.month:02d}"


def schedule() -> Cron:
    return Cron(CRON, timezone=TIMEZONE)


@flow(name="yibao-scheduled-month")
def scheduled_month_flow(input_dir: str, db: str, today: str | None = None) -> list[str]:
    """The previous month (in Asia/Shanghai), through the monthly flow (later months re-run as usual)."""
    from flows.monthly import month_flow

    day = dt.date.fromisoformat(today) if today else dt.datetime.now(ZoneInfo(TIMEZONE)).date()
    return month_flow(previous_month(day), input_dir, db)


def serve(input_dir: str, db: str) -> None:
    """Create the deployment and keep a runner polling for its scheduled runs (Ctrl-C to stop)."""
    scheduled_month_flow.serve(name=DEPLOYMENT, schedule=schedule(),
                               parameters={"input_dir": input_dir, "db": db},
                               description="Adjudicate the previous month on the 1st at 02:00 Asia/Shanghai")
