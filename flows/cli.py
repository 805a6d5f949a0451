"""`yibao` command line (DATA.md §5). Exit 0 on success; non-zero with a one-line reason on failure."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from flows.settings import default_db, default_input, prefect_offline_defaults

FUNDS = [("hifp_pay", "basic fund 统筹基金"), ("hifmi_pay", "critical illness 大病保险"),
         ("maf_pay", "basic assistance 基本救助"), ("maf_tilt_pay", "tilt assistance 倾斜救助"),
         ("hosp_part_amt", "institution share 机构承担"), ("acct_pay", "own account 个人账户"),
         ("acct_mulaid_pay", "family accounts 家庭共济"), ("psn_cash_pay", "cash 现金")]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yibao", description="Batch claims adjudication for basic medical insurance (医保)")
    p.add_argument("--version", action="version", version=f"yibao {_version()}")
    p.add_argument("--debug", action="store_true", help="on a failure, show the Python traceback after the one line")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="adjudicate a month (or a year) of settlement files into DuckDB")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--month", metavar="YYYY-MM", help="the month folder to run")
    g.add_argument("--year", type=int, metavar="YYYY", help="every month folder of the year, in order")
    r.add_argument("--input", type=Path, default=None, metavar="DIR", help="input folder (default $YIBAO_INPUT or data/sample)")
    r.add_argument("--db", type=Path, default=None, metavar="FILE", help="DuckDB file (default $YIBAO_DB or yibao.duckdb)")
    r.add_argument("--force", action="store_true",
                   help="recompute the month even when its inputs, registers, code and policies are unchanged")
    r.add_argument("--shards", type=int, default=None,
                   help="adjudicate in N shards of whole family groups (docs/scale.md); same result")
    r.add_argument("--in-place", action="store_true",
                   help="write the database itself, not a private copy: no copy of the whole file per run, but "
                        "readers cannot open it while the run lasts (README: Readers and the writer lock)")
    r.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="fan the shards out to a Dask scheduler (tcp://host:8786) or `local` (a LocalCluster)")

    s = sub.add_parser("sample", help="write a synthetic bureau: registers and monthly settlement files")
    s.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write (reference/ and YYYY-MM/)")
    s.add_argument("--persons", type=int, default=2000, help="insured persons (default 2000)")
    s.add_argument("--year", type=int, default=2025, help="settlement year (default 2025)")
    s.add_argument("--months", type=int, default=12, help="months from January (default 12)")
    s.add_argument("--seed", type=int, default=20250101, help="the same seed writes the same files")
    s.add_argument("--format", dest="fmt", choices=["csv", "parquet", "mixed"], default="mixed",
                   help="file format of the settlement files (default mixed: some of each)")
    s.add_argument("--invalid-rate", type=float, default=0.0, help="share of invalid rows to inject (every reason)")
    s.add_argument("--no-reported", dest="reported", action="store_false",
                   help="leave the institution-reported amounts empty (skips the second pass through the pipeline)")

    d = sub.add_parser("demo", help="the committed sample, a year of monthly runs, a summary")
    d.add_argument("--input", type=Path, default=None, metavar="DIR", help="input folder (default data/sample)")
    d.add_argument("--db", type=Path, default=None, metavar="FILE", help="DuckDB file (default yibao.duckdb)")
    d.add_argument("--year", type=int, default=2025, help="year to run (default 2025)")

    v = sub.add_parser("serve", help="the scheduled monthly deployment (1st of the month, 02:00 Asia/Shanghai); "
                                     "needs `yibao server start`")
    v.add_argument("--input", type=Path, default=None, metavar="DIR", help="input folder (default data/sample)")
    v.add_argument("--db", type=Path, default=None, metavar="FILE", help="DuckDB file (default yibao.duckdb)")

    c = sub.add_parser("contributions", help="contributions per person and year (POLICY §3.1, §4.1): summary, export")
    c.add_argument("--year", type=int, required=True)
    c.add_argument("--format", dest="fmt", choices=["table", "csv", "xlsx"], default="table")
    c.add_argument("--out", type=Path, default=None, help="file for csv (default stdout) or xlsx (required)")
    c.add_argument("--db", type=Path, default=None, help="DuckDB file whose runs stored the year (read-only)")
    c.add_argument("--input", type=Path, default=None,
                   help="input folder: computed from its registers when the database holds nothing for the year")

    q = sub.add_parser("sql", help="read-only SQL on the database: run a saved query file, or an interactive shell",
                       description="Read-only SQL on the database (DATA.md §5). With FILE.sql: runs its statements "
                                   "and prints each result; without: an interactive shell (history, .help).")
    q.add_argument("file", nargs="?", type=Path, metavar="FILE.sql", help="saved query file, e.g. queries/*.sql")
    q.add_argument("-c", "--command", metavar="SQL", help="run these statements instead of a file")
    q.add_argument("--db", type=Path, default=None, metavar="FILE",
                   help="DuckDB file (default $YIBAO_DB or yibao.duckdb), opened read-only")
    q.add_argument("--format", dest="fmt", choices=["table", "csv"], default="table",
                   help="tables that fit the terminal (default) or CSV")
    q.add_argument("--set", dest="variables", action="append", metavar="NAME=VALUE",
                   help="a variable the query reads with getvariable('NAME'), e.g. --set month=2025-03")
    q.add_argument("--compatible-copy", type=Path, metavar="OUT.duckdb",
                   help="write a copy that DuckDB 1.x tools (the 1.x duckdb CLI, DBeaver) can open, and exit")

    sv = sub.add_parser("server", help="a local Prefect server (UI and API) every yibao command uses while it runs")
    sv.add_argument("action", choices=["start", "stop", "status"])
    sv.add_argument("--port", type=int, default=4200, help="port on 127.0.0.1 (default 4200)")

    from flows import cli_reports
    cli_reports.add_commands(sub)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("yibao")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd in ("run", "demo", "whatif", "sample"):
        # Prefect's console would print a failed run's traceback before our one line; its logs (progress included,
        # at INFO) still reach the Prefect API — the run page in the UI — and the runs table keeps the error.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        from flows import progress
        progress.enable()
    prefect_offline_defaults()
    out = getattr(args, "out", None)
    if out is not None and args.cmd != "sample":  # an export file: its folder is made, as users expect
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.cmd in ("run", "demo") or (args.cmd == "whatif" and getattr(args, "action", None) is None):
            from flows.server import use_prefect_api
            use_prefect_api()  # the running `yibao server`, else a temporary server that ends with this process
        if args.cmd == "sample":
            from flows.sample import write_sample
            summary = write_sample(args.out, persons=args.persons, year=args.year, months=args.months, seed=args.seed,
                                   fmt=args.fmt, invalid_rate=args.invalid_rate, reported=args.reported)
            print(f"sample written to {args.out}: " + ", ".join(
                f"{k.replace('_', ' ')} {v:,}" if isinstance(v, int) and k not in ("year", "seed")
                else f"{k.replace('_', ' ')} {v}"
                for k, v in (summary.items() if isinstance(summary, dict) else [])) if isinstance(summary, dict)
                  else f"sample written to {args.out}: {summary}")
            return 0
        if args.cmd == "run":
            return _run(args)
        if args.cmd == "demo":
            return _demo(args)
        if args.cmd == "contributions":
            return _contributions(args)
        if args.cmd == "sql":
            from flows import sql_shell
            return sql_shell.main(Path(args.db or default_db()), args.file, args.command, args.fmt,
                                  args.compatible_copy, args.variables)
        if args.cmd == "server":
            from flows import server
            if args.action == "start":
                print(server.start(args.port))
            elif args.action == "stop":
                print(server.stop())
            else:
                line, ok = server.status()
                print(line)
                return 0 if ok else 3
            return 0
        if args.cmd == "serve":
            from flows.server import api_url
            if api_url() is None:
                raise RuntimeError("yibao serve needs a running Prefect server (schedules do not run on a temporary "
                                   "one): start it with `yibao server start`")
            os.environ["PREFECT_API_URL"] = api_url()
            from flows.schedule import serve
            serve(str((args.input or default_input()).resolve()), str((args.db or default_db()).resolve()))
            return 0
        from flows import cli_reports
        if args.cmd in cli_reports.COMMANDS:
            return cli_reports.dispatch(args)
    except KeyboardInterrupt:
        print("yibao: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader (head, less) went away: nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # one line for the user; the run record keeps the detail
        from flows.errors import error_line
        print(f"yibao: {error_line(e)}", file=sys.stderr)
        if args.debug:
            import traceback
            traceback.print_exception(e)
        release(e)
        return 1
    return 2


def release(e: BaseException) -> None:
    """Drop what a failure keeps alive before the interpreter exits (flows/errors.drop_locals), then collect."""
    import gc

    from flows.errors import drop_locals
    drop_locals(e)
    e.__traceback__ = None
    gc.collect()


def _contributions(args) -> int:
    """`yibao contributions --year Y`: the stored year (any run of Y writes it), else computed from the registers."""
    import polars as pl

    from flows import reports, store
    from transforms.contributions import CONTRIBUTION_SCHEMA, contributions, summary
    if args.fmt == "xlsx" and args.out is None:
        raise ValueError("--format xlsx needs --out FILE")
    db = Path(args.db or default_db())
    frame, source = None, ""
    if db.exists():
        con = store.connect(db, read_only=True)
        try:
            if reports.has_table(con, "contributions"):
                got = store.fetch_fen(con, f"SELECT {', '.join(CONTRIBUTION_SCHEMA)} FROM contributions WHERE year = ?"
                                           " ORDER BY psn_no", [args.year])
                if got.height:
                    frame, source = got, f"database {db}"
        finally:
            con.close()
    if frame is None:
        from flows.ingest import load_registers
        from flows.policies import load_policies
        input_dir = Path(args.input or default_input())
        frame, source = contributions(load_registers(input_dir), load_policies(), args.year), f"registers of {input_dir}"
    money = {"personal_amt", "government_amt", "employer_amt"}
    total = reports.Table("summary", f"contributions {args.year} by region, scheme and kind (from {source})",
                          summary(frame).with_columns(pl.col("year").cast(pl.String)), money=money)
    detail = reports.Table("contributions", f"contributions {args.year}, one row per person", frame, money=money)
    missing = int(frame["personal_amt"].is_null().sum())
    line = (f"contributions {args.year}: {frame.height:,} persons from {source}; {missing:,} with an amount that "
            f"cannot be computed (see reason)")
    if args.fmt == "table":
        reports.print_table(total)
        print(line)
    elif args.fmt == "csv":
        reports.write_csv(detail, args.out)
        print(line, file=sys.stderr)
    else:
        reports.write_xlsx([total, detail], args.out)
        print(f"{line}; written to {args.out}", file=sys.stderr)
    return 0


def _run(args) -> int:
    import datetime as dt

    from flows.monthly import dask_runner, month_flow, year_flow
    input_dir = str(args.input or default_input())
    db = str(args.db or default_db())
    shards = args.shards if args.shards is not None else ((os.cpu_count() or 2) if args.dask else 1)
    if shards < 1:
        raise ValueError("--shards must be at least 1")
    flow_fn = month_flow if args.month else year_flow
    if args.dask:
        flow_fn = flow_fn.with_options(task_runner=dask_runner(args.dask))
    since = dt.datetime.now()
    try:
        if args.month:
            flow_fn(args.month, input_dir, db, force=args.force, shards=shards, fan_out=bool(args.dask),
                    in_place=args.in_place)
        else:
            flow_fn(args.year, input_dir, db, shards=shards, fan_out=bool(args.dask), in_place=args.in_place)
    finally:  # every month this command attempted, succeeded or not, before the one line of a failure
        from flows import progress
        progress.finish()
        print_run_summaries(Path(db), since)
    print(f"results in {Path(db).resolve()}")
    return 0


def print_run_summaries(db: Path, since) -> None:
    """One block per month attempted since `since` (DATA.md §4 runs): status, rows read = accepted + rejected,
    per file with its top reject reasons, register rows rejected and warnings (POLICY §1.14)."""
    import json

    from flows import store
    if not db.exists():
        return
    con = store.connect(db, read_only=True)
    try:
        cur = con.execute("SELECT * FROM runs WHERE started_at >= ? ORDER BY started_at", [since])
        runs = [dict(zip([d[0] for d in cur.description], r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    for r in runs:
        print(run_summary(r, json.loads(r["input_files"] or "[]")))


def run_summary(r: dict, files: list[dict]) -> str:
    """The lines a user reads for one run record."""
    month, status = r["month"], r["status"]
    if status == "unchanged":
        return (f"{month}: unchanged since run {r['matches_run_id']} (same input files, registers, code and "
                f"policies); nothing rewritten")
    head = f"{month}: {status}" + (f" (run {r['run_id']})" if status == "succeeded" else "")
    if r.get("rows_in") is not None:
        head += (f" — {r['rows_in']:,} rows read = {r['rows_accepted']:,} accepted + {r['rows_rejected']:,} "
                 f"rejected")
    if r.get("register_rows_rejected") or r.get("warnings"):
        head += (f"; registers: {r.get('register_rows_rejected') or 0:,} rows rejected, "
                 f"{r.get('warnings') or 0:,} warnings (POLICY §1.14)")
    lines = [head]
    for f in files:
        if "rows_read" not in f or (f["name"].startswith("reference/") and not f["rows_rejected"]
                                    and not f.get("warnings")):
            continue
        line = f"  {f['name']}: {f['rows_read']:,} read, {f['rows_accepted']:,} accepted, {f['rows_rejected']:,} rejected"
        if f.get("top_reasons"):
            line += " (" + ", ".join(f"{code} {n:,}" for code, n in f["top_reasons"]) + ")"
        if f.get("warnings"):
            line += f", {f['warnings']:,} warnings"
        lines.append(line)
    if status in ("refused", "failed") and r.get("error"):
        lines.append(f"  why: {r['error']}")
    return "\n".join(lines)


def _demo(args) -> int:
    from flows.monthly import year_flow
    input_dir = args.input or default_input()
    db = args.db or default_db()
    if not (Path(input_dir) / "reference").is_dir():
        raise FileNotFoundError(f"no sample at {input_dir}: run `yibao sample --out {input_dir}`")
    t0 = time.perf_counter()
    year_flow(args.year, str(input_dir), str(db))
    from flows import progress
    progress.finish()
    elapsed = time.perf_counter() - t0
    print_summary(Path(db), args.year, elapsed)
    return 0


def print_summary(db: Path, year: int, elapsed: float | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from flows import store
    con = store.connect(db, read_only=True)
    try:
        y = f"{year}-%"
        lines, persons = con.execute("SELECT count(*), count(DISTINCT psn_no) FROM adjudicated WHERE month LIKE ?",
                                     [y]).fetchone()
        rows = con.execute("SELECT sum(rows_in), sum(rows_accepted), sum(rows_rejected) FROM ("
                           " SELECT *, row_number() OVER (PARTITION BY month ORDER BY started_at DESC) rn FROM runs"
                           " WHERE status='succeeded' AND month LIKE ?) WHERE rn=1", [y]).fetchone()
        sums = con.execute("SELECT " + ", ".join(f"coalesce(sum({c}),0)" for c, _ in FUNDS)
                           + ", coalesce(sum(medfee_sumamt),0) FROM adjudicated WHERE month LIKE ?", [y]).fetchone()
        by_scheme = con.execute(
            "SELECT region, scheme, count(*), count(*) FILTER (WHERE reason_codes LIKE '%RULE_PENDING%'),"
            " sum(medfee_sumamt), sum(hifp_pay), sum(hifmi_pay), sum(maf_pay),"
            " sum(maf_tilt_pay), sum(acct_pay), sum(acct_mulaid_pay)"
            " FROM adjudicated WHERE month LIKE ? GROUP BY ALL ORDER BY ALL", [y]).fetchall()
        rejects = con.execute("SELECT reason_code, count(*) FROM rejects WHERE month LIKE ? GROUP BY 1 ORDER BY 2 DESC",
                              [y]).fetchall()
        # POLICY §4.2/§4.5: account movements of the year (payments net of the refunds of reversals)
        accounts = con.execute(
            "SELECT coalesce(sum(amount) FILTER (WHERE kind = 'credit'), 0),"
            " coalesce(-sum(amount) FILTER (WHERE kind = 'own_payment'), 0),"
            " coalesce(-sum(amount) FILTER (WHERE kind = 'mulaid_payment_out'), 0),"
            " count(DISTINCT psn_no) FILTER (WHERE kind = 'credit') FROM account_ledger WHERE month LIKE ?", [y]).fetchone()
        balance = con.execute("SELECT coalesce(sum(balc), 0), count(*) FROM account_month_end WHERE month = ("
                              "SELECT max(month) FROM account_month_end WHERE month LIKE ?)", [y]).fetchone()
        maternity = con.execute("SELECT count(*), coalesce(sum(allowance_days), 0), coalesce(sum(subsidy_amt), 0)"
                                " FROM maternity_benefits WHERE month LIKE ?", [y]).fetchone()
    finally:
        con.close()
    import shutil
    c = Console(width=max(shutil.get_terminal_size((140, 40)).columns, 120))
    t = Table(title=f"yibao {year}: {lines:,} lines adjudicated for {persons:,} persons"
              + (f" in {elapsed:.1f} s" if elapsed else ""))
    t.add_column("fund / payer")
    t.add_column("yuan", justify="right")
    t.add_row("total cost 总费用", f"{sums[-1]:,.2f}")
    for (col, label), v in zip(FUNDS, sums[:-1], strict=True):
        t.add_row(f"{label} ({col})", f"{v:,.2f}")
    c.print(t)
    from flows.reports import print_rows
    heads = ["region", "scheme", "lines", "pending", "total", "hifp", "hifmi", "maf", "maf_tilt", "acct",
             "mulaid"]  # money never cut (issue 16.7): print_rows; pending = lines under a pending rule
    print_rows(c, "by region and scheme", heads,
               [[str(r[0]), str(r[1]), f"{r[2]:,}", f"{r[3]:,}", *[f"{v:,.2f}" for v in r[4:]]] for r in by_scheme],
               set(heads[2:]))
    a = Table(title="personal accounts 个人账户 (POLICY §4.2, §4.5)")
    a.add_column("account movement")
    a.add_column("yuan", justify="right")
    a.add_row(f"credited 划入 ({accounts[3]:,} accounts)", f"{accounts[0]:,.2f}")
    a.add_row("paid for their own settlements 本人支付", f"{accounts[1]:,.2f}")
    a.add_row("paid for family members 家庭共济支付", f"{accounts[2]:,.2f}")
    a.add_row(f"balances at the year's last month end ({balance[1]:,} accounts)", f"{balance[0]:,.2f}")
    c.print(a)
    c.print(f"maternity (POLICY §4.6): {maternity[0]:,} events, {maternity[1]:,} allowance days, "
            f"flexible workers' subsidies {maternity[2]:,.2f} yuan")
    rj = Table(title=f"input rows {rows[0]:,} = accepted {rows[1]:,} + rejected {rows[2]:,}")
    rj.add_column("reject reason")
    rj.add_column("rows", justify="right")
    for code, n in rejects:
        rj.add_row(code, f"{n:,}")
    c.print(rj)
    c.print(f"Results: {db.resolve()}  (SQL, read-only: yibao sql --db {db}, or yibao sql queries/00_overview.sql)")


if __name__ == "__main__":
    sys.exit(main())
