"""Shards by family mutual-aid group (issue 7): groups are the connected components of the bindings, and the
engine over shards gives exactly what it gives over the whole batch (POLICY §4.5: no account crosses a group)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from flows.ingest import load_registers, month_files, read_table
from flows.policies import load_policies
from flows.sample import write_sample
from tests.builders import table_rows
from transforms.engine import adjudicate, adjudicate_shards
from transforms.shards import family_groups, restrict, shard_of_persons, split_by_shard
from transforms.validate import validate_settlements

POL = load_policies()


def test_family_groups_are_connected_components_of_the_bindings():
    regs = {
        "persons": pl.DataFrame({"psn_no": ["P1", "P2", "P3", "P4", "P5", "P6"]}),
        # P3 authorises P1 and P5 (a chain through P3); P6 authorises P4; P2 has no binding
        "family_bindings": pl.DataFrame({"authoriser_psn_no": ["P3", "P3", "P6"],
                                         "user_psn_no": ["P1", "P5", "P4"]}),
    }
    got = dict(family_groups(regs).iter_rows())
    assert got == {"P1": "P1", "P3": "P1", "P5": "P1", "P2": "P2", "P4": "P4", "P6": "P4"}
    shards = dict(shard_of_persons(family_groups(regs), 2).iter_rows())
    # groups P1, P2, P4 dealt in order to shards 0, 1, 0; a group never splits
    assert shards == {"P1": 0, "P3": 0, "P5": 0, "P2": 1, "P4": 0, "P6": 0}


def test_split_by_shard_gives_each_shard_what_restrict_gives_it(two_months):
    """The flow splits every register and carried frame in one join (split_by_shard): row for row, in order, what
    restricting the frame to each shard's persons gives — bindings (two person columns) included."""
    regs, _ = two_months
    assign = shard_of_persons(family_groups(regs), 3)
    for name, frame in regs.items():
        parts = split_by_shard(frame, assign, 3)
        for k, part in enumerate(parts):
            assert part.equals(restrict(frame, assign.filter(pl.col("shard") == k).select("psn_no"))), (name, k)
    assert regs["family_bindings"].height > 0 and sum(p.height for p in split_by_shard(
        regs["family_bindings"], assign, 3)) == regs["family_bindings"].height


@pytest.fixture(scope="module")
def two_months(tmp_path_factory) -> tuple[dict, list[pl.DataFrame]]:
    out: Path = tmp_path_factory.mktemp("bureau")
    write_sample(out, persons=2500, year=2025, months=2, seed=11, fmt="parquet")
    regs = load_registers(out)
    months, known = [], None
    for m in ("2025-01", "2025-02"):
        raw = pl.concat([read_table(p, out) for p in month_files(out, m)["settlements"]], how="diagonal_relaxed")
        acc, _ = validate_settlements(raw, m, regs, known)
        months.append(acc)
        known = pl.concat([x for x in (known, acc) if x is not None], how="diagonal_relaxed")
    return regs, months


def _outputs(res) -> dict[str, pl.DataFrame]:
    return {"adjudicated": res.adjudicated, "accumulators": res.accumulators, "ledger": res.account_ledger,
            "balances": res.account_balances, "assumptions": pl.DataFrame({"a": res.assumptions})}


def test_sharded_engine_equals_one_run_across_months(two_months):
    regs, (jan, feb) = two_months
    groups = family_groups(regs)
    assert groups.group_by("group").len()["len"].max() >= 3  # families of three or more cross any naive split
    assert jan["orig_setl_id"].is_in(jan["setl_id"].implode()).any()  # reversals of lines of the same batch
    jan_period = (dt.date(2025, 1, 1), dt.date(2025, 1, 31))
    feb_period = (dt.date(2025, 2, 1), dt.date(2025, 2, 28))
    one = adjudicate(jan, regs, POL, period=jan_period)
    for name, frame in _outputs(adjudicate_shards(jan, regs, POL, 4, period=jan_period)).items():
        assert frame.equals(_outputs(one)[name]), name
    # February on top of January's carried state: accumulators, balances, originals of reversals
    rev = feb.filter(pl.col("orig_setl_id").is_not_null())["orig_setl_id"]
    carry = {"carried": one.accumulators, "balances": one.account_balances,
             "originals": one.adjudicated.filter(pl.col("setl_id").is_in(rev.implode())),
             "original_ledger": one.account_ledger.filter(pl.col("setl_id").is_in(rev.implode())),
             "period": feb_period}
    whole = _outputs(adjudicate(feb, regs, POL, **carry))
    sharded = _outputs(adjudicate_shards(feb, regs, POL, 2, **carry))
    for name, frame in whole.items():
        assert sharded[name].equals(frame), name
    assert whole["adjudicated"]["hifp_pay"].sum() > 0 and whole["ledger"].height > 0


def test_year_flow_in_shards_writes_what_one_piece_writes(tmp_path, prefect_harness):
    """`yibao run --shards 3`: shards one after the other in the flow, the month written in one transaction."""

    from flows.monthly import year_flow
    bureau = tmp_path / "bureau"
    write_sample(bureau, persons=400, year=2025, months=2, seed=3, fmt="mixed", invalid_rate=0.01)
    dbs = {n: tmp_path / f"{n}.duckdb" for n in (1, 3)}
    for n, db in dbs.items():
        year_flow(2025, str(bureau), str(db), shards=n)

    for table in ("adjudicated", "accumulators", "account_ledger", "account_month_end", "rejects", "contributions"):
        assert table_rows(dbs[3], table) == table_rows(dbs[1], table), table
    assert len(table_rows(dbs[1], "adjudicated")) > 300
