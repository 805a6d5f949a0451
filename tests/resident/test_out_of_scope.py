"""Out-of-scope cost control for the rural low-income population (POLICY §3.10), hand-computed.

The person of most cases is a rural `poverty_exit` resident (S3: rural low-income by A-9, no
deductible exemption, no assistance), so the funds are those of an ordinary resident and only the
institution's share moves.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.policies import load_policies
from tests.builders import INSTITUTIONS, examples, line, lines, person, registers, reversal_of, yuan
from transforms.engine import MONEY_COLUMNS, adjudicate
from transforms.line_reasons import LINE_REASONS
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
SINCE = dt.date(2020, 1, 1)


def regs_for(rural: bool = True, identity: str | None = "poverty_exit", admdvs: str = "421302",
             begin: dt.date = SINCE, end: dt.date | None = None):
    ids = [("P1", identity, begin, end)] if identity else []
    return registers([person("P1", admdvs=admdvs, rural=rural)], identities=ids)


def run(rows, regs, **kw) -> pl.DataFrame:
    return adjudicate(lines(rows), regs, POL, **kw).adjudicated


def one(row, regs, **kw) -> dict:
    return run([row], regs, **kw).row(0, named=True)


def codes(r: dict) -> set[str]:
    return set(filter(None, r["reason_codes"].split(",")))


def test_violation_in_county_excess_moves_from_person_to_institution():
    """Level 2 in county, limit 8%: total 10,000, out of scope 1,000 + 200 = 12% → excess 1,200 − 800 = 400.

    Basic fund (8,800 − 500) × 80% = 6,640; the rural person pays 10,000 − 6,640 − 400 = 2,960;
    the same stay of an urban person (not controlled) pays 3,360: the 400 moved to the institution.
    """
    row = line("P1", "2025-03-01", "SZ2", a=yuan(8800), own=yuan(1000), over=yuan(200))
    rural = one(row, regs_for(rural=True))
    urban = one(row, regs_for(rural=False))
    assert rural["hifp_pay"] == urban["hifp_pay"] == yuan(6640)
    assert rural["hosp_part_amt"] == yuan(400)
    assert rural["psn_part_amt"] == rural["psn_cash_pay"] == yuan(2960)
    assert urban["hosp_part_amt"] == 0 and urban["psn_cash_pay"] == yuan(3360)
    assert urban["psn_cash_pay"] - rural["psn_cash_pay"] == rural["hosp_part_amt"]
    assert rural["fund_pay_sumamt"] == urban["fund_pay_sumamt"]
    assert "OUT_OF_SCOPE_EXCESS_TO_INSTITUTION" in codes(rural)
    assert not {c for c in codes(urban) if c.startswith("OUT_OF_SCOPE")}
    assert "over the limit by 400.00, 400.00 borne by the institution" in rural["explanation"]
    # the invariant of DATA.md §4 with the institution's share
    assert (rural["fund_pay_sumamt"] + rural["hosp_part_amt"] + rural["acct_pay"] + rural["acct_mulaid_pay"]
            + rural["psn_cash_pay"]) == rural["medfee_sumamt"]


@pytest.mark.parametrize("own_fen, violation, excess", [
    (30_000, False, 0),        # exactly 3% of 10,000.00: not above the limit
    (30_001, True, 1),         # one fen above: excess one fen
    (45_000, True, 15_000),
])
def test_level1_limit_3_percent_boundary(own_fen, violation, excess):
    total = yuan(10000)
    r = one(line("P1", "2025-03-01", "SZ1", a=total - own_fen, own=own_fen), regs_for())
    assert r["hosp_part_amt"] == excess
    want = "OUT_OF_SCOPE_EXCESS_TO_INSTITUTION" if violation else "OUT_OF_SCOPE_WITHIN_LIMIT"
    assert want in codes(r)


def test_excess_rounded_once():
    """§3.10 (rev. 3, issue 13 item 10): the excess is round(out_of_scope − limit × total), rounded once:
    400.00 − 3% × 10,000.50 = 400.00 − 300.015 = 99.985 → 99.99 (half-up); not 400.00 − round(300.015) = 99.98."""
    r = one(line("P1", "2025-03-01", "SZ1", a=yuan("9600.50"), own=yuan(400)), regs_for())
    assert r["hosp_part_amt"] == yuan("99.99")  # round(99.985)


def test_violation_whose_excess_rounds_to_zero():
    """Total 3.33, out of scope 0.10: 3.003% > 3% is a violation, but 3% × 3.33 = 0.0999 → 0.10: excess 0."""
    r = one(line("P1", "2025-03-01", "SZ1", a=323, own=10), regs_for())
    assert r["hosp_part_amt"] == 0
    assert "OUT_OF_SCOPE_EXCESS_TO_INSTITUTION" in codes(r)


def test_out_of_county_in_city_level3_limit_10_percent_borne_by_institution():
    """A Suixian (421321) person at SZ3 (Zengdu 421302, in Suizhou): out of county in Hubei, level 3 → 10%."""
    r = one(line("P1", "2025-03-01", "SZ3", a=yuan(8500), own=yuan(1500)), regs_for(admdvs="421321"))
    assert r["hosp_part_amt"] == yuan(500)
    assert "OUT_OF_SCOPE_EXCESS_TO_INSTITUTION" in codes(r)
    # the same stay at 8% would have been an in-county level-3 one
    r = one(line("P1", "2025-03-01", "SZ3", a=yuan(8500), own=yuan(1500)), regs_for())
    assert r["hosp_part_amt"] == yuan(700)


def test_out_of_city_violation_is_recorded_but_the_person_pays():
    """Wuhan level 3 (in Hubei, outside Suizhou): 20% > 10% is a violation, no institution share."""
    r = one(line("P1", "2025-03-01", "WH3", a=yuan(8000), own=yuan(2000)), regs_for())
    assert r["hosp_part_amt"] == 0
    assert "OUT_OF_SCOPE_VIOLATION" in codes(r)
    assert "institution outside Suizhou: the person pays it" in r["explanation"]
    assert r["psn_part_amt"] == r["medfee_sumamt"] - r["fund_pay_sumamt"]


@pytest.mark.parametrize("inst", ["WH1", "WH2", "BJ3", "SX2"])
def test_no_limit_is_not_controlled(inst):
    """Out of county levels 1–2 and out of province have no limit (SX2: level 2 in another county)."""
    r = one(line("P1", "2025-03-01", inst, a=yuan(5000), own=yuan(5000)), regs_for())
    assert r["hosp_part_amt"] == 0
    assert "OUT_OF_SCOPE_NOT_CONTROLLED" in codes(r)


@pytest.mark.parametrize("regs", [
    regs_for(rural=False),                                      # urban
    regs_for(identity="veteran"),                               # S3 identity that is not rural low-income
    regs_for(identity=None),                                    # ordinary resident
    regs_for(begin=dt.date(2025, 4, 1)),                        # identity not yet valid on the date
    regs_for(end=dt.date(2025, 2, 28)),                         # identity ended before the date
], ids=["urban", "veteran", "ordinary", "not-yet", "ended"])
def test_only_rural_low_income_persons_on_the_date(regs):
    r = one(line("P1", "2025-03-01", "SZ2", a=yuan(5000), own=yuan(5000)), regs)
    assert r["hosp_part_amt"] == 0
    assert not {c for c in codes(r) if c.startswith("OUT_OF_SCOPE")}


@pytest.mark.parametrize("identity", ["dibao", "tekun", "dibao_edge", "illness_poor", "poverty_exit"])
def test_s1_s2_and_poverty_exit_are_rural_low_income(identity):
    r = one(line("P1", "2025-03-01", "SZ2", a=yuan(5000), own=yuan(5000)), regs_for(identity=identity))
    assert r["hosp_part_amt"] == yuan(5000) - yuan(800)
    assert r["hosp_part_amt"] + r["fund_pay_sumamt"] + r["psn_cash_pay"] == r["medfee_sumamt"]


@pytest.mark.parametrize("med_type, controlled", [("21", True), ("52", True), ("28", True), ("11", False),
                                                  ("41", False)])
def test_ledgers_of_the_parameter(med_type, controlled):
    r = one(line("P1", "2025-03-01", "SZ2", med_type, a=yuan(50), own=yuan(50)), regs_for())
    assert (r["hosp_part_amt"] > 0) is controlled


def test_reversal_takes_back_the_institution_share():
    """POLICY §1.7: the reversal is the original negated, institution share included; same and later month."""
    orig = line("P1", "2025-03-01", "SZ2", a=yuan(8800), own=yuan(1000), over=yuan(200))
    rev = reversal_of(orig, "2025-03-05")
    out = run([orig, rev], regs_for()).sort("setl_time")
    assert out["hosp_part_amt"].to_list() == [yuan(400), -yuan(400)]
    assert out["psn_cash_pay"].sum() == 0 and out["fund_pay_sumamt"].sum() == 0
    r = out.row(1, named=True)
    assert codes(r) == {"REVERSAL"}

    first = run([orig], regs_for())
    later = one(reversal_of(orig, "2025-04-02"), regs_for(), originals=first)
    assert later["hosp_part_amt"] == -yuan(400)
    assert later["psn_cash_pay"] == -first.row(0, named=True)["psn_cash_pay"]


def test_employees_and_other_regions_untouched():
    # a Xiangyang resident: no assistance identity (its line would stop the run, §4.7) and an outpatient line (a
    # stay would stop too, its parameters are missing): §3.10 is Suizhou's, nothing goes to the institution
    regs = registers([person("P1", rural=True, insutype="310"), person("P2", admdvs="420602", rural=True)],
                     identities=[("P1", "dibao", SINCE, None), ("P2", "poverty_exit", SINCE, None)])
    out = run([line("P1", "2025-03-01", "SZ2", a=yuan(50), own=yuan(50), insutype="310"),
               line("P2", "2025-03-01", "XY1", "11", a=yuan(50), own=yuan(50))], regs)
    assert out["hosp_part_amt"].to_list() == [0, 0]


def test_assumption_a9_recorded_and_reason_codes_documented():
    res = adjudicate(lines([line("P1", "2025-03-01", "SZ2", a=yuan(50), own=yuan(50))]), regs_for(), POL)
    assert "A-9" in res.assumptions
    for c in ("OUT_OF_SCOPE_NOT_CONTROLLED", "OUT_OF_SCOPE_WITHIN_LIMIT", "OUT_OF_SCOPE_VIOLATION",
              "OUT_OF_SCOPE_EXCESS_TO_INSTITUTION"):
        assert c in LINE_REASONS


COMPARED = [c for c in MONEY_COLUMNS if c not in ("cls_a_amt", "cls_b_amt", "fulamt_ownpay_amt", "overlmt_selfpay")]
LOW_INCOME = ["tekun", "dibao", "fanpin", "dibao_edge", "monitor_edge", "illness_poor", "poverty_exit", "veteran"]


@st.composite
def rural_stays(draw):
    persons, idents, rows = [], [], []
    for i in range(draw(st.integers(1, 3))):
        pid = f"P{i}"
        persons.append(person(pid, admdvs=draw(st.sampled_from(["421302", "421321"])), rural=draw(st.booleans())))
        if draw(st.booleans()):
            idents.append((pid, draw(st.sampled_from(LOW_INCOME)), SINCE, None))
        mine = []
        for _ in range(draw(st.integers(1, 5))):
            day = dt.datetime(2025, 1, 1, 8) + dt.timedelta(days=draw(st.integers(0, 360)),
                                                            minutes=draw(st.integers(0, 600)))
            mine.append(line(pid, day.strftime("%Y-%m-%d %H:%M:%S"), draw(st.sampled_from([c for c, *_ in INSTITUTIONS])),
                             med_type=draw(st.sampled_from(["21", "52", "28", "11"])),
                             a=draw(st.integers(0, 5_000_000)), b=draw(st.integers(0, 500_000)),
                             own=draw(st.integers(0, 1_000_000)), over=draw(st.integers(0, 200_000))))
        rows += mine
        if draw(st.booleans()):
            orig = draw(st.sampled_from(mine))
            rows.append(reversal_of(orig, (orig["setl_time"] + dt.timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")))
    return persons, idents, rows


@settings(max_examples=examples(35), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rural_stays())
def test_engine_equals_reference_on_rural_low_income_stays(pop):
    persons, idents, rows = pop
    regs = registers(persons, identities=idents)
    engine = adjudicate(lines(rows), regs, POL).adjudicated
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL)
    got = engine.select(["setl_id", *COMPARED]).sort("setl_id").to_dicts()
    assert got == sorted(({k: r[k] for k in ["setl_id", *COMPARED]} for r in ref), key=lambda r: r["setl_id"])
