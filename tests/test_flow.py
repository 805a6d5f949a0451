"""The monthly flow end to end on a generated bureau (issue 2: DATA.md §4–§5)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from flows import store
from flows.ingest import load_registers
from flows.policies import load_policies
from tests.builders import q
from tests.conftest import LOADED_MONTHS
from transforms.engine import MONEY_COLUMNS, adjudicate

MONTHS = LOADED_MONTHS


def adjudicated_fen(db: Path) -> pl.DataFrame:
    con = store.connect(db, read_only=True)
    try:
        return store.fetch_fen(con, "SELECT * EXCLUDE (run_id) FROM adjudicated ORDER BY setl_id")
    finally:
        con.close()


def test_every_input_row_is_accepted_or_rejected(loaded, bureau):
    runs = q(loaded, "SELECT month, rows_in, rows_accepted, rows_rejected, status FROM runs ORDER BY month")
    assert [r[0] for r in runs] == MONTHS
    injected = json.loads((bureau / "INJECTED.json").read_text())
    for month, rows_in, acc, rej, status in runs:
        assert status == "succeeded"
        assert rows_in == acc + rej
        apps = q(loaded, "SELECT count(*) FROM assistance_applications WHERE month=?", [month])[0][0]
        apps += q(loaded, "SELECT count(*) FROM maternity_benefits WHERE month=?", [month])[0][0]  # §4.6 events
        assert q(loaded, "SELECT count(*) FROM settlements WHERE month=?", [month])[0][0] + apps == acc
        assert q(loaded, "SELECT count(*) FROM rejects WHERE month=?", [month])[0][0] == rej
        assert q(loaded, "SELECT count(*) FROM adjudicated WHERE month=?", [month])[0][0] == acc - apps
        for reason, n in injected["by_month"].get(month, {}).items():
            got = q(loaded, "SELECT count(*) FROM rejects WHERE month=? AND reason_code=?", [month, reason])[0][0]
            assert got >= n, (month, reason)
    assert sum(injected["total"].values()) > 0
    # every reject names its file, row and reason
    assert q(loaded, "SELECT count(*) FROM rejects WHERE source_file IS NULL OR source_row IS NULL "
                     "OR reason_code IS NULL OR reason IS NULL OR raw IS NULL")[0][0] == 0


def test_money_is_decimal_yuan_and_rows_add_up(loaded):
    types = dict(q(loaded, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name='adjudicated'"))
    assert types["hifp_pay"] == "DECIMAL(18,2)" and types["psn_cash_pay"] == "DECIMAL(18,2)"
    bad = q(loaded, "SELECT count(*) FROM adjudicated WHERE fund_pay_sumamt + hosp_part_amt + acct_pay + acct_mulaid_pay"
                    " + psn_cash_pay <> medfee_sumamt OR fund_pay_sumamt <> hifp_pay + hifmi_pay + maf_pay + maf_tilt_pay")
    assert bad[0][0] == 0
    assert q(loaded, "SELECT sum(hifp_pay) FROM adjudicated")[0][0] > 0


def test_month_by_month_equals_one_run_over_all_lines(loaded, bureau):
    """Issue 2 §7: twelve monthly runs give exactly the rows one run over all the lines would."""
    con = store.connect(loaded, read_only=True)
    try:
        accepted = store.fetch_fen(con, "SELECT * EXCLUDE (run_id) FROM settlements")
    finally:
        con.close()
    accepted = accepted.with_columns(pl.col("year").cast(pl.Int32) if "year" in accepted.columns else pl.lit(None))
    regs = load_registers(bureau)
    whole = adjudicate(accepted.drop("literal", strict=False), regs, load_policies()).adjudicated.sort("setl_id")
    stored = adjudicated_fen(loaded)
    cols = ["setl_id", "psn_no", "ledger", *MONEY_COLUMNS, "reason_codes", "explanation"]
    assert stored.select(cols).to_dicts() == whole.select(cols).to_dicts()


def test_rerun_replaces_the_month_and_reruns_later_months(loaded, bureau):
    from flows.monthly import month_flow
    before = adjudicated_fen(loaded)
    counts = q(loaded, "SELECT count(*) FROM settlements")[0][0], q(loaded, "SELECT count(*) FROM rejects")[0][0]
    ids = month_flow("2025-02", str(bureau), str(loaded), force=True)
    assert [i[:7] for i in ids] == ["2025-02", "2025-03", "2025-04"]  # later months of the year re-run
    after = adjudicated_fen(loaded)
    assert after.to_dicts() == before.to_dicts()  # identical numbers, no duplicates
    assert (q(loaded, "SELECT count(*) FROM settlements")[0][0], q(loaded, "SELECT count(*) FROM rejects")[0][0]) == counts
    triggered = q(loaded, "SELECT triggered_by FROM runs WHERE month='2025-03' ORDER BY started_at DESC LIMIT 1")
    assert triggered[0][0] == "rerun after 2025-02"


def test_a_month_needs_the_month_before(bureau, tmp_path, prefect_harness):
    from flows.monthly import RunError, month_flow
    db = tmp_path / "gap.duckdb"
    with pytest.raises(RunError, match="end of 2025-02, which is not loaded"):
        month_flow("2025-03", str(bureau), str(db))


def test_unreadable_file_fails_the_run_with_one_line_and_writes_nothing(bureau, tmp_path, prefect_harness):
    import shutil

    from flows.ingest import InputFileError
    from flows.monthly import month_flow
    broken = tmp_path / "in"
    shutil.copytree(bureau / "reference", broken / "reference")
    (broken / "2025-01").mkdir()
    (broken / "2025-01" / "hospital_settlements.csv").write_text("setl_id,psn_no\nS1,P1\n", encoding="utf-8")
    db = tmp_path / "b.duckdb"
    with pytest.raises(InputFileError) as e:
        month_flow("2025-01", str(broken), str(db))
    assert "\n" not in str(e.value) and "hospital_settlements.csv" in str(e.value) and "missing" in str(e.value)
    assert q(db, "SELECT status FROM runs")[0][0] == "failed"
    assert q(db, "SELECT count(*) FROM settlements")[0][0] == 0


def test_a_second_writer_refuses_at_once(tmp_path):
    from flows.monthly import RunError, writer_lock
    db = str(tmp_path / "w.duckdb")
    with writer_lock(db):
        with pytest.raises(RunError, match="being written by another yibao run"):
            with writer_lock(db):
                pass
    with writer_lock(db):  # released
        pass


def test_a_killed_run_is_marked_failed_by_the_next_writer(tmp_path):
    from flows.monthly import writer_lock
    db = tmp_path / "k.duckdb"
    con = store.connect(db)
    store.begin_run(con, {"run_id": "r1", "month": "2025-01", "input_dir": "x", "code_version": "v",
                          "policy_version": "p"})
    con.close()
    with writer_lock(str(db)):
        pass
    status, error = q(db, "SELECT status, error FROM runs WHERE run_id='r1'")[0]
    assert status == "failed" and error.startswith("interrupted")


def test_a_process_killed_inside_the_write_leaves_the_database_as_before(loaded, tmp_path):
    """Issue 6: the month's write is one transaction; a kill before COMMIT changes nothing."""
    import os
    import shutil
    import subprocess
    import sys

    db = tmp_path / "crash.duckdb"
    shutil.copy(loaded, db)
    before = {t: q(db, f"SELECT count(*), sum(hash(COLUMNS(*))::HUGEINT) FROM {t}")[0] for t in store.MONTH_TABLES}
    code = f"""
import polars as pl
from flows import store
con = store.connect({str(db)!r})
frames = {{t: store.fetch_fen(con, f"SELECT * EXCLUDE (run_id, month) FROM {{t}} WHERE month='2025-02'")
          for t in store.MONTH_TABLES}}
frames["adjudicated"] = frames["adjudicated"].with_columns(pl.col("hifp_pay") + 1)
store.begin_run(con, {{"run_id": "crash", "month": "2025-02", "input_dir": "x", "code_version": "v",
                      "policy_version": "p"}})
store.write_month(con, "crash", "2025-02", frames, {{"input_files": [], "rows_in": 0, "rows_accepted": 0,
                  "rows_rejected": 0, "assumptions": [], "lines_adjudicated": 0}})
"""
    env = {**os.environ, "YIBAO_FAULT": "inside_write"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 70, proc.stderr
    after = {t: q(db, f"SELECT count(*), sum(hash(COLUMNS(*))::HUGEINT) FROM {t}")[0] for t in store.MONTH_TABLES}
    assert after == before
    assert q(db, "SELECT status FROM runs WHERE run_id='crash'")[0][0] == "running"  # closed by the next writer


def test_each_run_publishes_its_artifacts(loaded):
    from prefect.artifacts import Artifact
    table = Artifact.get("yibao-month-funds")
    summary = Artifact.get("yibao-month-summary")
    assert table is not None and "hifp_pay" in str(table.data)
    assert summary is not None and "lines adjudicated" in str(summary.data)


def test_maternity_events_are_validated_counted_and_written_with_the_month(bureau, tmp_path, prefect_harness):
    """docs/MATERNITY_INPUT.md: a month's maternity_events file — accepted rows become maternity_benefits (POLICY
    §4.6 days), the others rejects with file, row and reason; rows_in counts them all; a rerun replaces them."""
    import shutil

    from flows.monthly import month_flow
    src = tmp_path / "in"
    shutil.copytree(bureau, src)
    for f in (src / "2025-01").glob("maternity_events*"):
        f.unlink()
    persons = load_registers(src)["persons"]
    emp = persons.filter((pl.col("insutype") == "310") & pl.col("insuplc_admdvs").str.starts_with("4206"))["psn_no"]
    res = persons.filter(pl.col("insutype") == "390")["psn_no"][0]
    rows = [
        f"{emp[0]},2025-01-15,natural,2,,3000.00,false",  # 128 + 15
        f"{emp[0]},2025-01-20,miscarriage,,5,,",  # 4 to < 7 months: 42
        f"{emp[1]},2025-01-05,caesarean,1,,,",  # 143
        f"{emp[1]},2025-02-01,natural,1,,,",  # WRONG_MONTH
        f"{res},2025-01-10,natural,1,,,",  # NOT_XIANGYANG_EMPLOYEE
        f"{emp[0]},2025-01-11,natural,0,,,",  # EVENT_INCOMPLETE
        f"{emp[0]},2025-01-12,adoption,1,,,",  # BAD_CODE
        "NOBODY,2025-01-12,natural,1,,,",  # UNKNOWN_PERSON
    ]
    header = "psn_no,event_date,kind,babies,gestation_months,delivery_cost,spouse_employee"
    (src / "2025-01" / "maternity_events.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    db = tmp_path / "m.duckdb"
    for _ in range(2):  # the second run replaces the month: nothing doubles
        month_flow("2025-01", str(src), str(db))
        got = q(db, "SELECT source_row, kind, allowance_days FROM maternity_benefits ORDER BY source_row")
        assert got == [(1, "natural", 143), (2, "miscarriage", 42), (3, "caesarean", 143)]
        rej = q(db, "SELECT source_row, reason_code FROM rejects WHERE source_file = '2025-01/maternity_events.csv'"
                    " ORDER BY source_row")
        assert rej == [(4, "WRONG_MONTH"), (5, "NOT_XIANGYANG_EMPLOYEE"), (6, "EVENT_INCOMPLETE"), (7, "BAD_CODE"),
                       (8, "UNKNOWN_PERSON")]
        rows_in, acc, rejected = q(db, "SELECT rows_in, rows_accepted, rows_rejected FROM runs WHERE status = "
                                       "'succeeded' ORDER BY started_at DESC LIMIT 1")[0]
        assert rows_in == acc + rejected
        settlements = q(db, "SELECT count(*) FROM settlements")[0][0]
        apps = q(db, "SELECT count(*) FROM assistance_applications")[0][0]
        assert acc == settlements + apps + 3
        assert q(db, "SELECT delivery_cost FROM maternity_benefits WHERE source_row = 1")[0][0] == 3000
