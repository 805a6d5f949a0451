"""Readable money and explanation fragments (POLICY §1.10), built as polars expressions."""

from __future__ import annotations

from decimal import Decimal

import polars as pl


def fen_text(x: pl.Expr) -> pl.Expr:
    """Int64 fen → "1234.50", "-0.05" (exact: a decimal with two places, never a float; one cast per value
    instead of a dozen string operations — explanations hold a dozen amounts per line)."""
    return (x.cast(pl.Decimal(20, 0)) * pl.lit(Decimal("0.01"), dtype=pl.Decimal(3, 2))).cast(pl.String)


def bp_text(r: pl.Expr) -> pl.Expr:
    """Basis points → "80%" / "12.5%"."""
    whole = (r // 100).cast(pl.String)
    frac = (r % 100)
    return pl.when(frac == 0).then(whole + pl.lit("%")).otherwise(
        whole + pl.lit(".") + frac.cast(pl.String).str.zfill(2).str.strip_chars_end("0") + pl.lit("%"))


def when_text(cond: pl.Expr, *parts: pl.Expr | str) -> pl.Expr:
    """A fragment present only where `cond` holds (null elsewhere, dropped by join_fragments)."""
    exprs = [pl.lit(p) if isinstance(p, str) else p for p in parts]
    return pl.when(cond).then(pl.concat_str(exprs)).otherwise(pl.lit(None, pl.String))


def join_fragments(fragments: list[pl.Expr], sep: str = "; ") -> pl.Expr:
    return pl.concat_str(fragments, separator=sep, ignore_nulls=True)


def join_codes(codes: list[pl.Expr]) -> pl.Expr:
    """Reason codes of a line, comma-separated, in a fixed order."""
    return pl.concat_str(codes, separator=",", ignore_nulls=True).fill_null("")


def code_if(cond: pl.Expr, code: str) -> pl.Expr:
    return pl.when(cond).then(pl.lit(code)).otherwise(pl.lit(None, pl.String))
