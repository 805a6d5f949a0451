"""Xiangyang employee outpatient pooling (POLICY §4.3), status and benefit period, with hand-computed numbers."""

from __future__ import annotations

import polars as pl
import pytest

from flows.policies import load_policies
from tests.builders import employee, employment, line, lines, registers, reversal_of, yuan
from transforms.engine import adjudicate
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
RETIRED = [employment("R", "2010-01-01", psn_type="12")]
IN_SERVICE = [employment("S", "2015-01-01")]


def op(psn: str, when: str, inst: str = "XY1", a: float | str = 0, b: float | str = 0, **kw) -> dict:
    return line(psn, when, inst, kw.pop("med_type", "11"), a=yuan(a), b=yuan(b), insutype="310", **kw)


def run(rows, emps) -> pl.DataFrame:
    """Engine result in line order; the reference twin must agree on the basic fund of every line."""
    persons = [employee(p) for p in sorted({r["psn_no"] for r in rows} | {e["psn_no"] for e in emps})]
    regs = registers(persons, employment=emps)
    out = adjudicate(lines(rows), regs, POL).adjudicated.sort("setl_time")
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL)
    by_id = {r["setl_id"]: r for r in ref}
    for r in out.to_dicts():
        for col in ("hifp_pay", "act_pay_dedc", "hifp_cap_cut", "pool_prop_selfpay"):
            assert r[col] == by_id[r["setl_id"]][col], (r["setl_id"], col)
    return out


@pytest.mark.parametrize("inst, paid", [("XY1", "1280"), ("XY2", "1120"), ("XY3", "960")])
def test_e1_e2_retired_one_visit_by_level(inst, paid):
    """E1/E2: retired, 2,000 class A on 15 December: (2000 − 400) × 80% / 70% / 60%."""
    r = run([op("R", "2025-12-15", inst, a=2000)], RETIRED).row(0, named=True)
    assert r["hifp_pay"] == yuan(paid)
    assert r["act_pay_dedc"] == yuan(400)
    assert r["fund_pay_sumamt"] == yuan(paid) and r["hifmi_pay"] == r["maf_pay"] == 0
    assert r["psn_part_amt"] == yuan(2000) - yuan(paid)
    assert r["acct_allowed"] and r["benefit_block"] is None and r["emp_status"] == "retired"


def test_e3_in_service_two_visits():
    """E3: in service, 400 then 300 at level 1: 0 (400 of 500 used), then 100 to the deductible and 200 × 70%."""
    out = run([op("S", "2025-03-01", a=400), op("S", "2025-03-08", a=300)], IN_SERVICE)
    assert out["hifp_pay"].to_list() == [0, yuan(140)]
    assert out["act_pay_dedc"].to_list() == [yuan(400), yuan(100)]
    assert "BELOW_DEDUCTIBLE" in out["reason_codes"][0]


def test_e8_retired_1765_40():
    """E8: (1765.40 − 400) × 80% = 1,092.32."""
    r = run([op("R", "2025-12-15", a="1765.40")], RETIRED).row(0, named=True)
    assert r["hifp_pay"] == yuan("1092.32")
    assert r["psn_part_amt"] == yuan("673.08")


def test_class_b_in_full_and_out_of_catalogue_never_counts():
    """A-16: employee outpatient takes class B in full; out-of-catalogue and over-limit count toward nothing.
    In service, level 2: A 300 + B 300 (+ 1,000 own, 50 over): 500 to the deductible, 100 × 60% = 60."""
    r = run([op("S", "2025-05-05", "XY2", a=300, b=300, own=yuan(1000), over=yuan(50))], IN_SERVICE).row(0, named=True)
    assert r["preselfpay_amt"] == 0 and r["inscp_scp_amt"] == yuan(600)
    assert r["act_pay_dedc"] == yuan(500) and r["hifp_pay"] == yuan(60)


def test_deductible_reached_before_retiring_is_paid_at_once_after():
    """500 in service reached the deductible (all of it to the deductible); after retiring nothing more is taken."""
    emps = [employment("P", "2015-01-01", "2025-05-31"), employment("P", "2025-06-01", psn_type="12")]
    out = run([op("P", "2025-02-01", a=300), op("P", "2025-04-01", a=200), op("P", "2025-06-15", a=100)], emps)
    assert out["hifp_pay"].to_list() == [0, 0, yuan(80)]
    assert out["act_pay_dedc"].to_list() == [yuan(300), yuan(200), 0]
    assert out["emp_status"].to_list() == ["in_service", "in_service", "retired"]


def test_450_in_service_is_already_above_the_retired_400():
    """450 accumulated in service (below 500): after retiring the threshold is 400, already passed: 100 × 80%."""
    emps = [employment("P", "2015-01-01", "2025-05-31"), employment("P", "2025-06-01", psn_type="12")]
    out = run([op("P", "2025-03-01", a=450), op("P", "2025-07-01", a=100)], emps)
    assert out["hifp_pay"].to_list() == [0, yuan(80)]
    assert out["act_pay_dedc"].to_list() == [yuan(450), 0]


def test_cap_2700_rises_to_3100_on_retirement():
    """One running total across retirement: in service the cap stops at 2,700; once retired 400 more may be paid."""
    emps = [employment("P", "2015-01-01", "2025-05-31"), employment("P", "2025-06-01", psn_type="12")]
    rows = [op("P", "2025-02-01", a=5000), op("P", "2025-03-01", a=1000),
            op("P", "2025-06-10", a=1000), op("P", "2025-07-10", a=1000)]
    out = run(rows, emps)
    # 5000: (5000−500)×70% = 3150 → 2700 (cap); 1000 → 0 (cap reached); retired: 800 → 400 (3100 − 2700); → 0
    assert out["hifp_pay"].to_list() == [yuan(2700), 0, yuan(400), 0]
    assert out["hifp_cap_cut"].to_list() == [yuan(450), yuan(700), yuan(400), yuan(800)]
    codes = out["reason_codes"].to_list()
    assert "EMP_OP_CAP_PARTLY" in codes[0] and "EMP_OP_CAP_REACHED" in codes[1]
    assert "EMP_OP_CAP_PARTLY" in codes[2] and "EMP_OP_CAP_REACHED" in codes[3]
    assert not any("CAP_REACHED," in c or c.endswith(",CAP_REACHED") for c in codes)  # not the A-17 cap


def test_pharmacy_claim_at_the_prescribers_level():
    """A-11: a pharmacy claim takes the prescribing institution's level; without one it is not a pooling claim."""
    rows = [op("R", "2025-02-01", a=400),  # the deductible used up first
            op("R", "2025-03-01", "XYP", a=100, med_type="41", presc_fixmedins_code="XY2"),
            op("R", "2025-03-02", "XYP", a=100, med_type="41", presc_fixmedins_code="XY3"),
            op("R", "2025-03-03", "XYP", a=100, med_type="41")]
    out = run(rows, RETIRED)
    assert out["ledger"].to_list() == ["outpatient_pool", "pharmacy", "pharmacy", "pharmacy"]
    assert out["hifp_pay"].to_list() == [0, yuan(70), yuan(60), 0]
    assert "NO_PRESCRIBING_INSTITUTION" in out["reason_codes"][3]
    assert "prescribing institution's level 2 (A-11)" in out["explanation"][1]
    # the line without a prescriber counted toward nothing: a next visit has nothing more to the deductible
    assert out["act_pay_dedc"].to_list() == [yuan(400), 0, 0, 0]


def test_maternity_outpatient_and_out_of_city_are_general_outpatient():
    """§4.4: med_type 51 is general outpatient care; out of the city the same Xiangyang rules (no registration)."""
    out = run([op("R", "2025-02-01", "XY1", a=500, med_type="51"), op("R", "2025-02-02", "WH2", a=100)], RETIRED)
    assert out["ledger"].to_list() == ["outpatient_pool", "outpatient_pool"]
    assert out["hifp_pay"].to_list() == [yuan(80), yuan(70)]


def test_flexible_worker_waiting_period_no_fund_no_account_counts_toward_nothing():
    """A flexible worker's first 6 months from 2025-01-10: no fund, nothing counts; the personal account may not
    pay the outpatient line, but may pay the stay's share (A-26: the bar covers outpatient-type lines only).
    Account: credits of 2% × 3,450 = 69 on 1 May, 1 June, 1 July (the run's months; no opening balance) = 207; the
    outpatient line of 1 May is all cash; the stay of 9 July (5,000, no fund) takes the 207.
    From 2025-07-10 the deductible is still whole: 600 → 100 above it × 70% = 70; the account is empty: cash."""
    emps = [employment("F", "2025-01-10", flexible=True)]
    out = run([op("F", "2025-05-01", a=1000), line("F", "2025-07-09", "XY2", "21", a=yuan(5000), insutype="310"),
               op("F", "2025-07-10", a=600)], emps)
    assert out["hifp_pay"].to_list() == [0, 0, yuan(70)]
    assert out["act_pay_dedc"].to_list() == [0, 0, yuan(500)]
    assert out["benefit_block"].to_list() == ["WAITING_PERIOD", "WAITING_PERIOD", None]
    assert out["acct_allowed"].to_list() == [False, True, True]  # the stay's share may come from the account
    assert out["acct_pay"].to_list() == [0, yuan(207), 0]  # 3 × 69 on the stay
    assert "WAITING_PERIOD" in out["reason_codes"][0] and "2025-07-10" in out["explanation"][0]
    assert out["psn_cash_pay"][0] == out["medfee_sumamt"][0]


def test_waiting_months_start_at_the_earliest_flexible_period():
    """The wait runs from the EARLIEST flexible period: a second flexible period does not restart it."""
    emps = [employment("F", "2024-03-01", "2024-12-31", flexible=True), employment("F", "2025-02-01", flexible=True)]
    out = run([op("F", "2025-02-05", a=600)], emps)
    assert out["benefit_block"][0] is None and out["hifp_pay"][0] == yuan(70)


def test_suspension_no_fund_but_account_allowed():
    emps = [employment("S", "2015-01-01", "2025-03-31"), employment("S", "2025-04-01", "2025-05-31", benefit="suspended"),
            employment("S", "2025-06-01")]
    out = run([op("S", "2025-04-10", a=1000), op("S", "2025-06-10", a=600)], emps)
    assert out["benefit_block"].to_list() == ["SUSPENDED", None]
    assert out["acct_allowed"].to_list() == [True, True]
    assert out["hifp_pay"].to_list() == [0, yuan(70)]  # the suspended 1,000 did not count toward the deductible
    assert "SUSPENDED" in out["reason_codes"][0] and "the personal account may pay" in out["explanation"][0]


@pytest.mark.parametrize("benefit, code, acct_outpatient", [("arrears", "ARREARS", True),
                                                             ("unverified", "UNVERIFIED", True),
                                                             ("terminated", "TERMINATED", False)])
def test_other_benefit_states(benefit, code, acct_outpatient):
    """No fund pays on a stay nor on an outpatient line; the account may pay the stay's share in every state
    (termination too: A-26), and the outpatient line's only outside the hard kind (termination)."""
    emps = [employment("S", "2015-01-01", "2025-03-31"), employment("S", "2025-04-01", benefit=benefit)]
    out = run([line("S", "2025-04-10", "XY1", "21", a=yuan(3000), insutype="310"), op("S", "2025-04-11", a=300)],
              emps)
    assert out["hifp_pay"].to_list() == [0, 0] and out["act_pay_dedc"].to_list() == [0, 0]
    assert out["benefit_block"].to_list() == [code, code]
    assert out["acct_allowed"].to_list() == [True, acct_outpatient]
    assert code in out["reason_codes"][0]


def test_employer_enrolment_month():
    """The month of the earliest non-flexible period: no fund, no account; the next month is covered."""
    emps = [employment("N", "2025-03-15")]
    out = run([op("N", "2025-03-20", a=1000), op("N", "2025-04-02", a=600)], emps)
    assert out["benefit_block"].to_list() == ["EMPLOYER_ENROLMENT_MONTH", None]
    assert out["acct_allowed"].to_list() == [False, True]
    assert out["hifp_pay"].to_list() == [0, yuan(70)]


def test_no_employment_period_is_not_insured():
    """A-27: a date no period covers is the hard kind (not insured that day): no fund; on the outpatient line the
    account may not pay either (everything cash), on the stay it may (A-26). 1,000 outpatient: cash 1,000."""
    emps = [employment("N", "2015-01-01", "2025-02-28")]
    out = run([op("N", "2025-03-20", a=1000), line("N", "2025-03-21", "XY2", "21", a=yuan(4000), insutype="310")],
              emps)
    assert out["benefit_block"].to_list() == ["NO_EMPLOYMENT_PERIOD"] * 2 and out["hifp_pay"].to_list() == [0, 0]
    assert out["acct_allowed"].to_list() == [False, True]
    assert out["psn_cash_pay"][0] == yuan(1000)  # all cash: 1,000
    assert "the personal account may not pay either" in out["explanation"][0]
    assert out["emp_status"][0] is None


def test_latest_period_wins_and_ties_take_the_favourable_one():
    """Overlapping periods: the one that began last; same begin date: benefit normal first, then retired."""
    emps = [employment("P", "2015-01-01"), employment("P", "2025-03-01", benefit="suspended"),
            employment("Q", "2015-01-01"), employment("Q", "2015-01-01", psn_type="12"),
            employment("Q", "2015-01-01", benefit="arrears", psn_type="12")]
    out = run([op("P", "2025-02-01", a=100), op("P", "2025-03-05", a=100), op("Q", "2025-03-05", a=100)], emps)
    assert out["benefit_block"].to_list() == [None, "SUSPENDED", None]
    assert out["emp_status"].to_list() == ["in_service", "in_service", "retired"]


def test_reversal_moves_the_deductible_and_cap_back():
    """A reversed visit is taken back from the deductible: the next visit faces the whole deductible again."""
    first = op("S", "2025-03-01", a=600)
    rev = reversal_of(first, "2025-03-05")
    out = run([first, rev, op("S", "2025-03-10", a=600)], IN_SERVICE)
    assert out["hifp_pay"].to_list() == [yuan(70), -yuan(70), yuan(70)]
    assert out["act_pay_dedc"].to_list() == [yuan(500), -yuan(500), yuan(500)]
    # and with the original from an earlier month's run, the accumulators carried
    month1 = adjudicate(lines([first]), registers([employee("S")], employment=IN_SERVICE), POL)
    month2 = adjudicate(lines([rev, op("S", "2025-04-10", a=600)]), registers([employee("S")], employment=IN_SERVICE),
                        POL, carried=month1.accumulators, originals=month1.adjudicated)
    got = month2.adjudicated.sort("setl_time")
    assert got["hifp_pay"].to_list() == [-yuan(70), yuan(70)]
    acc = {r["name"]: r["value"] for r in month2.accumulators.to_dicts()}
    assert acc["emp_op_ded"] == yuan(600) and acc["emp_op_paid"] == yuan(70)


def test_year_restarts_the_deductible_and_cap():
    out = run([op("R", "2025-12-30", a=400), op("R", "2026-01-02", a=400)], RETIRED)
    assert out["hifp_pay"].to_list() == [0, 0]
    assert out["act_pay_dedc"].to_list() == [yuan(400), yuan(400)]


def test_every_zero_has_a_reason_and_no_resident_codes_leak():
    emps = [employment("S", "2015-01-01")]
    out = run([op("S", "2025-03-01", a=100), line("S", "2025-03-02", "XY1", "14", a=yuan(100), insutype="310")], emps)
    assert "BELOW_DEDUCTIBLE" in out["reason_codes"][0]
    assert out["reason_codes"][1] == "NOT_CERTIFIED"
    for codes in out["reason_codes"]:
        assert "HIFMI" not in codes and "MAF" not in codes
