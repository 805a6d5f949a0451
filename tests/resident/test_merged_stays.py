"""An emergency visit and the stay it turned into (POLICY §1.11–§1.12, A-31), worked by hand.

Suizhou residents (§3.2, §3.6): in the city a level-2 stay has a 500 deductible and an 80% rate, class B takes a
10% pre-self-pay (A-16) on stays only; outpatient pooling pays 50% at level 1 and below (daily limit 50 at a
township centre, A-20), nothing at level 2. Xiangyang employees (§4.3, §4.4, A-10, A-12): in service, outpatient
deductible 500, level-2 rate 60%; stays at level 2: deductible 500, rate 90%.
"""

from __future__ import annotations

import polars as pl
import pytest

from flows.policies import load_policies
from tests.builders import employee, employment, line, lines, person, registers, reversal_of, yuan
from transforms.engine import adjudicate
from transforms.reference.adjudicate import adjudicate_reference
from transforms.validate import validate_settlements

POL = load_policies()


def _row(res, setl_id: str) -> dict:
    return res.adjudicated.filter(pl.col("setl_id") == setl_id).row(0, named=True)


def _acc(res, name: str, year: int = 2025) -> int:
    got = res.accumulators.filter((pl.col("name") == name) & (pl.col("year") == year))["value"]
    return int(got.sum()) if len(got) else 0


def _monthly(rows: list[dict], regs) -> list:
    """Month by month, as the flow does: carried accumulators and the earlier months' rows (store.stay_history)."""
    months = sorted({r["setl_time"].strftime("%Y-%m") for r in rows})
    carried, done, out = None, [], []
    for m in months:
        earlier = pl.concat(done, how="diagonal_relaxed") if done else None
        res = adjudicate(lines([r for r in rows if r["setl_time"].strftime("%Y-%m") == m]), regs, POL,
                         carried=carried, originals=earlier, earlier_stays=earlier)
        done.append(res.adjudicated)
        new = res.accumulators
        carried = new if carried is None else pl.concat(
            [carried.join(new, on=["psn_no", "year", "name"], how="anti"), new])
        out.append(res)
    return out


def _issue_case():
    """Issue 13 item 2: a level-2 resident's emergency visit (31 March) and the stay it turned into (3 April)."""
    e = line("P1", "2025-03-31 20:00:00", "SZ2", med_type="13", a=yuan(300), b=yuan(100), mdtrt_id="M1",
             setl_id="E1")
    s = line("P1", "2025-04-03 10:00:00", "SZ2", med_type="24", a=yuan(11_800), mdtrt_id="M1", setl_id="S1")
    return e, s


@pytest.mark.parametrize("split", [False, True], ids=["one batch", "month by month"])
def test_issue_case_level2_resident_merged_stay_owed_9352(split):
    e, s = _issue_case()
    regs = registers([person("P1")])
    if split:
        march, april = _monthly([e, s], regs)
        e_row, s_row, res = _row(march, "E1"), _row(april, "S1"), april
    else:
        res = adjudicate(lines([e, s]), regs, POL)
        e_row, s_row = _row(res, "E1"), _row(res, "S1")
    # E1 at its time is general outpatient care (§1.12, §3.2): level 2 is not an outpatient-pooling level → 0
    assert (e_row["ledger"], e_row["hifp_pay"]) == ("outpatient_pool", 0)
    # S1 settles the merged stay: class A 300 + 11,800 = 12,100, class B 100, pre-self-pay 10% × 100 = 10,
    # in scope 12,100 + 100 − 10 = 12,190; one deductible 500; 80% × (12,190 − 500) = 80% × 11,690 = 9,352.00 owed,
    # minus 0 paid on E1 = 9,352.00 (adjudicated as two unrelated things: (11,800 − 500) × 80% = 9,040.00)
    assert s_row["hifp_pay"] == yuan(9_352)
    assert s_row["inscp_scp_amt"] == yuan(12_190)  # the merged stay's in-scope cost (DATA.md §4 bound)
    assert s_row["preselfpay_amt"] == yuan(10)
    assert s_row["act_pay_dedc"] == yuan(500)
    assert s_row["merged_setl_ids"] == "E1"
    # its own bill: 11,800; the person pays 11,800 − 9,352 = 2,448 on S1 (and 400 on E1: 2,848 = 12,200 − 9,352)
    assert (s_row["medfee_sumamt"], s_row["psn_part_amt"]) == (yuan(11_800), yuan(2_448))
    # critical-illness burden of the year: 12,190 − 9,352 = 2,838 (below 12,000: nothing paid)
    assert _acc(res, "hifmi_burden") == yuan(2_838)
    assert "EMERGENCY_MERGED" not in s_row["reason_codes"]


def test_recovery_when_the_emergency_line_was_paid_more_than_the_merged_stay_owes():
    # E1: township centre (level 1), class A 100 → outpatient pooling 50% × 100 = 50 (daily limit 50: all of it)
    e = line("P1", "2025-05-30 09:00:00", "SZ1", med_type="13", a=yuan(100), mdtrt_id="M2", setl_id="E1")
    # S1 next month, level 2, class A 300: merged in scope 400 < deductible 500 → owed 0; pays 0 − 50 = −50
    s = line("P1", "2025-06-02 10:00:00", "SZ2", med_type="24", a=yuan(300), mdtrt_id="M2", setl_id="S1")
    regs = registers([person("P1")])
    may, june = _monthly([e, s], regs)
    assert _row(may, "E1")["hifp_pay"] == yuan(50)
    assert _acc(may, "op_pool_paid") == yuan(50)
    row = _row(june, "S1")
    assert row["hifp_pay"] == -yuan(50)  # 0 owed − 50 paid on E1
    assert row["act_pay_dedc"] == yuan(400)  # the merged 400 all goes to the stay's deductible
    assert "EMERGENCY_MERGED" in row["reason_codes"].split(",")
    # the person's share on S1: 300 − (−50) = 350 (with E1's 50: the whole 400 of cost, nothing paid)
    assert row["psn_part_amt"] == yuan(350)
    # the outpatient-pooling cap used by E1 is given back (50 − 50 = 0); the basic fund's year: 50 − 50 = 0
    assert _acc(june, "op_pool_paid") == 0
    assert _acc(june, "hifp_paid") == 0
    ref, _ = adjudicate_reference(lines([e, s]).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL)
    assert {r["setl_id"]: r["hifp_pay"] for r in ref} == {"E1": yuan(50), "S1": -yuan(50)}


def test_emergency_line_after_the_stay_line_is_a_line_of_the_stay():
    # S1 (level 2, class A 400) takes 400 of the 500 deductible, pays 0; E2 later (class A 1,000) is a stay line:
    # 100 left of the deductible, 80% × (1,000 − 100) = 720
    s = line("P1", "2025-07-01 10:00:00", "SZ2", med_type="21", a=yuan(400), mdtrt_id="M3", setl_id="S1")
    e = line("P1", "2025-08-01 10:00:00", "SZ2", med_type="13", a=yuan(1_000), mdtrt_id="M3", setl_id="E2")
    regs = registers([person("P1")])
    july, august = _monthly([s, e], regs)
    assert _row(july, "S1")["hifp_pay"] == 0
    row = _row(august, "E2")
    assert (row["ledger"], row["act_pay_dedc"], row["hifp_pay"]) == ("inpatient", yuan(100), yuan(720))


def test_held_trauma_line_does_not_settle_the_line_that_releases_it_does():
    # Suixian (421321) resident: trauma stays need a report. E1 13 at level 2 (outpatient: 0); H1 a 22
    # without a report (2,000 out of catalogue only): held, pays nothing, merges nothing; R1 the 22 with its
    # report releases the stay and settles it: merged class A 1,000 + 5,000 = 6,000, deductible 500,
    # 80% × 5,500 = 4,400 − 0 = 4,400
    e = line("P1", "2025-02-27 22:00:00", "SX2", med_type="13", a=yuan(1_000), mdtrt_id="M4", setl_id="E1")
    h = line("P1", "2025-02-28 10:00:00", "SX2", med_type="22", own=yuan(2_000), mdtrt_id="M4", setl_id="H1")
    r = line("P1", "2025-03-10 10:00:00", "SX2", med_type="22", a=yuan(5_000), mdtrt_id="M4", setl_id="R1",
             trauma_report_no="PICC-1")
    regs = registers([person("P1", admdvs="421321")])
    feb, march = _monthly([e, h, r], regs)
    held = _row(feb, "H1")
    assert held["hifp_pay"] == 0 and "HELD_FOR_REVIEW" in held["reason_codes"] and held["merged_setl_ids"] is None
    row = _row(march, "R1")
    assert (row["hifp_pay"], row["merged_setl_ids"]) == (yuan(4_400), "E1")


def test_emergency_line_of_the_previous_year_is_not_merged():
    # E1 on 31 Dec 2025, S1 on 2 Jan 2026 (§1.6: the settlement date decides the year): S1 alone,
    # 80% × (5,000 − 500) = 3,600
    e = line("P1", "2025-12-31 23:00:00", "SZ2", med_type="13", a=yuan(1_000), mdtrt_id="M5", setl_id="E1")
    s = line("P1", "2026-01-02 10:00:00", "SZ2", med_type="24", a=yuan(5_000), mdtrt_id="M5", setl_id="S1")
    regs = registers([person("P1")])
    dec, jan = _monthly([e, s], regs)
    row = _row(jan, "S1")
    assert (row["hifp_pay"], row["merged_setl_ids"]) == (yuan(3_600), None)
    assert _row(adjudicate(lines([e, s]), regs, POL), "S1")["hifp_pay"] == yuan(3_600)


def test_employee_outpatient_deductible_given_back_at_the_stay_line():
    # In-service employee. E1 13 at level 2, class A 800: outpatient deductible 500 (§4.3), 60% × 300 = 180
    e = line("E1P", "2025-04-29 21:00:00", "XY2", med_type="13", a=yuan(800), mdtrt_id="M6", setl_id="E1",
             insutype="310")
    # S1 in May, 21 at level 2, class A 10,000: merged 10,800, stay deductible 500, 90% × 10,300 = 9,270
    # owed; 9,270 − 180 = 9,090 paid on S1
    s = line("E1P", "2025-05-03 10:00:00", "XY2", med_type="21", a=yuan(10_000), mdtrt_id="M6", setl_id="S1",
             insutype="310")
    regs = registers([employee("E1P")], employment=[employment("E1P", "2015-01-01")])
    april, may = _monthly([e, s], regs)
    assert _row(april, "E1")["hifp_pay"] == yuan(180)
    # emp_op_ded counts the year's in-catalogue outpatient cost toward the deductible (800), emp_op_paid the pooling
    assert (_acc(april, "emp_op_ded"), _acc(april, "emp_op_paid")) == (yuan(800), yuan(180))
    assert _row(may, "S1")["hifp_pay"] == yuan(9_090)
    # given back: the outpatient cost toward the deductible 800 − 800 = 0 and the outpatient cap used 180 − 180 = 0
    assert (_acc(may, "emp_op_ded"), _acc(may, "emp_op_paid")) == (0, 0)
    # the year's basic fund: 180 − 180 + 9,270 = 9,270
    assert _acc(may, "emp_hifp_paid") == yuan(9_270)


def _validate(rows: list[dict], month: str, regs, known=None):
    raw = lines(rows).select([pl.col(c).cast(pl.String) for c in lines(rows).columns if c != "month"])
    money = ["medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt"]
    raw = raw.with_columns([(pl.col(c).cast(pl.Int64) / 100).cast(pl.String) for c in money])
    raw = raw.with_columns(pl.int_range(1, raw.height + 1).cast(pl.Int64).alias("source_row"))
    return validate_settlements(raw.drop("hifp_pay", "hifmi_pay", "maf_pay", "acct_pay", "acct_mulaid_pay",
                                         "psn_cash_pay"), month, regs, known, policies=POL)


def test_reversal_of_a_merged_emergency_line_is_rejected_in_the_same_month():
    e = line("P1", "2025-06-01 09:00:00", "SZ2", med_type="13", a=yuan(100), mdtrt_id="M7", setl_id="E1")
    s = line("P1", "2025-06-02 10:00:00", "SZ2", med_type="24", a=yuan(1_000), mdtrt_id="M7", setl_id="S1")
    before = reversal_of(e, "2025-06-01 12:00:00", setl_id="R0")  # before the stay line: a plain reversal
    after = reversal_of(e, "2025-06-03 10:00:00", setl_id="R1")
    regs = registers([person("P1")])
    accepted, rejects = _validate([e, s, after], "2025-06", regs)
    assert rejects.select("setl_id", "reason_code").to_dicts() == [{"setl_id": "R1",
                                                                    "reason_code": "REVERSAL_AFTER_MERGE"}]
    accepted, rejects = _validate([e, before, s], "2025-06", regs)
    assert rejects.height == 0 and accepted.height == 3  # rows_in 3 = accepted 3 + rejected 0


def test_reversal_of_an_emergency_line_merged_in_an_earlier_month_is_rejected():
    e = line("P1", "2025-06-01 09:00:00", "SZ2", med_type="13", a=yuan(100), mdtrt_id="M8", setl_id="E1")
    after = reversal_of(e, "2025-07-03 10:00:00", setl_id="R1")
    known = lines([e]).select("setl_id", "psn_no", "orig_setl_id", "medfee_sumamt", "fulamt_ownpay_amt",
                              "overlmt_selfpay", "cls_a_amt", "cls_b_amt", "mdtrt_id", "med_type", "setl_time",
                              "is_emergency_rescue").with_columns(pl.lit(True).alias("merged"))
    accepted, rejects = _validate([after], "2025-07", registers([person("P1")]), known)
    assert (accepted.height, rejects["reason_code"].to_list()) == (0, ["REVERSAL_AFTER_MERGE"])


HEADER = ("setl_id,mdtrt_id,psn_no,insutype,med_type,fixmedins_code,begndate,enddate,setl_time,dise_codg,"
          "dise_cert_code,offsite_type,presc_fixmedins_code,trauma_report_no,is_emergency_rescue,medfee_sumamt,"
          "fulamt_ownpay_amt,overlmt_selfpay,cls_a_amt,cls_b_amt,orig_setl_id")


def test_flow_month_by_month_equals_one_run_for_a_stay_settled_across_months(bureau, tmp_path, prefect_harness):
    """The monthly flow (store.stay_history → engine) against one engine run over every accepted line: the issue's
    level-2 case (13 on 31 March, its 24 on 3 April) and a recovery (13 at a township centre on 30 April, its 21 at
    level 2 on 2 May), an emergency line of a stay whose settling line is in the same month (April), and the
    reversal of a merged emergency line in May (REVERSAL_AFTER_MERGE: rows_in = accepted + rejected)."""
    from flows import store
    from flows.ingest import load_registers
    from flows.monthly import month_flow
    from tests.builders import q
    src = tmp_path / "in"
    (src / "reference").mkdir(parents=True)
    for f in (bureau / "reference").iterdir():
        (src / "reference" / f.name).write_bytes(f.read_bytes())
    regs = load_registers(src)
    # an ordinary Suizhou resident (no identity, no certification) and in-city institutions of levels 1 and 2
    busy = set(regs["identities"]["psn_no"]) | set(regs["certifications"]["psn_no"])
    psn = regs["persons"].filter((pl.col("insutype") == "390") & pl.col("insuplc_admdvs").str.starts_with("4213")
                                 & ~pl.col("psn_no").is_in(list(busy)) & (pl.col("insuplc_admdvs") != "421321"))
    p, county = psn["psn_no"][0], psn["insuplc_admdvs"][0]
    inst = regs["institutions"].filter(pl.col("admdvs").str.starts_with(county[:4])
                                       & (pl.col("fixmedins_type") == "hospital"))
    lv2 = inst.filter(pl.col("dedc_hosp_lv") == "2")["fixmedins_code"][0]
    lv1 = inst.filter((pl.col("dedc_hosp_lv") == "1") & (pl.col("facility") == "township"))["fixmedins_code"][0]

    def row(sid, mdtrt, mt, code, when, a, b="0.00", orig=""):
        a_f, b_f = float(a), float(b)
        return (f"{sid},{mdtrt},{p},390,{mt},{code},{when[:10]},{when[:10]},{when},,,,,,false,{a_f + b_f:.2f},0.00,"
                f"0.00,{a_f:.2f},{b_f:.2f},{orig}")
    months = {
        "2025-01": [], "2025-02": [],
        "2025-03": [row("ME1", "MM1", "13", lv2, "2025-03-31 20:00:00", "300.00", "100.00")],
        "2025-04": [row("MS1", "MM1", "24", lv2, "2025-04-03 10:00:00", "11800.00"),
                    row("ME3", "MM3", "13", lv2, "2025-04-10 09:00:00", "200.00"),
                    row("MS3", "MM3", "21", lv2, "2025-04-12 10:00:00", "1000.00"),
                    row("ME2", "MM2", "13", lv1, "2025-04-30 09:00:00", "100.00")],
        "2025-05": [row("MS2", "MM2", "21", lv2, "2025-05-02 10:00:00", "300.00"),
                    row("MR1", "MM1", "13", lv2, "2025-05-05 10:00:00", "-300.00", "-100.00", orig="ME1")],
    }
    db = tmp_path / "m.duckdb"
    for month, rows in months.items():
        (src / month).mkdir()
        (src / month / "hospital_settlements.csv").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
        month_flow(month, str(src), str(db))
    first = q(db, "SELECT * EXCLUDE (run_id) FROM adjudicated ORDER BY setl_id")
    # a rerun of March replaces it and re-runs April and May: the stored later months change nothing (the
    # stay's history and the merged flag are read from the months before the one being run)
    month_flow("2025-03", str(src), str(db), force=True)
    assert q(db, "SELECT * EXCLUDE (run_id) FROM adjudicated ORDER BY setl_id") == first
    got = {r[0]: r[1:] for r in q(db, "SELECT setl_id, hifp_pay, merged_setl_ids, reason_codes FROM adjudicated "
                                      "WHERE psn_no = ?", [p])}
    # MS1: (300 + 11,800 + 100 − 10 − 500) × 80% = 11,690 × 80% = 9,352.00, minus 0 paid on ME1 (level 2)
    assert got["MS1"][:2] == (9352, "ME1")
    # MS3 settles in its own month: (200 + 1,000 − 500) × 80% = 560.00
    assert got["MS3"][:2] == (560, "ME3")
    # ME2: 50% × 100 = 50 at the township centre; MS2: merged 400 < 500 deductible → owed 0 − 50 = −50.00
    assert got["ME2"][0] == 50 and got["MS2"][:2] == (-50, "ME2") and "EMERGENCY_MERGED" in got["MS2"][2]
    assert q(db, "SELECT setl_id, reason_code FROM rejects WHERE month = '2025-05'") == [("MR1", "REVERSAL_AFTER_MERGE")]
    assert q(db, "SELECT DISTINCT rows_in, rows_accepted, rows_rejected FROM runs WHERE month = '2025-05' "
                 "AND status = 'succeeded'") == [(2, 1, 1)]
    # the same rows as one engine run over every accepted line of the five months
    con = store.connect(db, read_only=True)
    try:
        accepted = store.fetch_fen(con, "SELECT * EXCLUDE (run_id) FROM settlements")
        stored = store.fetch_fen(con, "SELECT * EXCLUDE (run_id) FROM adjudicated ORDER BY setl_id")
    finally:
        con.close()
    whole = adjudicate(accepted, load_registers(src), POL).adjudicated.sort("setl_id")
    cols = ["setl_id", "ledger", "hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay", "inscp_scp_amt", "act_pay_dedc",
            "psn_part_amt", "psn_cash_pay", "merged_setl_ids", "reason_codes", "explanation"]
    assert stored.select(cols).to_dicts() == whole.select(cols).to_dicts()
