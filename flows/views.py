"""Views for auditors and analysts (DATA.md §4), and the small tables they read.

`create_views(con)` is called by `flows.store.connect` on every writable connection: it (re)creates

- `persons` (if missing): the masked person snapshot (`flows.reports.person_snapshot`); never a
  certificate number or a name in clear;
- `policy_out_of_scope_limits`: POLICY §3.10 limits by date, relation and level, from policies/;
- the views `v_out_of_scope_stays`, `v_out_of_scope_by_institution`, `v_discrepancies`,
  `v_reported_vs_adjudicated`, `v_fund_lines`, `v_fund_expenditure`, `v_in_county_inpatient_ratio`.

A read-only connection cannot create anything in the file: `create_views(con, temporary=True)` makes
the same objects as TEMP ones (they shadow stored ones of an older definition), which the report
commands do on the read-only connections they open.

Money columns stay DECIMAL(18,2) yuan; ratios are DECIMAL(9,4) fractions (0.0800 = 8%), computed
half-up to the basis point; nothing here goes through a float.
"""

from __future__ import annotations

import duckdb
import polars as pl

# Payers of a line (DATA.md §4), in the order of POLICY §1.3, with their Chinese names.
FUNDS: list[tuple[str, str]] = [
    ("hifp_pay", "统筹基金"), ("hifmi_pay", "大病保险"), ("maf_pay", "医疗救助(基本)"),
    ("maf_tilt_pay", "医疗救助(倾斜)"), ("hosp_part_amt", "医疗机构承担"), ("acct_pay", "个人账户"),
    ("acct_mulaid_pay", "家庭共济账户"), ("psn_cash_pay", "个人现金"),
]
POOLED_FUNDS = ["hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay"]  # fund_pay_sumamt
# Institution-reported amounts (DATA.md §2 names in `settlements`) → the adjudicated amount they are compared with.
# The platform's maf_pay is all medical assistance: it is compared with maf_pay + maf_tilt_pay.
REPORTED: list[tuple[str, str]] = [
    ("hifp_pay", "a.hifp_pay"), ("hifmi_pay", "a.hifmi_pay"), ("maf_pay", "(a.maf_pay + a.maf_tilt_pay)"),
    ("acct_pay", "a.acct_pay"), ("acct_mulaid_pay", "a.acct_mulaid_pay"), ("psn_cash_pay", "a.psn_cash_pay"),
]
STAY_LEDGERS = ("inpatient", "maternity", "day_surgery")
OOS_CODES = ("OUT_OF_SCOPE_NOT_CONTROLLED", "OUT_OF_SCOPE_WITHIN_LIMIT", "OUT_OF_SCOPE_VIOLATION",
             "OUT_OF_SCOPE_EXCESS_TO_INSTITUTION")

# The masked person snapshot (flows.reports.person_snapshot writes it; the run replaces it whole).
PERSONS_COLUMNS: dict[str, str] = {
    "psn_no": "VARCHAR", "certno_masked": "VARCHAR", "certno_digest": "VARCHAR", "psn_name_masked": "VARCHAR",
    "gend": "VARCHAR", "birth_year": "INTEGER", "insutype": "VARCHAR", "insuplc_admdvs": "VARCHAR",
    "rural": "BOOLEAN", "identity_group": "VARCHAR", "as_of": "DATE",
}
PERSONS_DDL = "CREATE {temp}TABLE IF NOT EXISTS persons ({cols})"

# The clearing statement's payers (issue 17): (column, label, reported column it is compared with or None, paid to
# the institution by the bureau). The platform's maf_pay is all medical assistance: on the maf_pay row it is
# compared with maf_pay + maf_tilt_pay (compared_amt); the tilt row carries no reported amount. The institution's
# share (POLICY §3.10 excess) is borne by the institution: paid by nobody, net payable 0.
CLEARING_FUNDS: list[tuple[str, str, str | None, bool]] = [
    ("hifp_pay", "统筹基金", "hifp_pay", True), ("hifmi_pay", "大病保险", "hifmi_pay", True),
    ("maf_pay", "医疗救助(基本)", "maf_pay", True), ("maf_tilt_pay", "医疗救助(倾斜)", None, True),
    ("acct_pay", "个人账户", "acct_pay", True), ("acct_mulaid_pay", "家庭共济账户", "acct_mulaid_pay", True),
    ("hosp_part_amt", "医疗机构承担", None, False),
]
LINE_KIND_LABEL = {"this_month": "本月结算", "reversal_of_earlier": "冲销以前月份"}

VIEWS = ("v_out_of_scope_stays", "v_out_of_scope_by_institution", "v_discrepancies", "v_reported_vs_adjudicated",
         "v_fund_lines", "v_fund_expenditure", "v_in_county_inpatient_ratio")


def ratio_sql(num: str, den: str) -> str:
    """num / den as a DECIMAL(9,4) fraction, half-up to the basis point, exact (null when den ≤ 0)."""
    n = f"CAST(round(({num}) * 100) AS HUGEINT)"
    d = f"CAST(round(({den}) * 100) AS HUGEINT)"
    return (f"CASE WHEN ({den}) > 0 THEN CAST(CAST((2 * {n} * 10000 + {d}) // (2 * {d}) AS DECIMAL(18,0))"
            f" * CAST(0.0001 AS DECIMAL(5,4)) AS DECIMAL(9,4)) END")


def _labels(pairs: list[tuple[str, str]], key: str, label: str) -> str:
    rows = ", ".join(f"('{k}', '{v}')" for k, v in pairs)
    return f"(VALUES {rows}) AS {label}_t({key}, {label})"


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def out_of_scope_limits(policies=None) -> pl.DataFrame:
    """POLICY §3.10 limits as rows (since, relation, hosp_lv, limit_bp); limit_bp null = not controlled."""
    from transforms.resident.out_of_scope import NOT_CONTROLLED, limit_frame

    if policies is None:
        from flows.policies import load_policies
        policies = load_policies()
    f = limit_frame(policies)
    key = pl.col("__oos_key").str.split_exact(":", 1)
    return f.select(
        "since",
        key.struct.field("field_0").alias("relation"),
        key.struct.field("field_1").alias("hosp_lv"),
        pl.when(pl.col("oos_limit_raw") == NOT_CONTROLLED).then(None).otherwise(pl.col("oos_limit_raw"))
        .cast(pl.Int32).alias("limit_bp"),
    )


def create_views(con: duckdb.DuckDBPyConnection, temporary: bool = False, policies=None) -> None:
    """(Re)create the auditors' and analysts' views; TEMP ones on a read-only connection."""
    temp = "TEMP " if temporary else ""
    cols = ", ".join(f"{c} {t}" for c, t in PERSONS_COLUMNS.items())
    if not temporary or not _table_exists(con, "persons"):
        con.execute(PERSONS_DDL.format(temp=temp, cols=cols))
    limits = out_of_scope_limits(policies)
    con.register("__oos_limits", limits)
    try:
        con.execute(f"CREATE OR REPLACE {temp}TABLE policy_out_of_scope_limits AS "
                    "SELECT since, relation, hosp_lv, limit_bp FROM __oos_limits ORDER BY ALL")
    finally:
        con.unregister("__oos_limits")
    stored = con.execute("SELECT count(*) FROM duckdb_columns() WHERE table_name = 'adjudicated' "
                         "AND column_name = 'oos_limit_bp'").fetchall()[0][0] > 0
    for sql in view_statements(temp, stored_limit=stored):
        con.execute(sql)
    if _table_exists(con, "violations") and _table_exists(con, "month_institutions"):  # issue 17
        for sql in supervision_view_statements(temp):
            con.execute(sql)
    if _table_exists(con, "whatif_scenarios"):  # what-if comparison (flows/whatif_report.py, issue 8)
        from flows.whatif_report import view_statements as whatif_view_statements
        for sql in whatif_view_statements(temp):
            con.execute(sql)


def view_statements(temp: str = "", stored_limit: bool = True) -> list[str]:
    """stored_limit: the adjudicated table carries the §3.10 limit each stay was judged by (oos_limit_bp); the
    policy table's limit is used only for rows written before that column existed."""
    limit = "coalesce(s.oos_limit_bp, pl_.limit_bp)" if stored_limit else "pl_.limit_bp"
    oos_codes = ", ".join(f"'{c}'" for c in OOS_CODES)
    stays = f"""
CREATE OR REPLACE {temp}VIEW v_out_of_scope_stays AS
WITH rev AS (
  SELECT orig_setl_id, min(setl_id) AS reversal_setl_id FROM adjudicated
  WHERE orig_setl_id IS NOT NULL GROUP BY orig_setl_id
), s AS (
  SELECT a.*, string_split(a.reason_codes, ',') AS codes, CAST(a.setl_time AS DATE) AS setl_date,
    CASE WHEN a.in_county THEN 'in_county' WHEN a.in_province THEN 'out_of_county_in_province'
         ELSE 'out_of_province' END AS relation,
    a.fulamt_ownpay_amt + a.overlmt_selfpay AS out_of_scope_amt
  FROM adjudicated a
  WHERE a.orig_setl_id IS NULL AND a.reason_codes LIKE '%OUT_OF_SCOPE_%'
    AND list_has_any(string_split(a.reason_codes, ','), [{oos_codes}])
)
SELECT s.month, s.setl_id, s.mdtrt_id, s.psn_no, p.psn_name_masked, p.certno_masked,
  s.fixmedins_code, s.hosp_lv, s.relation, s.in_city, s.ledger, s.setl_time,
  s.medfee_sumamt AS total_amt, s.fulamt_ownpay_amt, s.overlmt_selfpay, s.out_of_scope_amt,
  {ratio_sql('s.out_of_scope_amt', 's.medfee_sumamt')} AS out_of_scope_ratio,
  l.limit_bp,
  CAST(CAST(l.limit_bp AS DECIMAL(18,0)) * CAST(0.0001 AS DECIMAL(5,4)) AS DECIMAL(9,4)) AS limit_rate,
  list_has_any(s.codes, ['OUT_OF_SCOPE_VIOLATION', 'OUT_OF_SCOPE_EXCESS_TO_INSTITUTION']) AS violation,
  CAST(CASE WHEN list_has_any(s.codes, ['OUT_OF_SCOPE_VIOLATION', 'OUT_OF_SCOPE_EXCESS_TO_INSTITUTION'])
    THEN round(s.out_of_scope_amt - CAST(l.limit_bp AS DECIMAL(18,0)) * CAST(s.medfee_sumamt AS DECIMAL(38,2))
                                    * CAST(0.0001 AS DECIMAL(5,4)), 2)  -- §3.10: rounded once, half up
    ELSE 0 END AS DECIMAL(18,2)) AS excess_amt,
  list_contains(s.codes, 'OUT_OF_SCOPE_EXCESS_TO_INSTITUTION') AS excess_to_institution,
  s.hosp_part_amt, s.fund_pay_sumamt, s.psn_part_amt,
  rev.reversal_setl_id IS NOT NULL AS reversed, rev.reversal_setl_id
FROM s
ASOF LEFT JOIN policy_out_of_scope_limits pl_
  ON pl_.relation = s.relation AND pl_.hosp_lv = s.hosp_lv AND s.setl_date >= pl_.since
CROSS JOIN LATERAL (SELECT CASE WHEN list_contains(s.codes, 'OUT_OF_SCOPE_NOT_CONTROLLED') THEN NULL
                                ELSE {limit} END AS limit_bp) l
LEFT JOIN persons p ON p.psn_no = s.psn_no
LEFT JOIN rev ON rev.orig_setl_id = s.setl_id
"""
    by_inst = f"""
CREATE OR REPLACE {temp}VIEW v_out_of_scope_by_institution AS
SELECT fixmedins_code, month, any_value(hosp_lv) AS hosp_lv, bool_or(in_city) AS in_city,
  count(*) AS stays, count(*) FILTER (WHERE violation) AS violations,
  CAST(sum(total_amt) AS DECIMAL(18,2)) AS total_amt,
  CAST(sum(out_of_scope_amt) AS DECIMAL(18,2)) AS out_of_scope_amt,
  {ratio_sql('sum(out_of_scope_amt)', 'sum(total_amt)')} AS out_of_scope_ratio,
  CAST(sum(excess_amt) AS DECIMAL(18,2)) AS excess_amt,
  CAST(sum(hosp_part_amt) AS DECIMAL(18,2)) AS hosp_part_amt
FROM v_out_of_scope_stays
WHERE limit_bp IS NOT NULL AND NOT reversed
GROUP BY fixmedins_code, month
"""
    common = ("month, setl_id, psn_no, fixmedins_code, hosp_lv, ledger, med_type, setl_time, orig_setl_id, "
              "source_file, source_row")
    pairs = "\nUNION ALL\n".join(
        f"SELECT {common}, '{f}' AS fund, r_{f} AS reported_amt, a_{f} AS adjudicated_amt FROM j"
        for f, _ in REPORTED)
    both = ",\n    ".join(f"s.{f} AS r_{f}, CAST({adj} AS DECIMAL(18,2)) AS a_{f}" for f, adj in REPORTED)
    disc = f"""
CREATE OR REPLACE {temp}VIEW v_discrepancies AS
WITH j AS (
  SELECT s.month, s.setl_id, s.psn_no, s.fixmedins_code, a.hosp_lv, a.ledger, s.med_type, s.setl_time,
    s.orig_setl_id, s.source_file, s.source_row,
    {both}
  FROM settlements s JOIN adjudicated a ON a.setl_id = s.setl_id AND a.month = s.month
), long AS (
{pairs}
)
SELECT {common}, fund, reported_amt, adjudicated_amt,
  CAST(reported_amt - adjudicated_amt AS DECIMAL(18,2)) AS difference
FROM long
WHERE reported_amt IS NOT NULL AND reported_amt <> adjudicated_amt
"""
    wide_cols = ",\n  ".join(
        f"s.{f} AS reported_{f}, CAST({adj} AS DECIMAL(18,2)) AS {f}, "
        f"CAST(s.{f} - {adj} AS DECIMAL(18,2)) AS diff_{f}" for f, adj in REPORTED)
    any_diff = " OR ".join(f"(s.{f} IS NOT NULL AND s.{f} <> {adj})" for f, adj in REPORTED)
    any_reported = " OR ".join(f"s.{f} IS NOT NULL" for f, _ in REPORTED)
    wide = f"""
CREATE OR REPLACE {temp}VIEW v_reported_vs_adjudicated AS
SELECT s.month, s.setl_id, s.psn_no, s.fixmedins_code, a.ledger, s.setl_time,
  {wide_cols},
  ({any_diff}) AS differs
FROM settlements s JOIN adjudicated a ON a.setl_id = s.setl_id AND a.month = s.month
WHERE {any_reported}
"""
    fund_cols = ", ".join(f for f, _ in FUNDS)
    lines = f"""
CREATE OR REPLACE {temp}VIEW v_fund_lines AS
SELECT CAST(substr(month, 1, 4) AS INTEGER) AS year, month, region, scheme, insutype, ledger, hosp_lv,
  fixmedins_code, psn_no, setl_id, orig_setl_id, in_county, in_city, fund, fund_label, amount
FROM (UNPIVOT (SELECT month, region, scheme, insutype, ledger, hosp_lv, fixmedins_code, psn_no, setl_id,
                      orig_setl_id, in_county, in_city, {fund_cols} FROM adjudicated)
      ON {fund_cols} INTO NAME fund VALUE amount) u
JOIN {_labels(FUNDS, 'fund', 'fund_label')} USING (fund)
"""
    expenditure = f"""
CREATE OR REPLACE {temp}VIEW v_fund_expenditure AS
SELECT year, month, region, scheme, ledger, hosp_lv, fund, any_value(fund_label) AS fund_label,
  CAST(sum(amount) AS DECIMAL(18,2)) AS amount, count(*) AS lines, count(DISTINCT psn_no) AS persons
FROM v_fund_lines
WHERE amount <> 0
GROUP BY year, month, region, scheme, ledger, hosp_lv, fund
"""
    stay_ledgers = ", ".join(f"'{x}'" for x in STAY_LEDGERS)
    ratio = f"""
CREATE OR REPLACE {temp}VIEW v_in_county_inpatient_ratio AS
SELECT CAST(substr(month, 1, 4) AS INTEGER) AS year, month,
  count(*) FILTER (WHERE orig_setl_id IS NULL) AS stays,
  CAST(sum(inscp_scp_amt) AS DECIMAL(18,2)) AS inscp_scp_amt,
  CAST(sum(hifp_pay) AS DECIMAL(18,2)) AS hifp_pay,
  {ratio_sql('sum(hifp_pay)', 'sum(inscp_scp_amt)')} AS payment_ratio
FROM adjudicated
WHERE region = 'suizhou' AND scheme = 'resident' AND in_county AND ledger IN ({stay_ledgers})
GROUP BY month
"""
    return [stays, by_inst, disc, wide, lines, expenditure, ratio]


def supervision_view_statements(temp: str = "") -> list[str]:
    """Issue 17 marts over stored columns (never a rule recomputed): the clearing statement `v_clearing`
    (institution × month × line kind × payer) and the findings by institution and by month."""
    parts = []
    for col, label, rep, payable in CLEARING_FUNDS:
        compared = "(maf_pay + maf_tilt_pay)" if col == "maf_pay" else col
        reported = f"r_{rep}" if rep else "CAST(NULL AS DECIMAL(18,2))"
        parts.append(
            f"SELECT month, fixmedins_code, line_kind, settlements, persons, medfee_sumamt, '{col}' AS fund, "
            f"'{label}' AS fund_label, CAST({col} AS DECIMAL(18,2)) AS adjudicated_amt, "
            f"CAST({reported} AS DECIMAL(18,2)) AS reported_amt, "
            f"CAST({compared if rep else 'NULL'} AS DECIMAL(18,2)) AS compared_amt, "
            f"CAST({reported} - {compared} AS DECIMAL(18,2)) AS difference, "
            f"CAST({col if payable else '0'} AS DECIMAL(18,2)) AS net_payable_amt FROM g")
    funds = ", ".join(f"sum(a.{c}) AS {c}" for c, *_ in CLEARING_FUNDS)
    reps = ", ".join(f"sum(s.{r}) AS r_{r}" for _, _, r, _ in CLEARING_FUNDS if r)
    union = "\nUNION ALL\n".join(parts)
    clearing = f"""
CREATE OR REPLACE {temp}VIEW v_clearing AS
WITH l AS (
  SELECT a.*, CASE WHEN a.orig_setl_id IS NOT NULL AND o.month < a.month THEN 'reversal_of_earlier'
                   ELSE 'this_month' END AS line_kind
  FROM adjudicated a LEFT JOIN (SELECT setl_id, month FROM adjudicated) o ON o.setl_id = a.orig_setl_id
), g AS (
  SELECT a.month, a.fixmedins_code, a.line_kind, count(*) AS settlements, count(DISTINCT a.psn_no) AS persons,
    sum(a.medfee_sumamt) AS medfee_sumamt, {funds}, {reps}
  FROM l a LEFT JOIN settlements s ON s.setl_id = a.setl_id AND s.month = a.month
  GROUP BY ALL
), u AS (
{union}
)
SELECT u.month, u.fixmedins_code, i.fixmedins_name, i.dedc_hosp_lv AS hosp_lv, u.line_kind, u.settlements, u.persons,
  CAST(u.medfee_sumamt AS DECIMAL(18,2)) AS medfee_sumamt, u.fund, u.fund_label, u.adjudicated_amt, u.reported_amt,
  u.compared_amt, u.difference, u.net_payable_amt
FROM u LEFT JOIN month_institutions i ON i.fixmedins_code = u.fixmedins_code AND i.month = u.month
"""
    by_inst = f"""
CREATE OR REPLACE {temp}VIEW v_violations_by_institution AS
SELECT month, fixmedins_code, any_value(fixmedins_name) AS fixmedins_name, any_value(hosp_lv) AS hosp_lv, rule_id,
  any_value(rule_name) AS rule_name, any_value(sev_deg) AS sev_deg, count(*) AS findings,
  count(DISTINCT psn_no) AS persons, CAST(sum(vola_amt) AS DECIMAL(18,2)) AS vola_amt
FROM violations GROUP BY month, fixmedins_code, rule_id
"""
    by_month = f"""
CREATE OR REPLACE {temp}VIEW v_violations_by_month AS
SELECT month, rule_id, any_value(rule_name) AS rule_name, any_value(rule_name_en) AS rule_name_en,
  any_value(sev_deg) AS sev_deg, count(*) AS findings, count(DISTINCT psn_no) AS persons,
  count(DISTINCT fixmedins_code) AS institutions, CAST(sum(vola_amt) AS DECIMAL(18,2)) AS vola_amt
FROM violations GROUP BY month, rule_id
"""
    return [clearing, by_inst, by_month]
