"""Time each accumulation primitive of transforms/accumulate.py on a synthetic year.

    .venv/bin/python benchmarks/bench_accumulate.py                 # 10M rows, 2M partitions
    .venv/bin/python benchmarks/bench_accumulate.py --rows 1000000 --parts 200000

Partitions are (psn_no: str, year: Int32) with random lengths (mean rows/parts), sorted as the
engine hands them over; a share of partitions (--lapse, default 1%) has a cap that falls
mid-year below what was paid, so the exact walk of `capped_payment` is exercised. Data are
made with polars hashes (numpy is not installed). Prints wall-clock and process CPU seconds (CPU of all threads; on a busy machine wall time
inflates, CPU time much less); asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.accumulate import (  # noqa: E402
    account_walk_struct,
    banded_payment,
    capped_closed_form_exact,
    capped_payment,
    daily_limited,
    deductible_part,
    partitions_are_contiguous,
    running_before,
)

BY = ["psn_no", "year"]
CI_BANDS = [(1_200_000, 3_000_000, 6000), (3_000_000, 10_000_000, 6500), (10_000_000, None, 7500)]


def make_frame(rows: int, parts: int, lapse_pct: float) -> pl.DataFrame:
    i = pl.int_range(rows, dtype=pl.Int64)

    def h(seed: int, mod: int) -> pl.Expr:  # pseudo-random 0 … mod-1
        return (i.hash(seed) % mod).cast(pl.Int64)

    df = pl.select(pid=h(1, parts), x=h(2, 200_000), c=h(3, 3), day=h(4, 365)).sort("pid", "day")
    lapsed = (pl.col("pid").hash(7) % 10_000) < int(lapse_pct * 100)
    line = pl.int_range(pl.len()).over("pid")
    return df.select(
        psn_no=pl.format("P{}", pl.col("pid")),
        year=pl.lit(2025, pl.Int32),
        day=pl.col("day").cast(pl.Int32),
        x=pl.col("x"),  # a line's amount, fen (0 – 2,000 yuan)
        deductible=pl.when(pl.col("c") == 0).then(40_000).otherwise(50_000),
        cap=pl.when(lapsed & (line >= 2)).then(20_000).otherwise(310_000),
        carried=(pl.col("pid").hash(9) % 300_000).cast(pl.Int64),
        credit=pl.when(pl.col("c") == 0).then(9_500).otherwise(0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--parts", type=int, default=2_000_000)
    ap.add_argument("--lapse", type=float, default=1.0, help="percent of partitions whose cap falls")
    ap.add_argument("--lazy", action="store_true", help="run through LazyFrame.collect() (streaming engine)")
    args = ap.parse_args()

    t = time.perf_counter()
    df = make_frame(args.rows, args.parts, args.lapse)
    print(f"polars {pl.__version__}; {df.height:,} rows, {df.select(pl.struct(BY).n_unique()).item():,} partitions "
          f"(data made in {time.perf_counter() - t:.1f} s)")

    x, c = pl.col("x"), pl.col("carried")
    cases = {
        "running_before": [running_before(x, c, BY)],
        "deductible_part": [deductible_part(x, pl.col("deductible"), c, BY)],
        "capped_closed_form_exact (flag only)": [capped_closed_form_exact(x, pl.col("cap"), c, BY)],
        "capped_payment (incl. exact walk)": [capped_payment(x, pl.col("cap"), c, BY)],
        "banded_payment (3 bands)": [banded_payment(x, c, CI_BANDS, BY)],
        "daily_limited (psn, year, day)": [daily_limited(x, 30_000, [*BY, "day"])],
        "account_walk_struct (paid, balance)": [account_walk_struct(pl.col("credit"), x, c, BY)],
        "capped_payment, contiguous=False": [capped_payment(x, pl.col("cap"), c, BY, contiguous=False)],
    }
    cases["all of the above in one select"] = [e for es in cases.values() for e in es]
    cases["cum_sum().over(by), for comparison"] = [x.cum_sum().over(BY)]

    # what the spec's .over(by) formulation costs (only at small scale: nested windows are slow)
    if args.rows <= 1_000_000:
        r_after = c + x.cum_sum().over(BY)
        slack = (pl.col("cap") - r_after).cum_min().over(BY).clip(upper_bound=0)
        cases["capped closed form with nested .over(by)"] = [x + slack - slack.shift(1, fill_value=0).over(BY)]

    flagged = df.select((~capped_closed_form_exact(x, pl.col("cap"), c, BY)).sum()).item()
    assert df.select(partitions_are_contiguous(BY)).item()
    print(f"capped_payment walks {flagged:,} rows ({100 * flagged / max(df.height, 1):.2f} %) in Python")
    for name, exprs in cases.items():
        t, cpu = time.perf_counter(), time.process_time()
        named = [e.alias(f"out{k}") for k, e in enumerate(exprs)]
        if args.lazy:
            out = df.lazy().select(named).collect()
        else:
            out = df.select(named)
        dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
        print(f"{name:42s} {dt:7.2f} s wall {dcpu:7.2f} s cpu   ({out.height:,} rows)")


if __name__ == "__main__":
    main()
