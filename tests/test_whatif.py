"""What-if scenarios (issue 8): overrides, re-adjudication of a loaded year, the comparison."""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows import store
from flows.overrides import OverrideError, apply_overrides, current_values, overrides_from
from flows.policies import load_policies
from tests.builders import q

FIXTURE = Path(__file__).parent / "fixtures" / "input"
DED3 = "suizhou.resident.inpatient.deductible_in_city.3"


@pytest.fixture(scope="module")
def policies():
    return load_policies()


# ---------------------------------------------------------------- overrides

def test_paths_name_parameters_as_in_policies_and_values_take_the_yaml_form(policies):
    got = {o.path: (o.previous, o.value) for o in overrides_from(policies, 2025, [
        f"{DED3}=600",
        "suizhou/resident/inpatient.deductible_in_city[2]=450.5",  # MissingParameter's spelling
        "suizhou.resident.inpatient.fund_rate.3=72.5%",
        "suizhou.resident.critical_illness.bands.others.0.rate=65%",
        "suizhou.resident.critical_illness.annual_cap.others=none",
        "suizhou.resident.out_of_scope.limit.in_county.1=none",
        "suizhou.resident.assistance.tilt_in_province_only=no",
        "suizhou.resident.inpatient.class_b_preselfpay_ledgers=inpatient,day_surgery",
        "suizhou.resident.outpatient_pool.levels_allowed=[1, 2]",
        "suizhou.resident.assistance.application_per_year=2",
    ])}
    assert got == {
        DED3: (900, 600),
        "suizhou.resident.inpatient.deductible_in_city.2": (500, "450.50"),
        "suizhou.resident.inpatient.fund_rate.3": ("70%", "72.5%"),
        "suizhou.resident.critical_illness.bands.others.0.rate": ("60%", "65%"),
        "suizhou.resident.critical_illness.annual_cap.others": (350000, "none"),
        "suizhou.resident.out_of_scope.limit.in_county.1": ("3%", "none"),
        "suizhou.resident.assistance.tilt_in_province_only": (True, False),
        "suizhou.resident.inpatient.class_b_preselfpay_ledgers": (["inpatient", "day_surgery", "maternity"],
                                                                  ["inpatient", "day_surgery"]),
        "suizhou.resident.outpatient_pool.levels_allowed": ([1], [1, 2]),
        "suizhou.resident.assistance.application_per_year": (1, 2),
    }
    # a mapping sets its keys; a later --set of the same path wins
    got = overrides_from(policies, 2025, [f"{DED3}=1", "suizhou.resident.inpatient.deductible_in_city={1: 100, 3: 800}"])
    assert [(o.path, o.value) for o in got] == [("suizhou.resident.inpatient.deductible_in_city.1", 100), (DED3, 800)]


@pytest.mark.parametrize("setting, message", [
    (f"{DED3}=80.123", "'80.123' is not an amount of yuan ≥ 0 with at most 2 decimals"),
    (f"{DED3}=-5", "'-5' is not an amount of yuan ≥ 0"),
    (f"{DED3}=none", '"none" (no limit) is not a value this parameter takes'),
    ("suizhou.resident.annual_cap.hifp=none", '"none" (no limit) is not a value this parameter takes'),
    ("suizhou.resident.inpatient.fund_rate.3=72", "a rate is written with its percent sign"),
    ("suizhou.resident.inpatient.fund_rate.3=120%", "'120%' is not between 0% and 100%"),
    ("suizhou.resident.inpatient.fund_rate.3=70.005%", "not a rate in whole basis points"),
    ("suizhou.resident.assistance.tilt_in_province_only=maybe", "'maybe' is not true or false"),
    ("suizhou.resident.assistance.application_per_year=1.5", "'1.5' is not a whole number ≥ 0"),
    ("suizhou.resident.outpatient_pool.levels_allowed=[1, x]", "is not a list of whole numbers"),
    ("suizhou.resident.assistance.basic_base=inscp_scp_amt", "cannot be set in a what-if"),
    ("suizhou.resident.critical_illness.bands.others=1", "set one band's bound or rate"),
    (f"{DED3}", "expected PATH=VALUE"),
])
def test_values_are_checked_against_the_unit(policies, setting, message):
    with pytest.raises(OverrideError) as e:
        overrides_from(policies, 2025, [setting])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_path_names_the_nearest_valid_ones(policies):
    with pytest.raises(OverrideError) as e:
        overrides_from(policies, 2025, ["suizhou.resident.inpatient.deductable_in_city.3=600"])
    msg = str(e.value)
    assert msg.startswith("unknown parameter path 'suizhou.resident.inpatient.deductable_in_city.3'; nearest valid: ")
    assert msg.split("nearest valid: ")[1].split(", ")[0] == DED3 and "\n" not in msg
    with pytest.raises(OverrideError, match=r"deductible_in_city\.4'; nearest valid: " + DED3.replace(".", r"\.")):
        overrides_from(policies, 2025, ["suizhou.resident.inpatient.deductible_in_city.4=600"])  # no level 4
    with pytest.raises(OverrideError, match="nearest valid: suizhou.resident.inpatient.deductible_in_city.3, "
                                            "xiangyang.employee.inpatient.deductible_in_city.3"):
        overrides_from(policies, 2025, ["inpatient.deductible_in_city.3=600"])  # without region and scheme


def test_an_override_holds_for_the_simulated_year_only(policies):
    name = "inpatient.deductible_exempt_identities"  # 2025: six identities; 2026-01-01: none
    p = apply_overrides(policies, overrides_from(policies, 2025, [f"suizhou.resident.{name}=[tekun]", f"{DED3}=600"]),
                        2025)
    assert p.value("suizhou", "resident", name, dt.date(2025, 1, 1)) == ["tekun"]
    assert p.value("suizhou", "resident", name, dt.date(2025, 12, 31)) == ["tekun"]
    assert p.value("suizhou", "resident", name, dt.date(2026, 1, 1)) == []
    assert p.value("suizhou", "resident", "inpatient.deductible_in_city", dt.date(2025, 7, 1)) == {1: 200, 2: 500, 3: 600}
    assert p.value("suizhou", "resident", "inpatient.deductible_in_city", dt.date(2026, 1, 1)) == {1: 200, 2: 500, 3: 900}
    # a parameter with values before the year keeps them (xiangyang employees: 95 from the reform)
    q = apply_overrides(policies, overrides_from(policies, 2024, ["xiangyang.employee.account.credit_retired_normal=100"]),
                        2024)
    key = ("xiangyang", "employee", "account.credit_retired_normal")
    assert [q.value(*key, dt.date(y, 6, 1)) for y in (2023, 2024, 2025)] == [95, 100, 95]
    assert policies.value(*key, dt.date(2024, 6, 1)) == 95  # the loaded policies are not changed
    assert q.digest != policies.digest


def test_every_parameter_set_to_its_current_value_reads_back_unchanged(policies, tmp_path):
    current = current_values(policies, 2025)
    assert len(current) > 200
    f = tmp_path / "same.yaml"
    f.write_text(yaml.safe_dump(dict(current), allow_unicode=True), encoding="utf-8")
    got = overrides_from(policies, 2025, [], f)
    assert len(got) == len(current) and all(o.value == o.previous for o in got)


# ---------------------------------------------------------------- a hand-computed scenario, end to end

def _month_csv(folder: Path, rows: list[str]) -> None:
    folder.mkdir(parents=True)
    header = ("setl_id,mdtrt_id,psn_no,insutype,med_type,fixmedins_code,begndate,enddate,setl_time,dise_codg,"
              "dise_cert_code,offsite_type,presc_fixmedins_code,trauma_report_no,is_emergency_rescue,medfee_sumamt,"
              "fulamt_ownpay_amt,overlmt_selfpay,cls_a_amt,cls_b_amt,orig_setl_id")
    (folder / "hospital_settlements_01.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def _stay(setl_id: str, psn: str, inst: str, day: str, class_a: str) -> str:
    return (f"{setl_id},M{setl_id},{psn},390,21,{inst},{day},{day},{day} 10:00:00,K35,,,,,false,"
            f"{class_a},0,0,{class_a},0,")


@pytest.fixture(scope="module")
def small(tmp_path_factory, prefect_harness):
    """W1 (dibao_edge: S2, assistance class 3) has two level-3 stays of 40,000 class A at H001 (Suizhou, in her
    county), one in January and one in February; W2 (ordinary) one level-2 stay of 10,000. Only January and
    February 2025 are loaded."""
    from flows.monthly import year_flow
    root = tmp_path_factory.mktemp("whatif-in")
    shutil.copytree(FIXTURE / "reference", root / "reference")
    ref = root / "reference"
    with open(ref / "persons.csv", "a", encoding="utf-8") as f:
        f.write("W1,421302196001010020,W,2,1960-01-01,390,421302,false,2010-01-01\n"
                "W2,421302196001010039,W,1,1960-01-01,390,421302,false,2010-01-01\n")
    with open(ref / "identities.csv", "a", encoding="utf-8") as f:
        f.write("W1,dibao_edge,2024-01-01,\n")
    with open(ref / "institutions.csv", "a", encoding="utf-8") as f:
        f.write("H003,曾都区医院,hospital,2,hospital,421302,false\n")
    _month_csv(root / "2025-01", [_stay("A1", "W1", "H001", "2025-01-10", "40000.00"),
                                  _stay("B1", "W2", "H003", "2025-01-12", "10000.00")])
    _month_csv(root / "2025-02", [_stay("A2", "W1", "H001", "2025-02-10", "40000.00")])
    db = tmp_path_factory.mktemp("whatif-db") / "w.duckdb"
    year_flow(2025, str(root), str(db))
    return root, db


def _dump(db: Path, tables: list[str]) -> dict:
    return {t: q(db, f"SELECT * FROM {t} ORDER BY ALL") for t in tables}


BASELINE_TABLES = ["runs", "settlements", "rejects", "adjudicated", "accumulators", "assistance_applications",
                   "account_ledger", "account_month_end", "contributions", "persons"]




@pytest.fixture(scope="module")
def ded3(small):
    """The scenario "ded3" on the small baseline, and the baseline's tables before it was made."""
    from flows.whatif import whatif_flow
    _, db = small
    before = _dump(db, BASELINE_TABLES)
    rec = whatif_flow("ded3", 2025, [o.as_dict() for o in overrides_from(load_policies(), 2025, [f"{DED3}=600"])],
                      str(db))
    return rec, before


def test_hand_computed_scenario_across_the_four_resident_funds(small, ded3):
    """POLICY §3.6–§3.9 by hand, level-3 deductible 900 → 600 (every amount in yuan):

    baseline  stay 1: hifp (40,000 − 900) × 70% = 27,370; burden 12,630 → hifmi (12,630 − 12,000) × 60% = 378;
                      assistance base 40,000 − 27,370 − 378 = 12,252 → maf (12,252 − 1,800) × 60% = 6,271.20;
                      tilt: self-pay 12,252 − 6,271.20 = 5,980.80 ≤ 7,000 → 0
              stay 2: hifp 27,370; burden 25,260 → hifmi 13,260 × 60% − 378 = 7,578; base 5,052 → maf 3,031.20;
                      self-pay 5,980.80 + 2,020.80 = 8,001.60 → tilt (8,001.60 − 7,000) × 80% = 801.28
    scenario  stay 1: hifp 39,400 × 70% = 27,580; burden 12,420 → hifmi 252; base 12,168 → maf 6,220.80; tilt 0
              stay 2: hifp 27,580; burden 24,840 → hifmi 12,840 × 60% − 252 = 7,452; base 4,968 → maf 2,980.80;
                      self-pay 5,947.20 + 1,987.20 = 7,934.40 → tilt 747.52
    W2's level-2 stay is not touched.
    """
    _, db = small
    rec, before = ded3
    assert _dump(db, BASELINE_TABLES) == before  # the baseline is never touched
    assert rec["months"] == ["2025-01", "2025-02"] and (rec["lines"], rec["persons"]) == (3, 2)
    assert rec["missing_months"] == [f"2025-{m:02d}" for m in range(3, 13)]
    assert not rec["registers"]["changed"]

    funds = ["hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay", "psn_cash_pay"]
    lines = q(db, f"SELECT setl_id, {', '.join(funds)} FROM whatif_adjudicated WHERE scenario = 'ded3' ORDER BY 1")
    d = Decimal
    assert lines == [("A1", d("27580.00"), d("252.00"), d("6220.80"), d("0.00"), d("5947.20")),
                     ("A2", d("27580.00"), d("7452.00"), d("2980.80"), d("747.52"), d("1239.68")),
                     ("B1", d("7600.00"), d("0.00"), d("0.00"), d("0.00"), d("2400.00"))]
    base = q(db, f"SELECT setl_id, {', '.join(funds)} FROM adjudicated ORDER BY 1")
    assert base[:2] == [("A1", d("27370.00"), d("378.00"), d("6271.20"), d("0.00"), d("5980.80")),
                        ("A2", d("27370.00"), d("7578.00"), d("3031.20"), d("801.28"), d("1219.52"))]

    delta = dict(q(db, "SELECT fund, sum(difference) FROM v_whatif_delta WHERE scenario = 'ded3' GROUP BY fund"))
    assert delta == {"hifp_pay": d("420.00"), "hifmi_pay": d("-252.00"), "maf_pay": d("-100.80"),
                     "maf_tilt_pay": d("-53.76"), "hosp_part_amt": 0, "acct_pay": 0, "acct_mulaid_pay": 0,
                     "psn_cash_pay": d("-13.44"), "psn_part_amt": d("-13.44")}
    rows = q(db, "SELECT month, identity_group, hosp_lv, baseline_amt, scenario_amt, difference, persons, "
                  "persons_more, persons_less FROM v_whatif_delta WHERE scenario = 'ded3' AND fund = 'maf_tilt_pay' "
                  "ORDER BY month, hosp_lv")
    assert rows == [("2025-01", "ordinary", "2", 0, 0, 0, 1, 0, 0), ("2025-01", "s2", "3", 0, 0, 0, 1, 0, 0),
                    ("2025-02", "s2", "3", d("801.28"), d("747.52"), d("-53.76"), 1, 0, 1)]


def test_report_list_rerun_and_drop(small, ded3, tmp_path, capsys):
    import openpyxl

    from flows import reports
    from flows.cli import main
    from flows.whatif_report import write_report
    _, db = small
    con = reports.open_readonly(db)
    try:
        r = write_report(con, "ded3", "xlsx", tmp_path / "w.xlsx")
        write_report(con, "ded3", "html", tmp_path / "w.html")
    finally:
        con.close()
    fund = {row[0]: row[4] for row in r.by_fund.df.iter_rows()}
    assert (fund["hifp_pay"], fund["maf_tilt_pay"], fund["psn_part_amt"], fund["maf_application"]) == (42000, -5376,
                                                                                                      -1344, 0)
    spill = r.spill_over.df.row(-1, named=True)  # total: critical illness and assistance absorb 406.56 of 420
    assert spill["region"] == "合计 total" and spill["spill_over_ratio"] == Decimal("0.9680")
    assert r.distribution.df.rows() == [("any change", 0, 1), ("more than 100 yuan", 0, 0),
                                        ("more than 1,000 yuan", 0, 0), ("more than 10,000 yuan", 0, 0)]
    notes = dict(r.notes)
    assert notes["months"].startswith("2025-01, 2025-02 — MISSING 2025-03 … 2025-12 (10 months) (not loaded")
    wb = openpyxl.load_workbook(tmp_path / "w.xlsx")
    assert wb.sheetnames[:5] == ["说明 about", "按基金 by fund", "承接 spill-over", "按身份类别 by identity group",
                                 "个人负担分布 distribution"]
    groups = {row["identity_group"]: row for row in r.by_group.df.iter_rows(named=True)}
    assert (groups["s2"]["hifp_pay"], groups["s2"]["maf_pay"], groups["s2"]["persons_less"]) == (42000, -10080, 1)
    assert (groups["ordinary"]["hifp_pay"], groups["ordinary"]["persons_less"]) == (0, 0)
    ws = wb["按基金 by fund"]
    assert [c.value for c in ws[3]][:5] == ["fund", "fund_label", "baseline_amt", "scenario_amt", "difference"]
    assert ws.cell(2, 5).value == "差额(方案-基线)"
    assert ws.cell(4, 1).value == "hifp_pay" and ws.cell(4, 5).value == 420
    page = (tmp_path / "w.html").read_text(encoding="utf-8")
    assert "<svg" in page and "MISSING 2025-03 … 2025-12" in page and "<script" not in page

    assert main(["whatif", "report", "ded3", "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    assert "suizhou.resident.inpatient.deductible_in_city.3: 900 → 600" in out and "420.00" in out
    assert "1 pay less" in err

    # rerunning a name replaces the scenario; list; drop
    from flows.whatif import whatif_flow
    whatif_flow("ded3", 2025, [{"path": DED3, "value": 600, "previous": 900}], str(db))
    assert q(db, "SELECT count(*) FROM whatif_scenarios")[0][0] == 1
    assert q(db, "SELECT count(*) FROM whatif_adjudicated")[0][0] == 3
    assert main(["whatif", "list", "--db", str(db)]) == 0
    assert "ded3" in capsys.readouterr().out
    assert main(["whatif", "drop", "ded3", "--db", str(db)]) == 0
    assert capsys.readouterr().err.startswith("scenario ded3 dropped from ")
    assert [q(db, f"SELECT count(*) FROM {t}")[0][0] for t in
            ("whatif_scenarios", "whatif_adjudicated", "whatif_accumulators")] == [0, 0, 0]
    assert main(["whatif", "drop", "ded3", "--db", str(db)]) == 1
    assert capsys.readouterr().err.strip() == "yibao: no scenario named 'ded3' (see `yibao whatif list`)"
    assert main(["whatif", "--year", "2025", "--set", "suizhou.resident.inpatient.deductible_in_cty.3=600",
                 "--name", "x", "--db", str(db)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("yibao: unknown parameter path") and DED3 in err and "\n" not in err
    assert main(["whatif", "--year", "2024", "--set", f"{DED3}=600", "--name", "x", "--db", str(db)]) == 1
    assert "no month of 2024 is loaded" in capsys.readouterr().err


# ---------------------------------------------------------------- every parameter at its value: zero delta

def test_scenario_at_current_values_gives_zero_delta_on_every_row(loaded, tmp_path):
    """The session's generated bureau (residents, employees with accounts and family aid, reversals, assistance
    applications) over four months; every settable parameter set to its current value."""
    from flows.whatif import whatif_flow
    db = tmp_path / "s.duckdb"
    shutil.copy(loaded, db)
    pol = load_policies()
    same = [{"path": p, "value": v, "previous": v} for p, v in current_values(pol, 2025)]
    rec = whatif_flow("same", 2025, same, str(db))
    n_lines = q(db, "SELECT count(*) FROM adjudicated")[0][0]
    assert rec["lines"] == n_lines > 200
    rows = q(db, "SELECT count(*), count(*) FILTER (WHERE difference <> 0 OR persons_more + persons_less > 0), "
                  "count(DISTINCT fund), sum(lines) FROM v_whatif_delta WHERE scenario = 'same'")[0]
    assert rows[0] > 100 and rows[1] == 0 and rows[2] == 9 and rows[3] == 9 * n_lines
    # the scenario's lines are the baseline's, column by column (money, reasons, explanations)
    con = store.connect(db, read_only=True)
    try:
        base = store.fetch_fen(con, "SELECT * EXCLUDE (run_id) FROM adjudicated ORDER BY setl_id")
        scen = store.fetch_fen(con, "SELECT * EXCLUDE (scenario) FROM whatif_adjudicated ORDER BY setl_id")
        acc = [store.fetch_fen(con, f"SELECT psn_no, year, month, name, value FROM {t} ORDER BY ALL")
               for t in ("accumulators", "whatif_accumulators")]
        apps = [store.fetch_fen(con, f"SELECT app_id, status, paid_amt FROM {t} ORDER BY ALL")
                for t in ("assistance_applications", "whatif_assistance_applications")]
    finally:
        con.close()
    assert scen.select(base.columns).to_dicts() == base.to_dicts()
    assert acc[0].to_dicts() == acc[1].to_dicts() and apps[0].to_dicts() == apps[1].to_dicts()
    assert apps[0].height > 0  # on-application assistance re-read and re-applied
    assert base.filter(pl.col("orig_setl_id").is_not_null()).height > 0  # reversals were in it
    assert base["acct_pay"].sum() > 0


def test_paths_command_lists_settable_paths_with_their_values(capsys):
    from flows.cli import main
    from flows.whatif import WhatIfError, check_name
    assert main(["whatif", "paths", "inpatient.deductible_in_city", "--year", "2025"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{DED3} = 900" in out and "suizhou.resident.inpatient.deductible_in_city.1 = 200" in out
    assert not any("formula" in line or line.startswith("xiangyang.resident") for line in out)  # missing: not settable
    with pytest.raises(WhatIfError, match="scenario name 'a b'"):
        check_name("a b")
