"""Xiangyang employee stays, chronic/special outpatient and the basic fund's annual cap (POLICY §4.4, A-12, A-17,
A-21) with hand-computed numbers."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from flows.policies import MissingParameter, load_policies
from tests.builders import employee, employment, line, lines, registers, reversal_of, yuan
from transforms.engine import adjudicate
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
EMPS = [employment("S", "2015-01-01"), employment("R", "2010-01-01", psn_type="12")]
CERTS = [("S", "C1", "I11.9", "chronic", dt.date(2024, 1, 1), None),
         ("S", "C2", "N18.5", "special_dialysis", dt.date(2024, 1, 1), None),
         ("S", "C3", "I10", "hypertension", dt.date(2024, 1, 1), None),
         ("S", "C4", "E11", "special_drug", dt.date(2024, 1, 1), None),
         ("S", "C5", "C34", "special", dt.date(2024, 1, 1), None)]


def stay(psn: str, when: str, inst: str, med_type: str = "21", a: float | str = 0, b: float | str = 0, **kw) -> dict:
    return line(psn, when, inst, med_type, a=yuan(a), b=yuan(b), insutype="310", **kw)


def run(rows, emps=EMPS) -> pl.DataFrame:
    regs = registers([employee("S"), employee("R")], certifications=CERTS, employment=emps)
    out = adjudicate(lines(rows), regs, POL).adjudicated.sort("setl_time")
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL)
    by_id = {r["setl_id"]: r for r in ref}
    for r in out.to_dicts():
        for col in ("hifp_pay", "act_pay_dedc", "hifp_cap_cut", "pool_prop_selfpay", "preselfpay_amt"):
            assert r[col] == by_id[r["setl_id"]][col], (r["setl_id"], col)
    return out


@pytest.mark.parametrize("inst, deductible, paid", [("XY1", 200, "9016"), ("XY2", 500, "8550"), ("XY3", 900, "7462")])
def test_stay_by_level(inst, deductible, paid):
    """A-12: 10,000 class A: (10000 − 200) × 92% = 9,016; (10000 − 500) × 90% = 8,550; (10000 − 900) × 82% = 7,462."""
    r = run([stay("S", "2025-05-10", inst, a=10000)]).row(0, named=True)
    assert r["act_pay_dedc"] == yuan(deductible)
    assert r["hifp_pay"] == yuan(paid)
    assert r["pool_prop_selfpay"] == yuan(10000 - deductible) - yuan(paid)
    assert r["hifmi_pay"] == r["maf_pay"] == r["maf_tilt_pay"] == 0
    assert r["reason_codes"] == ""


def test_level_2_class_b_pre_self_pay():
    """§1.4 with A-16: level 2, A 8,000 + B 2,000: pre-self-pay 200; in scope 9,800; (9800 − 500) × 90% = 8,370."""
    r = run([stay("S", "2025-05-10", "XY2", a=8000, b=2000, own=yuan(500))]).row(0, named=True)
    assert r["preselfpay_amt"] == yuan(200) and r["inscp_scp_amt"] == yuan(9800)
    assert r["hifp_pay"] == yuan(8370)
    assert r["psn_part_amt"] == yuan(10500) - yuan(8370)


def test_the_same_out_of_the_city_and_rescue_is_101():
    """No out-of-city pre-self-pay for employees (0%): Wuhan level 2 = in-city level 2. A rescue not followed by a
    stay is a stay with its deductible (A-2), out of the city as offsite 101."""
    out = run([stay("S", "2025-05-10", "WH2", a=10000), stay("S", "2025-06-10", "BJ3", "13", a=10000,
                                                                is_emergency_rescue=True)])
    assert out["hifp_pay"].to_list() == [yuan(8550), yuan(7462)]
    assert out["offsite_preselfpay_amt"].to_list() == [0, 0]
    assert out["offsite_type_eff"].to_list() == ["903", "101"]
    assert out["ledger"].to_list() == ["inpatient", "inpatient"]
    assert "EMERGENCY_AS_STAY" in out["reason_codes"][1] and "OFFSITE_101" in out["reason_codes"][1]


def test_maternity_stay_and_day_surgery():
    """Maternity stays (52) as ordinary stays; day surgery (28) at the inpatient rate without the deductible."""
    out = run([stay("S", "2025-05-10", "XY2", "52", a=6000), stay("S", "2025-06-10", "XY3", "28", a=6000)])
    assert out["ledger"].to_list() == ["maternity", "day_surgery"]
    assert out["hifp_pay"].to_list() == [yuan(4950), yuan(4920)]  # (6000−500)×90%; 6000×82%
    assert out["act_pay_dedc"].to_list() == [yuan(500), 0]
    assert "NO_DEDUCTIBLE_DAY_SURGERY" in out["reason_codes"][1]


def test_stay_below_the_deductible():
    r = run([stay("S", "2025-05-10", "XY3", a=800)]).row(0, named=True)
    assert r["hifp_pay"] == 0 and r["act_pay_dedc"] == yuan(800) and "BELOW_DEDUCTIBLE" in r["reason_codes"]


def test_annual_cap_550000_over_stays_and_chronic_not_outpatient():
    """A-17: level 1 stays: (500200 − 200) × 92% = 460,000; (100200 − 200) × 92% = 92,000 → 90,000 (cap);
    a chronic line → 0 (cap reached); outpatient pooling has its own cap and still pays."""
    rows = [stay("R", "2025-02-01", "XY1", a=500200), stay("R", "2025-03-01", "XY1", a=100200),
            stay("S", "2025-01-01", "XY1", a=1)]  # another person, untouched
    rows += [line("R", "2025-04-01", "XY1", "11", a=yuan(1400), insutype="310")]
    out = run(rows).filter(pl.col("psn_no") == "R")
    assert out["hifp_pay"].to_list() == [yuan(460000), yuan(90000), yuan(800)]  # (1400−400)×80%
    assert out["hifp_cap_cut"].to_list() == [0, yuan(2000), 0]
    assert "CAP_PARTLY" in out["reason_codes"][1]
    assert "annual cap 550000.00" in out["explanation"][1]
    assert "annual cap 550000.00" not in out["explanation"][2]  # outpatient pooling: its own cap, not A-17
    # chronic counts toward the 550,000
    regs = registers([employee("S")], certifications=CERTS, employment=EMPS)
    res = adjudicate(lines([stay("S", "2025-02-01", "XY1", a=600200),
                            line("S", "2025-03-01", "XY1", "14", a=yuan(1000), insutype="310", dise_cert_code="C1")]),
                     regs, POL)
    got = res.adjudicated.sort("setl_time")
    assert got["hifp_pay"].to_list() == [yuan(550000), 0]
    assert "CAP_REACHED" in got["reason_codes"][1]
    acc = {r["name"]: r["value"] for r in res.accumulators.to_dicts()}
    assert acc["emp_hifp_paid"] == yuan(550000) and acc["emp_chronic_used:C1"] == yuan(1000)


def test_chronic_rates_limit_and_not_certified():
    """A-12: chronic 80%, dialysis 90%; A-21: chronic 10,000 of in-scope cost a year per disease, special none;
    a two-disease certification is not a chronic one (NOT_CERTIFIED)."""
    rows = [line("S", "2025-02-01", "XY2", "14", a=yuan(6000), insutype="310", dise_cert_code="C1"),
            line("S", "2025-03-01", "XY2", "140104", a=yuan(6000), insutype="310", dise_cert_code="C1"),
            line("S", "2025-04-01", "XY2", "14", a=yuan(20000), insutype="310", dise_cert_code="C2"),
            line("S", "2025-05-01", "XY2", "14", a=yuan(500), insutype="310", dise_cert_code="C3"),
            line("S", "2025-06-01", "XY2", "14", a=yuan(500), insutype="310", dise_cert_code="C1")]
    out = run(rows)
    assert out["ledger"].to_list() == ["chronic"] * 5
    assert out["hifp_pay"].to_list() == [yuan(4800), yuan(3200), yuan(18000), 0, 0]
    assert out["chronic_over_limit_amt"].to_list() == [0, yuan(2000), 0, 0, yuan(500)]
    assert out["act_pay_dedc"].to_list() == [0] * 5
    codes = out["reason_codes"].to_list()
    assert "CHRONIC_LIMIT_PARTLY" in codes[1] and codes[3] == "NOT_CERTIFIED" and "CHRONIC_LIMIT_REACHED" in codes[4]


def test_a25_pharmacy_purchase_under_a_chronic_certification_is_chronic_care():
    """§3.4 A-25 (issue 13 item 10), employees: a pharmacy purchase (41 at XYP) claimed under the chronic
    certification C1 is on the chronic ledger: 80% (A-12), no deductible, within C1's 10,000 (A-21):
    6,000 → 4,800; then an outpatient chronic line of C1, 6,000: 4,000 left of the limit → 80% × 4,000 = 3,200.
    A purchase under the hypertension qualification C3 (no two-disease ledger for employees) follows the pharmacy
    rules: pooling at the prescriber's level (XY2, A-11), in service 60% (A-10) once the 500 deductible is met:
    800 → (800 − 500) × 60% = 180."""
    rows = [line("S", "2025-02-01", "XYP", "41", a=yuan(6000), insutype="310", dise_cert_code="C1"),
            line("S", "2025-03-01", "XY2", "14", a=yuan(6000), insutype="310", dise_cert_code="C1"),
            line("S", "2025-04-01", "XYP", "41", a=yuan(800), insutype="310", dise_cert_code="C3",
                 presc_fixmedins_code="XY2")]
    out = run(rows)
    assert out["ledger"].to_list() == ["chronic", "chronic", "pharmacy"]
    assert out["hifp_pay"].to_list() == [yuan(4800), yuan(3200), yuan(180)]  # 80% × 6,000; 80% × 4,000; 60% × 300
    assert out["chronic_over_limit_amt"][1] == yuan(2000)  # 6,000 − the 4,000 left of 10,000


def test_chronic_reversal_frees_the_limit():
    first = line("S", "2025-02-01", "XY2", "14", a=yuan(10000), insutype="310", dise_cert_code="C1")
    rows = [first, reversal_of(first, "2025-02-10"),
            line("S", "2025-03-01", "XY2", "14", a=yuan(10000), insutype="310", dise_cert_code="C1")]
    out = run(rows)
    assert out["hifp_pay"].to_list() == [yuan(8000), -yuan(8000), yuan(8000)]


def test_special_drug_rate_is_missing_for_employees():
    """The seed has no special-drug rule for employees: the run stops naming the parameter (POLICY §1.8)."""
    with pytest.raises(MissingParameter, match=r"xiangyang/employee/chronic\.special_drug_rate"):
        run([line("S", "2025-02-01", "XYP", "41", a=yuan(100), insutype="310", dise_cert_code="C4")])


def test_stay_outside_the_benefit_period_pays_nothing_and_counts_toward_no_cap():
    """Suspended: the stay pays nothing and adds nothing to the 550,000; then the cap is whole again."""
    emps = [employment("S", "2015-01-01", "2025-02-28"), employment("S", "2025-03-01", "2025-03-31", benefit="suspended"),
            employment("S", "2025-04-01"), employment("R", "2010-01-01", psn_type="12")]
    out = run([stay("S", "2025-03-10", "XY1", a=600200), stay("S", "2025-04-10", "XY1", a=600200)], emps)
    assert out["hifp_pay"].to_list() == [0, yuan(550000)]
    assert out["act_pay_dedc"].to_list() == [0, yuan(200)]
    assert out["benefit_block"].to_list() == ["SUSPENDED", None]
    assert out["psn_part_amt"][0] == out["medfee_sumamt"][0]


def test_reversal_of_a_capped_stay_takes_back_exactly():
    first = stay("S", "2025-02-01", "XY1", a=600200)
    out = run([first, reversal_of(first, "2025-02-10"), stay("S", "2025-03-01", "XY1", a=600200)])
    assert out["hifp_pay"].to_list() == [yuan(550000), -yuan(550000), yuan(550000)]
    assert out["hifp_cap_cut"].to_list() == [yuan(2000), -yuan(2000), yuan(2000)]


def test_one_deductible_per_stay_over_its_interim_settlements():
    """A-5 pattern: the lines of one stay (same mdtrt_id) share one deductible: 300 + 400 at level 2 (500)."""
    first = stay("S", "2025-05-10", "XY2", a=300, mdtrt_id="M1")
    second = stay("S", "2025-05-20", "XY2", a=400, mdtrt_id="M1")
    other = stay("S", "2025-05-25", "XY2", a=600, mdtrt_id="M2")
    out = run([first, second, other])
    assert out["act_pay_dedc"].to_list() == [yuan(300), yuan(200), yuan(500)]
    assert out["hifp_pay"].to_list() == [0, yuan(180), yuan(90)]
    # a reversal of the first gives its 300 back to the stay's deductible
    out = run([first, reversal_of(first, "2025-05-15"), second])
    assert out["act_pay_dedc"].to_list() == [yuan(300), -yuan(300), yuan(400)]
    assert out["hifp_pay"].to_list() == [0, 0, 0]
