"""Contributions per person and year (POLICY §3.1, §4.1; §5 E4, E7; A-19)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from flows.policies import load_policies
from tests.builders import person, registers, yuan
from tests.test_accounts import EMP_SCHEMA, emp
from transforms.contributions import CONTRIBUTION_SCHEMA, contributions, summary

POL = load_policies()
D = dt.date


def regs(persons, identities=(), employment=()):
    r = registers(persons, identities=identities)
    r["employment"] = pl.DataFrame(list(employment), schema=EMP_SCHEMA, orient="row")
    return r


def row(frame: pl.DataFrame, psn: str) -> dict:
    return frame.filter(pl.col("psn_no") == psn).row(0, named=True)


def ident(psn, identity, begin=None, end=None):
    return (psn, identity, begin or D(2020, 1, 1), end)


RESIDENTS = ["ORD", "DB", "TK", "MON", "PE", "BOTH", "LATE", "GONE"]
IDENTITIES = [ident("DB", "dibao"), ident("TK", "tekun"), ident("MON", "monitor_edge"), ident("PE", "poverty_exit"),
              ident("BOTH", "dibao"), ident("BOTH", "monitor_edge"), ident("BOTH", "poverty_exit"),
              ident("LATE", "dibao", begin=D(2025, 1, 5)),  # not valid on 31 Dec of Y−1
              ident("GONE", "tekun", end=D(2024, 12, 30))]


@pytest.fixture(scope="module")
def residents() -> dict:
    r = regs([person(p) for p in RESIDENTS], IDENTITIES)
    return {y: contributions(r, POL, y) for y in (2024, 2025)}


@pytest.mark.parametrize("psn, personal, government", [
    ("ORD", 400, 0), ("DB", 40, 360),  # E7: dibao 2025 personal 40, government 360
    ("TK", 0, 400), ("MON", 200, 200), ("PE", 400, 0),  # poverty_exit: no help from 2025
    ("BOTH", 40, 360),  # the single highest help, never a sum
    ("LATE", 400, 0), ("GONE", 400, 0),
])
def test_suizhou_resident_2025(residents, psn, personal, government):
    r = row(residents[2025], psn)
    assert (r["personal_amt"], r["government_amt"]) == (yuan(personal), yuan(government))
    assert (r["region"], r["scheme"], r["year"]) == ("suizhou", "resident", 2025)


def test_reasons_name_the_help_and_the_judging_date(residents):
    assert "dibao: help 90% of 400.00" in row(residents[2025], "BOTH")["reason"]
    assert "2024-12-31 (A-19)" in row(residents[2025], "BOTH")["reason"]
    assert row(residents[2025], "ORD")["reason"].startswith("ordinary: no help")


def test_before_2025_the_missing_standard_is_reported_not_guessed(residents):
    y = residents[2024]
    pe = row(y, "PE")  # the 2024 taper (50) is known, the standard is not
    assert (pe["personal_amt"], pe["government_amt"]) == (None, yuan(50))
    assert "missing: suizhou/resident/contributions.personal_standard in force on 2024-01-01" in pe["reason"]
    db = row(y, "DB")  # help rates are not given before 2025
    assert (db["personal_amt"], db["government_amt"]) == (None, None)
    assert "missing" in db["reason"]
    o = row(y, "ORD")
    assert (o["personal_amt"], o["government_amt"]) == (None, 0)


def test_xiangyang_residents_are_reported_missing():
    r = contributions(regs([person("X", admdvs="420602")]), POL, 2025)
    x = row(r, "X")
    assert x["personal_amt"] is None and "missing: xiangyang/resident/contributions.personal_standard" in x["reason"]


def xy(p):
    return person(p, admdvs="420602", insutype="310")


def test_e4_flexible_workers_352_and_283_a_month():
    r = regs([xy("FC"), xy("FP")], employment=[
        emp("FC", base=None, flexible=True, begin=D(2022, 7, 1)),
        emp("FP", mode="pooling_only", base=None, flexible=True, begin=D(2022, 7, 1))])
    y22 = contributions(r, POL, 2022)
    assert (row(y22, "FC")["personal_amt"], row(y22, "FC")["months"]) == (6 * yuan(352), 6)
    assert row(y22, "FP")["personal_amt"] == 6 * yuan(283)
    assert row(y22, "FC")["kind"] == "flexible_combined" and row(y22, "FP")["employer_amt"] == 0
    y23 = contributions(r, POL, 2023)  # the base of the 2023-07 contribution year is not in the source
    fc = row(y23, "FC")
    assert fc["personal_amt"] is None and "contributions.flexible_base" in fc["reason"] and "2023-07-01" in fc["reason"]


def test_employer_based_dues_and_periods():
    r = regs([xy("E"), xy("S"), xy("R"), xy("C")], employment=[
        emp("E", base=yuan(5000)),
        emp("S", base=yuan(5000), end=D(2025, 3, 31)),
        emp("S", base=yuan(5000), benefit="suspended", begin=D(2025, 4, 1), end=D(2025, 6, 30)),
        emp("S", base=yuan(6000), begin=D(2025, 7, 1)),
        emp("R", "12", mode=None, kind="normal"),
        emp("C", "12", mode="combined", base=yuan(4000), kind="contributing")])
    y = contributions(r, POL, 2025)
    e = row(y, "E")
    assert (e["employer_amt"], e["personal_amt"], e["government_amt"], e["months"]) == (12 * yuan(425), 12 * yuan(100), 0, 12)
    s = row(y, "S")  # 3 months at 5,000, suspended Apr–Jun, 6 months at 6,000
    assert (s["employer_amt"], s["personal_amt"], s["months"]) == (3 * yuan(425) + 6 * yuan(510), 3 * yuan(100) + 6 * yuan(120), 9)
    assert (row(y, "R")["personal_amt"], row(y, "R")["months"], row(y, "R")["kind"]) == (0, 0, "none")
    c = row(y, "C")
    assert c["personal_amt"] is None and "retiree still contributing" in c["reason"]


def test_summary_and_schema(residents):
    assert residents[2025].schema == pl.Schema(CONTRIBUTION_SCHEMA)
    s = summary(residents[2025]).row(0, named=True)
    assert (s["persons"], s["government_amt"], s["missing"]) == (8, yuan(360 + 400 + 200 + 360), 0)


def test_cli_exports_the_year_from_the_registers(tmp_path, capsys):
    from flows.cli import main
    out = tmp_path / "c.csv"
    assert main(["contributions", "--year", "2025", "--db", str(tmp_path / "none.duckdb"), "--input",
                 "tests/fixtures/input", "--format", "csv", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8-sig").splitlines()
    assert text[0] == "psn_no,year,region,scheme,kind,months,personal_amt,government_amt,employer_amt,reason"
    assert len(text) > 1 and "persons from registers of tests/fixtures/input" in capsys.readouterr().err
    assert main(["contributions", "--year", "2025", "--db", str(tmp_path / "none.duckdb"), "--input",
                 "tests/fixtures/input", "--format", "xlsx"]) == 1  # xlsx needs --out
