"""Issue 17 presentation: the monthly clearing statement (医保基金月度清算) and the supervision findings
(基金监管), read from the marts of flows/views.py (`v_clearing`, `violations`, `v_violations_by_*`) — stored
columns only, never a rule recomputed. Formats with the helpers of flows/reports.py (csv with the
formula-injection escape, xlsx via xlsxwriter with Chinese labels, self-contained html, terminal tables).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from flows.reports import (
    LEVEL_LABEL,
    MONTH_RE,
    Table,
    _e,
    html_page,
    html_table,
    neutralise,
    period_filter,
    period_text,
    query,
    write_csv,
    yuan,
)
from flows.views import CLEARING_FUNDS, LINE_KIND_LABEL

LABELS = {
    "line_kind": "结算类别", "line_kind_label": "结算类别名称", "compared_amt": "比对核算金额",
    "net_payable_amt": "应付净额", "adjudicated_amt": "核算金额", "reported_amt": "机构上报金额",
    "difference": "差额(上报-核算)", "rule_id": "规则编码", "rule_name": "规则名称", "rule_name_en": "规则名称(英文)",
    "sev_deg": "严重程度", "vola_amt": "涉及金额", "vola_bhvr_type": "违规行为类型", "vola_cont": "违规内容",
    "vola_evid": "违规证据(结算ID)", "evid_count": "证据笔数", "findings": "疑点数", "institutions": "机构数",
    "net_payable_total": "应付净额合计", "reported_total": "上报合计", "difference_total": "差额合计",
}


# ---------------------------------------------------------------- clearing statement

@dataclass
class Clearing:
    month: str
    summary: Table  # one row per institution
    detail: Table  # v_clearing rows (institution × line kind × payer)
    institutions: list[tuple[str, str | None, str | None]]  # code, name, level


def clearing_statement(con: duckdb.DuckDBPyConnection, month: str, institution: str | None = None) -> Clearing:
    if not MONTH_RE.match(month or ""):
        raise ValueError(f"not a month: {month!r} (expected YYYY-MM)")
    cond, params = "month = ?", [month]
    if institution:
        cond, params = cond + " AND fixmedins_code = ?", [*params, institution]
    detail = query(con, f"SELECT * FROM v_clearing WHERE {cond} ORDER BY fixmedins_code, line_kind DESC, "
                        "array_position(?, fund)", [*params, [c for c, *_ in CLEARING_FUNDS]],
                   "明细 detail", f"医保基金月度清算明细 clearing detail, {month}")
    if detail.df.height == 0:
        raise LookupError(f"no adjudicated settlement{' of ' + institution if institution else ''} in {month}")
    detail.labels = LABELS
    net = ", ".join(f"CAST(sum(net_payable_amt) FILTER (WHERE fund = '{c}') AS DECIMAL(18,2)) AS {c}"
                    for c, _, _, payable in CLEARING_FUNDS if payable)
    summary = query(con, f"""
        SELECT fixmedins_code, any_value(fixmedins_name) AS fixmedins_name, any_value(hosp_lv) AS hosp_lv,
          CAST(sum(settlements) FILTER (WHERE fund = 'hifp_pay') AS BIGINT) AS settlements,
          CAST(sum(medfee_sumamt) FILTER (WHERE fund = 'hifp_pay') AS DECIMAL(18,2)) AS medfee_sumamt, {net},
          CAST(sum(adjudicated_amt) FILTER (WHERE fund = 'hosp_part_amt') AS DECIMAL(18,2)) AS hosp_part_amt,
          CAST(sum(net_payable_amt) AS DECIMAL(18,2)) AS net_payable_total,
          CAST(sum(reported_amt) AS DECIMAL(18,2)) AS reported_total,
          CAST(sum(difference) AS DECIMAL(18,2)) AS difference_total
        FROM v_clearing WHERE {cond} GROUP BY fixmedins_code ORDER BY fixmedins_code""", params,
                    "汇总 summary", f"医保基金月度清算汇总表 clearing summary, {month}")
    summary.labels = LABELS
    persons = con.execute(f"SELECT count(DISTINCT psn_no) FROM adjudicated WHERE {cond}", params).fetchall()[0][0]
    summary.title += f" ({persons} persons)"
    insts = [(r[0], r[1], r[2]) for r in summary.df.select("fixmedins_code", "fixmedins_name", "hosp_lv").iter_rows()]
    return Clearing(month, summary, detail, insts)


def _institution_rows(c: Clearing, code: str) -> pl.DataFrame:
    return c.detail.df.filter(pl.col("fixmedins_code") == code)


def clearing_totals(c: Clearing) -> dict[str, int]:
    """Net payable by payer over the statement (fen)."""
    d = c.detail.df
    return {f: int(d.filter(pl.col("fund") == f)["net_payable_amt"].sum()) for f, *_ in CLEARING_FUNDS}


def write_clearing(con: duckdb.DuckDBPyConnection, month: str, institution: str | None, fmt: str,
                   out: Path | str) -> Clearing:
    c = clearing_statement(con, month, institution)
    if fmt == "csv":
        write_csv(c.detail, out)
    elif fmt == "xlsx":
        _clearing_xlsx(c, out)
    elif fmt == "html":
        Path(out).write_text(_clearing_html(c), encoding="utf-8")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return c


def _sheet_name(code: str, used: set[str]) -> str:
    name = "".join(ch for ch in code if ch not in "[]:*?/\\")[:31] or "institution"
    while name in used:
        name = name[:28] + f"~{len(used)}"
    used.add(name)
    return name


def _clearing_xlsx(c: Clearing, out: Path | str) -> None:
    """The summary sheet (the generic layout of flows/reports.write_xlsx), then one sheet per institution in the
    layout a finance office signs: title, institution name, code and level, period, the payers' table with
    this month's settlements and reversals of earlier months on their own lines, totals, signature lines."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(out), {"strings_to_formulas": False, "strings_to_urls": False,
                                        "strings_to_numbers": False})
    try:
        title_f = wb.add_format({"bold": True, "font_size": 15, "align": "center"})
        head_f = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True, "align": "center"})
        text_f = wb.add_format({"border": 1})
        money_f = wb.add_format({"num_format": "#,##0.00", "border": 1})
        total_f = wb.add_format({"num_format": "#,##0.00", "border": 1, "bold": True, "top": 2})
        total_t = wb.add_format({"border": 1, "bold": True, "top": 2})
        int_f = wb.add_format({"num_format": "#,##0", "border": 1})
        used: set[str] = set()
        # summary sheet
        ws = wb.add_worksheet(_sheet_name("汇总 summary", used))
        ws.merge_range(0, 0, 0, len(c.summary.df.columns) - 1, neutralise(f"医保基金月度清算汇总表  {c.month}"), title_f)
        ws.write_string(1, 0, neutralise(c.summary.title))
        for j, col in enumerate(c.summary.df.columns):
            ws.write_string(2, j, c.summary.label(col), head_f)
            ws.set_column(j, j, 16 if j != 1 else 28)
        for i, r in enumerate(c.summary.df.iter_rows(), start=3):
            for j, (col, v) in enumerate(zip(c.summary.df.columns, r, strict=True)):
                if v is None:
                    ws.write_blank(i, j, None, text_f)
                elif col in c.summary.money:
                    ws.write_number(i, j, v / 100, money_f)
                elif isinstance(v, int):
                    ws.write_number(i, j, v, int_f)
                else:
                    ws.write_string(i, j, neutralise(str(v)), text_f)
        n = c.summary.df.height
        ws.write_string(3 + n, 0, "合计 total", total_t)
        for j, col in enumerate(c.summary.df.columns):
            if col in c.summary.money:
                ws.write_number(3 + n, j, int(c.summary.df[col].fill_null(0).sum()) / 100, total_f)
        # one sheet per institution
        cols = [("fund_label", "基金"), ("settlements", "结算笔数"), ("persons", "人数"), ("medfee_sumamt", "医疗总费用"),
                ("adjudicated_amt", "核算金额"), ("reported_amt", "机构上报金额"), ("difference", "差额(上报-核算)"),
                ("net_payable_amt", "应付净额")]
        for code, name, level in c.institutions:
            ws = wb.add_worksheet(_sheet_name(code, used))
            ws.set_column(0, 0, 20)
            ws.set_column(1, len(cols), 16)
            ws.merge_range(0, 0, 0, len(cols), neutralise(f"医保基金月度清算单  {name or code}"), title_f)
            ws.write_string(1, 0, "定点机构名称")
            ws.write_string(1, 1, neutralise(name or ""))
            ws.write_string(2, 0, "定点机构编码")
            ws.write_string(2, 1, neutralise(code))
            ws.write_string(3, 0, "医院等级")
            ws.write_string(3, 1, LEVEL_LABEL.get(level or "", level or ""))
            ws.write_string(4, 0, "清算期间")
            ws.write_string(4, 1, c.month)
            ws.write_string(5, 0, "单位")
            ws.write_string(5, 1, "元")
            row = 7
            rows = _institution_rows(c, code)
            for kind in ("this_month", "reversal_of_earlier"):
                part = rows.filter(pl.col("line_kind") == kind)
                if part.height == 0:
                    continue
                ws.write_string(row, 0, LINE_KIND_LABEL[kind], head_f)
                for j, (_, label) in enumerate(cols[1:], start=1):
                    ws.write_string(row, j, label, head_f)
                row += 1
                for r in part.iter_rows(named=True):
                    ws.write_string(row, 0, f"{r['fund_label']} {r['fund']}", text_f)
                    for j, (col, _) in enumerate(cols[1:], start=1):
                        v = r[col]
                        if v is None:
                            ws.write_blank(row, j, None, text_f)
                        elif col in ("settlements", "persons"):
                            ws.write_number(row, j, v, int_f)
                        else:
                            ws.write_number(row, j, v / 100, money_f)
                    row += 1
                row += 1
            ws.write_string(row, 0, "应付净额合计", total_t)
            ws.write_number(row, len(cols) - 1, int(rows["net_payable_amt"].sum()) / 100, total_f)
            for k, col in ((len(cols) - 2, "difference"), (len(cols) - 3, "reported_amt")):
                ws.write_number(row, k, int(rows[col].fill_null(0).sum()) / 100, total_f)
            row += 3
            ws.write_string(row, 0, "医保经办机构(盖章):")
            ws.write_string(row, 4, "定点医疗机构(盖章):")
            ws.write_string(row + 2, 0, "经办人:        复核人:")
            ws.write_string(row + 2, 4, "经办人:        日期:")
    finally:
        wb.close()


def _clearing_html(c: Clearing) -> str:
    notes = [("report", "医保基金月度清算 clearing statement"), ("period", c.month),
             ("generated_at", dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")),
             ("amounts", "yuan (元); net payable = the recomputed payment of each fund and account, paid to the "
                         "institution; the institution's share (POLICY §3.10) is borne by the institution"),
             ("reversals", "reversals of settlements of earlier months are shown on their own lines")]
    sections = [(c.summary.title, html_table(c.summary))]
    for code, name, level in c.institutions:
        rows = _institution_rows(c, code).drop("month", "fixmedins_code", "fixmedins_name", "hosp_lv")
        t = Table(code, f"{name or code} ({code}), {LEVEL_LABEL.get(level or '', level or '')}, {c.month}", rows,
                  c.detail.money & set(rows.columns), set(), LABELS)
        total = yuan(int(rows["net_payable_amt"].sum()))
        sections.append((f"{name or code} — 应付净额合计 {total} 元", html_table(t) + f"<p>{_e(code)}</p>"))
    return html_page(f"医保基金月度清算 Clearing statement {c.month}", notes, sections)


# ---------------------------------------------------------------- supervision findings

FINDING_COLUMNS = ("month, rule_id, rule_name, sev_deg, vola_amt, vola_bhvr_type, v.psn_no, p.psn_name_masked, "
                   "v.fixmedins_code, fixmedins_name, hosp_lv, evid_count, vola_evid, vola_cont, rule_name_en")


def rules_audit(con: duckdb.DuckDBPyConnection, year: int | None = None, month: str | None = None
                ) -> dict[str, Table]:
    cond, params = period_filter(year, month)
    when = period_text(year, month)
    by_month = query(con, f"SELECT * FROM v_violations_by_month WHERE {cond} ORDER BY month, rule_id", params,
                     "按月份和规则 by month", f"基金监管疑点 — by month and rule, {when}")
    by_inst = query(con, f"SELECT * FROM v_violations_by_institution WHERE {cond} "
                         "ORDER BY vola_amt DESC, month, fixmedins_code, rule_id", params,
                    "按机构 by institution", f"基金监管疑点 — by institution, {when}")
    findings = query(con, f"SELECT {FINDING_COLUMNS} FROM violations v LEFT JOIN persons p ON p.psn_no = v.psn_no "
                          f"WHERE {cond} ORDER BY month, rule_id, finding_key", params,
                     "疑点明细 findings", f"基金监管疑点明细 — one row per finding, {when}")
    for t in (by_month, by_inst, findings):
        t.labels = LABELS
    return {"by_month": by_month, "by_institution": by_inst, "findings": findings}


def rules_summary(t: dict[str, Table]) -> str:
    f = t["findings"].df
    if f.height == 0:
        return "0 supervision findings"
    per = f.group_by("rule_id").agg(pl.len(), pl.col("vola_amt").sum()).sort("rule_id")
    return (f"{f.height} supervision findings, {yuan(int(f['vola_amt'].sum()))} yuan at stake: "
            + ", ".join(f"{r} {n} ({yuan(int(a))})" for r, n, a in per.iter_rows()))
