"""Suizhou resident outpatient pooling (POLICY §3.2), two-disease outpatient (§3.3) and pharmacy purchases,
with hand-computed numbers. All amounts in the docstrings are yuan; in-scope costs are chosen so that
50% is exact."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from flows.policies import load_policies
from tests.builders import INST_SCHEMA, line, lines, person, registers, reversal_of, yuan
from transforms.engine import adjudicate
from transforms.line_reasons import LINE_REASONS
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
JAN1 = dt.date(2025, 1, 1)


def regs_with(persons, certifications=(), enabled=(), extra_institutions=()):
    """Registers with some institutions enabled for cross-region outpatient settlement, and extra ones."""
    regs = registers(persons, certifications=list(certifications))
    inst = regs["institutions"].with_columns(
        pl.col("fixmedins_code").is_in(list(enabled)).alias("offsite_outpatient_enabled"))
    if extra_institutions:
        inst = pl.concat([inst, pl.DataFrame(list(extra_institutions), schema=INST_SCHEMA, orient="row")])
    regs["institutions"] = inst
    return regs


PHARMACY = ("PH1", "药房", "pharmacy", None, "pharmacy", "421302", False)


def cert(psn, code, kind, codg, begin=JAN1, end=None):
    return (psn, code, codg, kind, begin, end)


def run(rows, regs, **kw):
    return adjudicate(lines(rows), regs, POL, **kw)


def paid(rows, regs, **kw) -> list[int]:
    res = run(rows, regs, **kw).adjudicated
    order = {r["setl_id"]: i for i, r in enumerate(rows)}
    return [r["hifp_pay"] for r in sorted(res.to_dicts(), key=lambda r: order[r["setl_id"]])]


def by_id(res) -> dict[str, dict]:
    return {r["setl_id"]: r for r in res.adjudicated.to_dicts()}


def acc(res, name: str, psn: str = "P1", year: int = 2025) -> int:
    got = res.accumulators.filter((pl.col("psn_no") == psn) & (pl.col("year") == year) & (pl.col("name") == name))
    return got["value"][0] if got.height else 0


def township_days(psn, n, start="2025-01-06", a=10_000):
    """n visits on n consecutive days at the township centre SZ1 (in scope a fen, default 100 yuan → 50/day)."""
    d0 = dt.date.fromisoformat(start)
    return [line(psn, (d0 + dt.timedelta(days=i)).isoformat(), "SZ1", "11", a=a) for i in range(n)]


def agrees_with_reference(rows, regs):
    engine = run(rows, regs).adjudicated
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL)
    cols = ["setl_id", "hifp_pay", "pool_prop_selfpay", "hifp_cap_cut", "psn_cash_pay"]
    got = sorted(engine.select(cols).to_dicts(), key=lambda r: r["setl_id"])
    assert got == sorted(({k: r[k] for k in cols} for r in ref), key=lambda r: r["setl_id"])


# --------------------------------------------------------------------------- outpatient pooling (§3.2)


def test_half_of_in_scope_no_deductible_class_b_in_full():
    """Township: A 30 + B 10 (no pre-self-pay outside stays, A-16), out-of-catalogue 5 → in scope 40, fund 20."""
    rows = [line("P1", "2025-03-01", "SZ1", "11", a=yuan(30), b=yuan(10), own=yuan(5))]
    r = run(rows, registers([person("P1")])).adjudicated.row(0, named=True)
    assert r["ledger"] == "outpatient_pool"
    assert r["inscp_scp_amt"] == yuan(40) and r["preselfpay_amt"] == 0 and r["act_pay_dedc"] == 0
    assert r["hifp_pay"] == yuan(20) and r["pool_prop_selfpay"] == yuan(20)
    assert r["psn_cash_pay"] == yuan(25)
    assert "RULE_PENDING" not in r["reason_codes"]


def test_village_clinic_daily_limit_30_hit_by_two_visits_on_one_day():
    """SZV (village clinic): two visits of in scope 40 (raw 20 each) → 20, then 10 (limit 30 a day);
    the same day at SZ1 (another institution, A-20) → its own limit; the next day at SZV → 20 again."""
    rows = [line("P1", "2025-03-01 09:00:00", "SZV", "11", a=yuan(40)),
            line("P1", "2025-03-01 15:00:00", "SZV", "11", a=yuan(40)),
            line("P1", "2025-03-01 16:00:00", "SZ1", "11", a=yuan(40)),
            line("P1", "2025-03-02 09:00:00", "SZV", "11", a=yuan(40))]
    res = run(rows, registers([person("P1")]))
    assert paid(rows, registers([person("P1")])) == [yuan(20), yuan(10), yuan(20), yuan(20)]
    second = by_id(res)[rows[1]["setl_id"]]
    assert "DAILY_LIMIT" in second["reason_codes"]
    assert "daily limit 30.00 (village_clinic)" in second["explanation"]
    assert "left before 10.00, after 0.00" in second["explanation"]
    assert acc(res, "op_pool_paid") == yuan(70)


def test_township_daily_limit_50():
    """SZ1 (township): in scope 120 → raw 60 → 50 (limit); a second visit that day → 0 with its reason."""
    rows = [line("P1", "2025-03-01 09:00:00", "SZ1", "11", a=yuan(120)),
            line("P1", "2025-03-01 11:00:00", "SZ1", "13", a=yuan(20))]
    res = run(rows, registers([person("P1")]))
    assert paid(rows, registers([person("P1")])) == [yuan(50), 0]
    first, second = (by_id(res)[r["setl_id"]] for r in rows)
    assert "DAILY_LIMIT" in first["reason_codes"] and "DAILY_LIMIT" in second["reason_codes"]
    assert first["pool_prop_selfpay"] == yuan(60)  # the rate's share; the limit's cut is the person's too
    assert first["psn_cash_pay"] == yuan(70)


def test_annual_cap_350_hit_mid_line():
    """6 township days × 50 = 300; village clinic 30 → 330; township raw 50 → 20 (cap), then 0."""
    rows = [*township_days("P1", 6),
            line("P1", "2025-02-01", "SZV", "11", a=yuan(60)),
            line("P1", "2025-02-02", "SZ1", "11", a=yuan(100)),
            line("P1", "2025-02-03", "SZ1", "11", a=yuan(100))]
    res = run(rows, registers([person("P1")]))
    assert paid(rows, registers([person("P1")])) == [yuan(50)] * 6 + [yuan(30), yuan(20), 0]
    partly, reached = by_id(res)[rows[7]["setl_id"]], by_id(res)[rows[8]["setl_id"]]
    assert "OP_POOL_CAP_PARTLY" in partly["reason_codes"]
    assert "outpatient-pooling cap 350.00: left before 20.00, after 0.00" in partly["explanation"]
    assert "OP_POOL_CAP_REACHED" in reached["reason_codes"] and reached["hifp_pay"] == 0
    assert acc(res, "op_pool_paid") == yuan(350)


def test_antenatal_51_at_level_2_without_daily_limit_counts_toward_350():
    """51 at SZ2 (level 2): in scope 400 → 200, no daily limit; township 50 → 250;
    another 51 of in scope 400 → raw 200, capped at 100 (A-1: 51 counts toward the 350)."""
    rows = [line("P1", "2025-04-01", "SZ2", "51", a=yuan(400)),
            line("P1", "2025-04-02", "SZ1", "11", a=yuan(100)),
            line("P1", "2025-04-03", "SZ3", "51", a=yuan(400))]
    res = run(rows, registers([person("P1")]))
    assert paid(rows, registers([person("P1")])) == [yuan(200), yuan(50), yuan(100)]
    first, third = by_id(res)[rows[0]["setl_id"]], by_id(res)[rows[2]["setl_id"]]
    assert "ANTENATAL_EXEMPT" in first["reason_codes"] and "DAILY_LIMIT" not in first["reason_codes"]
    assert "OP_POOL_CAP_PARTLY" in third["reason_codes"]
    assert acc(res, "op_pool_paid") == yuan(350)


@pytest.mark.parametrize("inst", ["SZ2", "SZ3"])
def test_level_2_and_3_general_outpatient_not_eligible(inst):
    rows = [line("P1", "2025-05-01", inst, "11", a=yuan(200))]
    res = run(rows, registers([person("P1")]))
    r = res.adjudicated.row(0, named=True)
    assert r["hifp_pay"] == 0 and r["pool_prop_selfpay"] == 0 and r["psn_cash_pay"] == yuan(200)
    assert "NOT_ELIGIBLE_LEVEL" in r["reason_codes"] and "RULE_PENDING" not in r["reason_codes"]
    assert "level 1 and below" in r["explanation"]
    assert acc(res, "op_pool_paid") == 0


def test_out_of_city_only_where_cross_region_settlement_is_enabled():
    """WH1 (Wuhan, level 1, facility hospital → limit 50): not enabled → 0; enabled → 50% up to 50.
    WH2 (level 2) enabled → still not eligible by level."""
    rows = [line("P1", "2025-06-01", "WH1", "11", a=yuan(60)), line("P1", "2025-06-02", "WH2", "11", a=yuan(60))]
    off = run(rows, regs_with([person("P1")])).adjudicated.sort("setl_time")
    assert off["hifp_pay"].to_list() == [0, 0]
    assert "OFFSITE_NOT_ENABLED" in off["reason_codes"][0]
    on = run(rows, regs_with([person("P1")], enabled=["WH1", "WH2"])).adjudicated.sort("setl_time")
    assert on["hifp_pay"].to_list() == [yuan(30), 0]
    assert "NOT_ELIGIBLE_LEVEL" in on["reason_codes"][1] and "OFFSITE_NOT_ENABLED" not in on["reason_codes"][1]
    big = run([line("P1", "2025-06-03", "WH1", "11", a=yuan(300))], regs_with([person("P1")], enabled=["WH1"]))
    assert big.adjudicated["hifp_pay"][0] == yuan(50)


def test_pharmacy_purchase_is_adjudicated_with_zero_and_a_reason():
    """Ledger pharmacy (41 without a special-drug qualification): handled, fund 0, PHARMACY_NOT_COVERED."""
    regs = regs_with([person("P1")], extra_institutions=[PHARMACY])
    rows = [line("P1", "2025-06-01", "PH1", "41", a=yuan(80)), line("P1", "2025-06-01", "PH1", "11", a=yuan(80))]
    out = run(rows, regs).adjudicated.sort("setl_id")
    assert out["ledger"].to_list() == ["pharmacy", "outpatient_pool"]
    assert out["hifp_pay"].to_list() == [0, 0]
    for codes in out["reason_codes"]:
        assert "PHARMACY_NOT_COVERED" in codes and "RULE_PENDING" not in codes


# --------------------------------------------------------------------------- two-disease (§3.3)


def test_hypertension_only_pool_300_then_two_disease_capped_at_450_shared():
    """Hypertension (450): outpatient pooling 6 × 50 = 300; 9901 in scope 200 → 100 (400),
    in scope 200 → 50 (450 reached), in scope 100 → 0. Two-disease paid 150, pooling 300."""
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10")])
    rows = [*township_days("P1", 6),
            line("P1", "2025-03-01", "SZ2", "9901", a=yuan(200), dise_cert_code="HT"),
            line("P1", "2025-04-01", "SZ3", "9901", a=yuan(200), dise_cert_code="HT"),
            line("P1", "2025-05-01", "SZ1", "9901", a=yuan(100), dise_cert_code="HT")]
    res = run(rows, regs)
    assert paid(rows, regs) == [yuan(50)] * 6 + [yuan(100), yuan(50), 0]
    got = by_id(res)
    assert got[rows[6]["setl_id"]]["ledger"] == "two_disease"
    assert "two-disease ceiling 450.00 (hypertension), shared" in got[rows[6]["setl_id"]]["explanation"]
    assert "left before 150.00, after 50.00" in got[rows[6]["setl_id"]]["explanation"]
    assert "TWO_DISEASE_CAP_PARTLY" in got[rows[7]["setl_id"]]["reason_codes"]
    assert "TWO_DISEASE_CAP_REACHED" in got[rows[8]["setl_id"]]["reason_codes"]
    assert acc(res, "op_pool_paid") == yuan(300) and acc(res, "two_disease_paid") == yuan(150)


def test_two_disease_payments_first_then_pooling_stops_at_the_shared_ceiling():
    """Hypertension: 9901 in scope 800 → 400; pooling then gets only 50 more (450), although its own cap is 350."""
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10")])
    rows = [line("P1", "2025-01-02", "SZ2", "9901", a=yuan(800), dise_cert_code="HT"), *township_days("P1", 3)]
    res = run(rows, regs)
    assert paid(rows, regs) == [yuan(400), yuan(50), 0, 0]
    assert "TWO_DISEASE_CAP_REACHED" in by_id(res)[rows[2]["setl_id"]]["reason_codes"]


@pytest.mark.parametrize("kinds, ceiling", [(("diabetes",), 500), (("hypertension", "diabetes"), 550)])
def test_diabetes_500_and_both_550(kinds, ceiling):
    """Pooling 300, then 9901 lines of raw 100 each until the ceiling: 100, 100, (ceiling − 500), 0 …"""
    codes = {"hypertension": ("HT", "I10"), "diabetes": ("DM", "E11.9")}
    regs = regs_with([person("P1")], certifications=[cert("P1", codes[k][0], k, codes[k][1]) for k in kinds])
    claim = codes[kinds[-1]][0]
    rows = [*township_days("P1", 6),
            *[line("P1", f"2025-03-0{i + 1}", "SZ2", "9901", a=yuan(200), dise_cert_code=claim) for i in range(4)]]
    got = paid(rows, regs)
    assert sum(got) == yuan(ceiling)
    assert got[6:] == [yuan(100), yuan(100), yuan(ceiling - 500), 0] if ceiling == 550 else [yuan(100), yuan(100), 0, 0]


def test_excluded_by_chronic_certification_i11():
    """Hypertension certified, and a chronic certification with ICD-10 I11.9 (A-23: in I10–I15):
    no two-disease benefit for hypertension; diabetes (not covered) still paid, under the diabetes-only 500."""
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10"),
                                                     cert("P1", "DM", "diabetes", "E11"),
                                                     cert("P1", "CH", "chronic", "I11.9")])
    rows = [line("P1", "2025-03-01", "SZ1", "9901", a=yuan(200), dise_cert_code="HT"),
            line("P1", "2025-03-02", "SZ1", "9901", a=yuan(1200), dise_cert_code="DM")]
    res = run(rows, regs)
    excluded, diabetes = (by_id(res)[r["setl_id"]] for r in rows)
    assert excluded["hifp_pay"] == 0 and "TWO_DISEASE_CHRONIC_EXCLUDED" in excluded["reason_codes"]
    assert "hypertension is covered by a chronic/special-disease certification" in excluded["explanation"]
    assert diabetes["hifp_pay"] == yuan(500) and "two-disease ceiling 500.00 (diabetes)" in diabetes["explanation"]


def test_special_drug_qualification_excludes_nothing_and_e15_is_outside_the_range():
    regs = regs_with([person("P1")], certifications=[cert("P1", "DM", "diabetes", "E11"),
                                                     cert("P1", "SD", "special_drug", "E11"),
                                                     cert("P1", "CH", "chronic", "E15")])
    rows = [line("P1", "2025-03-01", "SZ1", "9901", a=yuan(200), dise_cert_code="DM")]
    assert paid(rows, regs) == [yuan(100)]


def test_two_disease_line_not_claimed_under_a_two_disease_certification():
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10", end=dt.date(2025, 2, 28)),
                                                     cert("P1", "CH", "chronic", "J44")])
    rows = [line("P1", "2025-03-01", "SZ1", "9901", a=yuan(200)),
            line("P1", "2025-03-02", "SZ1", "9901", a=yuan(200), dise_cert_code="CH")]
    out = run(rows, regs).adjudicated
    assert out["hifp_pay"].to_list() == [0, 0]
    assert all("TWO_DISEASE_NOT_CERTIFIED" in c for c in out["reason_codes"])


def test_two_disease_at_a_pharmacy_takes_the_prescribing_level_or_is_not_covered():
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10")],
                     extra_institutions=[PHARMACY])
    rows = [line("P1", "2025-03-01", "PH1", "9901", a=yuan(100), dise_cert_code="HT", presc_fixmedins_code="SZ1"),
            line("P1", "2025-03-02", "PH1", "9901", a=yuan(100), dise_cert_code="HT")]
    res = run(rows, regs)
    assert paid(rows, regs) == [yuan(50), 0]
    assert "PHARMACY_NOT_COVERED" in by_id(res)[rows[1]["setl_id"]]["reason_codes"]


def test_ceiling_rising_mid_year_after_it_cut_a_pooling_line():
    """Hypertension (450): 9901 in scope 800 → 400; township 50 → 50 (450 reached); six more days → 0
    (shared ceiling; pooling itself has paid only 50). Diabetes certified from 1 March → both, 550:
    pooling pays 50, 50 (550), then 0. Pooling's own 350 counts only what it paid (50 + 100)."""
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10"),
                                                     cert("P1", "DM", "diabetes", "E11", begin=dt.date(2025, 3, 1))])
    rows = [line("P1", "2025-01-02", "SZ2", "9901", a=yuan(800), dise_cert_code="HT"),
            *township_days("P1", 7, start="2025-01-10"),
            *township_days("P1", 3, start="2025-03-10")]
    res = run(rows, regs)
    assert paid(rows, regs) == [yuan(400), yuan(50)] + [0] * 6 + [yuan(50), yuan(50), 0]
    assert acc(res, "op_pool_paid") == yuan(150) and acc(res, "two_disease_paid") == yuan(400)
    agrees_with_reference(rows, regs)


def test_a25_pharmacy_purchases_under_a_certification_take_its_ledger():
    """§3.4 A-25 (issue 13 item 10): a pharmacy purchase (41 at PH1) claimed under a certification valid on the date
    is adjudicated on that certification's ledger.
    Chronic C1 (I25.1): chronic ledger, 60%, no deductible (A-3), within the 10,000 limit: 1,000 → 600.
    Hypertension HT, prescribed at SZ1 (level 1): two-disease, 50% × 300 = 150, under the 450 ceiling (§3.3).
    Hypertension HT without a prescribing institution: two-disease with no level to pay at → 0.
    No certification: the pharmacy rules of the scheme (no resident pharmacy benefit) → 0."""
    regs = regs_with([person("P1")], certifications=[cert("P1", "C1", "chronic", "I25.1"),
                                                     cert("P1", "HT", "hypertension", "I10")],
                     extra_institutions=[PHARMACY])
    rows = [line("P1", "2025-03-01", "PH1", "41", a=yuan(1000), dise_cert_code="C1"),
            line("P1", "2025-03-02", "PH1", "41", a=yuan(300), dise_cert_code="HT", presc_fixmedins_code="SZ1"),
            line("P1", "2025-03-03", "PH1", "41", a=yuan(300), dise_cert_code="HT"),
            line("P1", "2025-03-04", "PH1", "41", a=yuan(300))]
    res = run(rows, regs)
    got = [by_id(res)[r["setl_id"]] for r in rows]
    assert [g["ledger"] for g in got] == ["chronic", "two_disease", "two_disease", "pharmacy"]
    assert [g["hifp_pay"] for g in got] == [yuan(600), yuan(150), 0, 0]  # 60% × 1,000; 50% × 300; no level; none
    assert "PHARMACY_NOT_COVERED" in got[2]["reason_codes"] and "PHARMACY_NOT_COVERED" in got[3]["reason_codes"]
    assert acc(res, "two_disease_paid") == yuan(150) and acc(res, "chronic_limit_used:C1") == yuan(1000)
    assert ("suizhou", "resident", "outpatient_pool.pharmacy_certification_ledgers", "A-25") in res.used
    agrees_with_reference(rows, regs)


def test_limits_count_what_the_fund_paid_after_the_annual_cap():
    """§3.2 (rev. 3, issue 13 item 7): the daily limit and the 350 cap count what the fund actually paid after the
    150,000 annual cap (§3.7). Carried in: basic fund 140,000 paid, outpatient pooling 300 of 350.
    S  1 Mar, SZ2 stay, A 12,987.50: (12,987.50 − 500) × 80% = 9,990 → annual cap used 149,990.
    L1 5 Mar 09:00, township, in scope 100: 50% = 50, day room 50, pool room 350 − 300 = 50 → 50; annual room
       150,000 − 149,990 = 10 → pays 10, cap cut 40. The day and the pool count 10 (not 50).
    R  5 Mar 10:00, reversal of S: −9,990 → annual cap used 140,010 (room again).
    L2 5 Mar 11:00, township, in scope 100: 50, day room 50 − 10 = 40, pool room 350 − 310 = 40 → pays 40
       (counting the cut 40 would have left 0: DAILY_LIMIT and the 350 reached).
    L3 6 Mar, township, in scope 100: pool room 350 − 350 = 0 → 0.
    op_pool_paid 300 + 10 + 40 = 350; hifp_paid 140,000 + 9,990 + 10 − 9,990 + 40 = 140,050."""
    regs = registers([person("P1")])
    carried = pl.DataFrame({"psn_no": ["P1", "P1"], "year": [2025, 2025], "name": ["hifp_paid", "op_pool_paid"],
                            "value": [yuan(140000), yuan(300)]},
                           schema={"psn_no": pl.String, "year": pl.Int32, "name": pl.String, "value": pl.Int64})
    stay = line("P1", "2025-03-01", "SZ2", "21", a=yuan("12987.50"))
    rows = [stay, line("P1", "2025-03-05 09:00:00", "SZ1", "11", a=yuan(100)),
            reversal_of(stay, "2025-03-05 10:00:00"),
            line("P1", "2025-03-05 11:00:00", "SZ1", "11", a=yuan(100)),
            line("P1", "2025-03-06 09:00:00", "SZ1", "11", a=yuan(100))]
    res = run(rows, regs, carried=carried)
    got = by_id(res)
    assert [got[r["setl_id"]]["hifp_pay"] for r in rows] == [yuan(9990), yuan(10), -yuan(9990), yuan(40), 0]
    l1, l2, l3 = got[rows[1]["setl_id"]], got[rows[3]["setl_id"]], got[rows[4]["setl_id"]]
    assert l1["hifp_cap_cut"] == yuan(40) and "CAP_PARTLY" in l1["reason_codes"]  # 50 − 10
    # the day's room (40) took 50 → 40 first; the pool's room (40) then took nothing
    assert "DAILY_LIMIT" in l2["reason_codes"] and "OP_POOL_CAP" not in l2["reason_codes"]
    assert "daily limit 50.00 (township) per person, day and institution (A-20): left before 40.00, after 0.00" in (
        l2["explanation"])
    assert "OP_POOL_CAP_REACHED" in l3["reason_codes"]
    assert acc(res, "op_pool_paid") == yuan(350)  # 300 + 10 + 40
    assert acc(res, "hifp_paid") == yuan(140050)  # 140,000 + 9,990 + 10 − 9,990 + 40
    ref, state = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL,
                                      carried={("P1", 2025, "hifp_paid"): yuan(140000),
                                               ("P1", 2025, "op_pool_paid"): yuan(300)})
    assert {r["setl_id"]: r["hifp_pay"] for r in ref} == {k: v["hifp_pay"] for k, v in got.items()}
    assert state[("P1", 2025, "op_pool_paid")] == yuan(350)


def test_two_disease_ceiling_counts_what_the_fund_paid_after_the_annual_cap():
    """§3.2–§3.3 with §3.7: hypertension (shared ceiling 450), 149,900 of the basic fund carried in.
    9901 at SZ2, in scope 800: 50% = 400 → annual room 100 → pays 100; the ceiling counts 100 (not 400).
    The next 9901 line the same year (in scope 800, 400): the annual cap is reached → 0, and nothing more counts.
    Next year (2026, fresh caps) is not needed: two_disease_paid stays 100."""
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10")])
    carried = pl.DataFrame({"psn_no": ["P1"], "year": [2025], "name": ["hifp_paid"], "value": [yuan(149900)]},
                           schema={"psn_no": pl.String, "year": pl.Int32, "name": pl.String, "value": pl.Int64})
    rows = [line("P1", "2025-04-01", "SZ2", "9901", a=yuan(800), dise_cert_code="HT"),
            line("P1", "2025-04-02", "SZ2", "9901", a=yuan(800), dise_cert_code="HT")]
    res = run(rows, regs, carried=carried)
    assert [by_id(res)[r["setl_id"]]["hifp_pay"] for r in rows] == [yuan(100), 0]  # min(400, 100); room 0
    assert acc(res, "two_disease_paid") == yuan(100)  # what was paid, not the 400 before the annual cap
    assert by_id(res)[rows[1]["setl_id"]]["hifp_cap_cut"] == yuan(350)  # 450 − 100 of the ceiling left → 350, all cut


# --------------------------------------------------------------------------- reversals, months, reasons


def test_reversal_frees_the_day_and_the_caps():
    """Village clinic: 20 paid, reversed the same day, re-settled (in scope 60 → raw 30): the day's 30 is free
    again (refund and re-settle); the accumulators move back by what the original added."""
    regs = registers([person("P1")])
    orig = line("P1", "2025-03-01 09:00:00", "SZV", "11", a=yuan(40))
    rev = reversal_of(orig, "2025-03-01 09:30:00")
    again = line("P1", "2025-03-01 10:00:00", "SZV", "11", a=yuan(60))
    res = run([orig, rev, again], regs)
    got = by_id(res)
    assert [got[r["setl_id"]]["hifp_pay"] for r in (orig, rev, again)] == [yuan(20), -yuan(20), yuan(30)]
    assert acc(res, "op_pool_paid") == yuan(30)
    agrees_with_reference([orig, rev, again], regs)


def test_reversal_in_a_later_month_gives_back_shared_ceiling():
    """Hypertension: 9901 → 400 and pooling 50 in January (450 reached); the 9901 line is reversed in
    February (from the stored January result): pooling and two-disease have 400 of room again."""
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10")])
    td = line("P1", "2025-01-02", "SZ2", "9901", a=yuan(800), dise_cert_code="HT")
    jan = run([td, *township_days("P1", 2, start="2025-01-10")], regs)
    assert acc(jan, "two_disease_paid") == yuan(400) and acc(jan, "op_pool_paid") == yuan(50)
    feb_rows = [reversal_of(td, "2025-02-01"), line("P1", "2025-02-02", "SZ2", "9901", a=yuan(300),
                                                    dise_cert_code="HT")]
    feb = run(feb_rows, regs, carried=jan.accumulators, originals=jan.adjudicated)
    assert paid(feb_rows, regs, carried=jan.accumulators, originals=jan.adjudicated) == [-yuan(400), yuan(150)]
    assert acc(feb, "two_disease_paid") == yuan(150) and acc(feb, "op_pool_paid") == yuan(50)


def test_month_by_month_equals_whole_year():
    """Carried op_pool_paid and two_disease_paid: monthly runs equal one run over the year."""
    regs = regs_with([person("P1"), person("P2")],
                     certifications=[cert("P1", "HT", "hypertension", "I10"), cert("P2", "DM", "diabetes", "E11"),
                                     cert("P2", "HT2", "hypertension", "I15", begin=dt.date(2025, 4, 1))])
    rows = []
    for m in range(1, 9):
        for p, code in (("P1", "HT"), ("P2", "DM")):
            rows += [line(p, f"2025-{m:02d}-03 09:00:00", "SZV", "11", a=yuan(50)),
                     line(p, f"2025-{m:02d}-03 10:00:00", "SZV", "11", a=yuan(30)),
                     line(p, f"2025-{m:02d}-10", "SZ1", "51" if m == 5 else "11", a=yuan(90)),
                     line(p, f"2025-{m:02d}-20", "SZ2", "9901", a=yuan(70), dise_cert_code=code)]
    whole = run(rows, regs)
    carried, originals, done = None, None, []
    for m in range(1, 9):
        month_rows = [r for r in rows if r["setl_time"].month == m]
        res = run(month_rows, regs, carried=carried, originals=originals)
        done.append(res.adjudicated)
        carried = res.accumulators if carried is None else pl.concat(
            [carried.join(res.accumulators, on=["psn_no", "year", "name"], how="anti"), res.accumulators])
        originals = pl.concat(done, how="diagonal_relaxed")
    monthly = pl.concat(done).sort("setl_id")
    assert monthly.select(whole.adjudicated.columns).to_dicts() == whole.adjudicated.sort("setl_id").to_dicts()
    for p in ("P1", "P2"):
        for name in ("op_pool_paid", "two_disease_paid"):
            assert acc(whole, name, p) == carried.filter((pl.col("psn_no") == p) & (pl.col("name") == name))["value"][0]
    # P1 a month: village clinic 25 + 5 (limit 30), township 45, 9901 35 → 110; the shared 450 binds in May
    # (pooling 310 < 350, two-disease 140); P2's ceiling rises from 500 to 550 in April.
    assert acc(whole, "op_pool_paid", "P1") == yuan(310) and acc(whole, "two_disease_paid", "P1") == yuan(140)
    assert acc(whole, "op_pool_paid", "P2") + acc(whole, "two_disease_paid", "P2") == yuan(550)
    agrees_with_reference(rows, regs)


def test_every_zero_has_a_known_reason():
    regs = regs_with([person("P1")], certifications=[cert("P1", "HT", "hypertension", "I10"),
                                                     cert("P1", "CH", "special", "I12")],
                     extra_institutions=[PHARMACY])
    rows = [*township_days("P1", 9), line("P1", "2025-02-01", "SZ2", "11", a=yuan(10)),
            line("P1", "2025-02-02", "WH1", "11", a=yuan(10)), line("P1", "2025-02-03", "PH1", "41", a=yuan(10)),
            line("P1", "2025-02-04", "SZ1", "9901", a=yuan(10), dise_cert_code="HT"),
            line("P1", "2025-02-05", "SZ1", "9901", a=yuan(10)), line("P1", "2025-02-06", "SZ1", "11")]
    out = run(rows, regs).adjudicated
    for r in out.filter(pl.col("hifp_pay") == 0).to_dicts():
        codes = set(r["reason_codes"].split(","))
        assert codes & {"NOT_ELIGIBLE_LEVEL", "OFFSITE_NOT_ENABLED", "PHARMACY_NOT_COVERED", "DAILY_LIMIT",
                        "OP_POOL_CAP_REACHED", "TWO_DISEASE_CAP_REACHED", "TWO_DISEASE_NOT_CERTIFIED",
                        "TWO_DISEASE_CHRONIC_EXCLUDED", "NO_IN_SCOPE_COST"}, r
        assert codes <= set(LINE_REASONS), codes - set(LINE_REASONS)
    agrees_with_reference(rows, regs)
