"""Issue 17 end to end: the clearing statement (v_clearing) worked by hand and reconciled with `adjudicated`, the
supervision rules on the session's generated bureau (exactly the planted cases of SUPERVISION.json), and the
real `yibao audit rules` / `yibao report clearing` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from flows import store
from tests.builders import q

PAYERS = ["hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay", "acct_pay", "acct_mulaid_pay", "hosp_part_amt"]


# ---------------------------------------------------------------- v_clearing by hand

def _hand_db(path: Path) -> Path:
    """Institution H1 (level 2, 随州市中心医院): in 2025-02 two lines and the reversal of a January line."""
    con = store.connect(path)
    try:
        adj = [  # setl_id, psn_no, month, orig, medfee, hifp, hifmi, maf, tilt, acct, mulaid, hosp_part, cash
            ("J1", "P1", "2025-01", None, "80.00", "30.00", "0", "0", "0", "0", "0", "0", "50.00"),
            ("F1", "P1", "2025-02", None, "200.00", "100.00", "20.00", "10.00", "5.00", "15.00", "0", "3.00", "47.00"),
            ("F2", "P2", "2025-02", None, "90.00", "50.00", "0", "0", "0", "0", "10.00", "0", "30.00"),
            ("F3", "P1", "2025-02", "J1", "-80.00", "-30.00", "0", "0", "0", "0", "0", "0", "-50.00"),
        ]
        for a in adj:
            fund = sum(Decimal(x) for x in a[5:9])
            con.execute("INSERT INTO adjudicated (setl_id, psn_no, month, orig_setl_id, fixmedins_code, medfee_sumamt,"
                        " hifp_pay, hifmi_pay, maf_pay, maf_tilt_pay, acct_pay, acct_mulaid_pay, hosp_part_amt,"
                        " psn_cash_pay, fund_pay_sumamt) VALUES (?, ?, ?, ?, 'H1', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [*a, str(fund)])
        rep = [  # setl_id, month, reported hifp, hifmi, maf (all assistance), acct, mulaid
            ("F1", "2025-02", "99.50", "20.00", "15.00", "15.00", "0"),
            ("F2", "2025-02", "50.00", "0", "0", "0", "10.00"),
            ("F3", "2025-02", "-30.00", "0", "0", "0", "0"),
        ]
        for r in rep:
            con.execute("INSERT INTO settlements (setl_id, month, fixmedins_code, hifp_pay, hifmi_pay, maf_pay, acct_pay,"
                        " acct_mulaid_pay) VALUES (?, ?, 'H1', ?, ?, ?, ?, ?)", list(r))
        con.execute("INSERT INTO month_institutions (month, fixmedins_code, fixmedins_name, dedc_hosp_lv) VALUES "
                    "('2025-02', 'H1', '随州市中心医院', '2')")
    finally:
        con.close()
    return path


def test_clearing_view_by_hand(tmp_path):
    db = _hand_db(tmp_path / "c.duckdb")
    rows = {(r[0], r[1]): r[2:] for r in q(db, "SELECT line_kind, fund, settlements, persons, medfee_sumamt, "
                                               "adjudicated_amt, reported_amt, difference, net_payable_amt, "
                                               "fixmedins_name, hosp_lv FROM v_clearing WHERE month = '2025-02'")}
    d = Decimal
    # this month: F1 + F2 — 2 settlements, 2 persons, 200 + 90 = 290.00; hifp 100 + 50 = 150.00, reported
    # 99.50 + 50 = 149.50, difference −0.50
    assert rows[("this_month", "hifp_pay")] == (2, 2, d("290.00"), d("150.00"), d("149.50"), d("-0.50"), d("150.00"),
                                                "随州市中心医院", "2")
    # assistance: maf 10 + tilt 5 = 15 compared with the reported 15 (the platform's maf_pay is all assistance)
    assert rows[("this_month", "maf_pay")][3:7] == (d("10.00"), d("15.00"), d("0.00"), d("10.00"))
    assert rows[("this_month", "maf_tilt_pay")][3:7] == (d("5.00"), None, None, d("5.00"))
    assert rows[("this_month", "acct_mulaid_pay")][3:7] == (d("10.00"), d("10.00"), d("0.00"), d("10.00"))
    # the institution's share 3.00 is borne by the institution: net payable 0
    assert rows[("this_month", "hosp_part_amt")][3:7] == (d("3.00"), None, None, d("0.00"))
    # the reversal of January's J1 on its own line: −30.00 of the basic fund, reported −30.00
    assert rows[("reversal_of_earlier", "hifp_pay")] == (1, 1, d("-80.00"), d("-30.00"), d("-30.00"), d("0.00"),
                                                         d("-30.00"), "随州市中心医院", "2")
    # net payable of the month: 150 + 20 + 10 + 5 + 15 + 10 − 30 = 180.00
    assert q(db, "SELECT sum(net_payable_amt) FROM v_clearing WHERE month = '2025-02'")[0][0] == d("180.00")


def test_clearing_xlsx_has_a_summary_and_a_sheet_per_institution(tmp_path):
    import openpyxl

    from flows import supervision_reports as sr
    from flows.reports import open_readonly

    db = _hand_db(tmp_path / "c.duckdb")
    con = open_readonly(db)
    try:
        sr.write_clearing(con, "2025-02", None, "xlsx", tmp_path / "c.xlsx")
        html = sr.write_clearing(con, "2025-02", "H1", "html", tmp_path / "c.html")
    finally:
        con.close()
    wb = openpyxl.load_workbook(tmp_path / "c.xlsx")
    assert wb.sheetnames == ["汇总 summary", "H1"]
    cells = [c for row in wb["H1"].iter_rows(values_only=True) for c in row if c is not None]
    assert "医保基金月度清算单  随州市中心医院" in cells and "二级" in cells and "2025-02" in cells
    assert "冲销以前月份" in cells and 180.0 in cells  # the reversal block and the net payable total
    assert html.institutions == [("H1", "随州市中心医院", "2")]
    assert "随州市中心医院" in (tmp_path / "c.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------- on the session's generated bureau

def test_clearing_reconciles_with_adjudicated(loaded):
    for fund in PAYERS:
        # every payer's total over v_clearing equals adjudicated's, per month and institution
        diff = q(loaded, f"""
            SELECT count(*) FROM (SELECT month, fixmedins_code, sum({fund}) AS a FROM adjudicated GROUP BY ALL) x
            FULL JOIN (SELECT month, fixmedins_code, sum(adjudicated_amt) AS c FROM v_clearing WHERE fund = '{fund}'
                       GROUP BY ALL) y USING (month, fixmedins_code)
            WHERE x.a IS DISTINCT FROM y.c""")[0][0]
        assert diff == 0, fund
    # net payable = every payer but the institution's share
    assert q(loaded, "SELECT sum(net_payable_amt) FROM v_clearing")[0][0] == q(
        loaded, "SELECT sum(fund_pay_sumamt + acct_pay + acct_mulaid_pay) FROM adjudicated")[0][0]
    # reversals of earlier months on their own lines: as many as adjudicated reversals whose original is earlier
    assert q(loaded, "SELECT coalesce(sum(settlements), 0) FROM v_clearing WHERE line_kind = 'reversal_of_earlier' "
                     "AND fund = 'hifp_pay'")[0][0] == q(
        loaded, "SELECT count(*) FROM adjudicated a JOIN adjudicated o ON o.setl_id = a.orig_setl_id "
                "WHERE o.month < a.month")[0][0]


def test_rules_find_exactly_the_planted_cases(loaded, bureau):
    planted = json.loads((bureau / "SUPERVISION.json").read_text(encoding="utf-8"))
    want = sorted((c["rule_id"], c["month"], c["vola_evid"], c["psn_no"], c["fixmedins_code"]) for c in planted["cases"])
    got = sorted(tuple(r) for r in q(loaded, "SELECT rule_id, month, vola_evid, psn_no, fixmedins_code FROM violations"))
    assert got == want
    # each person-level pattern is planted at least once in the bureau, and the institution-level cluster once
    assert {c[0] for c in want} == {"SPLIT_ADMISSION", "DUPLICATE_SETTLEMENT", "OVERLAPPING_STAYS",
                                    "SAME_DAY_OUTPATIENT", "SHORT_STAY_HIGH_COST", "INSTITUTION_OUT_OF_SCOPE_RATIO",
                                    "INSTITUTION_COST_PER_STAY"}
    # the cluster (transforms/planted.py): two institutions of one level and month, 5 stays each, no person named
    inst = [c for c in want if c[0].startswith("INSTITUTION_")]
    assert len(inst) == 2 and inst[0][1] == inst[1][1] and inst[0][4] != inst[1][4]
    assert [len(c[2].split(",")) for c in inst] == [5, 5] and [c[3] for c in inst] == [None, None]
    assert q(loaded, "SELECT count(DISTINCT hosp_lv) FROM violations WHERE rule_id LIKE 'INSTITUTION_%'")[0][0] == 1
    # the cluster's 30 two-day stays (6 institutions × 5) in its month, with any other planted two-day stay
    assert q(loaded, "SELECT count(*) FROM adjudicated a JOIN settlements s USING (setl_id) WHERE a.setl_id LIKE "
                     "'SUP%' AND a.month = ? AND a.ledger = 'inpatient' AND s.enddate - s.begndate = 2",
             [inst[0][1]])[0][0] >= 30
    # every finding names its rule, severity, behaviour, institution, and carries the run's id
    assert q(loaded, "SELECT count(*) FROM violations WHERE rule_name IS NULL OR sev_deg IS NULL OR run_id IS NULL "
                     "OR vola_bhvr_type IS NULL OR fixmedins_name IS NULL")[0][0] == 0
    # the run record counts them per rule
    for month, found in q(loaded, "SELECT month, supervision_findings FROM runs WHERE status = 'succeeded'"):
        expect = {}
        for c in planted["cases"]:
            if c["month"] == month:
                expect[c["rule_id"]] = expect.get(c["rule_id"], 0) + 1
        assert json.loads(found) == expect, month


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env={**os.environ}, capture_output=True,
                          text=True, timeout=600)


def _user_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("nanobind:", " - ", "See https"))]


def test_cli_audit_rules_and_report_clearing(loaded, bureau, tmp_path):
    planted = json.loads((bureau / "SUPERVISION.json").read_text(encoding="utf-8"))["cases"]
    r = _cli(["audit", "rules", "--db", str(loaded)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{len(planted)} supervision findings")
    assert _user_lines(r.stderr) == []
    for c in planted:
        assert c["vola_evid"].split(",")[0] in r.stdout
    out = tmp_path / "rules.xlsx"
    r = _cli(["audit", "rules", "--month", "2025-02", "--format", "xlsx", "--out", str(out), "--db", str(loaded)])
    assert r.returncode == 0 and out.exists()
    n_feb = sum(c["month"] == "2025-02" for c in planted)
    assert _user_lines(r.stderr)[0].startswith(f"{n_feb} supervision findings")

    out = tmp_path / "clearing.csv"
    r = _cli(["report", "clearing", "--month", "2025-02", "--format", "csv", "--out", str(out), "--db", str(loaded)])
    assert r.returncode == 0, r.stderr
    net = q(loaded, "SELECT sum(fund_pay_sumamt + acct_pay + acct_mulaid_pay), count(DISTINCT fixmedins_code) "
                    "FROM adjudicated WHERE month = '2025-02'")[0]
    from flows.reports import yuan
    lines = _user_lines(r.stderr)
    assert len(lines) == 1
    assert f"{net[1]} institutions, net payable {yuan(int(net[0] * 100))} yuan" in lines[0]
    assert out.read_text(encoding="utf-8-sig").startswith("month,fixmedins_code,fixmedins_name,hosp_lv,line_kind")
    r = _cli(["report", "clearing", "--month", "2025-09", "--format", "html", "--out", str(tmp_path / "x.html"),
              "--db", str(loaded)])
    assert r.returncode != 0
    assert _user_lines(r.stderr) == ["yibao: no adjudicated settlement in 2025-09"]


@pytest.mark.parametrize("fmt", ["xlsx", "html"])
def test_cli_clearing_formats(loaded, tmp_path, fmt):
    out = tmp_path / f"c.{fmt}"
    r = _cli(["report", "clearing", "--month", "2025-03", "--format", fmt, "--out", str(out), "--db", str(loaded)])
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0


def test_each_run_publishes_findings_and_clearing_artifacts(loaded):
    from prefect.artifacts import Artifact
    clearing = Artifact.get("yibao-month-clearing")
    assert clearing is not None and "net_payable_amt" in str(clearing.data)
    assert Artifact.get("yibao-month-supervision") is not None
    summary = Artifact.get("yibao-month-summary")
    assert "supervision findings" in str(summary.data) and "clearing:" in str(summary.data)
