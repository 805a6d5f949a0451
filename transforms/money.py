"""Money in integer fen (分), rates in basis points (1/10,000).

POLICY §1.3: every amount is integer fen inside the engine; a payment produced by a
rate is rounded half-up to the fen once, at the line where it is paid. Rates are kept
as integer basis points (80% = 8000) so that no float ever touches a money path.
"""

from __future__ import annotations

import re
from decimal import Decimal

import polars as pl

BP = 10_000  # basis points in 100%

_YUAN_RE = re.compile(r"^(-)?([0-9]{1,15})(?:\.([0-9]{1,2}))?$")


def yuan_text_to_fen(text: str | None) -> int | None:
    """Parse a yuan amount written as text ("123.4", "-0.05") into fen; None if empty.

    Raises ValueError for anything that is not plain decimal notation with at most two
    decimals (three decimals, exponents, thousands separators are input errors, DATA.md §1).
    """
    if text is None:
        return None
    s = text.strip()
    if s == "":
        return None
    m = _YUAN_RE.match(s)
    if not m:
        raise ValueError(f"not a yuan amount with at most 2 decimals: {text!r}")
    sign, whole, frac = m.groups()
    fen = int(whole) * 100 + int((frac or "").ljust(2, "0"))
    return -fen if sign and fen else fen


def fen_to_yuan_text(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def rate_to_bp(rate: str | int | float | Decimal) -> int:
    """A rate from a policy file ("80%", "0.8", 0.8) as integer basis points, exactly."""
    if isinstance(rate, str) and rate.strip().endswith("%"):
        d = Decimal(rate.strip()[:-1]) * 100
    else:
        d = Decimal(str(rate)) * BP
    if d != d.to_integral_value():
        raise ValueError(f"rate {rate!r} is finer than a basis point")
    return int(d)


def round_half_up_div(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) half-up (away from zero for negatives), exactly."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    if numerator >= 0:
        return (2 * numerator + denominator) // (2 * denominator)
    return -((2 * -numerator + denominator) // (2 * denominator))


def apply_rate(amount_fen: int, rate_bp: int) -> int:
    """rate × amount, rounded half-up to the fen (POLICY §1.3)."""
    return round_half_up_div(amount_fen * rate_bp, BP)


def expr_round_half_up_div(numerator: pl.Expr, denominator: int | pl.Expr) -> pl.Expr:
    """Vectorized twin of round_half_up_div on Int64 expressions (half away from zero)."""
    n = numerator.cast(pl.Int64)
    d = denominator if isinstance(denominator, pl.Expr) else pl.lit(denominator, pl.Int64)
    pos = (2 * n + d) // (2 * d)
    neg = -((2 * (-n) + d) // (2 * d))
    return pl.when(n >= 0).then(pos).otherwise(neg)


def expr_apply_rate(amount_fen: pl.Expr, rate_bp: pl.Expr | int) -> pl.Expr:
    """Vectorized apply_rate: rate_bp × amount / 10,000, rounded half-up to the fen."""
    r = rate_bp if isinstance(rate_bp, pl.Expr) else pl.lit(rate_bp, pl.Int64)
    return expr_round_half_up_div(amount_fen.cast(pl.Int64) * r.cast(pl.Int64), BP)
