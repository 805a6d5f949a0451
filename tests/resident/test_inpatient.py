"""Suizhou resident stays (POLICY §3.5–§3.7) with hand-computed numbers."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from flows.policies import MissingParameter, load_policies
from tests.builders import line, lines, person, registers, reversal_of, yuan
from transforms.engine import adjudicate

POL = load_policies()


def run(rows, regs, carried=None, originals=None):
    return adjudicate(lines(rows), regs, POL, carried=carried, originals=originals).adjudicated


def one(rows, regs, **kw) -> dict:
    return run(rows, regs, **kw).row(0, named=True)


def test_e6_ordinary_resident_level2_stay():
    """POLICY E6: class A 20,000 at level 2 → basic fund (20000−500)×80% = 15,600."""
    r = one([line("P1", "2025-05-10", "SZ2", a=yuan(20000))], registers([person("P1")]))
    assert r["hifp_pay"] == yuan(15600)
    assert r["act_pay_dedc"] == yuan(500)
    assert r["inscp_scp_amt"] == yuan(20000)
    assert r["pool_prop_selfpay"] == yuan(3900)
    assert r["psn_part_amt"] == yuan(4400)
    assert r["fund_pay_sumamt"] + r["psn_cash_pay"] == r["medfee_sumamt"]


def test_engine_output_passes_its_pandera_models():
    from schemas.outputs import Accumulators, Adjudicated
    regs = registers([person("P1"), person("P2")])
    res = adjudicate(lines([line("P1", "2025-05-10", "SZ2", a=yuan(20000)), line("P2", "2025-05-11", "SZV", "11",
                                                                                  a=yuan(30))]), regs, POL)
    Adjudicated.validate(res.adjudicated, lazy=True)
    Accumulators.validate(res.accumulators, lazy=True)
    bad = res.adjudicated.with_columns(pl.col("psn_cash_pay") + 1)
    with pytest.raises(Exception, match="amounts_add_up"):
        Adjudicated.validate(bad, lazy=True)


@pytest.mark.parametrize("year, exempt_deductible", [(2025, True), (2026, False)])
def test_dibao_deductible_exempt_in_2025_not_2026(year, exempt_deductible):
    """§3.6: dibao has no inpatient deductible in the transition period; from 2026 the ordinary one."""
    regs = registers([person("P1")], identities=[("P1", "dibao", dt.date(2020, 1, 1), None)])
    r = one([line("P1", f"{year}-03-01", "SZ2", a=yuan(10000))], regs)
    if exempt_deductible:
        assert r["act_pay_dedc"] == 0 and r["hifp_pay"] == yuan(8000)
        assert "DEDUCTIBLE_EXEMPT" in r["reason_codes"]
    else:
        assert r["act_pay_dedc"] == yuan(500) and r["hifp_pay"] == yuan(7600)


def test_identity_must_be_valid_on_the_settlement_date():
    regs = registers([person("P1")], identities=[("P1", "tekun", dt.date(2025, 6, 1), None)])
    before = one([line("P1", "2025-05-31", "SZ1", a=yuan(1000))], regs)
    after = one([line("P1", "2025-06-01", "SZ1", a=yuan(1000))], regs)
    assert before["act_pay_dedc"] == yuan(200) and before["hifp_pay"] == yuan(720)
    assert after["act_pay_dedc"] == 0 and after["hifp_pay"] == yuan(900)


def test_class_b_pre_self_pay_and_level3():
    """§1.4: B 1,000 → pre-self-pay 100; in scope 5,000 + 900; level 3: (5900 − 900) × 70% = 3,500."""
    r = one([line("P1", "2025-02-01", "SZ3", a=yuan(5000), b=yuan(1000), own=yuan(300), over=yuan(45.5))],
            registers([person("P1")]))
    assert r["preselfpay_amt"] == yuan(100)
    assert r["inscp_scp_amt"] == yuan(5900)
    assert r["hifp_pay"] == yuan(3500)
    assert r["psn_part_amt"] == r["medfee_sumamt"] - yuan(3500)


@pytest.mark.parametrize("offsite, pre_rate", [("101", 10), ("903", 20)])
def test_out_of_city_stay(offsite, pre_rate):
    """§3.6: out of city, level 2: in scope 10,000; pre-self-pay 10%/20% first (A-4), deductible 1,500, 80%."""
    r = one([line("P1", "2025-04-01", "WH2", a=yuan(10000), offsite_type=offsite)], registers([person("P1")]))
    pre = yuan(10000) * pre_rate // 100
    assert r["offsite_preselfpay_amt"] == pre
    assert r["act_pay_dedc"] == yuan(1500)
    assert r["hifp_pay"] == (yuan(10000) - pre - yuan(1500)) * 80 // 100
    assert f"OFFSITE_{offsite}" in r["reason_codes"]


def test_out_of_city_without_offsite_type_is_903_unless_emergency():
    regs = registers([person("P1")])
    plain = one([line("P1", "2025-04-01", "BJ3", a=yuan(10000))], regs)
    emerg = one([line("P1", "2025-04-01", "BJ3", med_type="24", a=yuan(10000))], regs)
    assert plain["offsite_type_eff"] == "903" and plain["hifp_pay"] == yuan(4550)  # (10000−2000−1500)×70%
    assert emerg["offsite_type_eff"] == "101" and emerg["hifp_pay"] == yuan(5250)  # (10000−1000−1500)×70%


def test_rescue_not_admitted_is_a_stay_and_day_surgery_has_no_deductible():
    regs = registers([person("P1")])
    rescue = one([line("P1", "2025-04-01", "SZ2", med_type="13", a=yuan(3000), is_emergency_rescue=True)], regs)
    assert rescue["ledger"] == "inpatient" and rescue["hifp_pay"] == yuan(2000)  # (3000 − 500) × 80%
    assert "EMERGENCY_AS_STAY" in rescue["reason_codes"]
    day = one([line("P1", "2025-04-02", "SZ3", med_type="28", a=yuan(3000))], regs)
    assert day["ledger"] == "day_surgery" and day["act_pay_dedc"] == 0 and day["hifp_pay"] == yuan(2100)


def test_rounding_half_up_once_per_line():
    """0.05 fen halves: (1234.55 − 200) × 90% = 931.095 → 931.10 (half-up)."""
    r = one([line("P1", "2025-01-05", "SZ1", a=yuan("1234.55"))], registers([person("P1")]))
    assert r["hifp_pay"] == yuan("931.10")


def test_annual_cap_hit_mid_line_and_then_zero():
    """§3.7: 150,000 a year. Stays paying 120,000 then 40,000 raw → the second paid 30,000; a third 0."""
    regs = registers([person("P1")])
    rows = [line("P1", "2025-01-10", "SZ1", a=yuan(120000 / 0.9 + 200)),
            line("P1", "2025-03-10", "SZ1", a=yuan(40000 / 0.9 + 200)),
            line("P1", "2025-05-10", "SZ1", a=yuan(10200))]
    rows[0]["cls_a_amt"] = rows[0]["medfee_sumamt"] = yuan("133533.33")
    rows[1]["cls_a_amt"] = rows[1]["medfee_sumamt"] = yuan("44644.44")
    out = run(rows, regs).sort("setl_time")
    paid = out["hifp_pay"].to_list()
    assert paid[0] == yuan("119999.997") or paid[0] == yuan(120000)  # 133333.33 × 90% = 119999.997 → 120000.00
    assert paid[0] == yuan(120000)
    assert paid[1] == yuan(30000)
    assert out["hifp_cap_cut"][1] == yuan("40000.00") - yuan(30000)
    assert "CAP_PARTLY" in out["reason_codes"][1]
    assert paid[2] == 0 and "CAP_REACHED" in out["reason_codes"][2]


def test_cap_state_is_carried_in_from_earlier_months():
    regs = registers([person("P1")])
    carried = pl.DataFrame({"psn_no": ["P1"], "year": [2025], "name": ["hifp_paid"], "value": [yuan(149000)]},
                           schema={"psn_no": pl.String, "year": pl.Int32, "name": pl.String, "value": pl.Int64})
    res = adjudicate(lines([line("P1", "2025-07-01", "SZ2", a=yuan(10500))]), regs, POL, carried=carried)
    assert res.adjudicated["hifp_pay"][0] == yuan(1000)
    acc = res.accumulators.filter(pl.col("name") == "hifp_paid")
    assert acc["value"][0] == yuan(150000)


def test_trauma_stay_in_suixian_without_report_is_held():
    regs = registers([person("P1", admdvs="421321"), person("P2", admdvs="421302")])
    held = one([line("P1", "2025-02-01", "SX2", med_type="22", a=yuan(8000))], regs)
    ok = one([line("P1", "2025-02-01", "SX2", med_type="22", a=yuan(8000), trauma_report_no="PICC-1")], regs)
    other_county = one([line("P2", "2025-02-01", "SZ2", med_type="22", a=yuan(8000))], regs)
    assert held["hifp_pay"] == 0 and "HELD_FOR_REVIEW" in held["reason_codes"]
    assert ok["hifp_pay"] == yuan(6000) and other_county["hifp_pay"] == yuan(6000)


def test_held_trauma_stay_moves_nothing_and_the_releasing_line_is_judged():
    """§3.6 A-28 (issue 13 item 8). A rural poverty_exit resident of Suixian (421321: rural low-income, A-9; no
    deductible exemption) at SX2 (level 2, in county: deductible 500, 80%; §3.10 limit 8%), one stay M1.
    Held line (22, no report): A 8,000 + out of catalogue 2,000 = 10,000 (20% out of scope). It pays nothing,
    takes none of the 500 deductible, adds no critical-illness burden, and is not charged under §3.10:
    hosp_part 0 (not 2,000 − 8% × 10,000 = 1,200); the person's whole 10,000 awaits review.
    Releasing line (22, report PICC-1, same stay): A 8,000 + out of catalogue 1,000 = 9,000. The stay's deductible
    is whole: (8,000 − 500) × 80% = 6,000 (not 8,000 × 80% = 6,400 had the held line used the 500); burden
    8,000 − 6,000 = 2,000 < 12,000 → no critical illness; §3.10 on its own amounts: 1,000 / 9,000 = 11.1% > 8%,
    excess round(1,000 − 8% × 9,000) = 1,000 − 720 = 280 borne by the institution."""
    from transforms.reference.adjudicate import adjudicate_reference
    regs = registers([person("P1", admdvs="421321", rural=True)],
                     identities=[("P1", "poverty_exit", dt.date(2020, 1, 1), None)])
    rows = [line("P1", "2025-02-01", "SX2", med_type="22", a=yuan(8000), own=yuan(2000), mdtrt_id="M1"),
            line("P1", "2025-02-20", "SX2", med_type="22", a=yuan(8000), own=yuan(1000), mdtrt_id="M1",
                 trauma_report_no="PICC-1")]
    res = adjudicate(lines(rows), regs, POL)
    held, release = res.adjudicated.sort("setl_time").to_dicts()
    assert "HELD_FOR_REVIEW" in held["reason_codes"]
    assert (held["hifp_pay"], held["act_pay_dedc"], held["hifmi_pay"], held["hosp_part_amt"]) == (0, 0, 0, 0)
    assert held["psn_part_amt"] == yuan(10000)  # the whole cost awaits review
    assert not any(c.startswith("OUT_OF_SCOPE") for c in held["reason_codes"].split(","))
    assert release["act_pay_dedc"] == yuan(500) and release["hifp_pay"] == yuan(6000)  # (8,000 − 500) × 80%
    assert release["hosp_part_amt"] == yuan(280)  # 1,000 − 8% × 9,000
    acc = {r["name"]: r["value"] for r in res.accumulators.to_dicts() if r["value"]}
    assert acc["stay_ded_used:M1"] == yuan(500) and acc["hifp_paid"] == yuan(6000)
    assert acc["hifmi_burden"] == yuan(2000)  # the released line's 8,000 − 6,000 only
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL)
    assert sorted((r["hifp_pay"], r["act_pay_dedc"], r["hosp_part_amt"]) for r in ref) == [
        (0, 0, 0), (yuan(6000), yuan(500), yuan(280))]


def test_reversal_undoes_exactly_and_frees_the_cap():
    regs = registers([person("P1")])
    orig = line("P1", "2025-01-10", "SZ1", a=yuan(10200))
    rev = reversal_of(orig, "2025-01-20")
    out = run([orig, rev], regs).sort("setl_time")
    assert out["hifp_pay"].to_list() == [yuan(9000), -yuan(9000)]
    assert out["psn_cash_pay"].to_list() == [yuan(1200), -yuan(1200)]
    assert "REVERSAL" in out["reason_codes"][1]
    # and with the original from an earlier run:
    first = run([orig], regs)
    later = run([rev], regs, originals=first)
    assert later["hifp_pay"][0] == -yuan(9000) and later["act_pay_dedc"][0] == -yuan(200)


def test_missing_parameter_stops_with_its_name():
    regs = registers([person("P1")])
    with pytest.raises(MissingParameter, match=r"missing parameter suizhou/resident/\S+ in force on 2024-06-01"):
        run([line("P1", "2024-06-01", "SZ2", a=yuan(1000))], regs)


def test_e6_burden_below_threshold_pays_no_critical_illness():
    """E6: burden 20,000 − 15,600 = 4,400 < 12,000 → critical illness 0, reason given."""
    r = one([line("P1", "2025-05-10", "SZ2", a=yuan(20000))], registers([person("P1")]))
    assert r["hifmi_pay"] == 0 and "HIFMI_BELOW_THRESHOLD" in r["reason_codes"]


def test_critical_illness_bands_crossed_by_one_stay():
    """§3.8 others: level-3 stay, A 200,000: hifp (200000−900)×70% = 139,370; burden 60,630.
    F = 60% × 18,000 + 65% × 30,630 = 10,800 + 19,909.50 = 30,709.50."""
    r = one([line("P1", "2025-05-10", "SZ3", a=yuan(200000))], registers([person("P1")]))
    assert r["hifp_pay"] == yuan(139370)
    assert r["hifmi_pay"] == yuan("30709.50")
    assert r["psn_part_amt"] == yuan(200000) - yuan(139370) - yuan("30709.50")


def test_critical_illness_s1_halved_threshold_and_higher_rates():
    """S1 (dibao, 2025, no deductible): level 2, A 40,000: hifp 32,000; burden 8,000; 65% × 2,000 = 1,300."""
    regs = registers([person("P1")], identities=[("P1", "dibao", dt.date(2020, 1, 1), None)])
    r = one([line("P1", "2025-05-10", "SZ2", a=yuan(40000))], regs)
    assert r["hifp_pay"] == yuan(32000) and r["hifmi_pay"] == yuan(1300)


def test_critical_illness_accumulates_across_lines():
    """Two level-2 stays of A 40,000 (others): hifp 31,600, burden 8,400 each → 16,800: second pays 60% × 4,800."""
    regs = registers([person("P1")])
    out = run([line("P1", "2025-02-01", "SZ2", a=yuan(40000)), line("P1", "2025-03-01", "SZ2", a=yuan(40000))],
              regs).sort("setl_time")
    assert out["hifmi_pay"].to_list() == [0, yuan(2880)]


def test_emergency_visit_merged_into_the_stay_it_turned_into_has_one_deductible():
    """§3.5, §1.12: the emergency visit (13) and the stay (24) share mdtrt_id. The visit, settled first, is general
    outpatient care at its time (level 2: no outpatient pooling, 0); the stay line settles the merged stay:
    level 2: 300 + 2,000 in scope, one deductible 500, (2,300 − 500) × 80% = 1,440 owed − 0 paid = 1,440."""
    regs = registers([person("P1")])
    visit = line("P1", "2025-06-01 08:00:00", "SZ2", med_type="13", a=yuan(300), mdtrt_id="M-E1")
    stay = line("P1", "2025-06-05 10:00:00", "SZ2", med_type="24", a=yuan(2000), mdtrt_id="M-E1")
    out = run([visit, stay], regs).sort("setl_time")
    assert out["ledger"].to_list() == ["outpatient_pool", "inpatient"]
    assert out["act_pay_dedc"].to_list() == [0, yuan(500)]
    assert out["hifp_pay"].to_list() == [0, yuan(1440)]  # (2,300 − 500) × 80%
    alone = one([line("P1", "2025-06-01", "SZ2", med_type="13", a=yuan(300))], regs)
    assert alone["ledger"] == "outpatient_pool"  # an ordinary emergency visit is general outpatient care (§3.2)


def test_interim_settlements_of_one_stay_share_its_deductible_across_months():
    regs = registers([person("P1")])
    first = line("P1", "2025-06-30", "SZ3", a=yuan(600), mdtrt_id="M-S1")
    second = line("P1", "2025-07-10", "SZ3", a=yuan(5000), mdtrt_id="M-S1")
    june = adjudicate(lines([first]), regs, POL)
    july = adjudicate(lines([second]), regs, POL, carried=june.accumulators).adjudicated.row(0, named=True)
    assert june.adjudicated["act_pay_dedc"][0] == yuan(600)
    assert july["act_pay_dedc"] == yuan(300) and july["hifp_pay"] == yuan(3290)  # (5000 − 300) × 70%
