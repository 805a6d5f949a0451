"""Prefect artifacts of a month's run (issue 5): a table (fund totals, rejects by reason, violations) and a
markdown summary, keyed `yibao-month-funds` / `yibao-month-summary` so Prefect lines up the months' history."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import store
from flows.views import FUNDS as PAYERS

FUNDS = tuple(col for col, _ in PAYERS)  # every payer of a line, DATA.md §4


def month_figures(db: str, month: str) -> dict:
    con = store.connect(db, read_only=True)
    try:
        totals = con.execute("SELECT count(*), coalesce(sum(medfee_sumamt), 0), "
                             + ", ".join(f"coalesce(sum({f}), 0)" for f in FUNDS)
                             + " FROM adjudicated WHERE month = ?", [month]).fetchone()
        rejects = con.execute("SELECT reason_code, count(*) FROM rejects WHERE month = ? GROUP BY 1 ORDER BY 2 DESC",
                              [month]).fetchall()
        violations = con.execute("SELECT count(*) FILTER (WHERE reason_codes LIKE '%OUT_OF_SCOPE_%' "
                                 "AND reason_codes NOT LIKE '%WITHIN_LIMIT%' AND reason_codes NOT LIKE '%NOT_CONTROLLED%'),"
                                 " coalesce(sum(hosp_part_amt), 0) FROM adjudicated WHERE month = ?", [month]).fetchone()
        # issue 17: supervision findings by rule, and the clearing statement's net payable by institution
        findings = con.execute("SELECT rule_id, any_value(rule_name), count(*), coalesce(sum(vola_amt), 0) "
                               "FROM violations WHERE month = ? GROUP BY rule_id ORDER BY rule_id", [month]).fetchall()
        clearing = con.execute("SELECT fixmedins_code, any_value(fixmedins_name), sum(net_payable_amt), "
                               "sum(difference) FROM v_clearing WHERE month = ? GROUP BY fixmedins_code "
                               "ORDER BY fixmedins_code", [month]).fetchall()
    finally:
        con.close()
    return {"lines": totals[0], "total": totals[1], "funds": dict(zip(FUNDS, totals[2:], strict=True)),
            "rejects": rejects, "violations": violations[0], "excess_to_institutions": violations[1],
            "findings": findings, "clearing": clearing}


def publish(db: str, month: str, run_id: str) -> dict:
    f = month_figures(db, month)
    rows = [{"month": month, "item": "total cost", "value": str(f["total"])}]
    rows += [{"month": month, "item": fund, "value": str(v)} for fund, v in f["funds"].items()]
    rows += [{"month": month, "item": f"rejects {code}", "value": str(n)} for code, n in f["rejects"]]
    rows.append({"month": month, "item": "out-of-scope violations", "value": str(f["violations"])})
    create_table_artifact(rows, key="yibao-month-funds", description=f"{month}: fund totals (yuan), rejects, violations")
    md = "\n".join([
        f"# yibao {month} (run `{run_id}`)", "",
        f"- lines adjudicated: **{f['lines']:,}**; total cost {f['total']:,.2f} yuan",
        *[f"- {fund}: {v:,.2f}" for fund, v in f["funds"].items()],
        f"- rejects: {sum(n for _, n in f['rejects']):,} ("
        + ", ".join(f"{c} {n}" for c, n in f["rejects"]) + ")",
        f"- out-of-scope violations: {f['violations']:,}; excess borne by institutions "
        f"{f['excess_to_institutions']:,.2f}",
    ])
    md += "\n" + "\n".join([
        f"- supervision findings: {sum(n for _, _, n, _ in f['findings']):,} ("
        + ", ".join(f"{rid} {name} {n}, {amt:,.2f} at stake" for rid, name, n, amt in f["findings"]) + ")",
        f"- clearing: {len(f['clearing'])} institutions, net payable "
        f"{sum((c[2] or 0) for c in f['clearing']):,.2f} yuan",
    ])
    create_markdown_artifact(md, key="yibao-month-summary", description=f"{month} summary")
    create_table_artifact([{"month": month, "rule_id": rid, "rule_name": name, "findings": n, "vola_amt": str(amt)}
                           for rid, name, n, amt in f["findings"]], key="yibao-month-supervision",
                          description=f"{month}: supervision findings by rule (violations)")
    create_table_artifact([{"month": month, "fixmedins_code": code, "fixmedins_name": name or "",
                            "net_payable_amt": str(net), "difference": str(diff) if diff is not None else ""}
                           for code, name, net, diff in f["clearing"]], key="yibao-month-clearing",
                          description=f"{month}: clearing statement, net payable by institution (v_clearing)")
    return f
