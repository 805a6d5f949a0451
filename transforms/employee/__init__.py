"""Xiangyang employee basic fund (职工基本医疗保险统筹基金, POLICY §4): status by date, outpatient pooling,
chronic/special outpatient, stays, and the basic fund's annual cap. The pipeline is in `stages.py`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import polars as pl

from flows.policies import Policies

REGION, SCHEME = "xiangyang", "employee"
PERSON_YEAR = ["psn_no", "year"]
NO_LIMIT = 10**15  # fen: "no cap on this line" inside the capped primitives


def require(df: pl.DataFrame, policies: Policies, used: set, name: str, need: pl.Expr, expected: Any,
            convert: Callable[[Any], Any] = lambda v: v) -> None:
    """A parameter whose only implemented value is `expected` (a rule switch): any other value on the date
    of a line that needs it stops the run and names it — never silently ignored (POLICY §1.8)."""
    dates: list[dt.date] = df.filter(need)["setl_date"].unique().to_list()
    for on in sorted(dates):
        dv = policies.at(REGION, SCHEME, name, on)
        used.add((REGION, SCHEME, name, dv.assumption))
        if convert(dv.value) != expected:
            raise NotImplementedError(f"{REGION}/{SCHEME}/{name} = {dv.value!r} on {on}: only {expected!r} is "
                                      "implemented (POLICY §4)")


def rev(col: str) -> pl.Expr:
    """The original's amount, negated, on a reversal line (engine `_join_originals`); 0 when unknown."""
    return pl.col(f"rev_{col}").fill_null(0)
