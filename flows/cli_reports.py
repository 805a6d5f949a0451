"""Commands for auditors and analysts (DATA.md §5: report, audit, explain), read-only on the database.

  yibao report fund-expenditure --year Y [--month M] --format csv|xlsx|parquet|html --out FILE [--db FILE]
  yibao audit out-of-scope [--year Y] [--month M] [--format table|csv|xlsx] [--out FILE] [--all] [--db FILE]
  yibao audit discrepancies [--year Y] [--month M] [--format table|csv|xlsx] [--out FILE] [--detail] [--db FILE]
  yibao report clearing --month M [--institution CODE] --format csv|xlsx|html --out FILE [--db FILE]
  yibao audit rules [--year Y] [--month M] [--format table|csv|xlsx] [--out FILE] [--db FILE]
  yibao explain PSN_NO [--year Y] [--db FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS: set[str] = {"report", "audit", "explain", "whatif"}  # whatif: flows/cli_whatif.py


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=None, help="DuckDB file (default $YIBAO_DB or yibao.duckdb), opened read-only")


def _period_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--year", type=int, default=None, help="YYYY (default: every month in the database)")
    p.add_argument("--month", default=None, help="YYYY-MM")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the reporting subcommands to the `yibao` parser."""
    rep = sub.add_parser("report", help="reports for analysts (read-only on the database)")
    rsub = rep.add_subparsers(dest="what", required=True)
    fe = rsub.add_parser("fund-expenditure", help="fund expenditure by month, region, scheme, ledger, level and fund")
    fe.add_argument("--year", type=int, required=True)
    fe.add_argument("--month", default=None, help="YYYY-MM (default: the whole year)")
    fe.add_argument("--format", dest="fmt", choices=["csv", "xlsx", "parquet", "html"], required=True)
    fe.add_argument("--out", type=Path, required=True)
    _db_arg(fe)
    cl = rsub.add_parser("clearing", help="the monthly clearing statement per institution (医保基金月度清算)")
    cl.add_argument("--month", required=True, help="YYYY-MM")
    cl.add_argument("--institution", default=None, help="fixmedins_code (default: every institution of the month)")
    cl.add_argument("--format", dest="fmt", choices=["csv", "xlsx", "html"], required=True)
    cl.add_argument("--out", type=Path, required=True)
    _db_arg(cl)

    aud = sub.add_parser("audit", help="audits for auditors (read-only on the database)")
    asub = aud.add_subparsers(dest="what", required=True)
    oos = asub.add_parser("out-of-scope", help="POLICY §3.10: rural low-income stays over their out-of-scope limit")
    _period_args(oos)
    oos.add_argument("--format", dest="fmt", choices=["table", "csv", "xlsx"], default="table")
    oos.add_argument("--out", type=Path, default=None, help="file for csv (default stdout) or xlsx (required)")
    oos.add_argument("--all", action="store_true", help="csv: every rural low-income stay, not only violations")
    _db_arg(oos)
    dis = asub.add_parser("discrepancies", help="institution-reported amounts that differ from the adjudicated ones")
    _period_args(dis)
    dis.add_argument("--format", dest="fmt", choices=["table", "csv", "xlsx"], default="table")
    dis.add_argument("--out", type=Path, default=None, help="file for csv (default stdout) or xlsx (required)")
    dis.add_argument("--detail", action="store_true", help="table/csv: every settlement × fund, not the summary")
    _db_arg(dis)
    rules = asub.add_parser("rules", help="fund-supervision findings (violations): split admissions, duplicates, …")
    _period_args(rules)
    rules.add_argument("--format", dest="fmt", choices=["table", "csv", "xlsx"], default="table")
    rules.add_argument("--out", type=Path, default=None, help="file for csv (default stdout) or xlsx (required)")
    _db_arg(rules)

    ex = sub.add_parser("explain", help="one person's year: every line, every fund, every accumulator")
    ex.add_argument("psn_no")
    ex.add_argument("--year", type=int, default=None, help="default: the person's latest year in the database")
    _db_arg(ex)

    from flows import cli_whatif
    cli_whatif.add_commands(sub)


def dispatch(args: argparse.Namespace) -> int:
    from flows import reports
    from flows.settings import default_db

    if args.cmd == "whatif":  # writes scenarios: not the read-only connection below
        from flows import cli_whatif
        return cli_whatif.dispatch(args)
    db = args.db or default_db()
    con = reports.open_readonly(db)
    try:
        if args.cmd == "report" and args.what == "fund-expenditure":
            return _fund_expenditure(reports, con, args)
        if args.cmd == "audit" and args.what == "out-of-scope":
            return _out_of_scope(reports, con, args)
        if args.cmd == "audit" and args.what == "discrepancies":
            return _discrepancies(reports, con, args)
        if args.cmd == "report" and args.what == "clearing":
            return _clearing(con, args)
        if args.cmd == "audit" and args.what == "rules":
            return _rules(reports, con, args)
        if args.cmd == "explain":
            print(reports.explain_person(con, args.psn_no, args.year))
            return 0
    finally:
        con.close()
    raise SystemExit(f"unknown command {args.cmd}")


def _need_out(args: argparse.Namespace) -> None:
    if args.fmt == "xlsx" and args.out is None:
        raise ValueError("--format xlsx needs --out FILE")


def _need_loaded(con, year: int | None, month: str | None) -> None:
    """A report of a period with no month loaded is an error, not an empty file 'written' (issue 16.8)."""
    from flows import store
    loaded = store.loaded_months(con) if _has_runs(con) else []
    if month is not None and month not in loaded:
        raise LookupError(f"month {month} is not loaded (run `yibao run --month {month}` first)")
    if year is not None and not any(m.startswith(f"{year}-") for m in loaded):
        raise LookupError(f"no month of {year} is loaded (run `yibao run --year {year}` first)")


def _has_runs(con) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'").fetchone()[0])


def _fund_expenditure(reports, con, args) -> int:
    reports.period_filter(args.year, args.month)  # validates --month against --year
    _need_loaded(con, args.year, args.month)
    reports.write_fund_expenditure(con, args.year, args.month, args.fmt, args.out)
    print(f"fund expenditure {reports.period_text(args.year, args.month)} written to {args.out} ({args.fmt})",
          file=sys.stderr)
    return 0


def _audit_output(reports, args, summary: str, show, csv_frame, xlsx_frames: list) -> int:
    """An audit's summary and tables: on the terminal (`show` prints the tables), as csv (`csv_frame`) or as xlsx
    (`xlsx_frames`, a sheet each), the summary on stderr beside a file."""
    if args.fmt == "table":
        print(summary)
        show()
    elif args.fmt == "csv":
        reports.write_csv(csv_frame, args.out)
        print(summary, file=sys.stderr)
    else:
        reports.write_xlsx(xlsx_frames, args.out)
        print(f"{summary}; written to {args.out}", file=sys.stderr)
    return 0


def _out_of_scope(reports, con, args) -> int:
    _need_out(args)
    t = reports.out_of_scope_audit(con, args.year, args.month)

    def show():
        reports.print_table(t["by_institution"])
        reports.print_table(reports.narrow(t["violations"], reports.TERMINAL_STAY_COLUMNS), limit=50)
    return _audit_output(reports, args, reports.out_of_scope_summary(t), show,
                         t["stays"] if args.all else t["violations"], [t["by_institution"], t["violations"], t["stays"]])


def _discrepancies(reports, con, args) -> int:
    _need_out(args)
    t = reports.discrepancy_audit(con, args.year, args.month)
    inst = t["institutions"].df
    summary = (f"{int(inst['reported_settlements'].sum() or 0)} settlements with reported amounts, "
               f"{int(inst['differing_settlements'].sum() or 0)} differ from the adjudicated amounts "
               f"({t['detail'].df.height} settlement × fund differences)")
    chosen = t["detail"] if args.detail else t["summary"]
    return _audit_output(reports, args, summary,
                         lambda: reports.print_table(chosen, limit=100 if args.detail else None),
                         chosen, [t["summary"], t["institutions"], t["detail"]])


def _clearing(con, args) -> int:
    from flows import supervision_reports as sr
    c = sr.write_clearing(con, args.month, args.institution, args.fmt, args.out)
    totals = sr.clearing_totals(c)
    print(f"clearing statement {args.month}: {len(c.institutions)} institutions, net payable "
          f"{sr.yuan(sum(totals.values()))} yuan (" + ", ".join(f"{f} {sr.yuan(v)}" for f, v in totals.items())
          + f"); written to {args.out} ({args.fmt})", file=sys.stderr)
    return 0


def _rules(reports, con, args) -> int:
    from flows import supervision_reports as sr
    _need_out(args)
    t = sr.rules_audit(con, args.year, args.month)

    def show():
        reports.print_table(t["by_month"])
        reports.print_table(t["by_institution"], limit=30)
        reports.print_table(reports.narrow(t["findings"], ["month", "rule_id", "sev_deg", "vola_amt", "psn_no",
                                                           "psn_name_masked", "fixmedins_code", "vola_evid"]), limit=50)
    return _audit_output(reports, args, sr.rules_summary(t), show, t["findings"],
                         [t["by_month"], t["by_institution"], t["findings"]])
