"""Suizhou resident medical assistance (POLICY §3.9): basic, tilt, pay-after-treatment. Hand-computed numbers.

Reminders used below (2025, in the city): level 2 deductible 500 and 80%, level 3 900 and 70%; tekun,
orphan and dibao have no inpatient deductible in 2025. Critical illness: S1 from 6,000 at 65/70/80%,
others from 12,000 at 60/65/75%.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.policies import load_policies
from tests.builders import examples, line, lines, month_by_month, person, registers, reversal_of, yuan
from transforms.engine import MONEY_COLUMNS, adjudicate
from transforms.line_reasons import LINE_REASONS
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
OPEN = dt.date(2020, 1, 1)


def run(rows, regs, carried=None, originals=None):
    return adjudicate(lines(rows), regs, POL, carried=carried, originals=originals)


def adj(rows, regs, **kw) -> pl.DataFrame:
    return run(rows, regs, **kw).adjudicated.sort(["setl_time", "setl_id"])


def one(rows, regs, **kw) -> dict:
    return adj(rows, regs, **kw).row(0, named=True)


def who(identity: str | None, rural: bool = False, admdvs: str = "421302") -> dict:
    ids = [("P1", identity, OPEN, None)] if identity else []
    return registers([person("P1", admdvs=admdvs, rural=rural)], identities=ids)


def acc(res, name: str, year: int = 2025) -> int:
    a = res.accumulators.filter((pl.col("name") == name) & (pl.col("year") == year))
    return a["value"][0] if a.height else 0


def codes(r: dict) -> list[str]:
    return r["reason_codes"].split(",")


# --------------------------------------------------------------------------- one class each


def test_class1_tekun_100_percent_no_deductible():
    """SZ2, A 40,000: hifp 32,000 (no deductible in 2025); burden 8,000 → CI 65% × 2,000 = 1,300;
    base 40,000 − 32,000 − 1,300 = 6,700 → 100% = 6,700; nothing left for tilt; the person pays 0."""
    r = one([line("P1", "2025-05-10", "SZ2", a=yuan(40000))], who("tekun"))
    assert (r["hifp_pay"], r["hifmi_pay"], r["maf_pay"], r["maf_tilt_pay"]) == (yuan(32000), yuan(1300), yuan(6700), 0)
    assert r["psn_part_amt"] == 0
    assert "MAF_CLASS_1" in codes(r) and "TILT_NO_SELF_PAY" in codes(r)
    assert "assistance class 1: base 6700.00" in r["explanation"]


def test_class2_dibao_70_percent():
    """As class 1, at 70%: 6,700 × 70% = 4,690; tilt self-pay 2,010 < 5,000 → 0."""
    r = one([line("P1", "2025-05-10", "SZ2", a=yuan(40000))], who("dibao"))
    assert r["maf_pay"] == yuan(4690) and r["maf_tilt_pay"] == 0
    assert "MAF_CLASS_2" in codes(r) and "TILT_BELOW_THRESHOLD" in codes(r)
    assert r["psn_part_amt"] == yuan(2010)


def test_class3_dibao_edge_1800_deductible_60_percent():
    """SZ2, A 40,000: hifp (40,000 − 500) × 80% = 31,600; burden 8,400 < 12,000 → CI 0; base 8,400;
    (8,400 − 1,800) × 60% = 3,960; tilt self-pay 4,440 < 7,000 → 0."""
    r = one([line("P1", "2025-05-10", "SZ2", a=yuan(40000))], who("dibao_edge"))
    assert (r["hifp_pay"], r["hifmi_pay"], r["maf_pay"], r["maf_tilt_pay"]) == (yuan(31600), 0, yuan(3960), 0)
    assert ("deductible 1800.00, taken 1800.00; 60% × 6600.00 as round(F(after)) − round(F(before)) = 3960.00"
            in r["explanation"])
    assert "cap 40000.00 left before 40000.00, after 36040.00" in r["explanation"]


def test_class4_illness_poor_5000_deductible_50_percent():
    """Base 8,400 as class 3; (8,400 − 5,000) × 50% = 1,700."""
    r = one([line("P1", "2025-05-10", "SZ2", a=yuan(40000))], who("illness_poor"))
    assert r["maf_pay"] == yuan(1700) and "MAF_CLASS_4" in codes(r)


def test_annual_deductible_accumulates_over_lines():
    """Class 4, two SZ2 stays of A 20,000: base 4,400 each. First: all deductible (0); second: 600 of
    deductible left, (4,400 − 600) × 50% = 1,900."""
    res = run([line("P1", "2025-02-01", "SZ2", a=yuan(20000)), line("P1", "2025-03-01", "SZ2", a=yuan(20000))],
              who("illness_poor"))
    out = res.adjudicated.sort("setl_time")
    assert out["maf_pay"].to_list() == [0, yuan(1900)]
    assert "MAF_BELOW_DEDUCTIBLE" in out["reason_codes"][0]
    assert acc(res, "maf_base") == yuan(8800) and acc(res, "maf_paid") == yuan(1900)


def test_several_identities_take_the_lowest_class():
    """dibao_edge (3) + tekun (1) → class 1; other_hardship or S3 alone → no assistance."""
    regs = registers([person("P1"), person("P2"), person("P3")],
                     identities=[("P1", "dibao_edge", OPEN, None), ("P1", "tekun", OPEN, None),
                                 ("P2", "other_hardship", OPEN, None), ("P3", "veteran", OPEN, None)])
    out = adj([line(p, "2025-05-10", "SZ2", a=yuan(40000)) for p in ("P1", "P2", "P3")], regs).sort("psn_no")
    assert out["maf_pay"].to_list() == [yuan(6700), 0, 0]
    assert "NO_ASSISTANCE_IDENTITY" in out["reason_codes"][1] and "NO_ASSISTANCE_IDENTITY" in out["reason_codes"][2]


def test_identity_valid_on_settlement_date_and_class_changing_mid_year():
    """illness_poor until 30 June, dibao_edge from 1 July: D 5,000 then 1,800, over one accumulator.
    Base 4,400 in March (all deductible, class 4). A line in July before the new identity: no assistance.
    August: the critical-illness burden reaches 13,200 → CI 60% × 1,200 = 720, base 4,400 − 720 = 3,680;
    the 4,400 of March already counts against the 1,800 → 60% × 3,680 = 2,208."""
    regs = registers([person("P1")], identities=[("P1", "illness_poor", OPEN, dt.date(2025, 6, 30)),
                                                  ("P1", "dibao_edge", dt.date(2025, 7, 15), None)])
    out = adj([line("P1", "2025-03-01", "SZ2", a=yuan(20000)), line("P1", "2025-07-05", "SZ2", a=yuan(20000)),
               line("P1", "2025-08-01", "SZ2", a=yuan(20000))], regs)
    assert out["hifmi_pay"].to_list() == [0, 0, yuan(720)]
    assert out["maf_pay"].to_list() == [0, 0, yuan(2208)]
    assert "NO_ASSISTANCE_IDENTITY" in out["reason_codes"][1]


def test_basic_and_tilt_are_differences_of_rounded_yearly_amounts():
    """§1.3, §3.9 (issue 13 item 6): dibao (class 2: 70%, no annual deductible; no inpatient deductible in 2025),
    tilt threshold 5,000 at 80% in the city, 6,000.02 of tilt self-pay carried in. Two SZ2 stays of class A 100.05:
    hifp 80% × 100.05 = 80.04 each, burden 20.01 (CI 0, below 6,000), basic base 20.01 each.
    Basic: F(B) = 70% × B. Line 1: round(F(20.01)) − round(F(0)) = round(14.007) = 14.01;
           line 2: round(F(40.02)) − 14.01 = round(28.014) − 14.01 = 28.01 − 14.01 = 14.00 (per line it would be 14.01).
    Tilt: G(T) = 80% × (T − 5,000). Line 1: tilt base 20.01 − 14.01 = 6.00: round(G(6,006.02)) − round(G(6,000.02))
          = round(804.816) − round(800.016) = 804.82 − 800.02 = 4.80;
          line 2: tilt base 20.01 − 14.00 = 6.01: round(G(6,012.03)) − 804.82 = round(809.624) − 804.82 = 4.80
          (per line round(80% × 6.01) = 4.81). Year: basic 28.01 = round(70% × 40.02), tilt 9.60 = 809.62 − 800.02."""
    carried = pl.DataFrame({"psn_no": ["P1"], "year": [2025], "name": ["tilt_base"], "value": [yuan("6000.02")]},
                           schema={"psn_no": pl.String, "year": pl.Int32, "name": pl.String, "value": pl.Int64})
    rows = [line("P1", "2025-05-10", "SZ2", a=yuan("100.05")), line("P1", "2025-06-10", "SZ2", a=yuan("100.05"))]
    res = run(rows, who("dibao"), carried=carried)
    out = res.adjudicated.sort("setl_time")
    assert out["hifp_pay"].to_list() == [yuan("80.04"), yuan("80.04")]  # 80% × 100.05
    assert out["hifmi_pay"].to_list() == [0, 0]  # burden 40.02 < 6,000
    assert out["maf_pay"].to_list() == [yuan("14.01"), yuan("14.00")]  # 14.01, then 28.01 − 14.01
    assert out["maf_tilt_pay"].to_list() == [yuan("4.80"), yuan("4.80")]  # 804.82 − 800.02, 809.62 − 804.82
    assert acc(res, "maf_paid") == yuan("28.01") and acc(res, "tilt_paid") == yuan("9.60")
    assert acc(res, "tilt_base") == yuan("6000.02") + yuan("6.00") + yuan("6.01")
    # the reference adjudicator agrees line by line
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in who("dibao").items()}, POL,
                                  carried={("P1", 2025, "tilt_base"): yuan("6000.02")})
    assert sorted((r["maf_pay"], r["maf_tilt_pay"]) for r in ref) == [(yuan("14.00"), yuan("4.80")),
                                                                       (yuan("14.01"), yuan("4.80"))]


# --------------------------------------------------------------------------- cap, tilt


def test_cap_40000_hit_mid_line_then_tilt_pays_the_rest():
    """Class 1 (tekun), three level-3 stays in the city (no deductible in 2025, 70%).
    1) A 200,000: hifp 140,000; burden 60,000; CI s1 65% × 24,000 + 70% × 30,000 = 36,600;
       base 23,400 → maf 23,400; nothing left for tilt.
    2) A 200,000: basic cap leaves 10,000; burden 190,000 → 250,000; CI F(250,000) − F(60,000) =
       184,600 − 36,600 = 148,000; base 42,000 → maf capped at 40,000 − 23,400 = 16,600;
       tilt self-pay 25,400, above 5,000: 20,400 × 80% = 16,320 (no cap for class 1).
    3) A 10,000: basic fund 0 (cap reached); CI 80% × 10,000 = 8,000; base 2,000: maf 0 (cap reached);
       tilt 80% × 2,000 = 1,600."""
    rows = [line("P1", "2025-02-01", "SZ3", a=yuan(200000)), line("P1", "2025-03-01", "SZ3", a=yuan(200000)),
            line("P1", "2025-04-01", "SZ3", a=yuan(10000))]
    res = run(rows, who("tekun"))
    out = res.adjudicated.sort("setl_time")
    assert out["hifp_pay"].to_list() == [yuan(140000), yuan(10000), 0]
    assert out["hifmi_pay"].to_list() == [yuan(36600), yuan(148000), yuan(8000)]
    assert out["maf_pay"].to_list() == [yuan(23400), yuan(16600), 0]
    assert out["maf_tilt_pay"].to_list() == [0, yuan(16320), yuan(1600)]
    assert "MAF_CAP_PARTLY" in out["reason_codes"][1] and "MAF_CAP_REACHED" in out["reason_codes"][2]
    assert "cap 40000.00 left before 16600.00, after 0.00" in out["explanation"][1]
    assert acc(res, "maf_paid") == yuan(40000) and acc(res, "tilt_paid") == yuan(17920)
    assert acc(res, "tilt_base") == yuan(25400 + 2000)


def test_tilt_cap_80000_for_class_3():
    """Class 3 tilt cap 80,000, carried in: tilt paid 79,900 so far → the next line pays 100, TILT_CAP_PARTLY."""
    carried = pl.DataFrame({"psn_no": ["P1"] * 3, "year": [2025] * 3, "name": ["maf_base", "maf_paid", "tilt_base"],
                            "value": [yuan(100000), yuan(40000), yuan(200000)]},
                           schema={"psn_no": pl.String, "year": pl.Int32, "name": pl.String, "value": pl.Int64})
    carried = pl.concat([carried, pl.DataFrame({"psn_no": ["P1"], "year": [2025], "name": ["tilt_paid"],
                                                "value": [yuan(79900)]}, schema=carried.schema)])
    r = one([line("P1", "2025-09-01", "SZ2", a=yuan(40000))], who("dibao_edge"), carried=carried)
    # base 8,400 (CI 0), maf cap reached → 0; tilt self-pay 8,400 all above → 80% = 6,720, capped to 100
    assert r["maf_pay"] == 0 and r["maf_tilt_pay"] == yuan(100)
    assert "MAF_CAP_REACHED" in codes(r) and "TILT_CAP_PARTLY" in codes(r)


CLASS3_100K = {
    # SZ2 in city: hifp (100,000 − 500) × 80% = 79,600; burden 20,400 → CI 60% × 8,400 = 5,040; base 15,360;
    # maf (15,360 − 1,800) × 60% = 8,136; tilt self-pay 7,224, above 7,000: 224 × 80% = 179.20
    "SZ2": ("101", yuan(79600), yuan(5040), yuan(8136), yuan("179.20")),
    # WH2 (Hubei, out of city, 101): pre 10,000, (90,000 − 1,500) × 80% = 70,800; burden 29,200 → CI 10,320;
    # base 18,880 → maf 10,248; tilt self-pay 8,632, above 1,632 × 70% = 1,142.40
    "WH2": ("101", yuan(70800), yuan(10320), yuan(10248), yuan("1142.40")),
    # BJ3 (out of province, 101): (90,000 − 1,500) × 70% = 61,950; burden 38,050 → CI 10,800 + 5,232.50;
    # base 22,017.50 → maf 60% × 20,217.50 = 12,130.50; no tilt out of the province
    "BJ3": ("101", yuan(61950), yuan("16032.50"), yuan("12130.50"), 0),
    # WH2 with 903: pre 20,000, (80,000 − 1,500) × 80% = 62,800; no assistance at all
    "WH2/903": ("903", yuan(62800), None, 0, 0),
}


@pytest.mark.parametrize("where", list(CLASS3_100K))
def test_tilt_80_in_city_70_in_province_none_outside_and_903_nothing(where):
    inst = where.split("/")[0]
    offsite, hifp, hifmi, maf, tilt = CLASS3_100K[where]
    r = one([line("P1", "2025-05-10", inst, a=yuan(100000), offsite_type=None if inst == "SZ2" else offsite)],
            who("dibao_edge"))
    assert r["hifp_pay"] == hifp
    if hifmi is not None:
        assert r["hifmi_pay"] == hifmi
    assert (r["maf_pay"], r["maf_tilt_pay"]) == (maf, tilt)
    if where == "BJ3":
        assert "TILT_NOT_IN_PROVINCE" in codes(r)
    if where == "WH2/903":
        assert "OFFSITE_903_NO_ASSISTANCE" in codes(r) and "MAF_CLASS_3" not in codes(r)
        assert r["psn_part_amt"] == yuan(100000) - hifp - r["hifmi_pay"]
    if where == "WH2":
        assert "tilt assistance (elsewhere in Hubei)" in r["explanation"]


def test_out_of_city_self_pay_of_903_does_not_accumulate_for_tilt():
    """A 903 stay first (no assistance), then the in-city stay of CLASS3_100K: same tilt as alone."""
    out = adj([line("P1", "2025-04-01", "WH2", a=yuan(100000), offsite_type="903"),
               line("P1", "2025-05-10", "SZ2", a=yuan(100000))], who("dibao_edge"))
    # the 903 stay's burden does count for critical illness (§3.8), which changes the second line's CI;
    # but neither its assistance base nor its tilt self-pay enter the accumulators.
    r = out.row(1, named=True)
    base = r["inscp_scp_amt"] - r["hifp_pay"] - r["hifmi_pay"]
    assert r["maf_pay"] == (base - yuan(1800)) * 60 // 100
    left = base - r["maf_pay"]
    assert r["maf_tilt_pay"] == max(0, left - yuan(7000)) * 80 // 100


def test_outpatient_pooling_is_not_assisted():
    r = one([line("P1", "2025-05-10", "SZV", "11", a=yuan(30))], who("tekun"))
    assert r["maf_pay"] == 0 and "MAF_NOT_COVERED" in codes(r)


def test_trauma_stay_held_for_review_gets_no_assistance():
    r = one([line("P1", "2025-02-01", "SX2", med_type="22", a=yuan(8000))], who("tekun", admdvs="421321"))
    assert r["hifp_pay"] == 0 and r["maf_pay"] == 0 and "HELD_FOR_REVIEW" in codes(r)


# --------------------------------------------------------------------------- reversals, months


def test_reversal_pays_back_and_moves_accumulators_back_even_after_identity_ended():
    """illness_poor until 31 May and again from 1 July. Stay 1 (May) base 4,400: all deductible. Its reversal
    (June, no identity that day) must still take 4,400 off maf_base: stay 2 (July) base 4,400 is then all
    deductible again (without the take-back it would pay (4,400 − 600) × 50%)."""
    regs = registers([person("P1")], identities=[("P1", "illness_poor", OPEN, dt.date(2025, 5, 31)),
                                                  ("P1", "illness_poor", dt.date(2025, 7, 1), None)])
    o = line("P1", "2025-05-10", "SZ2", a=yuan(20000))
    rows = [o, reversal_of(o, "2025-06-10"), line("P1", "2025-07-10", "SZ2", a=yuan(20000))]
    res = run(rows, regs)
    out = res.adjudicated.sort("setl_time")
    assert out["maf_pay"].to_list() == [0, 0, 0]
    assert acc(res, "maf_base") == yuan(4400)


def test_reversal_of_a_paid_line_in_a_later_run():
    """Class 3 in-city stay of CLASS3_100K reversed next month: every assistance amount negated, state back to 0."""
    regs = who("dibao_edge")
    o = line("P1", "2025-05-10", "SZ2", a=yuan(100000))
    first = run([o], regs)
    later = run([reversal_of(o, "2025-06-02")], regs, carried=first.accumulators, originals=first.adjudicated)
    r = later.adjudicated.row(0, named=True)
    assert (r["maf_pay"], r["maf_tilt_pay"]) == (-yuan(8136), -yuan("179.20"))
    assert "REVERSAL" in codes(r) and "MAF_CLASS_3" in codes(r)
    for name in ("maf_base", "maf_paid", "tilt_base", "tilt_paid", "hifmi_burden", "hifmi_paid", "hifp_paid"):
        assert acc(later, name) == 0, name


def test_month_by_month_equals_one_run():
    regs = registers([person("P1"), person("P2", rural=True)],
                     identities=[("P1", "tekun", OPEN, dt.date(2025, 8, 31)), ("P1", "dibao_edge", OPEN, None),
                                 ("P2", "illness_poor", dt.date(2025, 3, 1), None)])
    o = line("P1", "2025-03-03", "SZ3", a=yuan(150000))
    rows = [line("P1", "2025-01-10", "SZ3", a=yuan(200000)), o, reversal_of(o, "2025-04-04"),
            line("P1", "2025-05-05", "WH3", a=yuan(120000), offsite_type="101"),
            line("P1", "2025-09-09", "SZ2", a=yuan(90000)), line("P1", "2025-10-10", "BJ3", med_type="24", a=yuan(50000)),
            line("P2", "2025-02-02", "SZ2", a=yuan(30000)), line("P2", "2025-03-03", "SZ1", a=yuan(30000)),
            line("P2", "2025-06-06", "WH2", a=yuan(80000), offsite_type="101"),
            line("P2", "2025-12-12", "SZ3", a=yuan(200000))]
    whole = run(rows, regs).adjudicated.sort("setl_id")
    assert whole["maf_tilt_pay"].sum() > 0 and whole["maf_pay"].sum() > 0
    done = [r.adjudicated for r in month_by_month(rows, lambda m, **kw: adjudicate(lines(m), regs, POL, **kw))]
    monthly = pl.concat(done).sort("setl_id")
    assert monthly.to_dicts() == whole.to_dicts()


# --------------------------------------------------------------------------- pay after treatment


@pytest.mark.parametrize("identity, rural, inst, med_type, waived", [
    ("dibao", True, "SZ2", "21", True),           # rural low-income, in county (421302), a stay
    ("poverty_exit", True, "SZ2", "21", True),    # poverty_exit counts (no assistance though)
    ("dibao", False, "SZ2", "21", False),         # urban
    ("dibao", True, "SX2", "21", False),          # other county of Suizhou
    ("dibao", True, "SZ1", "11", False),          # not a stay
    ("veteran", True, "SZ2", "21", False),        # S3 other than poverty_exit
    (None, True, "SZ2", "21", False),
])
def test_pay_after_treatment(identity, rural, inst, med_type, waived):
    r = one([line("P1", "2025-05-10", inst, med_type, a=yuan(5000))], who(identity, rural=rural))
    assert r["deposit_waived"] is waived
    assert ("PAY_AFTER_TREATMENT" in codes(r)) is waived


def test_every_reason_code_is_documented():
    regs = registers([person(f"P{i}", rural=True) for i in range(4)],
                     identities=[("P0", "tekun", OPEN, None), ("P1", "illness_poor", OPEN, None),
                                 ("P2", "dibao_edge", OPEN, None)])
    rows = [line("P0", "2025-01-01", "SZ3", a=yuan(200000)), line("P0", "2025-02-01", "SZ3", a=yuan(200000)),
            line("P0", "2025-03-01", "SZ3", a=yuan(9000)), line("P1", "2025-01-01", "SZ2", a=yuan(2000)),
            line("P2", "2025-01-01", "WH2", a=yuan(9000), offsite_type="903"),
            line("P2", "2025-01-02", "BJ3", a=yuan(9000), offsite_type="101"),
            line("P2", "2025-01-03", "SZV", "11", a=yuan(20)), line("P3", "2025-01-01", "SZ2", a=yuan(9000))]
    rows.append(reversal_of(rows[0], "2025-04-01"))
    found = {c for cs in adj(rows, regs)["reason_codes"] for c in cs.split(",") if c}
    assert found <= set(LINE_REASONS), found - set(LINE_REASONS)
    assert {"MAF_CAP_REACHED", "MAF_BELOW_DEDUCTIBLE", "OFFSITE_903_NO_ASSISTANCE", "TILT_NOT_IN_PROVINCE",
            "NO_ASSISTANCE_IDENTITY", "MAF_NOT_COVERED", "PAY_AFTER_TREATMENT", "MAF_CLASS_1"} <= found


# --------------------------------------------------------------------------- engine = reference (assistance-heavy)

ASSIST_IDS = ["tekun", "orphan", "dibao", "fanpin", "dibao_edge", "monitor_unstable", "monitor_edge", "monitor_sudden",
              "illness_poor", "other_hardship", "veteran", "poverty_exit"]
INSTS = ["SZ1", "SZ2", "SZ3", "SX2", "WH2", "WH3", "BJ3"]
COMPARED = [c for c in MONEY_COLUMNS if c not in ("cls_a_amt", "cls_b_amt", "fulamt_ownpay_amt", "overlmt_selfpay")]


@st.composite
def assisted_population(draw):
    persons, idents, rows = [], [], []
    for i in range(draw(st.integers(1, 3))):
        pid = f"P{i}"
        persons.append(person(pid, admdvs=draw(st.sampled_from(["421302", "421321"])), rural=draw(st.booleans())))
        for ident in draw(st.lists(st.sampled_from(ASSIST_IDS), min_size=1, max_size=2, unique=True)):
            begin = dt.date(2025, 1, 1) + dt.timedelta(days=draw(st.integers(-30, 300)))
            end = draw(st.one_of(st.none(), st.just(begin + dt.timedelta(days=draw(st.integers(0, 200))))))
            idents.append((pid, ident, begin, end))
        mine = []
        for _ in range(draw(st.integers(1, 8))):
            t = dt.datetime(2025, 1, 1, 8) + dt.timedelta(days=draw(st.integers(0, 420)), minutes=draw(st.integers(0, 60)))
            mine.append(line(pid, t.strftime("%Y-%m-%d %H:%M:%S"), draw(st.sampled_from(INSTS)),
                             med_type=draw(st.sampled_from(["21", "21", "22", "24", "28", "52", "13", "11"])),
                             a=draw(st.integers(0, 30_000_000)), b=draw(st.integers(0, 3_000_000)),
                             own=draw(st.integers(0, 10_000)), offsite_type=draw(st.sampled_from([None, "101", "903"])),
                             is_emergency_rescue=draw(st.booleans()),
                             trauma_report_no=draw(st.sampled_from([None, "R1"]))))
        rows += mine
        for orig in draw(st.lists(st.sampled_from(mine), max_size=2, unique_by=lambda r: r["setl_id"])):
            later = orig["setl_time"] + dt.timedelta(days=draw(st.integers(0, 90)), seconds=1)
            rows.append(reversal_of(orig, later.strftime("%Y-%m-%d %H:%M:%S")))
    return persons, idents, rows


@settings(max_examples=examples(35), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assisted_population())
def test_engine_equals_reference_for_assistance_persons(pop):
    persons, idents, rows = pop
    regs = registers(persons, identities=idents)
    engine = adjudicate(lines(rows), regs, POL).adjudicated
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL)
    got = engine.select(["setl_id", *COMPARED, "deposit_waived"]).sort("setl_id").to_dicts()
    want = sorted(({k: r.get(k, False) for k in ["setl_id", *COMPARED, "deposit_waived"]} for r in ref),
                  key=lambda r: r["setl_id"])
    # a reversal's deposit flag is false (no admission); the reference leaves it unset there
    assert got == want


@settings(max_examples=examples(9), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assisted_population())
def test_month_by_month_equals_one_run_for_assistance_persons(pop):
    persons, idents, rows = pop
    regs = registers(persons, identities=idents)
    whole = adjudicate(lines(rows), regs, POL)
    done = [r.adjudicated for r in month_by_month(rows, lambda m, **kw: adjudicate(lines(m), regs, POL, **kw))]
    assert pl.concat(done).sort("setl_id").to_dicts() == whole.adjudicated.sort("setl_id").to_dicts()
