"""What `yibao run` tells the user (issues 13.9, 16.1, 16.3): the real entry point in a subprocess; exit code, the
summary's numbers, one line on stderr for a failure and nothing after it (no traceback, no nanobind report).

The bureau is the session's generated sample (tests/conftest.py): its INJECTED.json lists every invalid row it
wrote (file, row, reason), so the expected counts are the files' data rows and that list."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.test_operations import yibao


def data_rows(path: Path) -> int:
    """Data rows of a settlement file, counted without yibao's reader."""
    if path.suffix == ".parquet":
        return pl.read_parquet(path).height
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


def q(db: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def summary(p) -> list[str]:
    """stdout without the progress lines ('… month stage: …', issue 16.4: plain lines when output is a file)."""
    return [ln for ln in p.stdout.splitlines() if not ln.startswith("… ")]


def stderr_lines(p) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def january(bureau, tmp_path_factory, prefect_harness):
    """A database holding 2025-01, written by `yibao run --month 2025-01`, and that command's result."""
    db = tmp_path_factory.mktemp("cli") / "y.duckdb"
    p = yibao(["run", "--month", "2025-01", "--input", str(bureau), "--db", str(db)])
    return db, p


def test_a_month_run_prints_rows_read_accepted_rejected_per_file(january, bureau):
    db, p = january
    assert p.returncode == 0, p.stderr
    assert stderr_lines(p) == []  # nothing on stderr: no warning, no nanobind report
    hosp, pharm = data_rows(bureau / "2025-01/hospital_settlements.csv"), data_rows(
        bureau / "2025-01/pharmacy_settlements.csv")
    injected = [r for r in json.loads((bureau / "INJECTED.json").read_text())["rows"] if r["month"] == "2025-01"]
    # the sample injected 2 invalid rows into January, both in the hospital file: MISSING_REQUIRED and BAD_VALUE
    assert sorted((r["file"], r["reason"]) for r in injected) == [
        ("2025-01/hospital_settlements.csv", "BAD_VALUE"), ("2025-01/hospital_settlements.csv", "MISSING_REQUIRED")]
    # progress (issue 16.4), plain lines as the output is a file: each stage of the month, then the month written
    progress = [ln.split(" [")[0] for ln in p.stdout.splitlines() if ln.startswith("… ")]
    assert progress[:3] == ["… 2025-01 reading and validating: registers and settlement files",
                            f"… 2025-01 adjudicating: {hosp + pharm - 2:,} lines accepted of {hosp + pharm:,} read",
                            "… 2025-01 writing: results into the database"]
    assert progress[3].startswith(f"… 2025-01 written: {hosp + pharm - 2:,} lines in ")
    lines = summary(p)
    run_id = q(db, "SELECT run_id FROM runs WHERE month = '2025-01'")[0][0]
    # rows read = every data row of both files; accepted = read − the 2 injected
    assert lines[0] == (f"2025-01: succeeded (run {run_id}) — {hosp + pharm:,} rows read = {hosp + pharm - 2:,} "
                        f"accepted + 2 rejected")
    assert lines[1] == (f"  2025-01/hospital_settlements.csv: {hosp:,} read, {hosp - 2:,} accepted, 2 rejected "
                        f"(BAD_VALUE 1, MISSING_REQUIRED 1)")
    assert lines[2] == f"  2025-01/pharmacy_settlements.csv: {pharm:,} read, {pharm:,} accepted, 0 rejected"
    files = {f["name"]: f for f in json.loads(q(db, "SELECT input_files FROM runs")[0][0])}
    assert (files["2025-01/hospital_settlements.csv"]["rows_read"],
            files["2025-01/hospital_settlements.csv"]["rows_rejected"]) == (hosp, 2)


def _rewrite_dates(src: Path, dst: Path, form) -> int:
    """The settlement file as a spreadsheet re-saves it: CSV with BOM and CRLF, every date rewritten by `form`."""
    frame = pl.read_parquet(src) if src.suffix == ".parquet" else pl.read_csv(src, infer_schema=False)
    frame = frame.with_columns(pl.all().cast(pl.String))
    iso = r"^(\d{4})-(\d{2})-(\d{2})(?: (\d{2}):(\d{2}):(\d{2}))?$"

    def redo(v):
        m = re.match(iso, v or "")
        return form(*m.groups()) if m else v
    frame = frame.with_columns([pl.col(c).map_elements(redo, return_dtype=pl.String)
                                for c in ("begndate", "enddate", "setl_time")])
    src.unlink()
    text = frame.write_csv(line_terminator="\r\n")
    dst.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    return frame.height


def _spreadsheet(y, m, d, hh=None, mm=None, ss=None):  # 2025/2/3 9:05
    return f"{y}/{int(m)}/{int(d)}" + (f" {int(hh)}:{mm}" if hh else "")


def _day_first(y, m, d, hh=None, mm=None, ss=None):  # 3/2/2025 9:05: ambiguous, never guessed (DATA.md §1)
    return f"{int(d)}/{int(m)}/{y}" + (f" {int(hh)}:{mm}" if hh else "")


@pytest.fixture
def february(january, bureau, tmp_path):
    """A copy of the bureau and of January's database, ready for a February run."""
    db = tmp_path / "y.duckdb"
    shutil.copy(january[0], db)
    root = tmp_path / "in"
    shutil.copytree(bureau, root)
    return root, db


def test_a_file_whose_every_row_is_rejected_refuses_the_month(february):
    """Issue 16.1 / DATA.md §5: a pharmacy file re-saved day-first: every row rejected, the month not written, a
    `refused` runs row naming the file, exit 1, one line on stderr."""
    root, db = february
    n = _rewrite_dates(root / "2025-02/pharmacy_settlements.parquet", root / "2025-02/pharmacy_settlements.csv",
                       _day_first)
    p = yibao(["run", "--month", "2025-02", "--input", str(root), "--db", str(db)])
    assert p.returncode == 1
    err = stderr_lines(p)
    assert len(err) == 1, p.stderr  # the one line, no traceback, no nanobind report after it
    assert err[0].startswith(f"yibao: 2025-02 refused: 2025-02/pharmacy_settlements.csv: all {n:,} rows rejected "
                             f"(BAD_VALUE {n:,}; first: BAD_VALUE: begndate ")
    assert "is day-first or has a two-digit year: ambiguous, not guessed" in err[0]
    assert err[0].endswith("the month was not written")
    assert q(db, "SELECT status, rows_rejected >= ? FROM runs WHERE month = '2025-02'", [n]) == [("refused", True)]
    assert q(db, "SELECT count(*) FROM adjudicated WHERE month = '2025-02'") == [(0,)]
    assert "2025-02: refused" in p.stdout


def test_a_spreadsheet_resaved_file_is_read(february):
    """DATA.md §1: BOM, CRLF, `2025/2/3 9:05` — every row of the re-saved pharmacy file is accepted."""
    root, db = february
    n = _rewrite_dates(root / "2025-02/pharmacy_settlements.parquet", root / "2025-02/pharmacy_settlements.csv",
                       _spreadsheet)
    p = yibao(["run", "--month", "2025-02", "--input", str(root), "--db", str(db)])
    assert p.returncode == 0, p.stderr
    assert f"  2025-02/pharmacy_settlements.csv: {n:,} read, {n:,} accepted, 0 rejected" in summary(p)


def test_an_empty_month_folder_is_refused_with_a_runs_row(february):
    root, db = february
    for f in (root / "2025-02").iterdir():
        f.unlink()
    p = yibao(["run", "--month", "2025-02", "--input", str(root), "--db", str(db)])
    assert p.returncode == 1
    assert stderr_lines(p) == ["yibao: 2025-02 refused: no settlement file in 2025-02/ (hospital_settlements*, "
                               "pharmacy_settlements*); the month was not written"]
    assert q(db, "SELECT status FROM runs WHERE month = '2025-02'") == [("refused",)]


def test_a_gap_month_is_refused_with_a_runs_row_and_debug_shows_the_traceback(february):
    root, db = february
    p = yibao(["run", "--month", "2025-03", "--input", str(root), "--db", str(db)])
    assert p.returncode == 1
    assert stderr_lines(p) == ["yibao: 2025-03 starts from the accumulators at the end of 2025-02, which is not "
                               "loaded: run `yibao run --month 2025-02` first, or, to start mid-year, load the "
                               "year-to-date state as of 2025-02-28 as reference/opening_accumulators (POLICY §1.13)"]
    assert q(db, "SELECT status, error FROM runs WHERE month = '2025-03'") == [
        ("refused", "2025-03 starts from the accumulators at the end of 2025-02, which is not loaded: run "
                    "`yibao run --month 2025-02` first, or, to start mid-year, load the year-to-date state as of "
                    "2025-02-28 as reference/opening_accumulators (POLICY §1.13)")]
    p = yibao(["--debug", "run", "--month", "2025-03", "--input", str(root), "--db", str(db)])
    assert p.returncode == 1
    assert "Traceback (most recent call last)" in p.stderr and "RunRefused" in p.stderr
    assert "nanobind" not in p.stderr


def test_register_rows_rejected_and_warnings_are_counted(february):
    """POLICY §1.14: an in-service employment row with a retire_kind is kept and counted as a warning; a persons
    row with a bad certno is rejected on its own and the run goes on."""
    root, db = february
    emp = root / "reference" / ("employment.parquet" if (root / "reference/employment.parquet").exists()
                                else "employment.csv")
    frame = pl.read_parquet(emp) if emp.suffix == ".parquet" else pl.read_csv(emp, infer_schema=False)
    frame = frame.with_columns(pl.all().cast(pl.String))
    first = frame.with_row_index().filter(pl.col("psn_type") == "11").row(0, named=True)["index"]
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == first).then(pl.lit("normal"))
                               .otherwise(pl.col("retire_kind")).alias("retire_kind"))
    emp.unlink()
    frame.write_csv(root / "reference/employment.csv")
    p = yibao(["run", "--month", "2025-02", "--input", str(root), "--db", str(db)])
    assert p.returncode == 0, p.stderr
    head = summary(p)[0]
    assert head.endswith("; registers: 0 rows rejected, 1 warnings (POLICY §1.14)")
    assert (f"  reference/employment.csv: {frame.height:,} read, {frame.height:,} accepted, 0 rejected, 1 warnings"
            in summary(p))
    assert q(db, "SELECT warnings FROM runs WHERE month = '2025-02' AND status = 'succeeded'") == [(1,)]


def test_version():
    p = yibao(["--version"])
    assert p.returncode == 0 and re.fullmatch(r"yibao \S+\n", p.stdout)


# ------------------------------------------------------------------------------------------- yibao sql (16.2)
def test_sql_runs_a_saved_query_file_read_only(january, bureau):
    db, _ = january
    p = yibao(["sql", "queries/rejects_by_reason.sql", "--db", str(db), "--format", "csv"],
              env={"COLUMNS": "100"})
    assert p.returncode == 0, p.stderr
    rows = list(csv.reader(p.stdout.splitlines()))
    codes = {r[rows[0].index("reason_code")]: r for r in rows[1:]}
    assert set(codes) == {"BAD_VALUE", "MISSING_REQUIRED"}  # January's two injected rows
    hosp, pharm = data_rows(bureau / "2025-01/hospital_settlements.csv"), data_rows(
        bureau / "2025-01/pharmacy_settlements.csv")
    p = yibao(["sql", "--db", str(db), "--format", "csv", "-c",
               "SELECT count(*) AS n FROM adjudicated WHERE month = '2025-01'"])
    assert p.stdout.splitlines() == ["n", str(hosp + pharm - 2)]  # one adjudicated line per accepted line
    p = yibao(["sql", "--db", str(db), "-c", "CREATE TABLE x (a INT)"])
    assert p.returncode == 1
    err = stderr_lines(p)
    assert len(err) == 1 and "read-only" in err[0] and err[0].startswith("yibao: statement 1: ")


def test_sql_tables_keep_money_and_ids_whole_on_a_narrow_terminal(january):
    """Issue 16.7: at 60 columns the run_id (30 characters) and the amounts are printed whole: the table turns
    into one record per block rather than cut them."""
    db, _ = january
    run_id = q(db, "SELECT run_id FROM runs")[0][0]
    total = q(db, "SELECT sum(medfee_sumamt) FROM adjudicated")[0][0]
    p = yibao(["sql", "--db", str(db), "-c", "SELECT run_id, month, status, code_version, policy_version,"
               " (SELECT sum(medfee_sumamt) FROM adjudicated) AS medfee FROM runs"], env={"COLUMNS": "60"})
    assert p.returncode == 0, p.stderr
    assert f"run_id         | {run_id}" in p.stdout.splitlines()
    assert f"medfee         | {total:,}" in p.stdout.splitlines()


def test_sql_compatible_copy_is_written_in_v1_storage(january, tmp_path):
    db, _ = january
    out = tmp_path / "v1.duckdb"
    p = yibao(["sql", "--db", str(db), "--compatible-copy", str(out)])
    assert p.returncode == 0, p.stderr
    con = duckdb.connect(str(out), read_only=True)
    try:
        tags = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = 'v1'").fetchone()[0]
        assert tags == {"storage_version": "v1.2.0+"}
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    finally:
        con.close()


# ------------------------------------------------------------------------------------------- names (16.6)
def test_reports_show_institution_names_beside_codes(january, bureau, tmp_path):
    """DATA.md §4 `institutions`: the register as the run read it; the fund-expenditure report's top institution
    carries the name the register gives its code."""
    db, _ = january
    reg = bureau / "reference" / ("institutions.csv" if (bureau / "reference/institutions.csv").exists()
                                  else "institutions.parquet")
    if reg.suffix == ".csv":  # UTF-8 or GB18030 (DATA.md §1)
        data = reg.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("gb18030")
        names = {r["fixmedins_code"]: r["fixmedins_name"] for r in csv.DictReader(text.splitlines())}
    else:
        frame = pl.read_parquet(reg)
        names = dict(zip(frame["fixmedins_code"].cast(pl.String), frame["fixmedins_name"].cast(pl.String),
                         strict=True))
    assert q(db, "SELECT count(*) FROM institutions") == [(len(names),)]
    top = q(db, "SELECT fixmedins_code FROM adjudicated GROUP BY 1 ORDER BY sum(fund_pay_sumamt) DESC, 1 LIMIT 1")[0][0]
    out = tmp_path / "f.html"
    p = yibao(["report", "fund-expenditure", "--year", "2025", "--format", "html", "--out", str(out), "--db", str(db)])
    assert p.returncode == 0, p.stderr
    html = out.read_text(encoding="utf-8")
    assert top in html and names[top] in html


def test_a_failed_flow_run_outside_the_cli_leaves_no_duckdb_object_alive(february):
    """Issue 16.3, the `yibao serve` case: a flow run that fails inside a process yibao's CLI does not end (Prefect's
    runner) keeps its exception in the flow-run state; nothing of DuckDB may stay alive with it, or the bindings
    print `nanobind: leaked …` at exit."""
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL
    root, db = february
    _rewrite_dates(root / "2025-02/pharmacy_settlements.parquet", root / "2025-02/pharmacy_settlements.csv",
                   _day_first)
    code = ("from flows.monthly import month_flow\n"
            f"state = month_flow('2025-02', {str(root)!r}, {str(db)!r}, return_state=True)\n"
            "print(state.type.value)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL"})
    assert p.stdout.strip() == "FAILED"
    assert "nanobind" not in p.stderr


def test_a_header_only_settlement_file_is_a_month_without_lines(february):
    """DATA.md §5: a settlement file with its header and no row is not refused: the month is written, no lines."""
    root, db = february
    for f in (root / "2025-02").iterdir():
        f.unlink()
    header = (root / "2025-01/hospital_settlements.csv").read_text(encoding="utf-8-sig").splitlines()[0]
    (root / "2025-02/hospital_settlements.csv").write_text(header + "\n", encoding="utf-8")
    p = yibao(["run", "--month", "2025-02", "--input", str(root), "--db", str(db)])
    assert p.returncode == 0, p.stderr
    assert summary(p)[0].endswith("— 0 rows read = 0 accepted + 0 rejected")
    assert q(db, "SELECT status FROM runs WHERE month = '2025-02'") == [("succeeded",)]
