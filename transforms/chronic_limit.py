"""The yearly limit per certified disease of chronic/special outpatient care (A-21 and its §4.7 reading), one
function for every scheme: Suizhou residents (transforms/resident/chronic.py), Xiangyang employees
(transforms/employee/chronic.py) and Xiangyang residents (transforms/resident/xiangyang.py).

For a line claimed under certification `dise_cert_code`, with x the in-scope cost it puts toward its disease:
  within = min(x, max(0, limit − used before))      per (person, year, certification), in line order
`capped_payment` over KEY from the keyed accumulator carried in (the in-scope cost counted within the limit this
year; kept for every certified line, also where the limit is "none", so that a limit that changes by date counts
the whole year's cost). A reversal puts its original's within, negated, as x: with P_{i-1} <= C_i,
min(P_{i-1} + r, C_i) = P_{i-1} + r for r < 0, so it is taken back exactly and later lines find the limit freed
(POLICY §1.7). One certification's lines are interleaved with the person's other lines: contiguous=False.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from transforms.accumulate import capped_payment, running_before
from transforms.explain import fen_text, when_text
from transforms.params import UNLIMITED, yuan_to_fen

NO_LIMIT = 10**15  # fen: "none" in a policy file, an explicit absence of a limit
KEY = ["psn_no", "year", "dise_cert_code"]


def limit_fen(v: Any) -> int:
    """A per-disease limit of a policy file in fen; "none" → NO_LIMIT."""
    return NO_LIMIT if v == UNLIMITED else yuan_to_fen(v)


def within_disease_limit(df: pl.DataFrame, x: pl.Expr, limit: pl.Expr, carried: str, added: str,
                         before: str) -> pl.DataFrame:
    """Adds `added` (what each line counts within its disease's limit; the accumulator's per-line amount) and
    `before` (the disease's limit used before the line). `limit` null = no limit."""
    df = df.with_columns(capped_payment(x, limit.fill_null(NO_LIMIT), pl.col(carried), KEY, contiguous=False)
                         .alias(added))
    return df.with_columns(running_before(pl.col(added), pl.col(carried), KEY, contiguous=False).alias(before))


def limit_explanations(covered: pl.Expr, limit: str, before: str, within: str, over_tail: str) -> list[pl.Expr]:
    """The limit's explanation fragments (A-21), in the same words for every scheme that reads A-21: the limit
    and its use before and after the line, or its absence, and what went over it (`over_tail` says who bears it)."""
    code = pl.col("dise_cert_code").fill_null("none")
    after = pl.col(before) + pl.col(within)
    limited = pl.col(limit) < NO_LIMIT
    return [
        when_text(covered & limited, "annual limit of ", code, " ", fen_text(pl.col(limit)),
                  " of in-scope cost (A-21): used before ", fen_text(pl.col(before)), ", after ", fen_text(after)),
        when_text(covered & ~limited, "no annual limit for ", pl.col("cert_kind"), " (A-21): in-scope cost of ", code,
                  " this year ", fen_text(pl.col(before)), " → ", fen_text(after)),
        when_text(covered & (pl.col("chronic_over_limit_amt") > 0), "over the limit ",
                  fen_text(pl.col("chronic_over_limit_amt")), over_tail),
    ]
