"""Xiangyang residents (POLICY §4.7) with hand-computed numbers: general outpatient pays 50% of the year's first
800 yuan of outpatient cost (across months), chronic care 60% above a yearly 600 (dialysis, anti-rejection and
severe mental illness 80%); every line that needs a parameter the source lacks stops the run naming it."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from flows.policies import MissingParameter, load_policies
from tests.builders import line, lines, person, registers, reversal_of, yuan
from transforms.engine import adjudicate
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
R = "R1"
CERTS = [(R, "C1", "N18.5", "special_dialysis", dt.date(2024, 1, 1), None),
         (R, "C2", "I11.9", "chronic", dt.date(2024, 1, 1), None),
         (R, "C3", "F20.0", "special_mental", dt.date(2024, 1, 1), None),
         (R, "D1", "E11", "special_drug", dt.date(2024, 1, 1), None)]


def regs(idents=()):
    return registers([person(R, admdvs="420602")], identities=idents, certifications=CERTS)


def run(rows, idents=(), **kw):
    """Engine result by setl_id, after checking the reference gives the same lines to the fen."""
    r = regs(idents)
    res = adjudicate(lines(rows), r, POL, **kw)
    carried = kw.get("carried")
    carried = None if carried is None else {(x["psn_no"], x["year"], x["name"]): x["value"] for x in carried.to_dicts()}
    ref, _ = adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in r.items()}, POL, carried)
    cols = ["hifp_pay", "act_pay_dedc", "pool_prop_selfpay", "hifp_cap_cut", "psn_cash_pay"]
    assert res.adjudicated.sort("setl_id").select("setl_id", *cols).to_dicts() == sorted(
        ({k: x[k] for k in ("setl_id", *cols)} for x in ref), key=lambda x: x["setl_id"])
    return {x["setl_id"]: x for x in res.adjudicated.to_dicts()}, res


def test_three_visits_cross_the_800_across_months():
    v1 = line(R, "2025-01-10", "XY1", "11", a=yuan(300))
    v2 = line(R, "2025-03-10", "XY2", "11", a=yuan(400), b=yuan(50))  # class B in full outside stays
    v3 = line(R, "2025-06-10", "XY3", "11", a=yuan(200))
    got, res = run([v1, v2, v3])
    # 50% × 300 = 150; 50% × 450 = 225 (750 of 800 used); only 50 of the 200 is left: 50% × 50 = 25
    assert [got[v["setl_id"]]["hifp_pay"] for v in (v1, v2, v3)] == [yuan(150), yuan(225), yuan(25)]
    assert got[v3["setl_id"]]["psn_cash_pay"] == yuan(175)
    assert "XY_OP_COST_LIMIT_PARTLY" in got[v3["setl_id"]]["reason_codes"]
    acc = {r["name"]: r["value"] for r in res.accumulators.to_dicts()}
    assert (acc["xyr_op_cost"], acc["xyr_op_paid"]) == (yuan(800), yuan(400))
    # the same months run one by one, each starting from the accumulators of the month before
    carried = None
    for v in (v1, v2, v3):
        month, _ = run([v], carried=carried)
        assert month[v["setl_id"]]["hifp_pay"] == got[v["setl_id"]]["hifp_pay"]
        carried = adjudicate(lines([v]), regs(), POL, carried=carried).accumulators
    # a fourth visit pays nothing: the year's 800 is used up
    v4 = line(R, "2025-09-01", "XY1", "13", a=yuan(100))
    assert run([v1, v2, v3, v4])[0][v4["setl_id"]]["hifp_pay"] == 0


def test_reversal_frees_the_800_it_used():
    v1 = line(R, "2025-01-10", "XY1", "11", a=yuan(700))
    back = reversal_of(v1, "2025-02-01")
    v2 = line(R, "2025-03-10", "XY1", "11", a=yuan(500))
    got, _ = run([v1, back, v2])
    assert (got[v1["setl_id"]]["hifp_pay"], got[back["setl_id"]]["hifp_pay"], got[v2["setl_id"]]["hifp_pay"]) == (
        yuan(350), -yuan(350), yuan(250))


def test_chronic_year_crosses_600_then_dialysis_at_80_percent():
    c1 = line(R, "2025-02-01", "XY2", "14", a=yuan(500), dise_cert_code="C2")
    c2 = line(R, "2025-04-01", "XY2", "140104", a=yuan(300), dise_cert_code="C2")
    d1 = line(R, "2025-05-01", "XY3", "14", a=yuan(1000), dise_cert_code="C1")
    m1 = line(R, "2025-06-01", "XY3", "140201", a=yuan(250), dise_cert_code="C3")
    got, res = run([c1, c2, d1, m1])
    # 500 all deductible; 300: 100 to the deductible, 60% × 200 = 120; then dialysis 80% × 1,000, mental 80% × 250
    assert [(got[x["setl_id"]]["act_pay_dedc"], got[x["setl_id"]]["hifp_pay"]) for x in (c1, c2, d1, m1)] == [
        (yuan(500), 0), (yuan(100), yuan(120)), (0, yuan(800)), (0, yuan(200))]
    assert "BELOW_DEDUCTIBLE" in got[c1["setl_id"]]["reason_codes"]
    acc = {r["name"]: r["value"] for r in res.accumulators.to_dicts()}
    assert acc["xyr_chronic_ded"] == yuan(600)
    # a new year starts the 600 again (POLICY §1.1)
    n1 = line(R, "2026-01-05", "XY2", "14", a=yuan(700), dise_cert_code="C1")
    assert run([c1, c2, d1, n1])[0][n1["setl_id"]]["hifp_pay"] == yuan(80)  # 80% × (700 − 600)


def test_pharmacy_and_uncertified_chronic_lines_are_adjudicated_at_zero():
    ph = line(R, "2025-02-01", "XYP", "41", a=yuan(100))
    nc = line(R, "2025-02-02", "XY2", "14", a=yuan(100))
    got, _ = run([ph, nc])
    assert got[ph["setl_id"]]["hifp_pay"] == got[nc["setl_id"]]["hifp_pay"] == 0
    assert "PHARMACY_NOT_COVERED" in got[ph["setl_id"]]["reason_codes"]
    assert "NOT_CERTIFIED" in got[nc["setl_id"]]["reason_codes"]
    assert "RULE_PENDING" not in got[ph["setl_id"]]["reason_codes"]


@pytest.mark.parametrize("row, idents, missing", [
    (dict(inst="XY2", med_type="21"), (), "inpatient.deductible_in_city"),
    (dict(inst="WH2", med_type="21"), (), "inpatient.offsite_preselfpay_rate"),
    (dict(inst="XY2", med_type="28"), (), "inpatient.fund_rate"),
    (dict(inst="XY2", med_type="52"), (), "inpatient.deductible_in_city"),
    (dict(inst="XY1", med_type="9901"), (), "two_disease.fund_rate"),
    (dict(inst="XYP", med_type="41", dise_cert_code="D1"), (), "chronic.special_drug_rate"),
    (dict(inst="WH1", med_type="11"), (), "outpatient_pool.offsite_requires_enabled"),
    (dict(inst="XY1", med_type="11"), ((R, "dibao", dt.date(2024, 1, 1), None),), "assistance.class_by_identity"),
])
def test_a_line_needing_a_missing_parameter_stops_the_run_naming_it(row, idents, missing):
    kw = {k: v for k, v in row.items() if k not in ("inst", "med_type")}
    rows = [line(R, "2025-03-01", "XY1", "11", a=yuan(100)),
            line(R, "2025-03-02", row["inst"], row["med_type"], a=yuan(5000), **kw)]
    r = regs(idents)
    with pytest.raises(MissingParameter) as e:
        adjudicate(lines(rows), r, POL)
    assert e.value.name == missing and f"xiangyang/resident/{missing}" in str(e.value)
    with pytest.raises(MissingParameter) as e:
        adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in r.items()}, POL)
    assert e.value.name == missing


def test_an_assistance_identity_outside_its_validity_does_not_stop():
    idents = ((R, "dibao", dt.date(2025, 6, 1), None),)
    got, _ = run([line(R, "2025-03-01", "XY1", "11", a=yuan(100))], idents)
    assert [x["hifp_pay"] for x in got.values()] == [yuan(50)]
    assert pl.Series([x["reason_codes"] for x in got.values()]).str.contains("NO_ASSISTANCE_IDENTITY").all()
