"""`yibao whatif` (issue 8): re-adjudicate a loaded year under changed parameters, compare, list, drop.

  yibao whatif --year Y --set PATH=VALUE [--set …] [--policy-file FILE] --name NAME [--input DIR] [--db FILE]
  yibao whatif report NAME [--format table|xlsx|html] [--out FILE] [--db FILE]
  yibao whatif list [--db FILE]
  yibao whatif drop NAME [--db FILE]
  yibao whatif paths [TEXT] [--year Y]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS: set[str] = {"whatif"}


def add_commands(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("whatif", help="re-adjudicate a loaded year under changed parameters; compare with the baseline",
                       description="Without a subcommand: make (or replace) the scenario NAME. "
                                   "PATH names a parameter as in policies/: region.scheme.topic.name[.key], e.g. "
                                   "suizhou.resident.inpatient.deductible_in_city.3 (see `yibao whatif paths`).")
    w.add_argument("--year", type=int, help="the loaded year to re-adjudicate")
    w.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE",
                   help="a parameter's value for the whole year (repeatable; later ones win)")
    w.add_argument("--policy-file", type=Path, default=None, help="a YAML file mapping parameter paths to values")
    w.add_argument("--name", help="scenario name (rerunning a name replaces the scenario)")
    w.add_argument("--input", type=Path, default=None,
                   help="input folder of the registers when it moved since the baseline runs (default: the runs' own)")
    w.add_argument("--db", type=Path, default=None, help="DuckDB file (default $YIBAO_DB or yibao.duckdb)")
    ws = w.add_subparsers(dest="action", required=False)
    r = ws.add_parser("report", help="baseline vs scenario by payer, month, scheme, ledger, level and identity group")
    r.add_argument("scenario")
    r.add_argument("--format", dest="fmt", choices=["table", "xlsx", "html"], default="table")
    r.add_argument("--out", type=Path, default=None, help="file for xlsx or html (required for them)")
    r.add_argument("--db", dest="sub_db", type=Path, default=None, metavar="FILE",
                   help="DuckDB file (default $YIBAO_DB or yibao.duckdb)")
    ls = ws.add_parser("list", help="the scenarios in the database")
    ls.add_argument("--db", dest="sub_db", type=Path, default=None, metavar="FILE",
                    help="DuckDB file (default $YIBAO_DB or yibao.duckdb)")
    d = ws.add_parser("drop", help="remove a scenario (the baseline is not touched)")
    d.add_argument("scenario")
    d.add_argument("--db", dest="sub_db", type=Path, default=None, metavar="FILE",
                   help="DuckDB file (default $YIBAO_DB or yibao.duckdb)")
    p = ws.add_parser("paths", help="the parameter paths an override may name, with their values in force")
    p.add_argument("text", nargs="?", default="", help="only paths containing this text")
    p.add_argument("--year", dest="paths_year", type=int, default=None, metavar="YEAR", help="values in force on 1 January (default: "
                                                                             "this year)")


def dispatch(args: argparse.Namespace) -> int:
    from flows.settings import default_db

    db = Path(getattr(args, "sub_db", None) or args.db or default_db())
    if args.action is None:
        return _make(args, db)
    if args.action == "paths":
        return _paths(args)
    if args.action == "drop":
        from flows.whatif import drop_scenario
        drop_scenario(str(db), args.scenario)
        print(f"scenario {args.scenario} dropped from {db}", file=sys.stderr)
        return 0
    from flows import reports
    con = reports.open_readonly(db)
    try:
        if args.action == "list":
            from flows.whatif import list_scenarios
            df = list_scenarios(con)
            if df.height == 0:
                print(f"no scenario in {db}")
            else:
                reports.print_table(reports.Table("scenarios", f"what-if scenarios in {db}", df))
            return 0
        from flows.whatif_report import summary_line, write_report
        if args.fmt != "table" and args.out is None:
            raise ValueError(f"--format {args.fmt} needs --out FILE")
        r = write_report(con, args.scenario, args.fmt, args.out)
        print(summary_line(r) + (f"; written to {args.out}" if args.out else ""), file=sys.stderr)
        return 0
    finally:
        con.close()


def _make(args: argparse.Namespace, db: Path) -> int:
    from flows.overrides import describe, overrides_from
    from flows.policies import load_policies
    from flows.whatif import check_name, whatif_flow
    if args.year is None or not args.name:
        raise ValueError("yibao whatif needs --year Y and --name NAME (and --set PATH=VALUE or --policy-file FILE)")
    check_name(args.name)
    overrides = overrides_from(load_policies(), args.year, args.sets, args.policy_file)
    _check_year(db, args.year)  # before the flow starts: a one-line refusal, no flow run
    for o in overrides[:10]:
        print(f"what-if {args.name}: {describe(o)} for {args.year}", file=sys.stderr)
    if len(overrides) > 10:
        print(f"what-if {args.name}: … and {len(overrides) - 10} more overrides", file=sys.stderr)
    rec = whatif_flow(args.name, args.year, [o.as_dict() for o in overrides], str(db),
                      str(args.input) if args.input else None)
    from flows.whatif_report import months_text
    missing = f"; MISSING {months_text(rec['missing_months'])}" if rec["missing_months"] else ""
    print(f"scenario {args.name}: {rec['lines']:,} lines of {rec['persons']:,} persons re-adjudicated over "
          f"{months_text(rec['months'])}{missing}; see `yibao whatif report {args.name}`")
    return 0


def _check_year(db: Path, year: int) -> None:
    from flows import store
    from flows.whatif import baseline_of
    con = store.connect(db, read_only=True)
    try:
        baseline_of(con, year)
    finally:
        con.close()


def _paths(args: argparse.Namespace) -> int:
    import datetime as dt

    from flows.overrides import current_values
    from flows.policies import load_policies
    year = args.paths_year or dt.date.today().year
    for path, value in current_values(load_policies(), year):
        if args.text in path:
            print(f"{path} = {value}")
    return 0
