"""Commands for auditors and analysts (DATA.md §5: report, audit, explain), read-only on the database."""

from __future__ import annotations

import argparse

COMMANDS: set[str] = set()


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the reporting subcommands to the `yibao` parser."""


def dispatch(args: argparse.Namespace) -> int:
    raise SystemExit(f"unknown command {args.cmd}")
