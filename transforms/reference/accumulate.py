"""Plain-Python twins of `transforms/accumulate.py` (DESIGN "The money primitives").

Each function takes the lines of ONE partition (one person and year, or one person and day),
in line order, as plain lists of int fen, and walks them one by one, keeping the state a clerk
would keep on paper. They are deliberately naive: they are the definition the vectorized
polars expressions are tested against, not code for production volumes.
"""

from __future__ import annotations

from collections.abc import Sequence

from transforms.money import BP, round_half_up_div

Band = tuple[int, int | None, int]  # (lower_fen, upper_fen or None = unbounded, rate_bp)


def ref_running_before(xs: Sequence[int], carried: int) -> list[int]:
    """X_{i-1}: the carried amount plus the sum of x over the earlier lines."""
    out = []
    total = carried
    for x in xs:
        out.append(total)
        total += x
    return out


def ref_running_after(xs: Sequence[int], carried: int) -> list[int]:
    """X_i: the carried amount plus the sum of x up to and including line i."""
    out = []
    total = carried
    for x in xs:
        total += x
        out.append(total)
    return out


def ref_deductible_part(xs: Sequence[int], deductibles: Sequence[int], carried: int) -> list[int]:
    """Part of each x_i absorbed by an accumulating deductible (POLICY §4.3).

    The deductible in force on line i is deductibles[i]; what has accumulated before the line
    (under any deductible) counts toward it: absorbed = clip(D_i - X_{i-1}, 0, x_i).
    """
    out = []
    accumulated = carried
    for x, d in zip(xs, deductibles, strict=True):
        still_open = max(d - accumulated, 0)
        out.append(min(still_open, x))
        accumulated += x
    return out


def ref_capped_payment(raws: Sequence[int], caps: Sequence[int], carried_paid: int) -> list[int]:
    """Pay each raw_i up to what is left under the cap in force on line i.

    paid_i = min(raw_i, max(0, C_i - P_{i-1})), P the running paid total starting at
    carried_paid. A cap below what was already paid (it decreased, or the carried total is
    above it) pays nothing and takes nothing back.
    """
    out = []
    paid_total = carried_paid
    for raw, cap in zip(raws, caps, strict=True):
        room = max(0, cap - paid_total)
        paid = min(raw, room)
        out.append(paid)
        paid_total += paid
    return out


def ref_band_value(x: int, bands: Sequence[Band]) -> int:
    """F(x): sum over bands of rate × (the part of x inside the band), one half-up rounding."""
    numerator = 0
    for lower, upper, rate_bp in bands:
        if x <= lower:
            continue
        top = x if upper is None else min(x, upper)
        numerator += rate_bp * (top - lower)
    return round_half_up_div(numerator, BP)


def ref_banded_payment(xs: Sequence[int], carried: int, bands: Sequence[Band]) -> list[int]:
    """Each line is paid F(X_i) - F(X_{i-1}), F rounded to the fen (POLICY §1.3, §3.8)."""
    out = []
    accumulated = carried
    for x in xs:
        before = ref_band_value(accumulated, bands)
        accumulated += x
        after = ref_band_value(accumulated, bands)
        out.append(after - before)
    return out


def ref_daily_limited(raws: Sequence[int], limits: Sequence[int]) -> list[int]:
    """Lines of one person-day (-institution) paid up to the daily limit, in line order.

    With one limit for the day this is min(L, cum_i) - min(L, cum_{i-1}); it is the capped
    payment with nothing carried in (a day lies within one month).
    """
    return ref_capped_payment(raws, limits, 0)


def ref_account_walk(
    credits: Sequence[int], debits: Sequence[int], opening: int
) -> tuple[list[int], list[int]]:
    """Personal account (POLICY §4.5): each event first credits c_i, then pays what it can of d_i.

    Returns (paid_i, balance after event i). The balance never goes below zero.
    """
    paid_out, balances = [], []
    balance = opening
    for c, d in zip(credits, debits, strict=True):
        available = balance + c
        paid = min(d, available)
        balance = available - paid
        paid_out.append(paid)
        balances.append(balance)
    return paid_out, balances
