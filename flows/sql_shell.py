"""`yibao sql [FILE.sql]` (DATA.md §5): read-only SQL on the database for auditors, on the pinned duckdb.

No `duckdb` command is installed and the only CLI on the package index (1.5.6) cannot read a DuckDB 2.0 file
(STACK-NOTES.md), so the shell is this: the database opened read-only through the Python package yibao already
depends on; a saved query file runs statement by statement; without a file, an interactive prompt with line
editing and history (readline, ~/.yibao_sql_history) and tables that fit the terminal (flows/reports.print_rows:
money and ids are never cut). A writer can run while a shell is open (README: Readers and the writer lock).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb

HELP = """Read-only SQL on {db}. End a statement with ';'. Commands:
  .tables            tables and views with their row counts
  .schema NAME       columns of a table or view
  .read FILE.sql     run a saved query file (queries/*.sql)
  .csv / .table      print results as CSV / as tables
  .help  .quit       (Ctrl-D quits too)"""


class Shell:
    def __init__(self, db: Path, out=None, fmt: str = "table"):
        from rich.console import Console

        if not Path(db).exists():
            raise FileNotFoundError(f"database not found: {db} (run `yibao run` or `yibao demo` first)")
        os.environ.setdefault("HOME", str(Path(db).resolve().parent))  # DuckDB's extension directory (STACK-NOTES)
        self.db = Path(db)
        self.con = duckdb.connect(str(db), read_only=True)
        self.out = out or sys.stdout
        self.fmt = fmt
        self.console = Console(file=self.out, width=_width(), highlight=False)

    def close(self) -> None:
        self.con.close()

    def run_text(self, sql: str, source: str = "") -> None:
        """Every statement of `sql`, each result printed; a failing statement stops with its one-line error."""
        for i, statement in enumerate(self.con.extract_statements(sql), start=1):
            try:
                cur = self.con.execute(statement)
            except duckdb.Error as e:
                where = f"{source}: statement {i}: " if source else f"statement {i}: "
                raise SqlError(where + " ".join(str(e).split())) from None
            if cur.description:
                self.show([d[0] for d in cur.description], cur.fetchall())

    def show(self, cols: list[str], rows: list[tuple]) -> None:
        from flows.reports import print_rows, terminal_safe
        if self.fmt == "csv":
            import csv
            w = csv.writer(self.out, lineterminator="\n")
            w.writerow(cols)
            w.writerows(rows)
            return
        numeric = {c for j, c in enumerate(cols)
                   if rows and all(isinstance(r[j], int | float) or type(r[j]).__name__ == "Decimal" or r[j] is None
                                   for r in rows) and not isinstance(rows[0][j], bool)}
        texts = [[terminal_safe(_text(v)) for v in r] for r in rows]
        print_rows(self.console, f"{len(rows):,} row{'s' if len(rows) != 1 else ''}", cols, texts, numeric)

    def command(self, line: str) -> bool:
        """A dot command; False to quit."""
        word, _, arg = line.strip().partition(" ")
        arg = arg.strip().rstrip(";")
        if word in (".quit", ".exit"):
            return False
        if word == ".help":
            print(HELP.format(db=self.db), file=self.out)
        elif word == ".tables":
            self.run_text("SELECT table_name AS name, table_type AS kind, estimated_size AS rows FROM ("
                          " SELECT table_name, 'table' AS table_type, estimated_size FROM duckdb_tables()"
                          " UNION ALL SELECT view_name, 'view', NULL FROM duckdb_views() WHERE NOT internal)"
                          " ORDER BY 2, 1")
        elif word == ".schema" and arg:
            self.run_text(f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = "
                          f"'{arg.replace(chr(39), '')}' ORDER BY ordinal_position")
        elif word == ".read" and arg:
            self.run_text(Path(arg).read_text(encoding="utf-8"), arg)
        elif word in (".csv", ".table"):
            self.fmt = word[1:]
        else:
            print(f"unknown command {line.strip()!r}: .help lists them", file=self.out)
        return True

    def loop(self, read, keep_going: bool) -> None:
        """Lines from read(more) (EOFError at the end): dot commands, and statements ended by ';'. keep_going: an
        interactive session prints a failing statement's error and goes on; piped input stops at it."""
        buffer: list[str] = []
        while True:
            try:
                line = read(bool(buffer))
            except EOFError:
                break
            except KeyboardInterrupt:
                print(file=self.out)
                buffer = []
                continue
            if not buffer and line.strip().startswith("."):
                if not self.command(line):
                    break
                continue
            buffer.append(line)
            text = "\n".join(buffer).strip()
            if not text or not text.endswith(";"):
                continue
            buffer = []
            try:
                self.run_text(text)
            except (SqlError, OSError) as e:
                if not keep_going:
                    raise
                print(f"error: {e}", file=self.out)
        if buffer and "\n".join(buffer).strip():
            self.run_text("\n".join(buffer))  # a last statement without its ';'

    def interact(self) -> None:
        history = Path(os.environ.get("YIBAO_SQL_HISTORY", Path.home() / ".yibao_sql_history"))
        try:
            import readline
            readline.set_history_length(2000)
            if history.exists():
                readline.read_history_file(history)
        except (ImportError, OSError):
            readline = None  # type: ignore[assignment]
        print(f"yibao sql — {self.db.resolve()} (read-only). .help for commands, Ctrl-D to quit.", file=self.out)
        try:
            self.loop(lambda more: input("   ...> " if more else "yibao> "), keep_going=True)
            print(file=self.out)
        finally:
            if readline is not None:
                try:
                    readline.write_history_file(history)
                except OSError:
                    pass


class SqlError(RuntimeError):
    """A statement failed; the message is DuckDB's, on one line."""


def _text(v) -> str:
    if v is None:
        return ""
    if type(v).__name__ == "Decimal":
        return f"{v:,}"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    return str(v)


def _width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return int(os.environ.get("COLUMNS", 160))


# DuckDB 2.0 writes storage format v2; DuckDB 1.x tools (the 1.5.6 CLI on the package index, DBeaver's JDBC driver
# of 2026) refuse it ("can only read 64–68"). Measured (README "SQL for auditors"): a 2.0 copy made with
# STORAGE_VERSION 'v1.2.0' opens in the 1.5.6 CLI with every table and view; the working database stays v2.
COMPATIBLE_STORAGE = "v1.2.0"


def copy_compatible(db: Path, out: Path, version: str = COMPATIBLE_STORAGE) -> str:
    """A copy of the database that DuckDB 1.x tools can open: every table and view, written in `version` storage."""
    if not Path(db).exists():
        raise FileNotFoundError(f"database not found: {db} (run `yibao run` or `yibao demo` first)")
    if Path(out).exists():
        raise FileExistsError(f"{out} exists: give a new file name")
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{_quoted(db)}' AS src (READ_ONLY)")
        con.execute(f"ATTACH '{_quoted(out)}' AS dst (STORAGE_VERSION '{_quoted(version)}')")
        con.execute("COPY FROM DATABASE src TO dst")
        con.execute("DETACH dst")
    finally:
        con.close()
    return f"{out}: a copy of {db} in DuckDB storage {version} (opens in DuckDB 1.2 and later, e.g. the 1.5.6 duckdb CLI)"


def _quoted(v) -> str:
    return str(v).replace("'", "''")


def main(db: Path, file: Path | None, command: str | None, fmt: str, compatible_copy: Path | None = None,
         variables: list[str] | None = None) -> int:
    if compatible_copy is not None:
        print(copy_compatible(db, compatible_copy))
        return 0
    shell = Shell(db, fmt=fmt)
    try:
        for item in variables or []:  # the saved queries read getvariable('month'), getvariable('year'), …
            name, eq, value = item.partition("=")
            if not eq or not name.strip().isidentifier():
                raise ValueError(f"--set {item!r}: expected NAME=VALUE, e.g. --set month=2025-03")
            shell.con.execute(f"SET VARIABLE {name.strip()} = ?", [value])
        if command is not None:
            shell.run_text(command)
        elif file is not None:
            shell.run_text(Path(file).read_text(encoding="utf-8"), str(file))
        elif sys.stdin.isatty():
            shell.interact()
        else:  # statements and dot commands piped in
            lines = iter(sys.stdin.read().splitlines())

            def read(_more: bool) -> str:
                try:
                    return next(lines)
                except StopIteration:
                    raise EOFError from None
            shell.loop(read, keep_going=False)
    finally:
        shell.close()
    return 0
