"""Views, audits, reports and explain on a small database built by the engine (no Prefect).

The database: two months of Suizhou resident lines, hand-computed below, written with
flows.store.write_month, and the masked person snapshot. Hostile values (formula starts, control
characters) come in through names, certificate numbers, settlement ids and an institution code.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows import reports, store
from flows.cli import main
from flows.policies import load_policies
from flows.views import VIEWS
from tests.builders import INST_SCHEMA, institutions, line, lines, person, registers, reversal_of, yuan
from transforms.engine import adjudicate

POL = load_policies()
EVIL_INST = '=HYPERLINK("http://evil.example","x")'
EVIL_NAME = "=cmd|' /C calc'!A0"
EVIL_CERT = "-420102199001011234"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

SINCE = dt.date(2020, 1, 1)


def _registers():
    p1 = person("P1", rural=True) | {"psn_name": "张三丰", "certno": "420102199001011234"}
    p2 = person("P2", rural=False) | {"psn_name": "李四", "certno": "42010219850505432X"}
    p3 = person("P3", admdvs="421321", rural=True) | {"psn_name": EVIL_NAME, "certno": EVIL_CERT}
    p4 = person("P4", admdvs="420602") | {"psn_name": "王五", "certno": "420602197001011111"}
    regs = registers([p1, p2, p3, p4], identities=[("P1", "poverty_exit", SINCE, None),
                                                    ("P3", "dibao", SINCE, None)])
    evil = pl.DataFrame([(EVIL_INST, "evil", "hospital", "2", "hospital", "421302", False)], schema=INST_SCHEMA,
                        orient="row")
    regs["institutions"] = pl.concat([institutions(), evil])
    return regs


def _lines():
    l1 = line("P1", "2025-03-01", "SZ2", a=yuan(8800), own=yuan(1000), over=yuan(200), setl_id="L1",
              hifp_pay=yuan(6640), psn_cash_pay=yuan(3360))          # the institution charged the excess
    l2 = line("P2", "2025-03-02", "SZ2", a=yuan(20000), setl_id="L2", hifp_pay=yuan(15000), hifmi_pay=0)
    l3 = line("P1", "2025-03-10", "SZ1", a=yuan(9700), own=yuan(300), setl_id="L3")
    l4 = line("P3", "2025-03-15", "SZ3", a=yuan(8500), own=yuan(1500), setl_id="@SUM(A1)", mdtrt_id="\tTAB")
    l5 = line("P1", "2025-03-20", "WH3", a=yuan(8000), own=yuan(2000), setl_id="L5")
    l6 = reversal_of(l1, "2025-04-02", setl_id="L6") | {"hifp_pay": -yuan(6640), "psn_cash_pay": -yuan(2960)}
    l7 = line("P2", "2025-04-05", EVIL_INST, a=yuan(1000), setl_id="L7", hifp_pay=0)
    l8 = line("P1", "2025-04-10", "SZ2", a=yuan(4600), own=yuan(400), setl_id="L8")
    l9 = line("P4", "2025-04-12", "XY1", "11", a=yuan(100), setl_id="L9")  # Xiangyang resident, §4.7
    return [l1, l2, l3, l4, l5, l6, l7, l8, l9]


REJECTS = pl.DataFrame(schema={"source_file": pl.String, "source_row": pl.Int64, "setl_id": pl.String,
                               "reason_code": pl.String, "reason": pl.String, "raw": pl.String})


def build_db(path: Path, regs, rows) -> Path:
    """The monthly flow's steps without Prefect: adjudicate each month on the stored state, write it."""
    con = store.connect(path)
    try:
        all_lines = lines(rows)
        for month in sorted(all_lines["month"].unique().to_list()):
            month_lines = all_lines.filter(pl.col("month") == month)
            rev = month_lines.filter(pl.col("orig_setl_id").is_not_null())["orig_setl_id"].to_list()
            res = adjudicate(month_lines, regs, POL, carried=store.carried_accumulators(con, month),
                             originals=store.original_results(con, month, rev))
            run_id = f"{month}-test"
            store.begin_run(con, {"run_id": run_id, "month": month, "input_dir": "test", "code_version": "test",
                                  "policy_version": POL.digest})
            store.write_month(con, run_id, month, {"settlements": month_lines, "rejects": REJECTS,
                                                   "adjudicated": res.adjudicated, "accumulators": res.accumulators},
                              {"input_files": [], "rows_in": month_lines.height, "rows_accepted": month_lines.height,
                               "rows_rejected": 0, "assumptions": res.assumptions,
                               "lines_adjudicated": res.adjudicated.height})
        reports.write_person_snapshot(con, reports.person_snapshot(regs, on=dt.date(2025, 4, 30), policies=POL))
    finally:
        con.close()
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return build_db(tmp_path_factory.mktemp("reports") / "yibao.duckdb", _registers(), _lines())


@pytest.fixture()
def con(db):
    c = reports.open_readonly(db)
    yield c
    c.close()


def rows(con, sql, params=None) -> list[dict]:
    return reports.query(con, sql, params).df.to_dicts()


# ---------------------------------------------------------------- views

def test_views_are_stored_and_the_database_opens_read_only(db):
    c = duckdb.connect(str(db), read_only=True)
    try:
        names = {r[0] for r in c.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert set(VIEWS) <= names
        with pytest.raises(duckdb.Error):
            c.execute("DELETE FROM adjudicated")
        assert c.execute("SELECT count(*) FROM v_out_of_scope_stays").fetchall()[0][0] == 5
    finally:
        c.close()


def test_out_of_scope_stays_hand_computed(con):
    got = {r["setl_id"]: r for r in rows(con, "SELECT * FROM v_out_of_scope_stays")}
    assert set(got) == {"L1", "L3", "@SUM(A1)", "L5", "L8"}  # P2 is urban; the reversal L6 is not a stay
    want = {  # relation, level, total, out of scope, ratio, limit, violation, excess, institution's share
        "L1": ("in_county", "2", 10000, 1200, "0.1200", "0.0800", True, 400, 400),
        "L3": ("in_county", "1", 10000, 300, "0.0300", "0.0300", False, 0, 0),
        "@SUM(A1)": ("out_of_county_in_province", "3", 10000, 1500, "0.1500", "0.1000", True, 500, 500),
        "L5": ("out_of_county_in_province", "3", 10000, 2000, "0.2000", "0.1000", True, 1000, 0),
        "L8": ("in_county", "2", 5000, 400, "0.0800", "0.0800", False, 0, 0),
    }
    for sid, (rel, lv, total, oos, ratio, limit, viol, excess, inst) in want.items():
        r = got[sid]
        assert (r["relation"], r["hosp_lv"]) == (rel, lv), sid
        assert (r["total_amt"], r["out_of_scope_amt"]) == (yuan(total), yuan(oos)), sid
        assert (r["out_of_scope_ratio"], r["limit_rate"]) == (Decimal(ratio), Decimal(limit)), sid
        assert (r["violation"], r["excess_amt"], r["hosp_part_amt"]) == (viol, yuan(excess), yuan(inst)), sid
    assert got["L1"]["reversed"] and got["L1"]["reversal_setl_id"] == "L6"
    assert not got["L3"]["reversed"]
    assert got["L1"]["psn_name_masked"] == "张**" and got["L1"]["certno_masked"] == "420102********1234"


def test_excess_moves_from_the_person_to_the_institution_in_the_database(con):
    """L1: 10,000 − basic fund 6,640 − institution 400 = 2,960 for the person (not 3,360)."""
    r = rows(con, "SELECT * FROM adjudicated WHERE setl_id = 'L1'")[0]
    assert (r["hifp_pay"], r["hosp_part_amt"], r["psn_cash_pay"]) == (yuan(6640), yuan(400), yuan(2960))
    rev = rows(con, "SELECT * FROM adjudicated WHERE setl_id = 'L6'")[0]
    assert (rev["hosp_part_amt"], rev["psn_cash_pay"]) == (-yuan(400), -yuan(2960))


def test_out_of_scope_view_keeps_the_limit_each_stay_was_judged_by(db, tmp_path):
    """Policy files edited after the run (in-county level 2 from 8% to 20% for 2025) do not re-judge stored
    stays: L1 (12% out of scope) stays a violation at 8% with excess 400 (POLICY §3.10)."""
    import shutil

    from flows.policies import POLICY_ROOT
    from flows.views import create_views

    root = tmp_path / "policies"
    shutil.copytree(POLICY_ROOT, root)
    f = root / "suizhou" / "resident" / "out_of_scope.yaml"
    f.write_text(f.read_text().replace('in_county: {1: "3%", 2: "8%", 3: "8%"}',
                                       'in_county: {1: "3%", 2: "20%", 3: "8%"}'))
    edited = load_policies(root)
    c = duckdb.connect(str(db), read_only=True)
    try:
        create_views(c, temporary=True, policies=edited)
        assert c.execute("SELECT limit_bp FROM policy_out_of_scope_limits WHERE relation = 'in_county' "
                         "AND hosp_lv = '2'").fetchall() == [(2000,)]
        r = c.execute("SELECT limit_rate, violation, excess_amt FROM v_out_of_scope_stays "
                      "WHERE setl_id = 'L1'").fetchall()
        assert r == [(Decimal("0.0800"), True, Decimal("400.00"))]
    finally:
        c.close()


def test_out_of_scope_view_rounds_the_excess_once(tmp_path):
    """§3.10 (rev. 3): the view's excess is round(out_of_scope − limit × total), as the stored hosp_part_amt:
    P1 at SZ1 (in county, level 1, 3%): total 10,000.50, out of catalogue 400 → 400 − 300.015 = 99.985 → 99.99
    (not 400 − round(300.015) = 99.98)."""
    db = build_db(tmp_path / "round.duckdb", _registers(),
                  [line("P1", "2025-03-05", "SZ1", a=yuan("9600.50"), own=yuan(400), setl_id="R1")])
    c = duckdb.connect(str(db), read_only=True)
    try:
        got = c.execute("SELECT excess_amt, hosp_part_amt FROM v_out_of_scope_stays WHERE setl_id = 'R1'").fetchall()
    finally:
        c.close()
    assert got == [(Decimal("99.99"), Decimal("99.99"))]  # round(99.985), borne by the institution


def test_out_of_scope_by_institution_hand_computed(con):
    got = {(r["fixmedins_code"], r["month"]): r for r in rows(con, "SELECT * FROM v_out_of_scope_by_institution")}
    # SZ2 2025-03 held only L1, reversed in April: no live stay there
    assert set(got) == {("SZ1", "2025-03"), ("SZ3", "2025-03"), ("WH3", "2025-03"), ("SZ2", "2025-04")}
    want = {("SZ1", "2025-03"): (1, 0, 10000, 300, "0.0300", 0, 0),
            ("SZ3", "2025-03"): (1, 1, 10000, 1500, "0.1500", 500, 500),
            ("WH3", "2025-03"): (1, 1, 10000, 2000, "0.2000", 1000, 0),
            ("SZ2", "2025-04"): (1, 0, 5000, 400, "0.0800", 0, 0)}
    for k, (stays, viol, total, oos, ratio, excess, inst) in want.items():
        r = got[k]
        assert (r["stays"], r["violations"], r["total_amt"], r["out_of_scope_amt"]) == (stays, viol, yuan(total),
                                                                                           yuan(oos)), k
        assert (r["out_of_scope_ratio"], r["excess_amt"], r["hosp_part_amt"]) == (Decimal(ratio), yuan(excess),
                                                                                    yuan(inst)), k


def test_discrepancies_hand_computed(con):
    got = sorted((r["setl_id"], r["fund"], r["reported_amt"], r["adjudicated_amt"], r["difference"],
                  r["fixmedins_code"]) for r in rows(con, "SELECT * FROM v_discrepancies"))
    assert got == sorted([
        ("L1", "psn_cash_pay", yuan(3360), yuan(2960), yuan(400), "SZ2"),
        ("L2", "hifp_pay", yuan(15000), yuan(15600), -yuan(600), "SZ2"),
        ("L7", "hifp_pay", 0, yuan(400), -yuan(400), EVIL_INST),
    ])  # L2's reported hifmi_pay 0 equals the adjudicated 0; null reported amounts are not compared
    t = reports.discrepancy_audit(con, year=2025)
    summary = {(r["fixmedins_code"], r["fund"]): r for r in t["summary"].df.to_dicts()}
    assert summary[("SZ2", "hifp_pay")]["difference"] == -yuan(600)
    assert summary[("SZ2", "psn_cash_pay")]["abs_difference"] == yuan(400)
    inst = {r["fixmedins_code"]: r for r in t["institutions"].df.to_dicts()}
    assert (inst["SZ2"]["reported_settlements"], inst["SZ2"]["differing_settlements"]) == (3, 2)
    assert reports.discrepancy_audit(con, month="2025-04")["detail"].df["setl_id"].to_list() == ["L7"]


def test_fund_expenditure_view_hand_computed(con):
    got = {(r["month"], r["region"], r["ledger"], r["hosp_lv"], r["fund"]): r
           for r in rows(con, "SELECT * FROM v_fund_expenditure")}
    r = got[("2025-03", "suizhou", "inpatient", "2", "hifp_pay")]
    assert (r["amount"], r["lines"], r["persons"], r["scheme"]) == (yuan(6640 + 15600), 2, 2, "resident")
    assert got[("2025-03", "suizhou", "inpatient", "2", "hosp_part_amt")]["amount"] == yuan(400)
    assert got[("2025-04", "suizhou", "inpatient", "2", "hosp_part_amt")]["amount"] == -yuan(400)
    # April level 2: the reversal −6,640, the evil institution's 400 and L8's (4,600 − 500) × 80% = 3,280
    a = got[("2025-04", "suizhou", "inpatient", "2", "hifp_pay")]
    assert (a["amount"], a["lines"], a["persons"]) == (yuan(-6640 + 400 + 3280), 3, 2)
    # the Xiangyang resident's general outpatient line (§4.7): 50% of 100 from the year's first 800, the rest cash
    assert got[("2025-04", "xiangyang", "outpatient_pool", "1", "psn_cash_pay")]["amount"] == yuan(50)
    assert got[("2025-04", "xiangyang", "outpatient_pool", "1", "hifp_pay")]["amount"] == yuan(50)
    total = con.execute("SELECT sum(amount) FROM v_fund_expenditure").fetchall()[0][0]
    assert total == con.execute("SELECT sum(medfee_sumamt) FROM adjudicated").fetchall()[0][0]


def test_in_county_ratio_hand_computed(con):
    """March in county: L1 6,640/8,800, L2 15,600/20,000, L3 (9,700 − 200) × 90% = 8,550/9,700 → 30,790/38,500."""
    got = {r["month"]: r for r in rows(con, "SELECT * FROM v_in_county_inpatient_ratio")}
    assert got["2025-03"]["hifp_pay"] == yuan(30790) and got["2025-03"]["inscp_scp_amt"] == yuan(38500)
    assert got["2025-03"]["payment_ratio"] == Decimal("0.7997")  # 0.79974… half-up to the basis point
    assert got["2025-03"]["stays"] == 3
    # April: the reversal of a March stay leaves a negative in-scope sum: no ratio
    assert got["2025-04"]["inscp_scp_amt"] == yuan(-8800 + 1000 + 4600) and got["2025-04"]["payment_ratio"] is None


def test_views_match_the_engine_on_every_stay_of_a_random_like_population(tmp_path):
    """The view's excess (recomputed from policy_out_of_scope_limits) equals the engine's share on every
    in-city violation."""
    regs = registers([person(f"Q{i}", admdvs=["421302", "421321"][i % 2], rural=True) for i in range(6)],
                     identities=[(f"Q{i}", "dibao_edge", SINCE, None) for i in range(6)])
    rows_ = [line(f"Q{i % 6}", f"2025-05-{1 + i % 28:02d}", ["SZ1", "SZ2", "SZ3", "SX2", "WH3"][i % 5],
                  a=yuan(1000 + 37 * i), own=13 * i * 100 + i, over=7 * i) for i in range(60)]
    path = build_db(tmp_path / "x.duckdb", regs, rows_)
    c = reports.open_readonly(path)
    try:
        bad = c.execute("SELECT count(*) FROM v_out_of_scope_stays WHERE excess_to_institution "
                        "AND excess_amt <> hosp_part_amt").fetchall()[0][0]
        n = c.execute("SELECT count(*) FROM v_out_of_scope_stays WHERE excess_to_institution").fetchall()[0][0]
        assert n > 5 and bad == 0
    finally:
        c.close()


# ---------------------------------------------------------------- masking

def test_person_snapshot_masks_and_tells_persons_apart():
    regs = _registers()
    snap = reports.person_snapshot(regs, on=dt.date(2025, 4, 30), policies=POL, key=b"k")
    by = {r["psn_no"]: r for r in snap.to_dicts()}
    assert by["P1"]["psn_name_masked"] == "张**" and by["P1"]["certno_masked"] == "420102********1234"
    assert by["P2"]["certno_masked"] == "420102********432X"
    assert by["P3"]["psn_name_masked"] == "=**"
    assert by["P1"]["identity_group"] == "s3" and by["P3"]["identity_group"] == "s1"
    assert by["P2"]["identity_group"] == "ordinary"
    digests = snap["certno_digest"].to_list()
    assert len(set(digests)) == 4 and all(re.fullmatch(r"[0-9a-f]{16}", d) for d in digests)
    text = snap.write_csv()
    for clear in ("张三丰", "李四", "420102199001011234", "calc", "199001011"):
        assert clear not in text
    assert reports.person_snapshot(regs, on=dt.date(2025, 4, 30), policies=POL)["certno_digest"].null_count() == 4


def test_database_holds_no_clear_person_data(db):
    c = duckdb.connect(str(db), read_only=True)
    try:
        dump = []
        for (t,) in c.execute("SELECT table_name FROM duckdb_tables()").fetchall():
            dump.append(pl.from_arrow(c.sql(f"SELECT * FROM {t}").to_arrow_table()).write_csv())
        text = "\n".join(dump)
    finally:
        c.close()
    for clear in ("张三丰", "420102199001011234", "calc"):
        assert clear not in text


# ---------------------------------------------------------------- exports: neutralisation, xlsx, html

def _cells_start_formula(values) -> list[str]:
    return [v for v in values if isinstance(v, str) and v.startswith(FORMULA_START)]


def test_csv_neutralises_formula_starts(con, tmp_path):
    t = reports.out_of_scope_audit(con, year=2025)
    out = tmp_path / "v.csv"
    reports.write_csv(t["violations"], out)
    raw = out.read_text(encoding="utf-8-sig")
    got = list(csv.DictReader(io.StringIO(raw)))
    assert {r["setl_id"] for r in got} == {"L1", "'@SUM(A1)", "L5"}
    p3 = next(r for r in got if r["setl_id"] == "'@SUM(A1)")
    assert p3["psn_name_masked"] == "'=**" and p3["certno_masked"] == "'-42010********1234"
    assert p3["mdtrt_id"] == "'\tTAB"
    assert p3["excess_amt"] == "500.00" and p3["out_of_scope_ratio"] == "0.1500"
    for r in got:
        assert not _cells_start_formula(r.values())
    # numbers are numbers: a negative amount is not text and keeps its sign
    d = reports.discrepancy_audit(con, year=2025)["detail"]
    text = reports.csv_text(d)
    assert ",-600.00" in text and "'=HYPERLINK" in text
    assert not [v for row in csv.reader(io.StringIO(text)) for v in row
                if v.startswith(("=", "+", "@", "\t", "\r"))]


def test_xlsx_opens_with_labels_money_and_no_formula(con, tmp_path):
    import openpyxl

    out = tmp_path / "fe.xlsx"
    reports.write_fund_expenditure(con, 2025, None, "xlsx", out)
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["说明 about", "按基金和月份 by fund and month", "按待遇类别 by ledger", "按医院等级 by level",
                             "按身份类别 by identity group", "前20机构 top institutions", "县域内住院支付比例 ratio",
                             "明细 detail"]
    ws = wb["按基金和月份 by fund and month"]
    labels = [c.value for c in ws[2]]
    codes = [c.value for c in ws[3]]
    assert codes[:4] == ["month", "lines", "persons", "medfee_sumamt"]
    assert labels[codes.index("hifp_pay")] == "统筹基金" and labels[codes.index("hosp_part_amt")] == "医疗机构承担"
    data = {r[0]: dict(zip(codes, r, strict=True)) for r in ws.iter_rows(min_row=4, values_only=True)}
    assert data["2025-03"]["hifp_pay"] == pytest.approx(6640 + 15600 + 8550 + 3430 + _p3_hifp(con) / 100)
    assert data["2025-03"]["hosp_part_amt"] == pytest.approx(900)
    assert data["合计 total"]["persons"] == 4
    assert data["合计 total"]["hosp_part_amt"] == pytest.approx(500)  # 400 + 500 − 400
    money_cell = ws.cell(row=4, column=codes.index("hifp_pay") + 1)
    assert money_cell.number_format == "#,##0.00"
    lv = wb["按医院等级 by level"]
    lv_codes = [c.value for c in lv[3]]
    lvl = {r[0]: dict(zip(lv_codes, r, strict=True)) for r in lv.iter_rows(min_row=4, values_only=True)}
    # level 1: L3 8,550 and the Xiangyang resident's 50 (§4.7)
    assert lvl["1"]["hosp_lv_label"] == "一级及以下" and lvl["1"]["hifp_pay"] == pytest.approx(8550 + 50)
    ig = wb["按身份类别 by identity group"]
    ig_codes = [c.value for c in ig[3]]
    groups = {r[0]: dict(zip(ig_codes, r, strict=True)) for r in ig.iter_rows(min_row=4, values_only=True)}
    # identity_group is the line's own (engine, §2 blocks of Suizhou); P4 is a Xiangyang resident
    assert groups["s3"]["lines"] == 5 and groups["ordinary"]["lines"] == 2 and groups["s1"]["lines"] == 1
    assert groups["resident"]["lines"] == 1
    ratio = wb["县域内住院支付比例 ratio"]
    r_codes = [c.value for c in ratio[3]]
    first = dict(zip(r_codes, next(ratio.iter_rows(min_row=4, values_only=True)), strict=True))
    assert first["payment_ratio"] == pytest.approx(0.7997) and first["target_ratio"] == pytest.approx(0.70)
    assert ratio.cell(row=4, column=r_codes.index("payment_ratio") + 1).number_format == "0.00%"
    for sheet in wb.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f"  # xlsx: text is a string cell, never a formula (issue 16.8: no apostrophe)
    top = wb["前20机构 top institutions"]
    assert EVIL_INST in [c.value for c in top["B"]]


def _p3_hifp(con) -> int:
    return con.execute("SELECT CAST(hifp_pay * 100 AS BIGINT) FROM adjudicated WHERE setl_id = '@SUM(A1)'").fetchall()[0][0]


def test_out_of_scope_xlsx_reads_back(con, tmp_path):
    import openpyxl

    out = tmp_path / "oos.xlsx"
    assert main(["audit", "out-of-scope", "--year", "2025", "--format", "xlsx", "--out", str(out),
                 "--db", str(_db_path(con))]) == 0
    wb = openpyxl.load_workbook(out)
    ws = wb["按机构 by institution"]
    codes = [c.value for c in ws[3]]
    got = {(r[codes.index("fixmedins_code")], r[codes.index("month")]): dict(zip(codes, r, strict=True))
           for r in ws.iter_rows(min_row=4, values_only=True)}
    assert got[("SZ3", "2025-03")]["excess_amt"] == pytest.approx(500)
    assert got[("SZ3", "2025-03")]["out_of_scope_ratio"] == pytest.approx(0.15)
    v = wb["超标住院 violations"]
    assert v.max_row == 3 + 3
    assert "=**" in [c.value for c in v["E"]]  # a string cell in xlsx: no apostrophe needed


def _db_path(con) -> Path:
    return Path(con.execute("SELECT path FROM duckdb_databases() WHERE database_name NOT IN ('temp', 'system')")
                .fetchall()[0][0])


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []
        self.cells: dict[str, list[str]] = {}
        self._col: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        for k in ("src", "href"):
            if a.get(k):
                self.external.append(a[k])
        if tag == "td":
            self._col = a.get("data-col")

    def handle_endtag(self, tag):
        if tag == "td":
            self._col = None

    def handle_data(self, data):
        self.text.append(data)
        if self._col:
            self.cells.setdefault(self._col, []).append(data)


def test_html_is_one_self_contained_page_with_charts_and_figures(con, tmp_path):
    out = tmp_path / "fe.html"
    reports.write_fund_expenditure(con, 2025, None, "html", out)
    page = _Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.tags.count("svg") == 3 and "script" not in page.tags and "link" not in page.tags
    assert page.external == []
    assert page.tags.count("rect") > 5 and page.tags.count("circle") == 1  # April has no ratio
    text = " ".join(page.text)
    assert "每月基金支出" in text and "县域内住院支付比例" in text
    assert "target 70.00%" in text and "79.97%" in text
    hifp = page.cells["hifp_pay"]
    assert f"{6640 + 15600 + 8550 + 3430 + _p3_hifp(con) / 100:,.2f}" in hifp
    assert "500.00" in page.cells["hosp_part_amt"]  # the year's institution share, in the total row
    assert "79.97%" in page.cells["payment_ratio"] and "70.00%" in page.cells["target_ratio"]
    assert "calc" not in text and "张三丰" not in text


def test_parquet_and_csv_formats(con, tmp_path, db):
    pq = tmp_path / "fe.parquet"
    assert main(["report", "fund-expenditure", "--year", "2025", "--month", "2025-03", "--format", "parquet",
                 "--out", str(pq), "--db", str(db)]) == 0
    df = pl.read_parquet(pq)
    assert set(df["month"].unique()) == {"2025-03"} and isinstance(df.schema["amount"], pl.Decimal)
    hifp = df.filter((pl.col("fund") == "hifp_pay") & (pl.col("ledger") == "inpatient") & (pl.col("hosp_lv") == "2"))
    assert hifp["amount"].to_list() == [Decimal("22240.00")]
    c = tmp_path / "fe.csv"
    assert main(["report", "fund-expenditure", "--year", "2025", "--format", "csv", "--out", str(c),
                 "--db", str(db)]) == 0
    got = list(csv.DictReader(io.StringIO(c.read_text(encoding="utf-8-sig"))))
    assert {"year", "month", "region", "scheme", "ledger", "hosp_lv", "fund", "fund_label", "amount", "lines",
            "persons"} == set(got[0])
    assert any(r["fund"] == "hosp_part_amt" and r["amount"] == "-400.00" for r in got)


# ---------------------------------------------------------------- commands

def test_audit_out_of_scope_table(db, capsys):
    assert main(["audit", "out-of-scope", "--month", "2025-03", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "3 rural low-income stays (3 with a limit), 2 over the limit" in out
    assert "excess 1,500.00 yuan, of which borne by institutions in Suizhou 500.00" in out
    assert "SZ3" in out and "WH3" in out and "\t" not in out


def test_audit_discrepancies_table_and_csv(db, capsys, tmp_path):
    assert main(["audit", "discrepancies", "--year", "2025", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "4 settlements with reported amounts, 3 differ" in out and "-600.00" in out
    assert main(["audit", "discrepancies", "--year", "2025", "--format", "csv", "--db", str(db)]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {(r["fixmedins_code"], r["fund"], r["difference"]) for r in got} == {
        ("SZ2", "hifp_pay", "-600.00"), ("SZ2", "psn_cash_pay", "400.00"), ("'" + EVIL_INST, "hifp_pay", "-400.00")}


def test_explain_person_year(db, capsys):
    assert main(["explain", "P1", "--year", "2025", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "name 张**, certno 420102********1234" in out and "张三丰" not in out
    assert "5 lines" in out
    assert re.search(r"医疗机构承担 \(hosp_part_amt\)\s+400\.00\s+OUT_OF_SCOPE_EXCESS_TO_INSTITUTION", out)
    assert re.search(r"个人现金 \(psn_cash_pay\)\s+2,960\.00", out)
    # the basic fund's annual accumulator, line by line, across the months and the reversal
    for before, after in [("0.00", "6,640.00"), ("6,640.00", "15,190.00"), ("15,190.00", "18,620.00"),
                          ("18,620.00", "11,980.00"), ("11,980.00", "15,260.00")]:
        assert f"hifp_paid {before} → {after}" in out
    assert re.search(r"2025-03  hifp_paid\s+0\.00 →\s+18,620\.00", out)
    assert re.search(r"2025-04  hifp_paid\s+18,620\.00 →\s+15,260\.00", out)
    assert "reversal of L1" in out


def test_explain_latest_year_and_unknown_person(db, capsys):
    assert main(["explain", "P3", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "year 2025" in out and "name '=**" not in out and "name =**" in out
    assert main(["explain", "NOBODY", "--db", str(db)]) == 1
    assert "no adjudicated line" in capsys.readouterr().err


def test_bad_arguments_fail_with_one_line(db, capsys, tmp_path):
    assert main(["report", "fund-expenditure", "--year", "2025", "--month", "2024-03", "--format", "csv",
                 "--out", str(tmp_path / "x.csv"), "--db", str(db)]) == 1
    assert "not in --year" in capsys.readouterr().err
    assert main(["audit", "out-of-scope", "--format", "xlsx", "--db", str(db)]) == 1
    assert "needs --out" in capsys.readouterr().err
    assert main(["audit", "out-of-scope", "--db", str(tmp_path / "missing.duckdb")]) == 1
    assert "database not found" in capsys.readouterr().err


def test_exports_make_their_folder(db, tmp_path):
    out = tmp_path / "out" / "2025" / "funds.xlsx"
    assert main(["report", "fund-expenditure", "--year", "2025", "--format", "xlsx", "--out", str(out),
                 "--db", str(db)]) == 0
    assert out.stat().st_size > 0


def test_saved_queries_run_read_only(db):
    """Every saved query runs on a read-only connection, with its variables set and unset."""
    qdir = Path(__file__).resolve().parent.parent / "queries"
    files = sorted(qdir.glob("*.sql"))
    assert len(files) >= 8
    c = duckdb.connect(str(db), read_only=True)
    try:
        for setting in ([], ["SET VARIABLE psn_no = 'P1'", "SET VARIABLE month = '2025-03'", "SET VARIABLE year = 2025"]):
            for s in setting:
                c.execute(s)
            for f in files:
                for stmt in [s for s in f.read_text(encoding="utf-8").split(";") if _sql_body(s)]:
                    c.execute(stmt).fetchall()
        c.execute("SET VARIABLE month = NULL")
        got = c.execute((qdir / "out_of_scope_violations.sql").read_text(encoding="utf-8")).fetchall()
        assert sorted(r[4] for r in got) == ["@SUM(A1)", "L5"]  # L1 was reversed
        c.execute("SET VARIABLE psn_no = 'P1'")
        person = [s for s in (qdir / "person_year.sql").read_text(encoding="utf-8").split(";") if _sql_body(s)]
        assert len(c.execute(person[0]).fetchall()) == 5
    finally:
        c.close()


def _sql_body(s: str) -> str:
    return "\n".join(x for x in s.splitlines() if not x.strip().startswith("--")).strip()


def test_every_institution_gets_its_own_name_beside_its_code(tmp_path):
    """Issue 16.6: names beside codes, each from the `institutions` table (an unqualified code column in a
    correlated lookup once gave every row the first institution's name)."""
    from flows.reports import with_names
    con = duckdb.connect(str(tmp_path / "n.duckdb"))
    con.execute("CREATE TABLE institutions AS SELECT * FROM (VALUES ('H1', '随州市中心医院'), ('H2', '曾都区东城卫生院'))"
                " t(fixmedins_code, fixmedins_name)")
    con.execute("CREATE TABLE v AS SELECT * FROM (VALUES ('H2', 5), ('H1', 7), ('H9', 1)) t(fixmedins_code, n)")
    got = con.execute(f"SELECT {with_names(con, 'fixmedins_code, n')} FROM v ORDER BY n").fetchall()
    assert got == [("H9", None, 1), ("H2", "曾都区东城卫生院", 5), ("H1", "随州市中心医院", 7)]
    con.close()
