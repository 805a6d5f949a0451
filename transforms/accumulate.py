"""Vectorized accumulation primitives (DESIGN "The money primitives"; POLICY §1.1–§1.3).

Every function returns `pl.Expr` (or a tuple of them) for `select`/`with_columns`. A partition
(one person and year, one person and day, …) is the set of rows with equal values in the
columns `by`; "line order" is the physical row order of a partition's rows.

**Row order.** Rows of one partition must appear in line order — (setl_time, setl_id) within
a person and year, POLICY §1.2 —; nothing here orders lines. Partitions are found where a key
differs from the row before, and every cumulative step is a *segmented scan*: one global
`cum_sum`/`cum_min` over the whole column with the partition offsets taken out. This is not
`.over(by)` on purpose: on 10M rows / 2M partitions a segmented scan takes ~0.1 s where
`cum_sum().over(by)` takes ~3 s, and a window whose input holds another window (a cumulative
minimum of a running sum) is slower again by an order of magnitude in polars 2.1.
A segmented scan needs each partition to be one contiguous run of rows. `contiguous` says how
that is ensured:
- `None` (default): checked on each call (runs of equal keys == distinct keys; ~0.3 s CPU per
  10M rows); when a partition is split (e.g. a per-day *per-institution* limit on rows sorted
  by time) the rows are stably sorted by `by` first, which keeps line order inside each
  partition, and the results are put back in the frame's row order.
- `True`: the caller guarantees it (frame sorted by `by`, then line order): no check.
- `False`: always sort as above.
`partitions_are_contiguous(by)` is the same check as an expression.

**Money** is Int64 fen, rates integer basis points; inputs are cast to Int64 and must be
non-null. The policy amounts that accumulate (`x`, `raw`, `credit`, `debit`) are >= 0; a
negative amount (a caller feeding a reversal through) gets exactly what the twin's formula
gives — tested, but whether that is the policy's treatment of a reversal (POLICY §1.7) is the
caller's question. A `carried` argument is the state carried in from earlier months, the
same value on every row of a partition (e.g. a joined column); a plain int means that value
for every partition. The segmented sums run over the whole column, so the sum of an amount
column's absolute values over the frame must stay below 9.2e18 fen (~1e14 for a province-year).

**Evaluation.** Each partitioned primitive is one `map_batches` call on a struct of its key
columns and inputs; inside, a small eager "kernel" computes the result step by step on
materialized columns. Written as one nested expression instead, a capped payment repeats its
inputs dozens of times (each running sum feeds several later steps) and planning it costs
more than computing it; chaining primitives would multiply that. The kernel sees whole columns
(polars hands a non-elementwise `map_batches` the full column, also on the streaming engine).
Each call evaluates its kernel once: polars does not share a `map_batches` between output
columns, so use `account_walk_struct` to get paid and balance from one evaluation.

Each primitive has a plain-Python twin in `transforms/reference/accumulate.py`; property
tests hold the two equal to the fen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from transforms.money import BP

Band = tuple[int, int | None, int]  # (lower_fen, upper_fen or None = unbounded, rate_bp)

__all__ = [
    "Band",
    "account_walk",
    "account_walk_struct",
    "band_value",
    "banded_payment",
    "capped_closed_form_exact",
    "capped_payment",
    "daily_limited",
    "deductible_part",
    "partition_start",
    "partitions_are_contiguous",
    "running_after",
    "running_before",
]


def _i64(e: pl.Expr | int) -> pl.Expr:
    return e.cast(pl.Int64) if isinstance(e, pl.Expr) else pl.lit(e, pl.Int64)


def _check_by(by: Sequence[str]) -> list[str]:
    if isinstance(by, str):
        raise TypeError(f"`by` is a list of column names, got the string {by!r}")
    by = list(by)
    if not by or not all(isinstance(c, str) for c in by):
        raise ValueError(f"`by` must be a non-empty list of column names, got {by!r}")
    return by


# --------------------------------------------------------------------------- partitions


def _starts(keys: Sequence[pl.Expr]) -> pl.Expr:
    # True on row 0 (the shifted key is null there) and where any key changes; null == null
    return pl.any_horizontal([k.ne_missing(k.shift(1)) for k in keys])


def partition_start(by: Sequence[str]) -> pl.Expr:
    """True on the first row of each partition of a frame sorted by `by`."""
    return _starts([pl.col(c) for c in _check_by(by)])


def partitions_are_contiguous(by: Sequence[str]) -> pl.Expr:
    """Scalar bool: is each partition one run of rows (what contiguous=True promises)?"""
    by = _check_by(by)
    return partition_start(by).sum() == pl.struct(by).n_unique()


# segmented scans over materialized columns; `start` marks the first row of each partition


def _seg_cum_sum(v: pl.Expr, start: pl.Expr) -> pl.Expr:
    """cum_sum restarting at each partition: global cum_sum minus the partition's offset."""
    total = v.cum_sum()
    return total - pl.when(start).then(total - v).forward_fill()


def _seg_cum_min(v: pl.Expr, start: pl.Expr) -> pl.Expr:
    """cum_min restarting at each partition.

    Partition s is shifted down by s·K with K = max(v) - min(v) + 1, so that every value of a
    later partition lies below every value of an earlier one and a single global cum_min
    restarts at each boundary; the shift is then added back. In Int128, where s·K cannot
    overflow.
    """
    v128 = v.cast(pl.Int128)
    offset = start.cum_sum().cast(pl.Int128) * (v128.max() - v128.min() + 1)
    return ((v128 - offset).cum_min() + offset).cast(pl.Int64)


def _seg_prev(v: pl.Expr, start: pl.Expr, first: pl.Expr) -> pl.Expr:
    """The value on the previous row of the partition; `first` on a partition's first row."""
    return pl.when(start).then(first).otherwise(v.shift(1))


Kernel = Callable[[pl.DataFrame], pl.Series]


def _partitioned(
    by: Sequence[str],
    contiguous: bool | None,
    inputs: dict[str, pl.Expr | int],
    kernel: Kernel,
    return_dtype: pl.DataType,
) -> pl.Expr:
    """One map_batches: kernel(frame of `start` + inputs, rows grouped by partition, in line order).

    When partitions are not contiguous (or contiguous=False) the rows are stably sorted by the
    keys first (line order kept within each partition) and the result is put back in the
    frame's row order.
    """
    by = _check_by(by)
    keys = [f"key{k}" for k in range(len(by))]
    fields = [pl.col(c).alias(k) for c, k in zip(by, keys, strict=True)]
    fields += [_i64(e).alias(name) for name, e in inputs.items()]
    names = list(inputs)
    start = _starts([pl.col(k) for k in keys]).alias("start")

    def run(s: pl.Series) -> pl.Series:
        df = s.struct.unnest()
        if contiguous is not False:
            framed = df.select(start, *names, *keys)
            if contiguous or _runs_are_partitions(framed, keys):
                return kernel(framed.drop(keys))
        perm = df.select(pl.arg_sort_by(keys, maintain_order=True)).to_series()
        grouped = df.select(pl.all().gather(perm))
        out = kernel(grouped.select(start, *names))
        return out.gather(perm.arg_sort())

    return pl.struct(fields).map_batches(run, return_dtype=return_dtype)


def _runs_are_partitions(framed: pl.DataFrame, keys: list[str]) -> bool:
    """Is every partition one run of rows? (as many runs as distinct keys among run starts)"""
    return not framed.filter(pl.col("start")).select(keys).is_duplicated().any()


# --------------------------------------------------------------------------- running sums


def _running_after_kernel(df: pl.DataFrame) -> pl.Series:
    return df.select(pl.col("carried") + _seg_cum_sum(pl.col("x"), pl.col("start"))).to_series()


def running_after(
    x: pl.Expr, carried: pl.Expr | int, by: Sequence[str], *, contiguous: bool | None = None
) -> pl.Expr:
    """X_i = carried + x_1 + … + x_i within the partition."""
    return _partitioned(by, contiguous, {"x": x, "carried": carried}, _running_after_kernel, pl.Int64)


def running_before(
    x: pl.Expr, carried: pl.Expr | int, by: Sequence[str], *, contiguous: bool | None = None
) -> pl.Expr:
    """X_{i-1} = carried + sum of x over the earlier rows of the partition."""
    return running_after(x, carried, by, contiguous=contiguous) - _i64(x)


# --------------------------------------------------------------------------- primitive 1


def _deductible_kernel(df: pl.DataFrame) -> pl.Series:
    x = pl.col("x")
    before = pl.col("carried") + _seg_cum_sum(x, pl.col("start")) - x
    return df.select(pl.min_horizontal((pl.col("deductible") - before).clip(lower_bound=0), x)).to_series()


def deductible_part(
    x: pl.Expr,
    deductible: pl.Expr | int,
    carried: pl.Expr | int,
    by: Sequence[str],
    *,
    contiguous: bool | None = None,
) -> pl.Expr:
    """Part of x_i absorbed by an accumulating deductible (起付线, POLICY §4.3, DESIGN 1).

    clip(D_i - X_{i-1}, 0, x_i): D may change from row to row (retirement); what accumulated
    under either value counts. Always exact: a function of the running sum only.
    """
    inputs = {"x": x, "deductible": deductible, "carried": carried}
    return _partitioned(by, contiguous, inputs, _deductible_kernel, pl.Int64)


# --------------------------------------------------------------------------- primitive 2


def _capped_closed_form(df: pl.DataFrame) -> pl.DataFrame:
    """Add paid (closed form), paid_before (P_{i-1}) and exact to a frame of start, raw, cap, carried.

    Closed form: P_i = R_i + min(0, min_{j<=i}(C_j - R_j)), R_i = carried + cumsum(raw). It
    solves P_i = min(P_{i-1} + raw_i, C_i); the true walk is P_i = max(P_{i-1}, min(P_{i-1} +
    raw_i, C_i)). By induction the two agree on row i as long as P_{i-1} <= C_j held on every
    row j <= i of the partition — always so when caps never decrease and carried <= C_1.
    `exact` says whether it held.
    """
    start, raw, cap = pl.col("start"), pl.col("raw"), pl.col("cap")
    df = df.with_columns(r_after=pl.col("carried") + _seg_cum_sum(raw, start))
    df = df.with_columns(slack=_seg_cum_min(cap - pl.col("r_after"), start).clip(upper_bound=0))
    df = df.with_columns(slack_before=_seg_prev(pl.col("slack"), start, pl.lit(0, pl.Int64)))
    df = df.with_columns(
        paid=raw + pl.col("slack") - pl.col("slack_before"),
        paid_before=pl.col("r_after") - raw + pl.col("slack_before"),
    )
    broken = (pl.col("paid_before") > cap).cast(pl.Int64)
    return df.with_columns(exact=_seg_cum_sum(broken, start) == 0)


def _capped_exact_kernel(df: pl.DataFrame) -> pl.Series:
    return _capped_closed_form(df).get_column("exact")


def _capped_kernel(df: pl.DataFrame) -> pl.Series:
    """Closed form, then an exact walk from the first inexact row of each partition on.

    In a partition the inexact rows are a suffix; its first row's paid_before is still exact
    (the closed form was right up to the row before), so the walk resumes from it. Only the
    inexact rows are visited in Python.
    """
    df = _capped_closed_form(df)
    paid = df.get_column("paid")
    inexact = ~df.get_column("exact")
    if not inexact.any():
        return paid
    resume = pl.col("start") | pl.col("exact").shift(1, fill_value=True)
    rows = (
        df.with_columns(resume=resume)  # before filtering: `resume` looks at the previous row
        .filter(~pl.col("exact"))
        .select("resume", "paid_before", "raw", "cap")
    )
    walked: list[int] = []
    total = 0
    for resumes, paid_before, raw, cap in rows.iter_rows():
        if resumes:
            total = paid_before
        p = min(raw, max(0, cap - total))
        total += p
        walked.append(p)
    return paid.scatter(inexact.arg_true(), pl.Series(walked, dtype=pl.Int64))


def capped_closed_form_exact(
    raw: pl.Expr,
    cap: pl.Expr | int,
    carried_paid: pl.Expr | int,
    by: Sequence[str],
    *,
    contiguous: bool | None = None,
) -> pl.Expr:
    """Bool per row: does the closed form alone give this row's capped payment exactly?

    False from the first row of a partition whose cap lies below the total already paid (a cap
    that decreased, or a carried total above the cap) to the partition's end: the rows that
    `capped_payment` walks. For diagnostics and benchmarks.
    """
    inputs = {"raw": raw, "cap": cap, "carried": carried_paid}
    return _partitioned(by, contiguous, inputs, _capped_exact_kernel, pl.Boolean)


def capped_payment(
    raw: pl.Expr,
    cap: pl.Expr | int,
    carried_paid: pl.Expr | int,
    by: Sequence[str],
    *,
    contiguous: bool | None = None,
) -> pl.Expr:
    """Raw payments under a running cap (封顶线, DESIGN 2); C may change per row.

    paid_i = min(raw_i, max(0, C_i - P_{i-1})), P the running paid total from carried_paid: a
    cap below what was already paid pays nothing and takes nothing back.

    Exact for every input (also negative raw, per the formula). Vectorized closed form (`_capped_closed_form`) for all
    rows up to the first row of a partition where a cap lies below the paid total — never,
    when caps do not decrease and carried_paid <= C_1. From that row on (a certification
    lapses; a cap lowered below what earlier months paid) the partition is walked row by row
    in Python, starting from the exact total before that row. Cost ∝ the rows walked.

    Why not a closed form for every case: the walk is P_i = clamp(C_i, P_{i-1}, P_{i-1} + r_i),
    a hysteresis recursion; once a cap has fallen below P, whether a later cap bites depends on
    the nested history of rises and falls. Re-running the closed form with the "dead" rows
    neutralised converges to the exact answer, but needs one pass per nesting level (the
    test case caps 100, 0, 200, 120 needs two), so no fixed number of scans covers all inputs.
    """
    inputs = {"raw": raw, "cap": cap, "carried": carried_paid}
    return _partitioned(by, contiguous, inputs, _capped_kernel, pl.Int64)


def daily_limited(
    raw: pl.Expr, limit: pl.Expr | int, by_day: Sequence[str], *, contiguous: bool | None = None
) -> pl.Expr:
    """Per person-per-day(-per-institution) limit (DESIGN 4), rows in line order.

    paid = min(L, cum_i) - min(L, cum_{i-1}) within each by_day group; nothing is carried in (a
    day lies within one month). It is `capped_payment` with carried 0, so it stays exact when
    L differs between the rows of a day. Rows sorted by (person, time) keep each person-day
    contiguous; with the institution in `by_day` they may not (A, B, A on one day): the
    default contiguous=None detects that and sorts.
    Apply the annual cap afterwards with `capped_payment` over the year partition.
    """
    return capped_payment(raw, limit, 0, by_day, contiguous=contiguous)


# --------------------------------------------------------------------------- primitive 3


def _check_bands(bands: Sequence[Band]) -> list[Band]:
    out = []
    for band in bands:
        lower, upper, rate = band
        for v in (lower, rate) if upper is None else (lower, upper, rate):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"band bounds are int fen and rates int basis points: {band!r}")
        if upper is not None and upper <= lower:
            raise ValueError(f"band upper bound must lie above the lower bound: {band!r}")
        if rate < 0:
            raise ValueError(f"band rate must not be negative: {band!r}")
        out.append((lower, upper, rate))
    return out


def band_value(x: pl.Expr, bands: Sequence[Band]) -> pl.Expr:
    """F(x) rounded half-up to the fen (bands of POLICY §3.8–3.9, DESIGN 3). Elementwise.

    F(x) = Σ rate_bp × clip(x - lower, 0, upper - lower) / 10,000, summed in fen × basis points
    and divided (and rounded) once, so F of a year's total is the rounded yearly amount.
    """
    x_ = _i64(x)
    terms = [
        (x_ - lower).clip(lower_bound=0, upper_bound=None if upper is None else upper - lower) * rate
        for lower, upper, rate in _check_bands(bands)
    ]
    if not terms:
        return x_ * 0
    # the numerator is >= 0 (rates >= 0, parts >= 0): half-up is (n + BP/2) // BP
    return (pl.sum_horizontal(terms) + BP // 2) // BP


def banded_payment(
    x: pl.Expr,
    carried: pl.Expr | int,
    bands: Sequence[Band],
    by: Sequence[str],
    *,
    contiguous: bool | None = None,
) -> pl.Expr:
    """F(X_i) - F(X_{i-1}), X the running sum of x from carried (POLICY §1.3: the difference of
    the rounded values, so a year's lines add up to the rounded yearly amount). Always exact.
    """
    bands = _check_bands(bands)

    def kernel(df: pl.DataFrame) -> pl.Series:
        df = df.with_columns(after=pl.col("carried") + _seg_cum_sum(pl.col("x"), pl.col("start")))
        df = df.with_columns(before=pl.col("after") - pl.col("x"))
        return df.select(band_value(pl.col("after"), bands) - band_value(pl.col("before"), bands)).to_series()

    return _partitioned(by, contiguous, {"x": x, "carried": carried}, kernel, pl.Int64)


# --------------------------------------------------------------------------- primitive 6


ACCOUNT = pl.Struct({"paid": pl.Int64, "balance": pl.Int64})


def _account_kernel(df: pl.DataFrame) -> pl.Series:
    start, c, d, b0 = pl.col("start"), pl.col("credit"), pl.col("debit"), pl.col("opening")
    df = df.with_columns(s_after=b0 + _seg_cum_sum(c - d, start))
    df = df.with_columns(balance=pl.col("s_after") - _seg_cum_min(pl.col("s_after"), start).clip(upper_bound=0))
    df = df.with_columns(balance_before=_seg_prev(pl.col("balance"), start, b0))
    paid = pl.col("balance_before") + c - pl.col("balance")
    return df.select(pl.struct(paid.alias("paid"), pl.col("balance"))).to_series()


def account_walk_struct(
    credit: pl.Expr,
    debit: pl.Expr,
    opening: pl.Expr | int,
    by: Sequence[str],
    *,
    contiguous: bool | None = None,
) -> pl.Expr:
    """`account_walk` as one struct expression {paid, balance}: one evaluation for both."""
    inputs = {"credit": credit, "debit": debit, "opening": opening}
    return _partitioned(by, contiguous, inputs, _account_kernel, ACCOUNT)


def account_walk(
    credit: pl.Expr,
    debit: pl.Expr,
    opening: pl.Expr | int,
    by: Sequence[str],
    *,
    contiguous: bool | None = None,
) -> tuple[pl.Expr, pl.Expr]:
    """Personal account (个人账户, POLICY §4.5, DESIGN 6): (paid_i, balance_after_i).

    Events in time order; event i first credits c_i >= 0, then pays min(d_i, B_{i-1} + c_i) of
    the requested debit d_i >= 0; the balance never goes below zero. Closed form (Lindley):
    B_i = S_i - min(0, min_{1<=j<=i} S_j), S the running sum of c - d from the opening balance
    (the walk is B_i = max(0, B_{i-1} + c_i - d_i), Lindley's recursion). Exact for every
    integer input. Selecting both expressions runs the computation twice;
    `account_walk_struct` runs it once.
    """
    walk = account_walk_struct(credit, debit, opening, by, contiguous=contiguous)
    return walk.struct.field("paid"), walk.struct.field("balance")
