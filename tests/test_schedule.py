import datetime as dt

from flows.schedule import previous_month, schedule


def test_previous_month_across_the_year():
    assert previous_month(dt.date(2026, 1, 1)) == "2025-12"
    assert previous_month(dt.date(2025, 3, 1)) == "2025-02"
    assert previous_month(dt.date(2025, 3, 31)) == "2025-02"


def test_schedule_is_the_first_at_two_shanghai_time():
    s = schedule()
    assert s.cron == "0 2 1 * *" and s.timezone == "Asia/Shanghai"
