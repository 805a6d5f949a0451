"""Suizhou resident chronic/special outpatient and special drugs (POLICY §3.4, A-3, A-21) with
hand-computed numbers; every scenario is also checked against the reference adjudicator."""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl
import pytest

from flows.policies import MissingParameter, load_policies
from tests.builders import line, lines, month_by_month, person, registers, reversal_of, yuan
from transforms.engine import MONEY_COLUMNS, adjudicate
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
SINCE = dt.date(2024, 1, 1)
CERTS = [
    ("P1", "C1", "I25.1", "chronic", SINCE, None),  # coronary heart disease
    ("P1", "C2", "J44.9", "chronic", SINCE, None),  # COPD: a second chronic disease, a limit of its own
    ("P1", "S1", "C34.9", "special", SINCE, None),  # lung cancer
    ("P1", "T1", "Z94.0", "special_transplant", SINCE, None),
    ("P1", "K1", "N18.5", "special_dialysis", SINCE, None),
    ("P1", "M1", "F20.0", "special_mental", SINCE, None),
    ("P1", "D1", "C34.9", "special_drug", SINCE, None),  # a drug qualification granted for lung cancer
    ("P1", "D2", "M05.9", "special_drug", SINCE, None),  # a drug for rheumatoid arthritis (no special cert)
    ("P1", "H1", "I10", "hypertension", SINCE, None),  # a two-disease qualification
]
OURS = ("chronic_over_limit_amt", "burden_excluded_amt")
COMPARED = [c for c in MONEY_COLUMNS if c not in ("cls_a_amt", "cls_b_amt", "fulamt_ownpay_amt", "overlmt_selfpay")]


def regs(certs=CERTS, identities=()):
    return registers([person("P1")], identities=identities, certifications=certs)


def chronic(when: str, cert: str | None, a: float, **kw) -> dict:
    return line("P1", when, "SZ2", kw.pop("med_type", "14"), a=yuan(a), dise_cert_code=cert, **kw)


def run(rows, registers_=None, carried=None, originals=None, check_reference=True):
    registers_ = registers_ or regs()
    res = adjudicate(lines(rows), registers_, POL, carried=carried, originals=originals)
    if check_reference:
        _agrees_with_reference(rows, registers_, res.adjudicated, carried, originals)
    return res


def _agrees_with_reference(rows, registers_, adjudicated, carried, originals):
    if originals is not None:  # the reference keeps its own results of earlier lines: whole runs only
        return
    ref_carried = None if carried is None else {(r["psn_no"], r["year"], r["name"]): r["value"]
                                                for r in carried.to_dicts()}
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in registers_.items()}, POL,
                                  carried=ref_carried)
    got = adjudicated.sort("setl_id").select("setl_id", *COMPARED, *OURS).to_dicts()
    want = [{k: r.get(k, 0) if k in OURS else r[k] for k in ("setl_id", *COMPARED, *OURS)} for r in ref]
    for g in got:  # the reference writes these on the lines of §3.4 only, and not on reversals
        for k in OURS:
            g[k] = 0 if g[k] is None else g[k]
    rev = {r["setl_id"] for r in rows if r["orig_setl_id"]}
    for w, g in zip(sorted(want, key=lambda r: r["setl_id"]), got, strict=True):
        if w["setl_id"] in rev:
            w.update({k: g[k] for k in OURS})
    assert got == sorted(want, key=lambda r: r["setl_id"])


def rows_of(res) -> list[dict]:
    return res.adjudicated.sort("setl_time", "setl_id").to_dicts()


def acc(res, name: str) -> int | None:
    hit = res.accumulators.filter(pl.col("name") == name)
    return hit["value"][0] if hit.height else None


def test_chronic_60_percent_of_1000_is_600():
    (r,) = rows_of(run([chronic("2025-03-01", "C1", 1000)]))
    assert r["ledger"] == "chronic"
    assert r["hifp_pay"] == yuan(600) and r["pool_prop_selfpay"] == yuan(400) and r["act_pay_dedc"] == 0
    assert r["chronic_over_limit_amt"] == 0 and r["burden_excluded_amt"] == 0
    assert r["psn_part_amt"] == yuan(400)
    assert "rate 60%, no deductible (A-3)" in r["explanation"]
    assert "used before 0.00, after 1000.00" in r["explanation"]


@pytest.mark.parametrize("cert, kind, rate", [("S1", "special", 70), ("T1", "special_transplant", 80),
                                              ("K1", "special_dialysis", 80), ("M1", "special_mental", 70)])
def test_special_disease_rates_and_no_limit(cert, kind, rate):
    """§3.4: special 70%, transplant and dialysis 80%, special_mental as special; no limit (A-21)."""
    (r,) = rows_of(run([chronic("2025-03-01", cert, 20000)]))
    assert r["hifp_pay"] == yuan(20000) * rate // 100
    assert r["chronic_over_limit_amt"] == 0 and "CHRONIC_LIMIT" not in r["reason_codes"]
    assert f"({kind}, ICD-10" in r["explanation"] and f"no annual limit for {kind}" in r["explanation"]


def test_special_mental_without_a_rate_of_its_own_takes_special():
    """§3.4: special_mental is a special disease unless the parameters give it a rate of its own."""
    pol = load_policies()
    param = pol.parameter("suizhou", "resident", "chronic.fund_rate")
    param.values = [dataclasses.replace(v, value={k: r for k, r in v.value.items() if k != "special_mental"})
                    for v in param.values]
    regs_, rows = regs(), [chronic("2025-03-01", "M1", 1000)]
    assert adjudicate(lines(rows), regs_, pol).adjudicated["hifp_pay"][0] == yuan(700)
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: x.to_dicts() for k, x in regs_.items()}, pol)
    assert ref[0]["hifp_pay"] == yuan(700)


def test_chronic_limit_reached_mid_line_over_part_is_the_persons_and_excluded():
    """A-21: 10,000 per disease per year. 6,000 → 3,600; 5,000: 4,000 within → 2,400, 1,000 over;
    800 → nothing (limit used up). Burden (critical illness) excludes the over-limit cost:
    2,400 + (5,000 − 2,400 − 1,000) + 0 = 4,000. A second disease has a limit of its own."""
    res = run([chronic("2025-02-01", "C1", 6000), chronic("2025-03-01", "C1", 5000),
               chronic("2025-04-01", "C1", 800), chronic("2025-04-02", "C2", 800)])
    r1, r2, r3, r4 = rows_of(res)
    assert [r["hifp_pay"] for r in (r1, r2, r3, r4)] == [yuan(3600), yuan(2400), 0, yuan(480)]
    assert r2["chronic_over_limit_amt"] == yuan(1000) and r2["burden_excluded_amt"] == yuan(1000)
    assert r2["pool_prop_selfpay"] == yuan(1600) and r2["psn_part_amt"] == yuan(2600)
    assert "CHRONIC_LIMIT_PARTLY" in r2["reason_codes"]
    assert "used before 6000.00, after 10000.00" in r2["explanation"] and "over the limit 1000.00" in r2["explanation"]
    assert r3["chronic_over_limit_amt"] == yuan(800) and "CHRONIC_LIMIT_REACHED" in r3["reason_codes"]
    assert r4["chronic_over_limit_amt"] == 0
    assert acc(res, "chronic_limit_used:C1") == yuan(10000) and acc(res, "chronic_limit_used:C2") == yuan(800)
    assert acc(res, "hifmi_burden") == yuan(2400) + yuan(1600) + 0 + yuan(320)


def test_over_limit_cost_pays_no_critical_illness():
    """A level-3 stay of 100,000: hifp (100,000 − 900) × 70% = 69,370, burden 30,630,
    critical illness 60% × 18,000 + 65% × 630 = 11,209.50. Then chronic 12,000: 10,000 within →
    6,000; 2,000 over; burden 12,000 − 6,000 − 2,000 = 4,000 → 65% × 4,000 = 2,600 (not 3,900)."""
    res = run([line("P1", "2025-02-01", "SZ3", a=yuan(100000)), chronic("2025-03-01", "C1", 12000)])
    stay, chr_ = rows_of(res)
    assert stay["hifp_pay"] == yuan(69370) and stay["hifmi_pay"] == yuan("11209.50")
    assert chr_["hifp_pay"] == yuan(6000) and chr_["chronic_over_limit_amt"] == yuan(2000)
    assert chr_["hifmi_pay"] == yuan(2600)
    assert "burden 4000.00 = in scope − basic fund − excluded 2000.00" in chr_["explanation"]


def test_special_drug_50_percent_and_at_the_rate_of_its_special_disease():
    """§3.4: a separately paid drug 50%; one for the certified special disease C34 (the qualification D1's
    C34.9 has the category of S1's C34.9, A-29) at the disease's 70%; a drug whose qualification (D2, M05.9)
    matches no special certification stays at 50%; a drug line without a diagnosis likewise by its
    qualification (D1: C34.9 → 70%)."""
    res = run([
        chronic("2025-03-01", "D2", 1000, med_type="41", dise_codg="M05.9"),
        chronic("2025-03-02", "D1", 1000, med_type="41", dise_codg="C34.1"),
        chronic("2025-03-03", "D2", 1000, med_type="41", dise_codg="I25.1"),
        chronic("2025-03-04", "D1", 1000, med_type="14"),
    ])
    plain, disease, chronic_only, by_qualification = rows_of(res)
    assert all(r["ledger"] == "special_drug" for r in (plain, disease, chronic_only, by_qualification))
    assert plain["hifp_pay"] == yuan(500) and "special drug (§3.4) under qualification D2: rate 50%" in plain["explanation"]
    assert disease["hifp_pay"] == yuan(700) and "SPECIAL_DRUG_DISEASE_RATE" in disease["reason_codes"]
    assert "belongs to certified special disease S1 (special): the disease's rate 70% instead of 50%" in \
        disease["explanation"]
    assert chronic_only["hifp_pay"] == yuan(500)
    assert by_qualification["hifp_pay"] == yuan(700)
    assert acc(res, "chronic_limit_used:D1") == yuan(2000)  # no limit for special drugs: the whole cost counts


def test_a29_the_qualification_decides_which_special_disease_a_drug_belongs_to():
    """§3.4 A-29 (issue 13 item 10): the drug's disease is its qualification's ICD-10 category, not the line's
    diagnosis. D1 (qualification C34.9, the category of special disease S1) with a line diagnosis M05.9: 70% of
    1,000 = 700 (the diagnosis would have given 50%). D2 (qualification M05.9, no special disease) with a line
    diagnosis C34.1: 50% of 1,000 = 500 (the diagnosis would have given S1's 70% = 700)."""
    res = run([chronic("2025-03-01", "D1", 1000, med_type="41", dise_codg="M05.9"),
               chronic("2025-03-02", "D2", 1000, med_type="41", dise_codg="C34.1")])
    d1, d2 = rows_of(res)
    assert d1["hifp_pay"] == yuan(700) and "SPECIAL_DRUG_DISEASE_RATE" in d1["reason_codes"]  # 70% × 1,000
    assert d2["hifp_pay"] == yuan(500) and "SPECIAL_DRUG_DISEASE_RATE" not in d2["reason_codes"]  # 50% × 1,000
    assert ("suizhou", "resident", "chronic.special_drug_disease_icd_from", "A-29") in res.used


def test_special_drug_takes_the_highest_matching_disease_rate_and_only_valid_ones():
    certs = [("P1", "S1", "N18.5", "special", SINCE, None), ("P1", "K1", "N18.0", "special_dialysis", SINCE, None),
             ("P1", "K2", "E11.2", "special_dialysis", SINCE, dt.date(2025, 1, 31)),
             ("P1", "D1", "N18.5", "special_drug", SINCE, None), ("P1", "D2", "E11.2", "special_drug", SINCE, None)]
    res = run([chronic("2025-03-01", "D1", 1000, med_type="41", dise_codg="N18.5"),
               chronic("2025-03-01", "D2", 1000, med_type="41", dise_codg="E11.2")], regs(certs))
    both, lapsed = rows_of(res)
    assert both["hifp_pay"] == yuan(800)  # N18: special 70% and dialysis 80% → the most favourable
    assert lapsed["hifp_pay"] == yuan(500)  # the E11 dialysis certification ended in January


def test_not_certified_chronic_line_pays_nothing_and_enters_no_base():
    res = run([chronic("2025-03-01", None, 1000), chronic("2025-03-02", "H1", 1000)])
    for r in rows_of(res):
        assert r["ledger"] == "chronic" and r["hifp_pay"] == 0 and "NOT_CERTIFIED" in r["reason_codes"]
        assert r["burden_excluded_amt"] == yuan(1000) and r["chronic_over_limit_amt"] == 0
    assert acc(res, "hifmi_burden") == 0 and acc(res, "chronic_limit_used:H1") is None


def test_critical_illness_on_top_of_a_large_special_disease_year():
    """Special disease at 70% (no limit). 100,000 → 70,000, burden 30,000: 60% × 18,000 = 10,800.
    100,000 again → 70,000, burden 30,000 (acc 60,000): 65% × 30,000 = 19,500.
    50,000: raw 35,000 but only 10,000 left of the 150,000 cap (§3.7); burden 40,000 (acc 100,000):
    65% × 40,000 = 26,000."""
    res = run([chronic("2025-02-01", "S1", 100000), chronic("2025-05-01", "S1", 100000),
               chronic("2025-09-01", "S1", 50000)])
    r1, r2, r3 = rows_of(res)
    assert [r["hifp_pay"] for r in (r1, r2, r3)] == [yuan(70000), yuan(70000), yuan(10000)]
    assert r3["hifp_cap_cut"] == yuan(25000) and "CAP_PARTLY" in r3["reason_codes"]
    assert [r["hifmi_pay"] for r in (r1, r2, r3)] == [yuan(10800), yuan(19500), yuan(26000)]
    assert r3["chronic_over_limit_amt"] == 0
    assert acc(res, "hifmi_burden") == yuan(100000) and acc(res, "chronic_limit_used:S1") == yuan(250000)


def test_reversal_of_a_chronic_line_moves_the_limit_back():
    """6,000 (3,600) and 5,000 (4,000 within, 1,000 over); reversing the first frees 6,000 of the
    limit: a later 3,000 is paid in full (1,800), used 4,000 + 3,000 = 7,000."""
    regs_ = regs()
    first = chronic("2025-02-01", "C1", 6000)
    second = chronic("2025-03-01", "C1", 5000)
    rev = reversal_of(first, "2025-03-10")
    later = chronic("2025-04-01", "C1", 3000)
    res = run([first, second, rev, later], regs_)
    r1, r2, rr, r4 = rows_of(res)
    assert rr["hifp_pay"] == -yuan(3600) and rr["pool_prop_selfpay"] == -yuan(2400) and rr["psn_cash_pay"] == -yuan(2400)
    assert rr["chronic_over_limit_amt"] == 0 and rr["burden_excluded_amt"] == 0
    assert "limit used of C1 moves back by 6000.00" in rr["explanation"]
    assert r4["hifp_pay"] == yuan(1800) and r4["chronic_over_limit_amt"] == 0
    assert acc(res, "chronic_limit_used:C1") == yuan(7000)
    assert acc(res, "hifmi_burden") == yuan(1600) + yuan(1200)


def test_reversal_of_an_over_limit_line_from_an_earlier_run():
    """The original comes from an earlier month's stored row: the limit moves back by what it
    counted within (hifp + cap cut + co-payment = 4,000) and its excluded 1,000 leaves the burden."""
    regs_ = regs()
    first, second = chronic("2025-02-01", "C1", 6000), chronic("2025-03-01", "C1", 5000)
    month1 = run([first, second], regs_)
    rev = reversal_of(second, "2025-04-02")
    month2 = run([rev], regs_, carried=month1.accumulators, originals=month1.adjudicated)
    (r,) = rows_of(month2)
    assert r["hifp_pay"] == -yuan(2400) and r["chronic_over_limit_amt"] == -yuan(1000)
    assert r["burden_excluded_amt"] == -yuan(1000)
    assert acc(month2, "chronic_limit_used:C1") == yuan(6000)
    assert acc(month2, "hifmi_burden") == yuan(2400)  # 2,400 + 1,600 − 1,600
    # and the whole year in one run agrees
    whole = run([first, second, rev], regs_)
    assert acc(whole, "chronic_limit_used:C1") == yuan(6000) and acc(whole, "hifmi_burden") == yuan(2400)


def test_limit_carried_in_from_earlier_months():
    carried = pl.DataFrame({"psn_no": ["P1", "P1"], "year": [2025, 2025],
                            "name": ["chronic_limit_used:C1", "chronic_limit_used:C2"],
                            "value": [yuan(9500), yuan(100)]},
                           schema={"psn_no": pl.String, "year": pl.Int32, "name": pl.String, "value": pl.Int64})
    res = run([chronic("2025-07-01", "C1", 1000)], carried=carried)
    (r,) = rows_of(res)
    assert r["hifp_pay"] == yuan(300) and r["chronic_over_limit_amt"] == yuan(500)
    assert acc(res, "chronic_limit_used:C1") == yuan(10000)
    # a disease the month's lines did not touch is not rewritten: the store keeps each name's latest value
    assert acc(res, "chronic_limit_used:C2") is None


def test_limit_restarts_on_1_january():
    res = run([chronic("2025-12-01", "C1", 12000), chronic("2026-01-02", "C1", 1000)])
    dec, jan = rows_of(res)
    assert dec["hifp_pay"] == yuan(6000) and jan["hifp_pay"] == yuan(600)


def test_month_by_month_equals_one_run():
    regs_ = regs()
    a = chronic("2025-01-05", "C1", 4000)
    rows = [a, chronic("2025-01-20", "D1", 3000, med_type="41", dise_codg="C34.1"),
            chronic("2025-02-03", "C1", 4000), reversal_of(a, "2025-02-10"), chronic("2025-02-11", "S1", 60000),
            chronic("2025-03-01", "C1", 4000), chronic("2025-03-02", "C1", 4000), chronic("2025-04-09", "K1", 90000),
            chronic("2025-05-01", "C1", 900)]
    whole = run(rows, regs_)
    runs = month_by_month(rows, lambda m, **kw: adjudicate(lines(m), regs_, POL, **kw))
    done = [r.adjudicated for r in runs]
    carried = pl.concat([r.accumulators for r in runs]).unique(["psn_no", "year", "name"], keep="last",
                                                               maintain_order=True)
    monthly = pl.concat(done).sort("setl_id")
    assert monthly.to_dicts() == whole.adjudicated.sort("setl_id").to_dicts()
    assert carried.sort("name").to_dicts() == whole.accumulators.sort("name").to_dicts()


def test_missing_parameter_stops_with_its_name():
    with pytest.raises(MissingParameter, match=r"suizhou/resident/chronic\.\w+.*2024-06-01"):
        adjudicate(lines([chronic("2024-06-01", "C1", 1000)]), regs(), POL)
