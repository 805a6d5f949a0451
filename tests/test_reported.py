"""Institution-reported amounts of the sample (transforms/reported.py, flows/sample.py fill_reported) and the
discrepancy audit finding exactly the errors the generator made (issue 5)."""

from __future__ import annotations

import json
from decimal import Decimal

import duckdb
import polars as pl

from transforms.reported import KINDS, REPORTED, reported_amounts

ALL = {k: 10_000 for k in KINDS}  # every line where a kind applies goes wrong


def _adjudicated(rows: list[dict]) -> pl.DataFrame:
    cols = ["hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay",
            "hifp_cap_cut"]
    full = [{"orig_setl_id": None, **{c: 0 for c in cols}, **r} for r in rows]
    return pl.DataFrame(full, schema={"setl_id": pl.String, "orig_setl_id": pl.String,
                                      **{c: pl.Int64 for c in cols}})


def _by_id(df: pl.DataFrame) -> dict[str, dict]:
    return {r.pop("setl_id"): r for r in df.to_dicts()}


def test_each_kind_moves_its_fund_to_cash_and_lines_still_add_up():
    adj = _adjudicated([
        # basic fund 1,280.37 → reported 1,280.00, cash +0.37
        {"setl_id": "R", "hifp_pay": 128037, "psn_cash_pay": 50000},
        # critical illness 3,000 not applied → cash +3,000
        {"setl_id": "C", "hifp_pay": 1560000, "hifmi_pay": 300000, "psn_cash_pay": 100000},
        # tilt 700 omitted: the platform's maf_pay (basic 500 + tilt 700) reported as 500, cash +700
        {"setl_id": "T", "hifp_pay": 800000, "maf_pay": 50000, "maf_tilt_pay": 70000, "psn_cash_pay": 20000},
        # 2,000 cut by the annual cap paid by the fund anyway: cash 5,000 → 3,000
        {"setl_id": "A", "hifp_pay": 1000000, "hifp_cap_cut": 200000, "psn_cash_pay": 500000},
        # authoriser's account 72.00 not used: cash +72
        {"setl_id": "F", "hifp_pay": 10000, "acct_pay": 3000, "acct_mulaid_pay": 7200, "psn_cash_pay": 0},
    ])
    rep, errors = reported_amounts(adj, seed=1, rates_bp=ALL)
    got = _by_id(rep)
    assert got["R"] == {"hifp_pay": 128000, "hifmi_pay": 0, "maf_pay": 0, "acct_pay": 0, "acct_mulaid_pay": 0,
                        "psn_cash_pay": 50037}
    assert (got["C"]["hifmi_pay"], got["C"]["psn_cash_pay"]) == (0, 400000)
    assert (got["T"]["maf_pay"], got["T"]["psn_cash_pay"]) == (50000, 90000)
    assert (got["A"]["hifp_pay"], got["A"]["psn_cash_pay"]) == (1200000, 300000)
    assert (got["F"]["acct_mulaid_pay"], got["F"]["psn_cash_pay"], got["F"]["acct_pay"]) == (0, 7200, 3000)
    kinds = {r["setl_id"]: r["kind"] for r in errors.to_dicts()}
    assert kinds == {"A": "annual_cap_ignored", "C": "critical_illness_omitted", "F": "family_account_not_used",
                     "R": "rounded_down_to_yuan", "T": "tilt_assistance_omitted"}
    # every reported line still adds up to what the adjudicated line's payers add up to
    base = adj.with_columns(pl.col("maf_pay") + pl.col("maf_tilt_pay")).select("setl_id", *REPORTED)
    for sid, r in got.items():
        assert sum(r.values()) == sum(v for k, v in _by_id(base)[sid].items())


def test_right_lines_and_reversals_report_the_negation_of_their_original():
    adj = _adjudicated([
        {"setl_id": "O", "hifp_pay": 100050, "psn_cash_pay": 20000},
        {"setl_id": "V", "orig_setl_id": "O", "hifp_pay": -100050, "psn_cash_pay": -20000},
        {"setl_id": "K", "hifp_pay": 100000, "psn_cash_pay": 20000},  # whole yuan: nothing to round
    ])
    rep, errors = reported_amounts(adj, seed=1, rates_bp=ALL)
    got = _by_id(rep)
    assert (got["V"]["hifp_pay"], got["V"]["psn_cash_pay"]) == (-100000, -20050)
    assert got["K"]["hifp_pay"] == 100000 and got["K"]["psn_cash_pay"] == 20000
    assert sorted((r["setl_id"], r["kind"], r["fund"]) for r in errors.to_dicts()) == [
        ("O", "rounded_down_to_yuan", "hifp_pay"), ("O", "rounded_down_to_yuan", "psn_cash_pay"),
        ("V", "rounded_down_to_yuan", "hifp_pay"), ("V", "rounded_down_to_yuan", "psn_cash_pay")]
    none, no_errors = reported_amounts(adj, seed=1, rates_bp={})
    assert none.sort("setl_id").equals(adj.select("setl_id", *REPORTED).sort("setl_id"))
    assert no_errors.height == 0


def test_the_discrepancy_audit_finds_exactly_the_errors_the_institutions_made(bureau, loaded):
    listed = json.loads((bureau / "REPORTED.json").read_text())
    assert listed["rows"], "the sample has wrong reports to find"
    con = duckdb.connect(str(loaded), read_only=True)
    try:
        # the platform's maf_pay is all assistance: compared with maf_pay + maf_tilt_pay (flows/views.py)
        found = con.execute("SELECT setl_id, fund, reported_amt, adjudicated_amt FROM v_discrepancies").fetchall()
        with_reports = con.execute("SELECT count(*) FROM settlements WHERE hifp_pay IS NOT NULL").fetchall()[0][0]
        accepted = con.execute("SELECT count(*) FROM settlements").fetchall()[0][0]
    finally:
        con.close()
    want = {(r["setl_id"], r["fund"], Decimal(r["reported"]), Decimal(r["adjudicated"])) for r in listed["rows"]}
    assert set(found) == want
    assert with_reports == accepted  # every accepted line carries the institution's amounts
