"""The DuckDB output store (DATA.md §4): schema, month reads, and the one-transaction month write.

Inside the engine money is Int64 fen; here it becomes DECIMAL(18,2) yuan on the way in
(exact: fen × 0.01 in decimal arithmetic) and Int64 fen on the way out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

MONEY = "DECIMAL(18,2)"

SETTLEMENT_MONEY = ["medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt",
                    "hifp_pay", "hifmi_pay", "maf_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay"]

def _cols(spec: str) -> list[tuple[str, str]]:
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part:
            name, typ = part.split(None, 1)
            out.append((name, typ.replace("MONEY", MONEY)))
    return out


# Table → columns, in order. New columns are added to existing databases by `migrate`.
TABLES: dict[str, list[tuple[str, str]]] = {
    "runs": _cols("""run_id VARCHAR, month VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
        input_dir VARCHAR, input_files VARCHAR, rows_in BIGINT, rows_accepted BIGINT, rows_rejected BIGINT,
        code_version VARCHAR, policy_version VARCHAR, assumptions VARCHAR, error VARCHAR, lines_adjudicated BIGINT,
        triggered_by VARCHAR, prev_run_id VARCHAR, matches_run_id VARCHAR, warnings BIGINT, warnings_detail VARCHAR,
        register_rows_rejected BIGINT, supervision_findings VARCHAR"""),
    "settlements": _cols("""run_id VARCHAR, month VARCHAR, source_file VARCHAR, source_row BIGINT,
        setl_id VARCHAR, mdtrt_id VARCHAR, psn_no VARCHAR, insutype VARCHAR, med_type VARCHAR, fixmedins_code VARCHAR,
        begndate DATE, enddate DATE, setl_time TIMESTAMP, dise_codg VARCHAR, dise_cert_code VARCHAR,
        offsite_type VARCHAR, presc_fixmedins_code VARCHAR, trauma_report_no VARCHAR, is_emergency_rescue BOOLEAN,
        medfee_sumamt MONEY, fulamt_ownpay_amt MONEY, overlmt_selfpay MONEY, cls_a_amt MONEY, cls_b_amt MONEY,
        orig_setl_id VARCHAR,
        hifp_pay MONEY, hifmi_pay MONEY, maf_pay MONEY, acct_pay MONEY, acct_mulaid_pay MONEY, psn_cash_pay MONEY"""),
    "rejects": _cols("""run_id VARCHAR, month VARCHAR, source_file VARCHAR, source_row BIGINT, setl_id VARCHAR,
        reason_code VARCHAR, reason VARCHAR, raw VARCHAR"""),
    "adjudicated": _cols("""run_id VARCHAR, setl_id VARCHAR, psn_no VARCHAR, month VARCHAR, region VARCHAR,
        insutype VARCHAR, scheme VARCHAR, ledger VARCHAR, med_type VARCHAR, mdtrt_id VARCHAR, fixmedins_code VARCHAR,
        hosp_lv VARCHAR, in_county BOOLEAN, in_city BOOLEAN, in_province BOOLEAN, offsite_type_eff VARCHAR,
        setl_time TIMESTAMP, orig_setl_id VARCHAR,
        medfee_sumamt MONEY, fulamt_ownpay_amt MONEY, overlmt_selfpay MONEY, cls_a_amt MONEY, cls_b_amt MONEY,
        inscp_scp_amt MONEY, preselfpay_amt MONEY, offsite_preselfpay_amt MONEY, act_pay_dedc MONEY,
        hifp_pay MONEY, pool_prop_selfpay MONEY, hifp_cap_cut MONEY, hifmi_pay MONEY, maf_pay MONEY,
        maf_tilt_pay MONEY, hosp_part_amt MONEY, fund_pay_sumamt MONEY, psn_part_amt MONEY, acct_pay MONEY,
        acct_mulaid_pay MONEY, psn_cash_pay MONEY, deposit_waived BOOLEAN, reason_codes VARCHAR, explanation VARCHAR,
        chronic_over_limit_amt MONEY, burden_excluded_amt MONEY, identity_group VARCHAR, oos_limit_bp INTEGER,
        merged_setl_ids VARCHAR"""),
    "accumulators": _cols("run_id VARCHAR, psn_no VARCHAR, year INTEGER, month VARCHAR, name VARCHAR, value MONEY"),
    "assistance_applications": _cols("""run_id VARCHAR, month VARCHAR, app_id VARCHAR, psn_no VARCHAR,
        confirm_date DATE, window_start DATE, window_end DATE, base_amt MONEY, paid_amt MONEY, lines BIGINT,
        status VARCHAR, reason VARCHAR, explanation VARCHAR"""),
    # POLICY §4.2/§4.5 (transforms/accounts.py): every account movement with the balance after it, in the order
    # of the walk (seq); amount is the signed change of the balance (payments negative, credits and refunds positive)
    "account_ledger": _cols("""run_id VARCHAR, month VARCHAR, seq BIGINT, psn_no VARCHAR, ts TIMESTAMP, kind VARCHAR,
        amount MONEY, balc_after MONEY, setl_id VARCHAR, user_psn_no VARCHAR, orig_setl_id VARCHAR"""),
    # each account's state at the end of the month (balance at the end of as_of); never restarts with the year
    "account_month_end": _cols("run_id VARCHAR, month VARCHAR, psn_no VARCHAR, as_of DATE, balc MONEY"),
    # POLICY §3.1/§4.1 (transforms/contributions.py): person × year, replaced by every run of that year
    "contributions": _cols("""run_id VARCHAR, month VARCHAR, psn_no VARCHAR, year INTEGER, region VARCHAR,
        scheme VARCHAR, kind VARCHAR, months INTEGER, personal_amt MONEY, government_amt MONEY, employer_amt MONEY,
        reason VARCHAR"""),
    # POLICY §4.6 (transforms/maternity.py, docs/MATERNITY_INPUT.md): one row per maternity event of the month
    "maternity_benefits": _cols("""run_id VARCHAR, month VARCHAR, source_file VARCHAR, source_row BIGINT,
        psn_no VARCHAR, event_date DATE, kind VARCHAR, babies INTEGER, gestation_months INTEGER, delivery_cost MONEY,
        spouse_employee BOOLEAN, allowance_days INTEGER, flexible BOOLEAN, subsidy_cap MONEY, subsidy_amt MONEY,
        reason VARCHAR"""),
    # Supervision findings (issue 17, transforms/supervision.py): one row per finding, in the month of its latest
    # evidence line; vola_evid = the evidence's setl_ids, comma-separated, sorted
    "violations": _cols("""run_id VARCHAR, month VARCHAR, rule_id VARCHAR, rule_name VARCHAR, rule_name_en VARCHAR,
        sev_deg VARCHAR, vola_amt MONEY, vola_bhvr_type VARCHAR, vola_cont VARCHAR, vola_evid VARCHAR,
        evid_count BIGINT, psn_no VARCHAR, fixmedins_code VARCHAR, fixmedins_name VARCHAR, hosp_lv VARCHAR,
        region VARCHAR, scheme VARCHAR, finding_key VARCHAR"""),
    # The institutions register as of the month's run (names and levels for the clearing statement and the
    # findings): flows/monthly.py institution_names
    "month_institutions": _cols("""run_id VARCHAR, month VARCHAR, fixmedins_code VARCHAR, fixmedins_name VARCHAR,
        fixmedins_type VARCHAR, dedc_hosp_lv VARCHAR, admdvs VARCHAR"""),
}

# DATA.md §4: the institution register as of the latest run (names for reports: flows/reports.institution_name)
TABLES["institutions"] = _cols("""run_id VARCHAR, fixmedins_code VARCHAR, fixmedins_name VARCHAR,
    fixmedins_type VARCHAR, dedc_hosp_lv VARCHAR, facility VARCHAR, admdvs VARCHAR,
    offsite_outpatient_enabled BOOLEAN""")

# What-if scenarios (issue 8, flows/whatif.py): a scenario's results sit beside the baseline's, keyed by the
# scenario's name, never in the baseline's tables. One row per scenario; overrides, baseline_runs and registers
# are JSON; months (YYYY-MM,…) are the baseline months re-adjudicated, missing_months those of the year not loaded.
TABLES["whatif_scenarios"] = _cols("""scenario VARCHAR, year INTEGER, overrides VARCHAR, months VARCHAR,
    missing_months VARCHAR, baseline_runs VARCHAR, registers VARCHAR, lines BIGINT, persons BIGINT,
    policy_version VARCHAR, scenario_policy_version VARCHAR, assumptions VARCHAR, code_version VARCHAR,
    created_at TIMESTAMP""")
for _t in ("adjudicated", "accumulators", "assistance_applications"):
    TABLES[f"whatif_{_t}"] = [("scenario", "VARCHAR"), *[c for c in TABLES[_t] if c[0] != "run_id"]]


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables and add missing columns (a database written by an older version keeps working)."""
    for table, cols in TABLES.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{n} {t}' for n, t in cols)})")
        have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        for n, t in cols:
            if n not in have:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {n} {t}")


MONTH_TABLES = ("settlements", "rejects", "adjudicated", "accumulators", "assistance_applications", "account_ledger",
                "account_month_end", "maternity_benefits", "violations", "month_institutions")


DUCKDB_MEMORY = "2GB"


def connect(db: Path | str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    # DuckDB touches its extension directory; without HOME that fails (STACK-NOTES.md).
    os.environ.setdefault("HOME", str(Path(db).resolve().parent))
    if read_only and not Path(db).exists():
        raise FileNotFoundError(f"database not found: {db} (run `yibao run` or `yibao demo` first)")
    # DuckDB's buffer pool defaults to 80% of the machine's memory; the engine (polars) needs its own share
    # (issue 7: a city's year under 8 GiB): bounded, larger work spills to disk. $YIBAO_DUCKDB_MEMORY overrides.
    con = duckdb.connect(str(db), read_only=read_only,
                         config={"memory_limit": os.environ.get("YIBAO_DUCKDB_MEMORY", DUCKDB_MEMORY)})
    if not read_only:
        catalog = catalog_digest()
        try:
            have = con.execute("SELECT digest FROM yibao_catalog").fetchall()
        except duckdb.CatalogException:
            have = None
        if have != [(catalog,)]:
            # Tables, columns and views (flows/views.py) as this code and these policies define them; done
            # once per database and definition, not on every connection (it took ~0.3 s a connection).
            migrate(con)
            from flows.views import create_views
            create_views(con)
            con.execute("CREATE OR REPLACE TABLE yibao_catalog AS SELECT ?::VARCHAR AS digest", [catalog]).fetchall()
    return con


def catalog_digest() -> str:
    """What the stored tables' definitions and the views depend on: TABLES, the views' SQL and the policies
    (the out-of-scope limits table)."""
    from flows.policies import load_policies
    from flows.views import supervision_view_statements, view_statements
    from flows.whatif_report import view_statements as whatif_view_statements
    h = hashlib.sha256(repr(sorted(TABLES.items())).encode())
    for sql in [*view_statements(""), *supervision_view_statements(""), *whatif_view_statements("")]:
        h.update(sql.encode())
    h.update(load_policies().digest.encode())
    return h.hexdigest()


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]


def _insert_select(con: duckdb.DuckDBPyConnection, table: str, src: str, src_cols: set[str]) -> str:
    """INSERT … SELECT converting fen BIGINT → DECIMAL yuan for money columns; missing columns NULL."""
    exprs = []
    for name, typ in table_columns(con, table):
        if name not in src_cols:
            exprs.append(f"NULL AS {name}")
        elif typ.startswith("DECIMAL"):
            exprs.append(f'(CAST("{name}" AS DECIMAL(38,0)) * CAST(0.01 AS DECIMAL(3,2)))::{MONEY} AS "{name}"')
        else:
            exprs.append(f'"{name}"')
    return f"INSERT INTO {table} SELECT {', '.join(exprs)} FROM {src}"


def _insert_frame(con: duckdb.DuckDBPyConnection, table: str, df: pl.DataFrame) -> None:
    """Insert a frame's rows into a table, by column name (money as exact DECIMAL yuan: _insert_select)."""
    con.register("__src", df)
    try:
        con.execute(_insert_select(con, table, "__src", set(df.columns)))
    finally:
        con.unregister("__src")


def fetch_fen(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    """Run a query and return a polars frame with DECIMAL(18,2) columns as Int64 fen."""
    tbl = con.sql(sql, params=params or None).to_arrow_table()
    df = pl.from_arrow(tbl)
    assert isinstance(df, pl.DataFrame)
    return df.with_columns([
        (pl.col(c) * 100).cast(pl.Int64) for c, t in df.schema.items() if isinstance(t, pl.Decimal)
    ])


def begin_run(con: duckdb.DuckDBPyConnection, run: dict) -> None:
    con.execute(
        "INSERT INTO runs (run_id, month, started_at, status, input_dir, code_version, policy_version, triggered_by,"
        " prev_run_id) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
        [run["run_id"], run["month"], run.get("started_at") or dt.datetime.now(), run["input_dir"],
         run["code_version"], run["policy_version"],
         run.get("triggered_by", "user"), run.get("prev_run_id")],
    )


@contextmanager
def shadow(db: Path | str, publish_on_error: bool = False, in_place: bool = False) -> Iterator[Path]:
    """A private copy of the database for the one writer (flows/monthly.py writer_lock), published whole.

    DuckDB lets one read-write process or many read-only ones open a file, never both: writing in place would
    fail while an auditor has `duckdb -readonly` open, and block auditors during a run. So the writer copies
    `db` to `<db>.next`, works there, and on success closes it (checkpointed, no WAL) and renames it over `db`
    (atomic on one filesystem). Readers that opened `db` before keep reading the snapshot they opened; new
    readers see the new file. On any failure the copy is dropped and `db` is untouched — unless
    `publish_on_error`: a flow of several months (flows/monthly.py) commits each month in its own transaction
    into one copy, so on a failure the copy holds whole months and the failure's record, and is published.
    A process killed outright publishes nothing.

    `in_place` (`yibao run --in-place`): `db` itself is written, each month in its own DuckDB transaction (a
    crash rolls back the uncommitted one from DuckDB's write-ahead log); no copy of the file, but no reader can
    open it until the writer closes it.
    """
    db = Path(db)
    if in_place:
        yield db
        return
    work = db.with_name(db.name + ".next")
    _drop(work)
    if db.exists():
        shutil.copyfile(db, work)
        if Path(f"{db}.wal").exists():  # left by an older in-place writer: DuckDB replays it when opening the copy
            shutil.copyfile(f"{db}.wal", f"{work}.wal")
    try:
        yield work
    except BaseException:
        if publish_on_error and work.exists() and not Path(f"{work}.wal").exists():
            _publish(work, db)
        else:
            _drop(work)
        raise
    if Path(f"{work}.wal").exists():
        _drop(work)
        raise RuntimeError(f"{work}: a connection was left open; the database was not replaced")
    _publish(work, db)


def _publish(work: Path, db: Path) -> None:
    _fsync(work)
    os.replace(work, db)
    _fsync(db.parent)


def _drop(work: Path) -> None:
    for p in (work, Path(f"{work}.wal")):
        p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record_runs(db: Path | str, rows: list[dict], in_place: bool = False) -> None:
    """Add (or replace, by run_id) run records — failed, interrupted and unchanged runs: in a short shadow
    cycle, or `in_place` in the writer's own copy (a flow's store.shadow)."""
    if not in_place:
        with shadow(db) as work:
            record_runs(work, rows, in_place=True)
        return
    con = connect(db)
    try:
        con.execute("BEGIN TRANSACTION")
        for row in rows:
            con.execute("DELETE FROM runs WHERE run_id = ?", [row["run_id"]])
            cols = list(row)
            con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [row[c] for c in cols])
        con.execute("COMMIT")
    finally:
        con.close()


def upstream_run(con: duckdb.DuckDBPyConnection, month: str) -> str | None:
    """The run a month is computed on: the latest succeeded run of the latest loaded month before it, whatever
    the year (accumulators restart in January, personal-account balances never do, POLICY §4.5)."""
    before = [m for m in loaded_months(con) if m < month]
    if not before:
        return None
    row = con.execute("SELECT run_id FROM runs WHERE month = ? AND status = 'succeeded' ORDER BY started_at DESC"
                      " LIMIT 1", [before[-1]]).fetchone()
    return row[0]


def last_succeeded(con: duckdb.DuckDBPyConnection, month: str) -> dict | None:
    cur = con.execute("SELECT * FROM runs WHERE month = ? AND status = 'succeeded' ORDER BY started_at DESC LIMIT 1",
                      [month])
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def write_month(con: duckdb.DuckDBPyConnection, run_id: str, month: str, frames: dict[str, pl.DataFrame],
                record: dict) -> None:
    """Replace everything of `month` with these frames and mark the run succeeded — one transaction.

    A rerun replaces the month (no duplicates); a crash inside leaves the database as before.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        for table in MONTH_TABLES:
            con.execute(f"DELETE FROM {table} WHERE month = ?", [month])
            if table not in frames:
                continue
            _insert_frame(con, table, frames[table].with_columns(pl.lit(run_id).alias("run_id"),
                                                                 pl.lit(month).alias("month")))
        if "register_rejects" in frames:  # POLICY §1.14: the registers' rejects as of this run, `month` empty
            con.execute("DELETE FROM rejects WHERE month IS NULL")
            _insert_frame(con, "rejects", frames["register_rejects"].with_columns(pl.lit(run_id).alias("run_id")))
        if "contributions" in frames:  # person × year: the year's rows, replaced whole
            con.execute("DELETE FROM contributions WHERE year = ?", [int(month[:4])])
            _insert_frame(con, "contributions", frames["contributions"].with_columns(
                pl.lit(run_id).alias("run_id"), pl.lit(month).alias("month")))
        if "opening_accumulators" in frames:  # POLICY §1.13: the state the month started from, as the month
            # before would have stored it (the previous month is not loaded): replaced by every run that starts there
            df = frames["opening_accumulators"].with_columns(pl.lit(run_id).alias("run_id"))  # month: as of
            for prev in df["month"].unique().to_list():
                con.execute("DELETE FROM accumulators WHERE month = ?", [prev])
            _insert_frame(con, "accumulators", df)
        if os.environ.get("YIBAO_FAULT") == "inside_write":  # fault injection for the crash-safety test
            os._exit(70)
        counts = run_counts(record)
        con.execute(f"UPDATE runs SET status='succeeded', finished_at=now(), assumptions=?, lines_adjudicated=?, "
                    f"supervision_findings=?, {', '.join(f'{k}=?' for k in counts)} WHERE run_id=?",
                    [json.dumps(record["assumptions"]), record["lines_adjudicated"],
                     json.dumps(record.get("supervision_findings", {}), ensure_ascii=False), *counts.values(), run_id])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def has_opening(con: duckdb.DuckDBPyConnection, month: str) -> bool:
    """Whether an opening state (POLICY §1.13) is stored as the state at the end of `month`, a month not loaded."""
    return con.execute("SELECT count(*) FROM accumulators WHERE month = ?", [month]).fetchone()[0] > 0


def write_institutions(con: duckdb.DuckDBPyConnection, institutions: pl.DataFrame, run_id: str | None) -> None:
    """Replace the `institutions` table with the register as the run read it (one transaction)."""
    df = institutions.with_columns(pl.lit(run_id, pl.String).alias("run_id"))
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM institutions")
        _insert_frame(con, "institutions", df)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def run_counts(record: dict) -> dict:
    """The `runs` columns of an ingest record (flows/monthly.ingest_and_validate): per-file counts as JSON, rows,
    warnings (POLICY §1.14)."""
    out = {"input_files": json.dumps(record["input_files"], ensure_ascii=False)}
    for k in ("rows_in", "rows_accepted", "rows_rejected", "warnings", "register_rows_rejected"):
        if k in record:
            out[k] = record[k]
    if "warnings_detail" in record:
        out["warnings_detail"] = json.dumps(record["warnings_detail"], ensure_ascii=False)
    return out


def loaded_months(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Months whose latest run succeeded, in order."""
    rows = con.execute(
        "SELECT month FROM (SELECT month, status, row_number() OVER (PARTITION BY month ORDER BY started_at DESC) rn"
        " FROM runs WHERE status IN ('succeeded')) WHERE rn = 1 ORDER BY month"
    ).fetchall()
    return [r[0] for r in rows]


def carried_accumulators(con: duckdb.DuckDBPyConnection, month: str, persons: list[str] | None = None,
                         earlier_years: pl.DataFrame | None = None) -> pl.DataFrame:
    """Each person's accumulators at the end of the month before `month`, same year (DESIGN: incremental);
    only of `persons` when given (the persons of the month: the rest is never read). earlier_years (psn_no,
    year): person-years of earlier years to carry as well — the years of the originals this month's reversals
    give back to (POLICY §1.7), as they stand at the end of the month before `month`."""
    year = int(month[:4])
    sql = """
        SELECT psn_no, year, name, arg_max(value, month) AS value
        FROM accumulators {join} WHERE {year} AND month < ? GROUP BY psn_no, year, name
    """
    if persons is None and earlier_years is None:
        return fetch_fen(con, sql.format(join="", year="year = ?"), [year, month]).with_columns(
            pl.col("year").cast(pl.Int32))
    keys = pl.DataFrame({"psn_no": persons or []}, schema={"psn_no": pl.String}).with_columns(
        pl.lit(year, pl.Int32).alias("year"))
    if earlier_years is not None:
        keys = pl.concat([keys, earlier_years.select("psn_no", pl.col("year").cast(pl.Int32))]).unique()
    con.register("__p", keys)
    try:
        return (fetch_fen(con, sql.format(join="JOIN __p USING (psn_no, year)", year="true"), [month])
                .with_columns(pl.col("year").cast(pl.Int32)))
    finally:
        con.unregister("__p")


def carried_balances(con: duckdb.DuckDBPyConnection, month: str) -> pl.DataFrame:
    """Each account's state at the end of the latest stored month before `month`, whatever the year (personal
    accounts never restart, POLICY §4.5): psn_no, as_of, balc (fen)."""
    # arg_max is a hash aggregate: no window sorting every stored month's rows (a city's year: tens of millions)
    return fetch_fen(con, """
        SELECT psn_no, arg_max(as_of, month) AS as_of, arg_max(balc, month) AS balc
        FROM account_month_end WHERE month < ? GROUP BY psn_no ORDER BY psn_no
    """, [month])


def original_ledger(con: duckdb.DuckDBPyConnection, month: str, setl_ids: list[str]) -> pl.DataFrame:
    """account_ledger rows of earlier months that name these settlements (what each account paid on them)."""
    if not setl_ids:
        return pl.DataFrame()
    con.register("__ids", pl.DataFrame({"setl_id": setl_ids}, schema={"setl_id": pl.String}))
    try:
        return fetch_fen(con, "SELECT l.* EXCLUDE (run_id) FROM account_ledger l JOIN __ids USING (setl_id)"
                              " WHERE l.month < ? ORDER BY l.month, l.seq", [month])
    finally:
        con.unregister("__ids")


def known_settlements(con: duckdb.DuckDBPyConnection, month: str, ids: list[str] | None = None) -> pl.DataFrame:
    """Settlements of earlier months (setl_id, psn_no, orig_setl_id, the five amounts); with `ids` (the month's
    setl_id and orig_setl_id values) only the rows validation can match: those ids as setl_id or orig_setl_id."""
    # POLICY §1.12: the stay a line belongs to, and whether a stored stay line merged it (REVERSAL_AFTER_MERGE)
    # (a stay line of an earlier month only: a rerun of month M must not see the later months still stored)
    merged = ("EXISTS (SELECT 1 FROM adjudicated a WHERE a.psn_no = s.psn_no AND a.mdtrt_id = s.mdtrt_id"
              " AND a.month < s_month.m AND list_contains(string_split(a.merged_setl_ids, ','), s.setl_id)) AS merged")
    cols = ("s.setl_id, s.psn_no, s.orig_setl_id, medfee_sumamt, fulamt_ownpay_amt, overlmt_selfpay, cls_a_amt, "
            f"cls_b_amt, s.mdtrt_id, s.med_type, s.setl_time, s.is_emergency_rescue, {merged}")
    src = "settlements s, (SELECT ?::VARCHAR AS m) s_month"
    if ids is None:
        return fetch_fen(con, f"SELECT {cols} FROM {src} WHERE s.month < s_month.m", [month])
    con.register("__ids", pl.DataFrame({"id": ids}, schema={"id": pl.String}).unique())
    try:
        return fetch_fen(con, f"SELECT {cols} FROM {src} WHERE s.month < s_month.m AND (s.setl_id IN (FROM __ids)"
                              " OR s.orig_setl_id IN (FROM __ids))", [month])
    finally:
        con.unregister("__ids")


def original_results(con: duckdb.DuckDBPyConnection, month: str, setl_ids: list[str]) -> pl.DataFrame:
    if not setl_ids:
        return pl.DataFrame()
    con.register("__ids", pl.DataFrame({"setl_id": setl_ids}))
    try:
        return fetch_fen(con, "SELECT a.* EXCLUDE (run_id) FROM adjudicated a JOIN __ids USING (setl_id) WHERE a.month < ?",
                         [month])
    finally:
        con.unregister("__ids")


def stay_history(con: duckdb.DuckDBPyConnection, month: str, lines: pl.DataFrame) -> pl.DataFrame:
    """Stored adjudicated rows of earlier months of the same year as the month, of the stays (psn_no, mdtrt_id)
    of this month's 13/21/22/24 lines: what a stay line needs to settle a merged stay (POLICY §1.12,
    transforms/merged_stays.py) — the emergency lines stored as outpatient care, the stay lines already stored."""
    keys = (lines.filter(pl.col("med_type").is_in(["13", "21", "22", "24"]))
            .select("psn_no", "mdtrt_id").unique())
    if keys.height == 0:
        return pl.DataFrame()
    con.register("__stays", keys)
    try:
        return fetch_fen(con, "SELECT a.* EXCLUDE (run_id) FROM adjudicated a JOIN __stays USING (psn_no, mdtrt_id)"
                              " WHERE a.month < ? AND a.month >= ?", [month, month[:4] + "-01"])
    finally:
        con.unregister("__stays")


def adjudicated_of_persons(con: duckdb.DuckDBPyConnection, psn_nos: list[str], before_month: str) -> pl.DataFrame:
    """Stored adjudicated rows of these persons in months before `before_month` (on-application windows)."""
    con.register("__p", pl.DataFrame({"psn_no": psn_nos}, schema={"psn_no": pl.String}))
    try:
        return fetch_fen(con, "SELECT a.* EXCLUDE (run_id) FROM adjudicated a JOIN __p USING (psn_no) WHERE a.month < ?",
                         [before_month])
    finally:
        con.unregister("__p")


def supervision_history(con: duckdb.DuckDBPyConnection, month: str, persons: list[str], since: dt.date
                        ) -> pl.DataFrame:
    """Earlier months' lines of these persons that end on or after `since` (transforms/supervision.py LINE_COLUMNS:
    the settlement's dates and diagnosis with its adjudicated region, scheme, ledger and fund payment)."""
    con.register("__p", pl.DataFrame({"psn_no": persons}, schema={"psn_no": pl.String}))
    try:
        return fetch_fen(con, """
            SELECT a.setl_id, a.mdtrt_id, a.psn_no, a.region, a.scheme, a.month, a.fixmedins_code, a.hosp_lv,
              a.med_type, a.ledger, s.begndate, s.enddate, a.setl_time, s.dise_codg, a.orig_setl_id,
              a.medfee_sumamt, a.fulamt_ownpay_amt, a.overlmt_selfpay, a.cls_a_amt, a.cls_b_amt, a.fund_pay_sumamt
            FROM adjudicated a JOIN __p USING (psn_no) JOIN settlements s ON s.setl_id = a.setl_id AND s.month = a.month
            WHERE a.month < ? AND (s.enddate >= ? OR a.orig_setl_id IS NOT NULL)""", [month, since])
    finally:
        con.unregister("__p")


def previous_applications(con: duckdb.DuckDBPyConnection, before_month: str) -> pl.DataFrame:
    return fetch_fen(con, "SELECT psn_no, confirm_date, status FROM assistance_applications WHERE month < ?",
                     [before_month])
