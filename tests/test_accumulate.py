"""Vectorized accumulation primitives against their plain-Python twins, to the fen.

Frames hold several partitions (psn_no, year) of 0–30 lines each, sorted by partition then
line order, as the engine hands them over. Hand-computed cases from POLICY §3.8, §4.3–4.5, §5.
"""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.accumulate import (
    account_walk,
    account_walk_struct,
    band_value,
    banded_payment,
    capped_closed_form_exact,
    capped_payment,
    daily_limited,
    deductible_part,
    partition_start,
    partitions_are_contiguous,
    running_after,
    running_before,
)
from transforms.reference.accumulate import (
    ref_account_walk,
    ref_band_value,
    ref_banded_payment,
    ref_capped_payment,
    ref_daily_limited,
    ref_deductible_part,
    ref_running_after,
    ref_running_before,
)

BY = ["psn_no", "year"]
PROPS = settings(max_examples=200, deadline=None)
FEWER = settings(max_examples=100, deadline=None)  # properties that restate others

# critical-illness bands for ordinary residents (POLICY §3.8), fen
CI_BANDS = [
    (1_200_000, 3_000_000, 6000),
    (3_000_000, 10_000_000, 6500),
    (10_000_000, None, 7500),
]


# --------------------------------------------------------------------------- strategies

# amounts: plain values, round values (so running sums land exactly on limits), zeros
amounts = st.one_of(
    st.integers(0, 2_000),
    st.integers(0, 40).map(lambda k: 50 * k),
    st.just(0),
)
limit_values = st.one_of(st.integers(0, 6_000), st.integers(0, 60).map(lambda k: 100 * k))


@st.composite
def limit_series(draw, n: int) -> list[int]:
    """Per-row limits of one partition: constant, non-decreasing, or arbitrary (decreasing)."""
    mode = draw(st.sampled_from(["constant", "rising", "any", "lapse"]))
    if n == 0:
        return []
    if mode == "constant":
        return [draw(limit_values)] * n
    if mode == "rising":
        return sorted(draw(st.lists(limit_values, min_size=n, max_size=n)))
    if mode == "lapse":  # a certification lapses mid-year, maybe comes back
        hi, lo = draw(limit_values), draw(limit_values)
        start = draw(st.integers(0, n))
        end = draw(st.integers(start, n))
        return [lo if start <= i < end else hi for i in range(n)]
    return draw(st.lists(limit_values, min_size=n, max_size=n))


@st.composite
def partitions(draw, max_parts: int = 6, amounts=amounts) -> list[dict]:
    """A list of partitions, each {'carried', 'x', 'lim', 'credit'}: lists of equal length."""
    parts = []
    for _ in range(draw(st.integers(1, max_parts))):
        n = draw(st.integers(0, 30))
        parts.append(
            {
                "carried": draw(st.one_of(st.just(0), st.integers(0, 8_000), st.integers(0, 80).map(lambda k: 100 * k))),
                "x": draw(st.lists(amounts, min_size=n, max_size=n)),
                "lim": draw(limit_series(n)),
                "credit": draw(st.lists(st.one_of(st.just(0), st.integers(0, 1_500)), min_size=n, max_size=n)),
            }
        )
    return parts


def frame(parts: list[dict], order: list[int] | None = None) -> pl.DataFrame:
    """The rows of all partitions; sorted by partition unless `order` interleaves them.

    `order` lists partition indices, one entry per row: the k-th occurrence of p places
    partition p's k-th line there (line order within a partition is kept).
    """
    if order is None:
        order = [p for p, part in enumerate(parts) for _ in part["x"]]
    seen = [0] * len(parts)
    rows = []
    for p in order:
        k = seen[p]
        seen[p] += 1
        part = parts[p]
        rows.append(
            {
                "psn_no": f"P{p // 2:03d}",
                "year": 2025 + p % 2,
                "part": p,
                "line": k,
                "carried": part["carried"],
                "x": part["x"][k],
                "lim": part["lim"][k],
                "credit": part["credit"][k],
            }
        )
    schema = {
        "psn_no": pl.String,
        "year": pl.Int32,
        "part": pl.Int64,
        "line": pl.Int64,
        "carried": pl.Int64,
        "x": pl.Int64,
        "lim": pl.Int64,
        "credit": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def expected_by_row(df: pl.DataFrame, parts: list[dict], per_part: list[list[int]]) -> list[int]:
    """Twin results laid out in the frame's physical row order."""
    return [per_part[p][k] for p, k in zip(df["part"], df["line"], strict=True)]


def interleavings(parts_strategy=None):
    """(parts, order): partitions plus a random interleaving of their rows."""

    @st.composite
    def build(draw):
        parts = draw(parts_strategy or partitions())
        ids = [p for p, part in enumerate(parts) for _ in part["x"]]
        return parts, draw(st.permutations(ids))

    return build()


x, lim, carried, credit = (pl.col(c) for c in ("x", "lim", "carried", "credit"))


# --------------------------------------------------------------------------- properties


@PROPS
@given(partitions())
def test_running_sums_match_twin(parts):
    df = frame(parts)
    out = df.select(b=running_before(x, carried, BY), a=running_after(x, carried, BY))
    assert out["b"].to_list() == expected_by_row(df, parts, [ref_running_before(p["x"], p["carried"]) for p in parts])
    assert out["a"].to_list() == expected_by_row(df, parts, [ref_running_after(p["x"], p["carried"]) for p in parts])


@PROPS
@given(partitions())
def test_deductible_part_matches_twin(parts):
    df = frame(parts)
    got = df.select(d=deductible_part(x, lim, carried, BY))["d"].to_list()
    want = [ref_deductible_part(p["x"], p["lim"], p["carried"]) for p in parts]
    assert got == expected_by_row(df, parts, want)


@PROPS
@given(partitions())
def test_capped_payment_matches_twin(parts):
    df = frame(parts)
    want = expected_by_row(df, parts, [ref_capped_payment(p["x"], p["lim"], p["carried"]) for p in parts])
    assert df.select(p=capped_payment(x, lim, carried, BY))["p"].to_list() == want


@PROPS
@given(partitions())
def test_capped_closed_form_flag(parts):
    """The closed form is declared exact on every row of a partition whose caps never decrease
    and whose carried total is within the first cap; wherever it is declared exact, the closed
    form alone (no walk) equals the twin; the inexact rows are a suffix of each partition."""
    from transforms.accumulate import _capped_closed_form

    df = frame(parts)
    kernel_input = df.select(start=partition_start(BY), raw=x, cap=lim, carried=carried)
    out = df.with_columns(
        ok=capped_closed_form_exact(x, lim, carried, BY),
        fast=_capped_closed_form(kernel_input).get_column("paid"),
    )
    want = [ref_capped_payment(p["x"], p["lim"], p["carried"]) for p in parts]
    for p, part in enumerate(parts):
        rows = out.filter(pl.col("part") == p)
        ok, fast = rows["ok"].to_list(), rows["fast"].to_list()
        caps = part["lim"]
        if caps and all(a <= b for a, b in zip(caps, caps[1:], strict=False)) and part["carried"] <= caps[0]:
            assert all(ok)
        assert ok == sorted(ok, reverse=True)  # True… then False…
        assert [f for f, k in zip(fast, ok, strict=True) if k] == [w for w, k in zip(want[p], ok, strict=True) if k]


@PROPS
@given(partitions())
def test_daily_limited_matches_twin(parts):
    df = frame(parts)
    got = df.select(d=daily_limited(x, lim, BY))["d"].to_list()
    want = [ref_daily_limited(p["x"], p["lim"]) for p in parts]
    assert got == expected_by_row(df, parts, want)


@FEWER
@given(partitions())
def test_daily_limited_constant_limit_is_the_min_formula(parts):
    """With one limit per day: paid = min(L, cum) - min(L, cum_prev)."""
    for part in parts:
        if not part["x"]:
            continue
        limit = part["lim"][0]
        cum, prev, want = 0, 0, []
        for v in part["x"]:
            cum += v
            want.append(min(limit, cum) - min(limit, prev))
            prev = cum
        assert ref_daily_limited(part["x"], [limit] * len(part["x"])) == want
    df = frame(parts).with_columns(day_limit=pl.col("lim").first().over(BY))
    got = df.select(d=daily_limited(x, pl.col("day_limit"), BY))["d"].to_list()
    want = [ref_daily_limited(p["x"], [p["lim"][0]] * len(p["x"]) if p["x"] else []) for p in parts]
    assert got == expected_by_row(df, parts, want)


bands_strategy = st.lists(
    st.tuples(st.integers(0, 30).map(lambda k: 100 * k), st.integers(1, 3_000), st.integers(0, 10_000)),
    min_size=0,
    max_size=4,
).map(
    # contiguous bands from increasing boundaries; the last one sometimes unbounded
    lambda raw: [
        (lo, lo + width if i < len(raw) - 1 or width % 2 else None, rate)
        for i, (lo, width, rate) in enumerate(
            (sum(r[0] + r[1] for r in raw[:j]) + raw[j][0], raw[j][1], raw[j][2]) for j in range(len(raw))
        )
    ]
)


@PROPS
@given(partitions(), bands_strategy)
def test_banded_payment_matches_twin(parts, bands):
    df = frame(parts)
    got = df.select(b=banded_payment(x, carried, bands, BY))["b"].to_list()
    want = [ref_banded_payment(p["x"], p["carried"], bands) for p in parts]
    assert got == expected_by_row(df, parts, want)


@PROPS
@given(st.lists(st.one_of(st.integers(0, 20_000_000), st.sampled_from([1_200_000, 3_000_000, 10_000_000])), max_size=30))
def test_band_value_critical_illness_matches_twin(values):
    # odd fen amounts exercise the half-up rounding; the sampled values are the band edges
    values = values + [v + d for v in (1_200_000, 3_000_000, 10_000_000) for d in (-1, 1, 2, 3)]
    got = pl.DataFrame({"v": values}, schema={"v": pl.Int64}).select(f=band_value(pl.col("v"), CI_BANDS))["f"]
    assert got.to_list() == [ref_band_value(v, CI_BANDS) for v in values]


@PROPS
@given(partitions())
def test_account_walk_matches_twin(parts):
    df = frame(parts)
    paid, balance = account_walk(credit, x, carried, BY)
    out = df.select(p=paid, b=balance)
    twins = [ref_account_walk(p["credit"], p["x"], p["carried"]) for p in parts]
    assert out["p"].to_list() == expected_by_row(df, parts, [t[0] for t in twins])
    assert out["b"].to_list() == expected_by_row(df, parts, [t[1] for t in twins])


@pytest.mark.parametrize("contiguous", [None, False])
@PROPS
@given(parts_order=interleavings())
def test_interleaved_partitions(contiguous, parts_order):
    """Rows of different partitions may be interleaved (default: detected; False: always
    sorted); each line's result is the twin's as long as a partition's own rows keep line order."""
    parts, order = parts_order
    df = frame(parts, order)
    bands = CI_BANDS[:1] + [(3_000, None, 5_000)]
    kw = {"contiguous": contiguous}
    paid, balance = account_walk(credit, x, carried, BY, **kw)
    out = df.select(
        before=running_before(x, carried, BY, **kw),
        cap=capped_payment(x, lim, carried, BY, **kw),
        day=daily_limited(x, lim, BY, **kw),
        ded=deductible_part(x, lim, carried, BY, **kw),
        band=banded_payment(x, carried, bands, BY, **kw),
        paid=paid,
        bal=balance,
    )
    twins = [ref_account_walk(p["credit"], p["x"], p["carried"]) for p in parts]
    expected = {
        "before": [ref_running_before(p["x"], p["carried"]) for p in parts],
        "cap": [ref_capped_payment(p["x"], p["lim"], p["carried"]) for p in parts],
        "day": [ref_daily_limited(p["x"], p["lim"]) for p in parts],
        "ded": [ref_deductible_part(p["x"], p["lim"], p["carried"]) for p in parts],
        "band": [ref_banded_payment(p["x"], p["carried"], bands) for p in parts],
        "paid": [t[0] for t in twins],
        "bal": [t[1] for t in twins],
    }
    for col, per_part in expected.items():
        assert out[col].to_list() == expected_by_row(df, parts, per_part), col
    # the default mode's precondition is detected
    runs = sum(1 for i in range(len(order)) if i == 0 or order[i] != order[i - 1])
    contiguous = runs == len(set(order))
    assert df.select(partitions_are_contiguous(BY)).item() == contiguous


@FEWER
@given(partitions())
def test_lazy_streaming_engine_agrees(parts):
    """The same expressions through LazyFrame.collect() (polars 2.x streams by default)."""
    df = frame(parts)
    paid, balance = account_walk(credit, x, carried, BY)
    exprs = {
        "cap": capped_payment(x, lim, carried, BY),
        "cap2": capped_payment(x, lim, carried, BY, contiguous=False),
        "cap3": capped_payment(x, lim, carried, BY, contiguous=True),
        "ded": deductible_part(x, lim, carried, BY),
        "band": banded_payment(x, carried, CI_BANDS, BY),
        "paid": paid,
        "bal": balance,
    }
    out = df.lazy().select(**exprs).collect()
    assert out.equals(df.select(**exprs))
    assert out["cap"].equals(out["cap2"]) and out["cap"].equals(out["cap3"])


@PROPS
@given(partitions(amounts=st.one_of(amounts, st.integers(-2_000, -1))), bands_strategy)
def test_negative_amounts_follow_the_twins(parts, bands):
    """Reversal-like negative amounts (callers pass them): the expressions still equal the
    twins' formulas — capped: min(raw, max(0, C - P)) lowers P; account: a negative debit is a
    refund into the account; deductible: clip(D - X, 0, x) = x < 0."""
    df = frame(parts)
    out = df.select(
        cap=capped_payment(x, lim, carried, BY),
        ded=deductible_part(x, lim, carried, BY),
        band=banded_payment(x, carried, bands, BY),
        walk=account_walk_struct(credit, x, carried, BY),  # one evaluation for both fields
    ).unnest("walk").rename({"balance": "bal"})
    twins = [ref_account_walk(p["credit"], p["x"], p["carried"]) for p in parts]
    expected = {
        "cap": [ref_capped_payment(p["x"], p["lim"], p["carried"]) for p in parts],
        "ded": [ref_deductible_part(p["x"], p["lim"], p["carried"]) for p in parts],
        "band": [ref_banded_payment(p["x"], p["carried"], bands) for p in parts],
        "paid": [t[0] for t in twins],
        "bal": [t[1] for t in twins],
    }
    for col, per_part in expected.items():
        assert out[col].to_list() == expected_by_row(df, parts, per_part), col


@FEWER
@given(partitions(), bands_strategy)
def test_year_adds_up_to_the_rounded_yearly_amount(parts, bands):
    """POLICY §1.3: a partition's banded payments add up to F(X_end) - F(X_carried)."""
    df = frame(parts)
    out = df.with_columns(b=banded_payment(x, carried, bands, BY))
    for p, part in enumerate(parts):
        total = out.filter(pl.col("part") == p)["b"].sum()
        assert total == ref_band_value(part["carried"] + sum(part["x"]), bands) - ref_band_value(part["carried"], bands)


# --------------------------------------------------------------------------- by hand


def one_partition(**cols) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    return pl.DataFrame({"psn_no": ["P1"] * n, "year": [2025] * n, **cols}).with_columns(
        pl.exclude("psn_no", "year").cast(pl.Int64)
    )


def test_e3_deductible_500_lines_400_300():
    """POLICY E3: 400 of the 500 deductible on the first visit, 100 on the second; the other 200
    paid at the in-service level-1 rate 70% (A-10) = 140 yuan."""
    from transforms.money import expr_apply_rate

    df = one_partition(x=[40_000, 30_000]).with_columns(d=deductible_part(x, 50_000, 0, BY))
    df = df.with_columns(pool=expr_apply_rate(x - pl.col("d"), 7000))
    assert df["d"].to_list() == [40_000, 10_000]
    assert df["pool"].to_list() == [0, 14_000]


def test_deductible_lowered_on_retirement():
    """POLICY §4.3: accumulated 450 in service, retires (deductible 400): already above it."""
    df = one_partition(x=[45_000, 20_000], ded=[50_000, 40_000])
    assert df.select(d=deductible_part(x, pl.col("ded"), 0, BY))["d"].to_list() == [45_000, 0]
    df = one_partition(x=[30_000, 20_000], ded=[50_000, 40_000])
    assert df.select(d=deductible_part(x, pl.col("ded"), 0, BY))["d"].to_list() == [30_000, 10_000]


def test_cap_350_reached_mid_line():
    df = one_partition(raw=[20_000, 30_000, 10_000])
    got = df.select(p=capped_payment(pl.col("raw"), 35_000, 0, BY))["p"].to_list()
    assert got == [20_000, 15_000, 0]
    # carried from earlier months: 300 already paid
    df = one_partition(raw=[10_000, 10_000], carried=[30_000, 30_000])
    assert df.select(p=capped_payment(pl.col("raw"), 35_000, carried, BY))["p"].to_list() == [5_000, 0]


def test_cap_decreasing_and_carried_above_cap():
    # a certification lapses (cap 1000 → 500) after 800 was paid, then returns (1000)
    df = one_partition(raw=[400, 400, 300, 300], cap=[1000, 1000, 500, 1000])
    assert df.select(p=capped_payment(pl.col("raw"), pl.col("cap"), 0, BY))["p"].to_list() == [400, 400, 0, 200]
    assert df.select(ok=capped_closed_form_exact(pl.col("raw"), pl.col("cap"), 0, BY))["ok"].to_list() == [True, True, False, False]
    # carried 1200 above a cap of 1000: nothing paid, nothing taken back
    df = one_partition(raw=[100, 0, 500], carried=[1200] * 3)
    assert df.select(p=capped_payment(pl.col("raw"), 1000, carried, BY))["p"].to_list() == [0, 0, 0]
    # nested rises and falls (needs more than one fix-up pass of the closed form)
    df = one_partition(raw=[100, 0, 50, 30], cap=[100, 0, 200, 120])
    assert df.select(p=capped_payment(pl.col("raw"), pl.col("cap"), 0, BY))["p"].to_list() == [100, 0, 50, 0]


def test_critical_illness_bands_by_hand():
    """POLICY §3.8, ordinary resident: burden running 10,000 → 35,000 → 120,000 yuan.

    F(10,000) = 0
    F(35,000) = 18,000 × 60% + 5,000 × 65% = 10,800 + 3,250 = 14,050
    F(120,000) = 10,800 + 70,000 × 65% + 20,000 × 75% = 10,800 + 45,500 + 15,000 = 71,300
    payments 0, 14,050, 57,250.
    """
    df = one_partition(burden=[1_000_000, 2_500_000, 8_500_000])
    got = df.select(b=banded_payment(pl.col("burden"), 0, CI_BANDS, BY))["b"].to_list()
    assert got == [0, 1_405_000, 5_725_000]


def test_critical_illness_rounding_is_on_the_accumulator():
    """1 fen above the threshold is 0.6 fen → 1; the next fen brings F to 1.2 → 1 (pays 0);
    the third to 1.8 → 2 (pays 1). The lines add up to round(F(total))."""
    df = one_partition(burden=[1_200_001, 1, 1])
    got = df.select(b=banded_payment(pl.col("burden"), 0, CI_BANDS, BY))["b"].to_list()
    assert got == [1, 0, 1]
    assert sum(got) == ref_band_value(1_200_003, CI_BANDS) == 2


def test_daily_limit_30_hit_by_two_visits():
    df = pl.DataFrame(
        {
            "psn_no": ["P1", "P1", "P1", "P2"],
            "day": ["2025-03-01", "2025-03-01", "2025-03-02", "2025-03-01"],
            "raw": [2_000, 2_500, 4_000, 1_000],
        }
    )
    got = df.select(p=daily_limited(pl.col("raw"), 3_000, ["psn_no", "day"]))["p"].to_list()
    assert got == [2_000, 1_000, 3_000, 1_000]


def test_daily_limit_per_institution_with_visits_interleaved():
    """Per person-day-institution: visits A, B, A on one day (rows in time order) — the two
    A visits share one limit of 30 although a B visit lies between them."""
    df = pl.DataFrame(
        {
            "psn_no": ["P1"] * 4,
            "day": ["2025-03-01"] * 4,
            "inst": ["A", "B", "A", "B"],
            "raw": [2_000, 2_500, 2_000, 1_000],
        }
    )
    got = df.select(p=daily_limited(pl.col("raw"), 3_000, ["psn_no", "day", "inst"]))["p"].to_list()
    assert got == [2_000, 2_500, 1_000, 500]
    assert not df.select(partitions_are_contiguous(["psn_no", "day", "inst"])).item()


def test_account_runs_dry_mid_sequence():
    # opening 100 yuan; debits 30, 50, 40 (only 20 left), then a credit of 95, then a debit of 100
    df = one_partition(c=[0, 0, 0, 9_500, 0], d=[3_000, 5_000, 4_000, 0, 10_000], opening=[10_000] * 5)
    paid, balance = account_walk(pl.col("c"), pl.col("d"), pl.col("opening"), BY)
    out = df.select(p=paid, b=balance)
    assert out["p"].to_list() == [3_000, 5_000, 2_000, 0, 9_500]
    assert out["b"].to_list() == [7_000, 2_000, 0, 9_500, 0]


def test_e1_account_after_twelve_credits():
    """POLICY E1: 12 monthly credits of 95, then the own share of 720 on 15 December → balance 420."""
    df = one_partition(c=[9_500] * 12 + [0], d=[0] * 12 + [72_000])
    paid, balance = account_walk(pl.col("c"), pl.col("d"), 0, BY)
    out = df.select(p=paid, b=balance)
    assert out["p"][-1] == 72_000
    assert out["b"][-1] == 42_000


def test_empty_frame():
    df = one_partition(x=[]).with_columns(carried=pl.lit(0, pl.Int64), lim=pl.lit(0, pl.Int64))
    paid, balance = account_walk(x, x, 0, BY)
    out = df.select(
        capped_payment(x, lim, carried, BY).alias("c"),
        deductible_part(x, lim, carried, BY).alias("d"),
        banded_payment(x, carried, CI_BANDS, BY).alias("b"),
        paid.alias("p"),
        balance.alias("bal"),
    )
    assert out.height == 0
    assert all(dt == pl.Int64 for dt in out.dtypes)


@pytest.mark.parametrize(
    "bands",
    [[(100, 100, 5000)], [(100, 50, 5000)], [(100.0, None, 5000)], [(0, None, 0.5)]],
)
def test_bad_bands_are_refused(bands):
    with pytest.raises((ValueError, TypeError)):
        band_value(pl.col("x"), bands)
