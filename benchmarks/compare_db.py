"""Compare two yibao databases table by table, row for row, leaving out what differs between any two runs (run
ids, timestamps, code versions): the check that a refactor or a new engine writes the same results.

    python benchmarks/compare_db.py before.duckdb after.duckdb [--tables adjudicated,accumulators]

Prints one line per table (rows on each side, rows only on one side) and exits 1 if any table differs.
"""

from __future__ import annotations

import argparse
import sys

import duckdb

# Columns that name or time a run rather than say what it computed.
VOLATILE = {"run_id", "started_at", "finished_at", "created_at", "code_version", "prev_run_id", "matches_run_id",
            "input_dir", "triggered_by", "error"}
SKIP_TABLES = {"runs", "yibao_catalog"}


def _tables(con: duckdb.DuckDBPyConnection, alias: str) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [alias]).fetchall()}


def _columns(con: duckdb.DuckDBPyConnection, alias: str, table: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ? ORDER BY column_index",
        [alias, table]).fetchall()]


def compare(a: str, b: str, tables: list[str] | None = None) -> list[tuple[str, int, int, int, int]]:
    """(table, rows in a, rows in b, rows only in a, rows only in b) for every table both hold (or `tables`)."""
    con = duckdb.connect()
    con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
    con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
    names = tables or sorted((_tables(con, "a") & _tables(con, "b")) - SKIP_TABLES)
    out = []
    for t in names:
        cols = [c for c in _columns(con, "a", t) if c in set(_columns(con, "b", t)) - VOLATILE]
        sel = ", ".join(f'"{c}"' for c in cols)
        n_a, n_b = (con.execute(f"SELECT count(*) FROM {db}.{t}").fetchone()[0] for db in ("a", "b"))
        only_a = con.execute(f"SELECT count(*) FROM (SELECT {sel} FROM a.{t} EXCEPT ALL SELECT {sel} FROM b.{t})"
                             ).fetchone()[0]
        only_b = con.execute(f"SELECT count(*) FROM (SELECT {sel} FROM b.{t} EXCEPT ALL SELECT {sel} FROM a.{t})"
                             ).fetchone()[0]
        out.append((t, n_a, n_b, only_a, only_b))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--tables", help="comma-separated tables (default: every table both databases hold)")
    args = p.parse_args(argv)
    rows = compare(args.a, args.b, args.tables.split(",") if args.tables else None)
    differ = False
    for t, n_a, n_b, only_a, only_b in rows:
        same = only_a == only_b == 0
        differ |= not same
        print(f"{'same   ' if same else 'DIFFERS'} {t}: {n_a} / {n_b} rows; only in a {only_a}, only in b {only_b}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
