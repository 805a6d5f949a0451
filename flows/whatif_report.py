"""What-if comparison (issue 8): the views `v_whatif_lines` / `v_whatif_delta` and `yibao whatif report`.

- `v_whatif_lines`: one row per scenario, settlement and payer — the baseline amount (`adjudicated`)
  and the scenario's (`whatif_adjudicated`) side by side, for the months the scenario covers.
  Payers are those of DATA.md §4 (flows/views.py FUNDS) and `psn_part_amt`, what the person bears.
- `v_whatif_delta`: per scenario, payer, month, region, scheme, ledger, institution level and identity
  group: baseline, scenario, difference, lines, persons, and the persons for whom that payer's amount
  is higher (`persons_more`) or lower (`persons_less`) — for `psn_part_amt`, persons paying more or less.

The report (table, xlsx, html; flows/reports.py writers, masking and formula neutralisation) adds
the year's totals by payer (on-application assistance included), the spill-over of a basic-fund
change into critical-illness insurance and assistance, the distribution of the change per person,
and the same comparison by month, scheme, ledger, level and identity group. Money stays
DECIMAL(18,2) yuan in SQL and Int64 fen in the tables; nothing goes through a float.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from flows import reports
from flows.views import FUNDS, _labels, ratio_sql

PAYERS: list[tuple[str, str]] = [*FUNDS, ("psn_part_amt", "个人负担")]
DIMENSIONS = ["year", "month", "region", "scheme", "ledger", "hosp_lv", "identity_group"]
VIEWS = ("v_whatif_lines", "v_whatif_delta")
LABELS = {"difference": "差额(方案-基线)"}
# Payers left out of the wide tables on a terminal (they are in the xlsx and html): the person's share is psn_part_amt.
TERMINAL_LEFT_OUT = {"hosp_part_amt", "acct_pay", "acct_mulaid_pay", "psn_cash_pay"}
THRESHOLDS_YUAN = (0, 100, 1_000, 10_000)  # the distribution of the change per person (issue 8)


def view_statements(temp: str = "") -> list[str]:
    both = ",\n    ".join(f"coalesce(b.{f}, 0) AS b_{f}, coalesce(s.{f}, 0) AS s_{f}" for f, _ in PAYERS)
    pairs = ", ".join(f"(b_{f}, s_{f}) AS {f}" for f, _ in PAYERS)
    keys = ", ".join(f"coalesce(s.{c}, b.{c}) AS {c}" for c in ("scenario", "month", "setl_id", "psn_no", "region",
                                                                  "scheme", "ledger", "hosp_lv"))
    lines = f"""
CREATE OR REPLACE {temp}VIEW v_whatif_lines AS
WITH sm AS (SELECT scenario, unnest(string_split(months, ',')) AS month FROM whatif_scenarios),
b AS (SELECT sm.scenario, a.* FROM adjudicated a JOIN sm USING (month)),
j AS (
  SELECT {keys}, coalesce(s.identity_group, b.identity_group, 'unknown') AS identity_group,
    {both}
  FROM b FULL JOIN whatif_adjudicated s ON s.scenario = b.scenario AND s.setl_id = b.setl_id AND s.month = b.month
)
SELECT scenario, CAST(substr(month, 1, 4) AS INTEGER) AS year, month, region, scheme, ledger, hosp_lv,
  identity_group, psn_no, setl_id, fund, baseline_amt, scenario_amt
FROM (UNPIVOT j ON {pairs} INTO NAME fund VALUE baseline_amt, scenario_amt)
"""
    delta = f"CREATE OR REPLACE {temp}VIEW v_whatif_delta AS\n" + delta_sql(["scenario", *DIMENSIONS])
    return [lines, delta]


def delta_sql(dims: list[str], where: str = "TRUE") -> str:
    """Baseline, scenario, difference and persons more/less per `dims` and payer; a person counts once per
    group (their lines in it summed first)."""
    d = ", ".join(dims)
    return f"""
WITH p AS (
  SELECT {d}{", " if dims else ""}fund, psn_no, count(*) AS lines, sum(baseline_amt) AS b, sum(scenario_amt) AS s
  FROM v_whatif_lines WHERE {where} GROUP BY ALL
)
SELECT {d}{", " if dims else ""}fund, any_value(fund_label) AS fund_label,
  CAST(sum(b) AS DECIMAL(18,2)) AS baseline_amt, CAST(sum(s) AS DECIMAL(18,2)) AS scenario_amt,
  CAST(sum(s) - sum(b) AS DECIMAL(18,2)) AS difference, CAST(sum(lines) AS BIGINT) AS lines, count(*) AS persons,
  count(*) FILTER (WHERE s > b) AS persons_more, count(*) FILTER (WHERE s < b) AS persons_less
FROM p JOIN {_labels(PAYERS, 'fund', 'fund_label')} USING (fund)
GROUP BY {d}{", " if dims else ""}fund
"""


def wide_sql(dims: list[str], where: str) -> str:
    """Per `dims` and in total: each payer's difference side by side, the spill-over ratio of the basic fund's
    change, and the persons paying more / less (psn_part_amt summed per person within the group)."""
    d = ", ".join(dims)
    diff = {f: f"coalesce(sum(d) FILTER (WHERE fund = '{f}'), 0)" for f, _ in PAYERS}
    others = f"{diff['hifmi_pay']} + {diff['maf_pay']} + {diff['maf_tilt_pay']}"
    keys = [f"coalesce(CAST({dims[0]} AS VARCHAR), '合计 total') AS {dims[0]}",
            *[f"coalesce(CAST({c} AS VARCHAR), '') AS {c}" for c in dims[1:]]]
    return f"""
WITH p AS (SELECT {d}, psn_no, fund, sum(scenario_amt - baseline_amt) AS d FROM v_whatif_lines WHERE {where}
           GROUP BY ALL)
SELECT {", ".join(keys)},
  {", ".join(f"CAST({e} AS DECIMAL(18,2)) AS {f}" for f, e in diff.items())},
  {ratio_sql(f"-({others}) * sign({diff['hifp_pay']})", f"abs({diff['hifp_pay']})")} AS spill_over_ratio,
  count(*) FILTER (WHERE fund = 'psn_part_amt' AND d > 0) AS persons_more,
  count(*) FILTER (WHERE fund = 'psn_part_amt' AND d < 0) AS persons_less
FROM p GROUP BY GROUPING SETS (({d}), ()) ORDER BY GROUPING({dims[0]}), {d}
"""


def months_text(months: list[str]) -> str:
    """2025-01 … 2025-06 (6 months) when consecutive, else the list."""
    if len(months) > 2 and [int(m[5:]) for m in months] == list(range(int(months[0][5:]), int(months[-1][5:]) + 1)):
        return f"{months[0]} … {months[-1]} ({len(months)} months)"
    return ", ".join(months)


def has_scenarios(con: duckdb.DuckDBPyConnection) -> bool:
    return reports.has_table(con, "whatif_scenarios")


# ---------------------------------------------------------------- the report

@dataclass
class WhatIfReport:
    scenario: dict
    notes: list[tuple[str, str]]
    by_fund: reports.Table
    spill_over: reports.Table
    by_group: reports.Table
    distribution: reports.Table
    by_month: reports.Table
    tables: list[reports.Table]  # every sheet, in order


def scenario_record(con: duckdb.DuckDBPyConnection, name: str) -> dict:
    rows = con.execute("SELECT * FROM whatif_scenarios WHERE scenario = ?", [name]).fetchall() \
        if has_scenarios(con) else []
    if not rows:
        raise LookupError(f"no scenario named {name!r} (see `yibao whatif list`)")
    cols = [c[0] for c in con.description]
    rec = dict(zip(cols, rows[0], strict=True))
    for k in ("overrides", "baseline_runs", "registers", "assumptions"):
        rec[k] = json.loads(rec[k] or "null")
    for k in ("months", "missing_months"):
        rec[k] = [m for m in (rec[k] or "").split(",") if m]
    return rec


def _baseline_changes(con: duckdb.DuckDBPyConnection, rec: dict) -> list[str]:
    """Months whose latest succeeded run is no longer the one the scenario was compared with."""
    now = dict(con.execute(
        "SELECT month, run_id FROM (SELECT *, row_number() OVER (PARTITION BY month ORDER BY started_at DESC) rn "
        "FROM runs WHERE status = 'succeeded') WHERE rn = 1").fetchall())
    return [m for m, r in sorted(rec["baseline_runs"].items()) if now.get(m) != r]


def whatif_report(con: duckdb.DuckDBPyConnection, name: str) -> WhatIfReport:
    from flows.overrides import describe
    from flows.whatif import registers_text

    rec = scenario_record(con, name)
    year = rec["year"]
    where = "scenario = ?"
    when = f"{name}, {year}"

    def grouped(dims: list[str], sheet: str, title: str) -> reports.Table:
        order = ", ".join([*dims, "fund"]) if dims else "fund"
        return reports.query(con, f"SELECT * EXCLUDE (scenario) FROM ({delta_sql(['scenario', *dims], where)}) "
                                  f"ORDER BY {order}", [name], sheet, f"{title}, {when}")

    fund_order = " ".join(f"WHEN '{f}' THEN {i}" for i, (f, _) in enumerate(PAYERS))
    by_fund = reports.query(con, f"""
        SELECT fund, fund_label, baseline_amt, scenario_amt, difference, lines, persons, persons_more, persons_less
        FROM ({delta_sql(['scenario'], where)})
        UNION ALL
        SELECT 'maf_application', '依申请救助', CAST(coalesce(sum(b), 0) AS DECIMAL(18,2)),
          CAST(coalesce(sum(s), 0) AS DECIMAL(18,2)), CAST(coalesce(sum(s) - sum(b), 0) AS DECIMAL(18,2)),
          CAST(coalesce(sum(n), 0) AS BIGINT), count(*), count(*) FILTER (WHERE s > b),
          count(*) FILTER (WHERE s < b)
        FROM (SELECT psn_no, sum(coalesce(b_paid, 0)) AS b, sum(coalesce(s_paid, 0)) AS s, count(*) AS n FROM (
                SELECT coalesce(w.psn_no, a.psn_no) AS psn_no, a.paid_amt AS b_paid, w.paid_amt AS s_paid
                FROM (SELECT * FROM assistance_applications
                      WHERE month IN (SELECT unnest(string_split(months, ',')) FROM whatif_scenarios WHERE scenario = ?)) a
                FULL JOIN (SELECT * FROM whatif_assistance_applications WHERE scenario = ?) w
                  ON w.app_id = a.app_id AND w.month = a.month) GROUP BY psn_no)
        ORDER BY CASE fund {fund_order} ELSE 99 END""", [name, name, name],
                            "按基金 by fund", f"测算结果 — the year by payer (persons: whose amount from this payer "
                                             f"is higher / lower), {when}")
    spill = reports.query(con, wide_sql(["region", "scheme"], where), [name], "承接 spill-over",
                          "基本医保变化的大病和救助承接 — differences by payer; spill_over_ratio = −(Δhifmi + Δmaf + Δmaf_tilt) "
                          f"/ Δhifp, the share of the basic fund's change that critical illness and assistance absorb; "
                          f"persons paying more / less (psn_part_amt), {when}")
    by_group = reports.query(con, wide_sql(["identity_group"], where), [name], "按身份类别 by identity group",
                             f"测算结果 — by identity group (POLICY §2): differences by payer, persons paying more / less, "
                             f"{when}")
    bands = " UNION ALL ".join(f"SELECT {t} AS t" for t in THRESHOLDS_YUAN)
    distribution = reports.query(con, f"""
        WITH d AS (SELECT psn_no, sum(scenario_amt - baseline_amt) AS d FROM v_whatif_lines
                   WHERE {where} AND fund = 'psn_part_amt' GROUP BY psn_no)
        SELECT CASE WHEN t = 0 THEN 'any change' ELSE 'more than ' || format('{{:,}}', t) || ' yuan' END AS change,
          (SELECT count(*) FROM d WHERE d.d > t) AS persons_more,
          (SELECT count(*) FROM d WHERE d.d < -t) AS persons_less
        FROM ({bands}) ORDER BY t""", [name],
                                 "个人负担分布 distribution", "个人负担变化分布 — persons whose out-of-pocket burden over "
                                                          f"the year (psn_part_amt: account and cash) changes by more "
                                                          f"than each amount, {when}")
    by_month = grouped(["month"], "按月份 by month", "测算结果 — by month and payer")
    tables = [by_fund, spill, by_group, distribution, by_month,
              grouped(["region", "scheme"], "按险种 by scheme", "测算结果 — by region, scheme and payer"),
              grouped(["ledger"], "按待遇类别 by ledger", "测算结果 — by ledger and payer"),
              grouped(["hosp_lv"], "按医院等级 by level", "测算结果 — by institution level and payer"),
              grouped(["identity_group"], "按身份类别明细 identity x payer", "测算结果 — by identity group and payer"),
              reports.query(con, "SELECT * EXCLUDE (scenario) FROM v_whatif_delta WHERE scenario = ? "
                                 "ORDER BY month, region, scheme, ledger, hosp_lv, identity_group, fund", [name],
                            "明细 detail", f"v_whatif_delta, {when}")]
    changed = _baseline_changes(con, rec)
    missing = rec["missing_months"]
    notes = [
        ("report", "测算报告 what-if comparison"), ("scenario", name), ("year", str(year)),
        ("months", months_text(rec["months"])
                   + (f" — MISSING {months_text(missing)} (not loaded; the scenario covers the loaded months only)"
                      if missing else " — the whole year")),
        *[("override", describe(o)) for o in rec["overrides"]],
        ("baseline", "adjudicated (unchanged by the scenario)" + (
            f"; RE-RUN since the scenario was made for {', '.join(changed)}: rerun the scenario" if changed else "")),
        ("registers", registers_text(rec["registers"])),
        ("created_at", f"{rec['created_at']:%Y-%m-%d %H:%M:%S}"), ("code_version", rec["code_version"]),
        ("policy_version", f"{rec['policy_version']} + overrides = {rec['scenario_policy_version']}"),
        ("amounts", "yuan (元); difference = scenario − baseline; persons_more / persons_less: persons for whom the "
                    "payer's amount is higher / lower (for psn_part_amt: paying more / less)"),
        ("psn_part_amt", "medfee_sumamt − fund_pay_sumamt − hosp_part_amt: what the person bears (account and cash)"),
        ("privacy", "no certificate number or name; persons are told apart by psn_no and counted only"),
    ]
    about = reports.Table("说明 about", f"说明 about the scenario {name}",
                          pl.DataFrame(notes, schema={"item": pl.String, "value": pl.String}, orient="row"))
    for t in tables:
        t.labels.update(LABELS)
    return WhatIfReport(rec, notes, by_fund, spill, by_group, distribution, by_month, [about, *tables])


def summary_line(r: WhatIfReport) -> str:
    df = r.by_fund.df
    diff = dict(zip(df["fund"].to_list(), df["difference"].to_list(), strict=True))
    more = df.filter(pl.col("fund") == "psn_part_amt")
    m = int(more["persons_more"][0]) if more.height else 0
    less = int(more["persons_less"][0]) if more.height else 0
    return (f"what-if {r.scenario['scenario']} ({r.scenario['year']}): basic fund {reports.yuan(diff.get('hifp_pay'))}, "
            f"critical illness {reports.yuan(diff.get('hifmi_pay'))}, assistance {reports.yuan(diff.get('maf_pay'))} "
            f"+ tilt {reports.yuan(diff.get('maf_tilt_pay'))}, persons {reports.yuan(diff.get('psn_part_amt'))} yuan; "
            f"{m:,} persons pay more, {less:,} pay less")


def render_html(r: WhatIfReport) -> str:
    months = [m for m in r.by_month.df["month"].unique().sort().to_list()]
    bm = r.by_month.df
    series = []
    for f in ("hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay", "psn_part_amt"):
        vals = dict(bm.filter(pl.col("fund") == f).select("month", "difference").iter_rows())
        series.append((f"{dict(PAYERS)[f]} {f}", [int(vals.get(m) or 0) for m in months]))
    chart = reports.svg_stacked_bars("每月差额 Monthly difference by payer (元, scenario − baseline)", months, series)
    sections = [(r.by_fund.title, reports.html_table(r.by_fund)), ("每月差额 Monthly difference", chart)]
    sections += [(t.title, reports.html_table(t, limit=500 if t.name.startswith("明细") else None))
                 for t in r.tables[2:]]
    return reports.html_page(f"测算报告 What-if {r.scenario['scenario']} ({r.scenario['year']})", r.notes, sections)


def write_report(con: duckdb.DuckDBPyConnection, name: str, fmt: str, out: Path | str | None) -> WhatIfReport:
    r = whatif_report(con, name)
    if fmt == "table":
        for k, v in r.notes[:-3]:
            print(f"{k}: {reports.terminal_safe(v)}")
        for t in (r.by_fund, r.spill_over, r.by_group, r.distribution):
            reports.print_table(reports.narrow(t, [c for c in t.df.columns if c not in TERMINAL_LEFT_OUT]))
    elif fmt == "xlsx":
        reports.write_xlsx(r.tables, out)
    elif fmt == "html":
        Path(out).write_text(render_html(r), encoding="utf-8")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return r
