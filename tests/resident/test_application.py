"""On-application medical assistance (依申请救助), POLICY §3.9 and A-15, with hand-computed numbers.

Stays used below (ordinary person, in the city, level 2, class A 20,000): basic fund (20,000 − 500) × 80%
= 15,600, critical-illness burden 4,400 (below 12,000 unless stated), so each stay leaves 4,400 of
in-scope self-pay.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.policies import load_policies
from tests.builders import line, lines, person, registers, reversal_of, yuan
from transforms.engine import adjudicate
from transforms.reference.resident_assistance import apply_applications_reference
from transforms.resident.application import APPLICATION_REASONS, OUTPUT_SCHEMA, apply_applications

POL = load_policies()
OPEN = dt.date(2020, 1, 1)


def adjudicated(rows, regs) -> pl.DataFrame:
    return adjudicate(lines(rows), regs, POL).adjudicated


def apps(*rows) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(("app_id", "psn_no", "identity", "confirm_date"), r, strict=True)) for r in rows],
                        schema={"app_id": pl.String, "psn_no": pl.String, "identity": pl.String,
                                "confirm_date": pl.Date})


def by_id(out: pl.DataFrame) -> dict[str, dict]:
    return {r["app_id"]: r for r in out.iter_rows(named=True)}


def test_window_straddles_the_year_boundary():
    """Confirmed 1 Feb 2026: window [1 Feb 2025, 1 Feb 2026). In it: 10 Mar 2025 and 10 Jan 2026 (4,400 each);
    out of it: 15 Jan 2025 (before) and 1 Feb 2026 08:00 (on the confirmation date, excluded).
    Base 8,800; above 6,000: 2,800 × 60% = 1,680."""
    regs = registers([person("P1")])
    rows = [line("P1", "2025-01-15", "SZ2", a=yuan(20000)), line("P1", "2025-03-10", "SZ2", a=yuan(20000)),
            line("P1", "2026-01-10", "SZ2", a=yuan(20000)), line("P1", "2026-02-01 08:00:00", "SZ2", a=yuan(20000))]
    out = apply_applications(apps(("A1", "P1", "dibao", dt.date(2026, 2, 1))), adjudicated(rows, regs), regs, POL)
    assert out.schema == pl.Schema(OUTPUT_SCHEMA)
    r = out.row(0, named=True)
    assert (r["window_start"], r["window_end"]) == (dt.date(2025, 2, 1), dt.date(2026, 2, 1))
    assert (r["lines"], r["base_amt"], r["paid_amt"]) == (2, yuan(8800), yuan(1680))
    assert (r["status"], r["reason"]) == ("paid", "PAID")
    assert "8800.00" in r["explanation"] and "60%" in r["explanation"]


def test_second_application_in_the_same_year_is_refused():
    """Once a year (年度内一次性): A2 (same year) refused; A3 (next year) paid; a refused one does not use it up."""
    regs = registers([person("P1")])
    rows = [line("P1", f"2025-{m:02d}-10", "SZ2", a=yuan(20000)) for m in (3, 4)]  # base 8,800 (CI 0)
    rows.append(line("P1", "2026-01-05", "SZ2", a=yuan(20000)))
    a = apps(("A0", "P1", "veteran", dt.date(2025, 6, 1)),   # refused (S3): does not count
             ("A1", "P1", "dibao_edge", dt.date(2025, 6, 1)), ("A2", "P1", "illness_poor", dt.date(2025, 9, 1)),
             ("A3", "P1", "illness_poor", dt.date(2026, 3, 1)))
    out = by_id(apply_applications(a, adjudicated(rows, regs), regs, POL))
    assert out["A0"]["reason"] == "NOT_ASSISTANCE_CLASS"
    assert out["A1"]["status"] == "paid" and out["A1"]["paid_amt"] == yuan(1680)
    assert (out["A2"]["status"], out["A2"]["reason"], out["A2"]["paid_amt"]) == ("refused", "ALREADY_PAID_THIS_YEAR", 0)
    assert out["A2"]["base_amt"] == yuan(8800)  # shown, for the clerk
    # A3: window [1 Mar 2025, 1 Mar 2026): all three stays, 13,200 − 6,000 = 7,200 × 60% = 4,320
    assert out["A3"]["status"] == "paid" and out["A3"]["paid_amt"] == yuan(4320)
    # and with A1 stored by an earlier run: A2 alone is refused
    later = apply_applications(a.filter(pl.col("app_id") == "A2"), adjudicated(rows, regs), regs, POL,
                               previous=pl.DataFrame({"psn_no": ["P1"], "confirm_date": [dt.date(2025, 6, 1)],
                                                      "status": ["paid"]}))
    assert later["reason"].to_list() == ["ALREADY_PAID_THIS_YEAR"]


def test_s3_and_other_hardship_and_non_residents_are_refused():
    regs = registers([person("P1"), person("P2"), person("P3", admdvs="420602")])
    rows = [line("P1", "2025-03-10", "SZ2", a=yuan(80000))]
    a = apps(("S3", "P1", "disabled", dt.date(2025, 6, 1)), ("OH", "P1", "other_hardship", dt.date(2025, 6, 1)),
             ("XY", "P3", "dibao", dt.date(2025, 6, 1)), ("NOBODY", "P9", "dibao", dt.date(2025, 6, 1)))
    out = by_id(apply_applications(a, adjudicated(rows, regs), regs, POL))
    assert out["S3"]["reason"] == out["OH"]["reason"] == "NOT_ASSISTANCE_CLASS"
    assert out["XY"]["reason"] == out["NOBODY"]["reason"] == "NOT_SUIZHOU_RESIDENT"
    assert all(r["status"] == "refused" and r["paid_amt"] == 0 and r["lines"] == 0 for r in out.values())
    assert set(r["reason"] for r in out.values()) <= set(APPLICATION_REASONS)


def test_cap_40000():
    """Two level-3 stays of A 200,000 (ordinary): 1) hifp 139,370, CI 30,709.50 → 29,920.50 left;
    2) basic cap leaves 10,630; burden 60,630 → 250,000: CI 168,800 − 30,709.50 = 138,090.50 → 51,279.50 left.
    Base 81,200; (81,200 − 6,000) × 60% = 45,120 → capped at 40,000."""
    regs = registers([person("P1")])
    rows = [line("P1", "2025-02-01", "SZ3", a=yuan(200000)), line("P1", "2025-03-01", "SZ3", a=yuan(200000))]
    r = apply_applications(apps(("A1", "P1", "tekun", dt.date(2025, 12, 1))), adjudicated(rows, regs), regs,
                           POL).row(0, named=True)
    assert r["base_amt"] == yuan(81200) and r["paid_amt"] == yuan(40000)
    assert (r["status"], r["reason"]) == ("paid", "CAPPED")


def test_base_is_net_of_assistance_already_paid_and_skips_reversed_held_and_other_ledgers():
    """P1 held dibao_edge until 30 Apr: its April stay already got basic assistance (8,400 base, 3,960 paid,
    4,440 left). A reversed stay, a held trauma stay (Suixian rule does not apply: P1 lives in 421302, so use
    P2 of Suixian), an outpatient visit: not counted."""
    regs = registers([person("P1")], identities=[("P1", "dibao_edge", OPEN, dt.date(2025, 4, 30))])
    o = line("P1", "2025-02-01", "SZ2", a=yuan(20000))
    rows = [o, reversal_of(o, "2025-02-15"), line("P1", "2025-04-01", "SZ2", a=yuan(40000)),
            line("P1", "2025-05-01", "SZ2", a=yuan(20000)), line("P1", "2025-05-02", "SZV", "11", a=yuan(30))]
    adj = adjudicated(rows, regs)
    assert adj.filter(pl.col("setl_time").dt.month() == 4)["maf_pay"].to_list() == [yuan(3960)]
    r = apply_applications(apps(("A1", "P1", "illness_poor", dt.date(2025, 9, 1))), adj, regs, POL).row(0, named=True)
    # lines: April (40,000 − 31,600 − 0 − 3,960 = 4,440) and May (20,000 − 15,600 − CI: burden 12,800 → 60% × 800
    # = 480 → 3,920): base 8,360; (8,360 − 6,000) × 60% = 1,416
    assert (r["lines"], r["base_amt"], r["paid_amt"]) == (2, yuan(8360), yuan(1416))

    regs2 = registers([person("P2", admdvs="421321")])
    held = adjudicated([line("P2", "2025-02-01", "SX2", med_type="22", a=yuan(90000))], regs2)
    r2 = apply_applications(apps(("A2", "P2", "dibao", dt.date(2025, 9, 1))), held, regs2, POL).row(0, named=True)
    assert (r2["lines"], r2["reason"]) == (0, "NO_LINES_IN_WINDOW")


def test_below_threshold_is_refused_and_identity_from_the_register():
    regs = registers([person("P1")], identities=[("P1", "orphan", dt.date(2025, 5, 1), None)])
    rows = [line("P1", "2025-03-10", "SZ2", a=yuan(20000))]  # 4,400 ≤ 6,000
    out = apply_applications(apps(("A1", "P1", None, dt.date(2025, 5, 1))), adjudicated(rows, regs), regs, POL)
    r = out.row(0, named=True)
    assert (r["status"], r["reason"], r["base_amt"]) == ("refused", "BELOW_THRESHOLD", yuan(4400))
    assert r["explanation"].startswith("class 1")


def test_window_start_clamps_to_the_month_end():
    regs = registers([person("P1")])
    out = apply_applications(apps(("A1", "P1", "dibao", dt.date(2028, 2, 29))), adjudicated([], regs), regs, POL)
    assert out["window_start"].to_list() == [dt.date(2027, 2, 28)]
    assert out["reason"].to_list() == ["NO_LINES_IN_WINDOW"]


def test_empty_applications():
    regs = registers([person("P1")])
    assert apply_applications(apps(), adjudicated([], regs), regs, POL).height == 0


@st.composite
def application_case(draw):
    persons = [person(f"P{i}") for i in range(2)]
    idents = [(f"P{i}", draw(st.sampled_from(["dibao", "illness_poor", "veteran"])), dt.date(2025, 1, 1)
               + dt.timedelta(days=draw(st.integers(0, 400))), None) for i in range(2)]
    rows = []
    for _ in range(draw(st.integers(0, 10))):
        t = dt.datetime(2025, 1, 1, 9) + dt.timedelta(days=draw(st.integers(0, 600)))
        rows.append(line(draw(st.sampled_from(["P0", "P1"])), t.strftime("%Y-%m-%d %H:%M:%S"),
                         draw(st.sampled_from(["SZ1", "SZ2", "SZ3", "WH2", "BJ3"])),
                         draw(st.sampled_from(["21", "28", "11", "22"])), a=draw(st.integers(0, 20_000_000)),
                         offsite_type=draw(st.sampled_from([None, "101", "903"]))))
    if rows and draw(st.booleans()):
        o = draw(st.sampled_from(rows))
        rows.append(reversal_of(o, (o["setl_time"] + dt.timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")))
    applications = [(f"A{k}", draw(st.sampled_from(["P0", "P1"])),
                     draw(st.sampled_from([None, "tekun", "dibao_edge", "mental"])),
                     dt.date(2025, 6, 1) + dt.timedelta(days=draw(st.integers(0, 500)))) for k in range(draw(st.integers(1, 4)))]
    return persons, idents, rows, applications


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(application_case())
def test_applications_equal_reference(case):
    persons, idents, rows, applications = case
    regs = registers(persons, identities=idents)
    adj = adjudicated(rows, regs)
    got = apply_applications(apps(*applications), adj, regs, POL).drop("explanation").to_dicts()
    want = apply_applications_reference(apps(*applications).to_dicts(), adj.to_dicts(),
                                        {k: v.to_dicts() for k, v in regs.items()}, POL)
    assert got == want
