"""A stage of the adjudication pipeline (DESIGN.md "Order of funds"): a frame → frame function
plus what the engine needs to know about it, so that each rule lives in one module.

- `run(df, policies, used)`: adds the stage's columns. A *basic-fund* stage sets `hifp_raw`
  (the basic fund before the annual cap) and `handled = True` on the lines of its ledgers and
  leaves other lines untouched; a *later* stage (critical illness, assistance, …) reads what the
  stages before it wrote.
- `accumulators`: accumulator name → the per-line column that adds to it. The engine carries
  them across months (`carried_<name>` on every line) and writes their end state.
- `defaults`: columns the stage adds, with their dtype, null-filled on lines it never saw
  (other regions or schemes), so that `reasons` and `explain` can always be evaluated.
- `reasons()` / `explain()`: reason-code and explanation fragments (null where not relevant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from flows.policies import Policies


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[pl.DataFrame, Policies, set], pl.DataFrame]
    accumulators: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, pl.DataType] = field(default_factory=dict)
    reasons: Callable[[], list[pl.Expr]] = lambda: []
    explain: Callable[[], list[pl.Expr]] = lambda: []


def mark_handled(df: pl.DataFrame, mine: pl.Expr, hifp_raw: pl.Expr) -> pl.DataFrame:
    """Set hifp_raw and handled on this stage's lines only."""
    return df.with_columns(
        pl.when(mine).then(hifp_raw).otherwise(pl.col("hifp_raw")).alias("hifp_raw"),
        (pl.col("handled") | mine).alias("handled"),
    )
