"""Reports, audits and explanations for auditors and analysts (DATA.md §5: report, audit, explain).

Every read opens the database read-only (`open_readonly`); the views of flows/views.py are made as
TEMP views on that connection, so a report never writes to the database. Files are written with:

- csv: UTF-8 with BOM, header of column codes; money as yuan text ("1234.50"), ratios as fractions;
- xlsx (xlsxwriter): one sheet per table, a row of Chinese labels above the row of codes, money
  formatted `#,##0.00`, ratios `0.00%`;
- parquet: the typed rows (DECIMAL(18,2) money) of the table;
- html: one self-contained page (inline CSS and SVG, no script, nothing fetched).

Privacy: the database holds no certificate number or name in clear; person attributes come from
the masked snapshot written by `person_snapshot` / `write_person_snapshot`. Text cells that would
start a spreadsheet formula (=, +, -, @, tab, CR) get a leading apostrophe in csv and xlsx
(OWASP CSV injection); terminal output drops control characters and is never read as markup.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import html
import io
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from flows import store
from flows.views import FUNDS, POOLED_FUNDS, create_views

MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
XLSX_MAX_ROWS = 1_048_576 - 3  # an xlsx sheet's rows, less the title, label and code rows
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

FUND_LABEL = dict(FUNDS)
LEDGER_LABEL = {
    "outpatient_pool": "门诊统筹", "two_disease": "两病门诊", "chronic": "门诊慢特病", "special_drug": "单独支付药品",
    "inpatient": "住院", "day_surgery": "日间手术", "maternity": "生育住院", "pharmacy": "药店购药",
}
LEVEL_LABEL = {"1": "一级及以下", "2": "二级", "3": "三级"}
RELATION_LABEL = {"in_county": "县域内", "out_of_county_in_province": "县域外省内", "out_of_province": "省外"}
IDENTITY_GROUP_LABEL = {
    "s1": "S1 特困/孤儿/低保/返贫致贫", "s2": "S2 低保边缘/监测对象/因病致贫/其他困难",
    "s3": "S3 重度残疾/严重精神障碍/计生特殊/脱贫/优抚", "ordinary": "普通居民", "employee": "职工",
    "resident": "居民 (襄阳, 不分身份类别)",
    "unknown": "未知(无身份快照)",
}
# Chinese labels of the column codes used in exports (shown above the codes in xlsx, in html headers).
COLUMN_LABEL: dict[str, str] = {
    "year": "年度", "month": "月份", "region": "统筹区", "scheme": "险种", "insutype": "险种类型",
    "ledger": "待遇类别", "ledger_label": "待遇类别名称", "hosp_lv": "医院等级", "hosp_lv_label": "医院等级名称",
    "fund": "基金代码", "fund_label": "基金名称", "amount": "金额(元)", "lines": "结算笔数", "persons": "人数",
    "fixmedins_code": "定点机构编码", "fixmedins_name": "定点机构名称", "setl_id": "结算ID", "mdtrt_id": "就诊ID",
    "psn_no": "人员编号", "psn_name_masked": "姓名(脱敏)", "certno_masked": "身份证号(脱敏)",
    "relation": "机构与参保县关系", "relation_label": "关系名称", "in_city": "市域内", "setl_time": "结算时间",
    "total_amt": "医疗总费用", "fulamt_ownpay_amt": "全自费金额", "overlmt_selfpay": "超限价自费",
    "out_of_scope_amt": "政策范围外费用", "out_of_scope_ratio": "政策范围外费用占比", "limit_bp": "比例上限(基点)",
    "limit_rate": "比例上限", "violation": "是否超标", "excess_amt": "超标金额", "excess_to_institution": "由机构承担",
    "hosp_part_amt": "医疗机构承担", "fund_pay_sumamt": "基金支付合计", "psn_part_amt": "个人负担",
    "reversed": "已冲销", "reversal_setl_id": "冲销结算ID", "stays": "住院人次", "violations": "超标人次",
    "reported_amt": "机构上报金额", "adjudicated_amt": "核算金额", "difference": "差额(上报-核算)",
    "abs_difference": "差额绝对值合计", "settlements": "结算笔数", "med_type": "医疗类别", "orig_setl_id": "原结算ID",
    "source_file": "来源文件", "source_row": "来源行号", "medfee_sumamt": "医疗总费用", "rank": "排名",
    "identity_group": "身份类别", "identity_group_label": "身份类别名称", "inscp_scp_amt": "政策范围内费用",
    "payment_ratio": "政策范围内支付比例", "target_ratio": "目标比例", "item": "项目", "value": "内容",
    "reported_settlements": "有上报金额的结算", "differing_settlements": "存在差异的结算",
    "scenario": "测算方案", "baseline_amt": "基线金额", "scenario_amt": "方案金额", "persons_more": "增加人数",
    "persons_less": "减少人数", "spill_over_ratio": "大病和救助承接比例", "change": "个人负担变化", "path": "参数",
    "previous": "原值", "maf_application": "依申请救助",
    **{f: label for f, label in FUNDS},
}


# ---------------------------------------------------------------- opening and reading

def open_readonly(db: Path | str) -> duckdb.DuckDBPyConnection:
    """The database read-only, with the views as TEMP views of this connection (nothing is written)."""
    con = store.connect(db, read_only=True)
    try:
        create_views(con, temporary=True)
    except BaseException:
        con.close()
        raise
    return con


@dataclass
class Table:
    """A result ready for any format: money columns are Int64 fen, ratio columns Decimal fractions."""

    name: str  # sheet name (≤ 31 characters)
    title: str
    df: pl.DataFrame
    money: set[str] = field(default_factory=set)
    ratio: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)  # Chinese labels of this table's columns over COLUMN_LABEL

    def label(self, col: str) -> str:
        return self.labels.get(col) or COLUMN_LABEL.get(col, col)


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, name: str = "", title: str = "") -> Table:
    """Run a query; DECIMAL(·,2) columns become Int64 fen (money), DECIMAL(·,4) stay (ratios)."""
    df = pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())
    assert isinstance(df, pl.DataFrame)
    money = {c for c, t in df.schema.items() if isinstance(t, pl.Decimal) and t.scale == 2}
    ratio = {c for c, t in df.schema.items() if isinstance(t, pl.Decimal) and t.scale != 2}
    df = df.with_columns([(pl.col(c) * 100).cast(pl.Int64) for c in money])
    return Table(name=name, title=title, df=df, money=money, ratio=ratio)


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def columns_of(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def period_filter(year: int | None, month: str | None, col: str = "month") -> tuple[str, list]:
    """SQL condition and parameters selecting a month, or a year, or everything."""
    if month:
        if not MONTH_RE.match(month):
            raise ValueError(f"not a month: {month!r} (expected YYYY-MM)")
        if year is not None and int(month[:4]) != year:
            raise ValueError(f"--month {month} is not in --year {year}")
        return f"{col} = ?", [month]
    if year is not None:
        return f"{col} LIKE ?", [f"{year:04d}-%"]
    return "TRUE", []


def period_text(year: int | None, month: str | None) -> str:
    return month or (str(year) if year is not None else "all months")


# ---------------------------------------------------------------- cell values

PLAIN_INTEGERS = {"year", "rank", "birth_year", "source_row", "seq", "months", "babies", "gestation_months"}


def neutralise(text: str) -> str:
    """A text cell that a spreadsheet would read as a formula gets a leading apostrophe (OWASP)."""
    return "'" + text if text.startswith(FORMULA_START) else text


def terminal_safe(text: str) -> str:
    """No control characters (escape sequences, carriage returns) from the data on a terminal."""
    return _CONTROL.sub("?", text)


def display_width(text: str) -> int:
    """Terminal columns of a text (CJK characters take two)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def yuan(fen: int | None, sep: bool = True) -> str:
    if fen is None:
        return ""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign}{whole:,}.{cents:02d}" if sep else f"{sign}{whole}.{cents:02d}"


def percent(r: Decimal | None) -> str:
    if r is None:
        return ""
    return f"{(Decimal(r) * 100).quantize(Decimal('0.01'))}%"


def text_of(table: Table, col: str, v: Any, for_csv: bool = False) -> str:
    """A cell as text (csv and terminal)."""
    if v is None:
        return ""
    if col in table.money:
        return yuan(v, sep=not for_csv)
    if col in table.ratio:
        return str(v) if for_csv else percent(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, int):
        return str(v) if for_csv else f"{v:,}"
    return str(v)


# ---------------------------------------------------------------- writers

def csv_rows(table: Table) -> Iterable[list[str]]:
    """Header of codes, then the rows as text; text values neutralised (numbers are not text)."""
    yield list(table.df.columns)
    for r in table.df.iter_rows():
        yield [neutralise(v) if isinstance(v, str) else text_of(table, c, v, for_csv=True)
               for c, v in zip(table.df.columns, r, strict=True)]


def write_csv(table: Table, out: Path | str | None) -> None:
    """One table as csv (to stdout when out is None or '-')."""
    if out is None or str(out) == "-":
        csv.writer(sys.stdout, lineterminator="\n").writerows(csv_rows(table))
        return
    with open(out, "w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows(csv_rows(table))


def write_xlsx(tables: list[Table], out: Path | str) -> None:
    """Each table on its own sheet: a title row, the Chinese labels above the codes, then the rows."""
    import xlsxwriter

    for t in tables:
        if t.df.height > XLSX_MAX_ROWS:
            raise ValueError(f"{t.name}: {t.df.height:,} rows do not fit in an xlsx sheet "
                             f"({XLSX_MAX_ROWS:,} at most): use --format csv")
    wb = xlsxwriter.Workbook(str(out), {"strings_to_formulas": False, "strings_to_urls": False,
                                        "strings_to_numbers": False})
    try:
        title_f = wb.add_format({"bold": True, "font_size": 13})
        label_f = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True})
        code_f = wb.add_format({"italic": True, "font_color": "#666666", "bg_color": "#F2F2F2", "border": 1})
        money_f = wb.add_format({"num_format": "#,##0.00"})
        ratio_f = wb.add_format({"num_format": "0.00%"})
        int_f = wb.add_format({"num_format": "#,##0"})
        plain_f = wb.add_format({"num_format": "0"})
        date_f = wb.add_format({"num_format": "yyyy-mm-dd"})
        time_f = wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        for t in tables:
            ws = wb.add_worksheet(t.name[:31])
            ws.write_string(0, 0, t.title, title_f)  # a string cell: no formula risk in xlsx (csv keeps it)
            cols = list(t.df.columns)
            for j, c in enumerate(cols):
                ws.write_string(1, j, t.label(c), label_f)
                ws.write_string(2, j, c, code_f)
                width = max(len(c), 2 * len(t.label(c)), 10)
                ws.set_column(j, j, min(width + 2, 40))
            for i, r in enumerate(t.df.iter_rows(), start=3):
                for j, (c, v) in enumerate(zip(cols, r, strict=True)):
                    if v is None:
                        continue
                    if c in t.money:
                        ws.write_number(i, j, v / 100, money_f)
                    elif c in t.ratio:
                        ws.write_number(i, j, float(v), ratio_f)
                    elif isinstance(v, bool):
                        ws.write_boolean(i, j, v)
                    elif isinstance(v, int):  # a year or a rank is not a quantity: no thousands separator
                        ws.write_number(i, j, v, plain_f if c in PLAIN_INTEGERS else int_f)
                    elif isinstance(v, float | Decimal):
                        ws.write_number(i, j, float(v))
                    elif isinstance(v, dt.datetime):
                        ws.write_datetime(i, j, v, time_f)
                    elif isinstance(v, dt.date):
                        ws.write_datetime(i, j, dt.datetime.combine(v, dt.time()), date_f)
                    else:
                        ws.write_string(i, j, str(v))  # written as a string: never read as a formula
            ws.freeze_panes(3, 0)
            if cols:
                ws.autofilter(2, 0, 2 + t.df.height, len(cols) - 1)
    finally:
        wb.close()


def write_parquet(con: duckdb.DuckDBPyConnection, sql: str, params: list, out: Path | str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(con.sql(sql, params=params or None).to_arrow_table(), str(out))


def print_table(table: Table, console=None, limit: int | None = None) -> None:
    from rich.console import Console

    console = console or Console(width=_terminal_width())
    cols = list(table.df.columns)
    rows = table.df.iter_rows() if limit is None else table.df.head(limit).iter_rows()
    texts = [[terminal_safe(text_of(table, c, v)) for c, v in zip(cols, r, strict=True)] for r in rows]
    numeric = {c for c in cols if c in table.money or c in table.ratio or table.df.schema[c].is_numeric()}
    print_rows(console, table.title, cols, texts, numeric)
    if limit is not None and table.df.height > limit:
        console.print(f"… {table.df.height - limit} more rows: export them with --format csv or xlsx", markup=False)


# Columns never cut nor wrapped on a terminal (issue 16.7): amounts, counts and identifiers.
KEEP_WHOLE_RE = re.compile(r"(_id|_no|_code|_codes|^month|^year|_amt|_pay|_sumamt|^rows|^lines|certno.*)$")


def print_rows(console, title: str, cols: list[str], rows: list[list[str]], numeric: set[str]) -> None:
    """A table on the terminal in which money and ids are never cut (issue 16.7): numbers and identifiers keep
    their full width; other columns wrap; when even that does not fit, one record per block (column: value)."""
    from rich.cells import cell_len
    from rich.table import Table as RichTable
    from rich.text import Text

    whole = {c for c in cols if c in numeric or KEEP_WHOLE_RE.search(c)}
    need = {c: max([cell_len(c)] + [cell_len(r[j]) for r in rows]) for j, c in enumerate(cols)}
    # width the table needs with the whole columns whole and the others wrapped down to 8 cells
    minimum = sum(need[c] if c in whole else min(need[c], 8) for c in cols) + 3 * len(cols) + 1
    if cols and minimum > console.width:
        console.print(Text(title, style="bold"))
        label = max(cell_len(c) for c in cols)
        for i, r in enumerate(rows, start=1):
            console.print(Text(f"-[ record {i} ]" + "-" * max(0, min(console.width, 40) - 14)))
            for c, v in zip(cols, r, strict=True):
                console.print(Text(f"{c.ljust(label)} | {v}"), soft_wrap=c in whole)
        return
    rt = RichTable(title=Text(title), show_lines=False)
    for c in cols:
        if c in whole:
            rt.add_column(Text(c), justify="right" if c in numeric else "left", no_wrap=True, min_width=need[c])
        else:
            rt.add_column(Text(c), justify="right" if c in numeric else "left", overflow="fold")
    for r in rows:
        rt.add_row(*[Text(v) for v in r])
    console.print(rt)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return int(os.environ.get("COLUMNS", 160))


# ---------------------------------------------------------------- persons (masked)

def mask_certno(c: pl.Expr) -> pl.Expr:
    """420102199001011234 → 420102********1234 (first 6, last 4); shorter values → ****."""
    s = c.str.strip_chars()
    n = s.str.len_chars()
    return pl.when(n >= 11).then(pl.concat_str([s.str.slice(0, 6), pl.lit("********"), s.str.slice(-4)])) \
        .when(n > 0).then(pl.lit("****")).otherwise(None)


def mask_name(c: pl.Expr) -> pl.Expr:
    """张三丰 → 张** (first character, then always two stars: the length is not told either)."""
    s = c.str.strip_chars()
    return pl.when(s.str.len_chars() > 0).then(pl.concat_str([s.str.slice(0, 1), pl.lit("**")])).otherwise(None)


def certno_digest(certnos: pl.Series, key: bytes | None) -> pl.Series:
    """Keyed hash (HMAC-SHA256, 16 hex) of the certificate number: the same person gives the same value
    in every snapshot, and without the key it cannot be reversed by trying ID numbers. None without a key."""
    if not key:
        return pl.Series("certno_digest", [None] * len(certnos), dtype=pl.String)
    return pl.Series("certno_digest", [None if c is None else hmac.new(key, c.strip().encode(), hashlib.sha256)
                                       .hexdigest()[:16] for c in certnos.to_list()], dtype=pl.String)


def identity_groups(registers: dict[str, pl.DataFrame], on: dt.date, policies=None) -> pl.DataFrame:
    """psn_no → identity group on a date: s1 / s2 / s3 / ordinary for residents (POLICY §2, the most
    favourable block wins), employee for insutype 310, unknown where the region has no blocks."""
    from flows.policies import MissingParameter, load_policies
    from transforms.enrich import REGION_BY_CITY

    policies = policies or load_policies()
    persons = registers["persons"].select("psn_no", "insutype", "insuplc_admdvs")
    ids = registers.get("identities")
    if ids is None or ids.height == 0:
        valid = pl.DataFrame(schema={"psn_no": pl.String, "identity": pl.String})
    else:
        valid = ids.filter((pl.col("begndate") <= on) & (pl.col("enddate").is_null() | (pl.col("enddate") >= on))) \
            .select("psn_no", "identity")
    blocks = []
    for city, region in REGION_BY_CITY.items():
        for rank, block in enumerate(("s1", "s2", "s3")):
            try:
                members = policies.value(region, "resident", f"identities.{block}", on) or []
            except MissingParameter:
                continue
            blocks += [(city, str(m), rank, block) for m in members]
    bl = pl.DataFrame(blocks, schema={"city": pl.String, "identity": pl.String, "rank": pl.Int64, "block": pl.String},
                      orient="row")
    has_blocks = set(bl["city"].unique().to_list())
    best = (persons.with_columns(pl.col("insuplc_admdvs").str.slice(0, 4).alias("city"))
            .join(valid, on="psn_no", how="left")
            .join(bl, on=["city", "identity"], how="left")
            .group_by("psn_no", maintain_order=True)
            .agg(pl.col("insutype").first(), pl.col("city").first(), pl.col("rank").min(),
                 pl.col("block").sort_by("rank").first(), pl.col("identity").drop_nulls().len().alias("n_ids")))
    group = (pl.when(pl.col("insutype") == "310").then(pl.lit("employee"))
             .when(pl.col("block").is_not_null()).then(pl.col("block"))
             .when(pl.col("city").is_in(list(has_blocks))).then(pl.lit("ordinary"))
             .when(pl.col("n_ids") == 0).then(pl.lit("ordinary"))
             .otherwise(pl.lit("unknown")))
    return best.select("psn_no", group.alias("identity_group"))


def person_snapshot(registers: dict[str, pl.DataFrame], on: dt.date | None = None, policies=None,
                    key: bytes | None = None) -> pl.DataFrame:
    """The masked persons table (flows/views.py PERSONS_COLUMNS) from the registers.

    on: the date of the identity groups (default today; the monthly run passes the month's last day).
    key: HMAC key of certno_digest (default the environment variable YIBAO_MASK_KEY; none → null digests).
    No certificate number or name in clear leaves this function.
    """
    on = on or dt.date.today()
    if key is None and os.environ.get("YIBAO_MASK_KEY"):
        key = os.environ["YIBAO_MASK_KEY"].encode()
    p = registers["persons"]
    groups = identity_groups(registers, on, policies)
    out = p.select(
        pl.col("psn_no").cast(pl.String),
        mask_certno(pl.col("certno").cast(pl.String)).alias("certno_masked"),
        mask_name(pl.col("psn_name").cast(pl.String)).alias("psn_name_masked"),
        pl.col("gend").cast(pl.String),
        pl.col("brdy").cast(pl.Date).dt.year().cast(pl.Int32).alias("birth_year"),
        pl.col("insutype").cast(pl.String),
        pl.col("insuplc_admdvs").cast(pl.String),
        pl.col("rural").cast(pl.Boolean),
    ).with_columns(certno_digest(p["certno"].cast(pl.String), key))
    out = out.join(groups, on="psn_no", how="left", maintain_order="left").with_columns(
        pl.lit(on).alias("as_of"))
    from flows.views import PERSONS_COLUMNS
    return out.select(list(PERSONS_COLUMNS))


def write_person_snapshot(con: duckdb.DuckDBPyConnection, snapshot: pl.DataFrame) -> None:
    """Replace the `persons` table with a snapshot (one transaction)."""
    from flows.views import PERSONS_COLUMNS

    bad = set(snapshot.columns) - set(PERSONS_COLUMNS)
    if bad:
        raise ValueError(f"not a masked person snapshot: unexpected columns {sorted(bad)}")
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM persons")
        con.register("__persons", snapshot)
        cols = ", ".join(PERSONS_COLUMNS)
        con.execute(f"INSERT INTO persons ({cols}) SELECT {cols} FROM __persons")
        con.unregister("__persons")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# ---------------------------------------------------------------- audit: out-of-scope (POLICY §3.10)

def institution_name(con: duckdb.DuckDBPyConnection, code: str = "fixmedins_code") -> str:
    """SQL for the name of the institution whose code is the column `code` (DATA.md §4 `institutions`, written by
    every run): the one place reports, audits and what-if tables put names beside codes (issue 16.6)."""
    if not has_table(con, "institutions"):
        return "CAST(NULL AS VARCHAR)"
    # A map built once and looked up with the caller's column: a correlated subquery would bind an unqualified
    # `fixmedins_code` to the institutions table itself and give every row the same name.
    return ("(SELECT map(list(fixmedins_code), list(fixmedins_name)) FROM (SELECT DISTINCT ON (fixmedins_code) "
            f"fixmedins_code, fixmedins_name FROM institutions))[{code}]")


def with_names(con: duckdb.DuckDBPyConnection, columns: str = "*", code: str = "fixmedins_code") -> str:
    """A select list: `code`, its institution's name, then the other columns (`*` or a comma-separated list)."""
    if columns.strip() == "*":
        return f"{code}, {institution_name(con, code)} AS fixmedins_name, * EXCLUDE ({code})"
    rest = [c.strip() for c in columns.split(",") if c.strip()]
    out = []
    for c in rest:
        out.append(c)
        if c == code:
            out.append(f"{institution_name(con, code)} AS fixmedins_name")
    return ", ".join(out)


STAY_COLUMNS = ("month, setl_id, mdtrt_id, psn_no, psn_name_masked, certno_masked, fixmedins_code, hosp_lv, "
                "relation, in_city, ledger, setl_time, total_amt, fulamt_ownpay_amt, overlmt_selfpay, "
                "out_of_scope_amt, out_of_scope_ratio, limit_rate, violation, excess_amt, excess_to_institution, "
                "hosp_part_amt, psn_part_amt, reversed, reversal_setl_id")


def out_of_scope_audit(con: duckdb.DuckDBPyConnection, year: int | None = None, month: str | None = None
                       ) -> dict[str, Table]:
    cond, params = period_filter(year, month)
    when = period_text(year, month)
    by_inst = query(con, f"SELECT {with_names(con)} FROM v_out_of_scope_by_institution WHERE {cond} "
                         "ORDER BY excess_amt DESC, violations DESC, fixmedins_code, month", params,
                    "按机构 by institution", f"政策范围外费用控制 §3.10 — by institution and month, {when}")
    violations = query(con, f"SELECT {with_names(con, STAY_COLUMNS)} FROM v_out_of_scope_stays WHERE {cond} AND violation "
                            "ORDER BY month, fixmedins_code, setl_time, setl_id", params,
                       "超标住院 violations", f"rural low-income stays over their limit, {when}")
    stays = query(con, f"SELECT {with_names(con, STAY_COLUMNS)} FROM v_out_of_scope_stays WHERE {cond} "
                       "ORDER BY month, fixmedins_code, setl_time, setl_id", params,
                  "全部住院 stays", f"every rural low-income stay, {when}")
    return {"by_institution": by_inst, "violations": violations, "stays": stays}


TERMINAL_STAY_COLUMNS = ["month", "fixmedins_code", "fixmedins_name", "setl_id", "psn_no", "psn_name_masked", "relation", "hosp_lv",
                         "total_amt", "out_of_scope_amt", "out_of_scope_ratio", "limit_rate", "excess_amt",
                         "hosp_part_amt", "reversed"]


def narrow(table: Table, columns: list[str]) -> Table:
    """The same table with fewer columns (for a terminal)."""
    return Table(table.name, table.title, table.df.select(columns), table.money & set(columns),
                 table.ratio & set(columns), table.labels)


def out_of_scope_summary(tables: dict[str, Table]) -> str:
    s = tables["stays"].df
    live = s.filter(~pl.col("reversed")) if s.height else s
    controlled = live.filter(pl.col("limit_rate").is_not_null()) if live.height else live
    v = controlled.filter(pl.col("violation")) if controlled.height else controlled
    excess = int(v["excess_amt"].sum()) if v.height else 0
    inst = int(v["hosp_part_amt"].sum()) if v.height else 0
    return (f"{live.height} rural low-income stays ({controlled.height} with a limit), {v.height} over the limit; "
            f"excess {yuan(excess)} yuan, of which borne by institutions in Suizhou {yuan(inst)} "
            f"(reversed stays left out: {s.height - live.height})")


# ---------------------------------------------------------------- audit: discrepancies

def discrepancy_audit(con: duckdb.DuckDBPyConnection, year: int | None = None, month: str | None = None
                      ) -> dict[str, Table]:
    cond, params = period_filter(year, month)
    when = period_text(year, month)
    summary = query(con, f"""
        SELECT fixmedins_code, {institution_name(con)} AS fixmedins_name, fund, any_value(fl.fund_label) AS fund_label,
          count(DISTINCT setl_id) AS settlements,
          CAST(sum(reported_amt) AS DECIMAL(18,2)) AS reported_amt,
          CAST(sum(adjudicated_amt) AS DECIMAL(18,2)) AS adjudicated_amt,
          CAST(sum(difference) AS DECIMAL(18,2)) AS difference,
          CAST(sum(abs(difference)) AS DECIMAL(18,2)) AS abs_difference
        FROM v_discrepancies
        LEFT JOIN (SELECT * FROM (VALUES {", ".join(f"('{f}', '{lab}')" for f, lab in FUNDS)}) t(fund, fund_label)) fl
          USING (fund)
        WHERE {cond}
        GROUP BY fixmedins_code, fund
        ORDER BY abs_difference DESC, fixmedins_code, fund""", params,
                    "按机构和基金 summary", f"上报与核算差异 — by institution and fund, {when}")
    by_inst = query(con, f"""
        SELECT fixmedins_code, {institution_name(con)} AS fixmedins_name, count(*) AS reported_settlements,
          count(*) FILTER (WHERE differs) AS differing_settlements
        FROM v_reported_vs_adjudicated WHERE {cond}
        GROUP BY fixmedins_code ORDER BY differing_settlements DESC, fixmedins_code""", params,
                    "按机构 institutions", f"settlements with reported amounts, {when}")
    detail = query(con, f"SELECT {with_names(con)} FROM v_discrepancies WHERE {cond} "
                        "ORDER BY fixmedins_code, month, setl_time, setl_id, fund", params,
                   "差异明细 detail", f"every settlement × fund whose reported amount differs, {when}")
    return {"summary": summary, "institutions": by_inst, "detail": detail}


# ---------------------------------------------------------------- report: fund expenditure

SUMS = ", ".join(["count(*) AS lines", "count(DISTINCT a.psn_no) AS persons",
                  "CAST(sum(a.medfee_sumamt) AS DECIMAL(18,2)) AS medfee_sumamt",
                  *[f"CAST(sum(a.{f}) AS DECIMAL(18,2)) AS {f}" for f, _ in FUNDS],
                  "CAST(sum(a.fund_pay_sumamt) AS DECIMAL(18,2)) AS fund_pay_sumamt"])


def _label_case(col: str, labels: dict[str, str], total: str = "合计 total") -> str:
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in labels.items())
    return f"CASE WHEN GROUPING({col}) = 1 THEN '{total}' ELSE (CASE {col} {whens} ELSE {col} END) END"


def identity_group_source(con: duckdb.DuckDBPyConnection) -> tuple[str, str, str]:
    """(join, expression, description) of the identity group of a line, from what the database has."""
    if "identity_group" in columns_of(con, "adjudicated"):
        return "", "a.identity_group", "adjudicated.identity_group (the group on the settlement date)"
    if has_table(con, "persons") and con.execute("SELECT count(*) FROM persons").fetchall()[0][0]:
        as_of = con.execute("SELECT max(as_of) FROM persons").fetchall()[0][0]
        return ("LEFT JOIN persons p ON p.psn_no = a.psn_no", "p.identity_group",
                f"persons snapshot (identity group as of {as_of})")
    return "", "CAST(NULL AS VARCHAR)", "not available: no identity group in the database"


@dataclass
class FundReport:
    year: int
    month: str | None
    tables: list[Table]
    by_month: Table
    by_level_month: Table
    ratio: Table
    target: Decimal | None
    notes: list[tuple[str, str]]


def fund_expenditure(con: duckdb.DuckDBPyConnection, year: int, month: str | None = None, policies=None) -> FundReport:
    cond, params = period_filter(year, month, "a.month")
    when = period_text(year, month)
    base = f"FROM adjudicated a {{join}} WHERE {cond}"

    def grouped(col: str, label_col: str, labels: dict[str, str], name: str, title: str, join: str = "",
                expr: str | None = None) -> Table:
        e = expr or f"a.{col}"
        sql = (f"SELECT CASE WHEN GROUPING({e}) = 1 THEN NULL ELSE coalesce({e}, 'unknown') END AS {col}, "
               f"{_label_case(e, labels)} AS {label_col}, {SUMS} {base.format(join=join)} "
               f"GROUP BY ROLLUP({e}) ORDER BY GROUPING({e}), {col}")
        return query(con, sql, params, name, f"{title}, {when}")

    by_month = query(con, f"SELECT coalesce(a.month, '合计 total') AS month, {SUMS} {base.format(join='')} "
                          "GROUP BY ROLLUP(a.month) ORDER BY GROUPING(a.month), a.month", params,
                     "按基金和月份 by fund and month", f"基金支出 — by fund and month, {when}")
    by_ledger = grouped("ledger", "ledger_label", LEDGER_LABEL, "按待遇类别 by ledger", "基金支出 — by ledger")
    by_level = grouped("hosp_lv", "hosp_lv_label", LEVEL_LABEL, "按医院等级 by level", "基金支出 — by institution level")
    join, expr, source = identity_group_source(con)
    labels = dict(IDENTITY_GROUP_LABEL)
    by_group = grouped("identity_group", "identity_group_label", labels, "按身份类别 by identity group",
                       "基金支出 — by identity group", join=join, expr=expr)
    top = query(con, f"SELECT row_number() OVER (ORDER BY sum(a.fund_pay_sumamt) DESC, a.fixmedins_code) AS rank, "
                     f"a.fixmedins_code, any_value({institution_name(con, 'a.fixmedins_code')}) AS fixmedins_name, "
                     f"any_value(a.hosp_lv) AS hosp_lv, {SUMS} "
                     f"{base.format(join='')} GROUP BY a.fixmedins_code "
                     "ORDER BY rank LIMIT 20", params,
                "前20机构 top institutions", f"基金支出 — top 20 institutions by fund payments, {when}")
    by_level_month = query(con, f"SELECT a.month, coalesce(a.hosp_lv, 'unknown') AS hosp_lv, "
                                f"CAST(sum(a.fund_pay_sumamt) AS DECIMAL(18,2)) AS fund_pay_sumamt "
                                f"{base.format(join='')} GROUP BY ALL ORDER BY ALL", params)
    rcond, rparams = period_filter(year, month)
    target = in_county_ratio_target(year, policies)
    ratio = query(con, f"SELECT month, stays, inscp_scp_amt, hifp_pay, payment_ratio, "
                       f"CAST(? AS DECIMAL(9,4)) AS target_ratio FROM v_in_county_inpatient_ratio WHERE {rcond} "
                       "ORDER BY month", [target, *rparams],
                  "县域内住院支付比例 ratio", f"县域内住院政策范围内支付比例 (POLICY §3.6, target about "
                                               f"{percent(target) if target is not None else '–'}), {when}")
    detail = query(con, f"SELECT * FROM v_fund_expenditure WHERE {rcond} "
                        "ORDER BY month, region, scheme, ledger, hosp_lv, fund", rparams,
                   "明细 detail", f"v_fund_expenditure, {when}")
    notes = [
        ("report", "基金支出报表 fund expenditure"), ("period", when),
        ("generated_at", dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")),
        ("amounts", "yuan (元); lines = settlements, reversals included (negative amounts); persons = distinct psn_no"),
        ("fund_pay_sumamt", "hifp_pay + hifmi_pay + maf_pay + maf_tilt_pay (DATA.md §4)"),
        ("identity_group", source),
        ("in-county ratio", "hifp_pay / inscp_scp_amt of Suizhou resident stays (inpatient, maternity, day surgery) "
                            "at institutions in the person's county (POLICY §3.6): a monitoring figure, not a rule"),
        ("privacy", "no certificate number or name in clear; persons are told apart by psn_no"),
    ]
    about = Table("说明 about", "说明 about this report",
                  pl.DataFrame(notes, schema={"item": pl.String, "value": pl.String}, orient="row"))
    tables = [about, by_month, by_ledger, by_level, by_group, top, ratio, detail]
    return FundReport(year, month, tables, by_month, by_level_month, ratio, target, notes)


def in_county_ratio_target(year: int, policies=None) -> Decimal | None:
    from flows.policies import MissingParameter, load_policies
    from transforms.money import rate_to_bp

    policies = policies or load_policies()
    try:
        v = policies.value("suizhou", "resident", "inpatient.in_county_payment_ratio_target", dt.date(year, 12, 31))
    except MissingParameter:
        return None
    return Decimal(rate_to_bp(v)) / 10000


def fund_expenditure_sql(year: int, month: str | None) -> tuple[str, list]:
    cond, params = period_filter(year, month)
    return (f"SELECT * FROM v_fund_expenditure WHERE {cond} ORDER BY month, region, scheme, ledger, hosp_lv, fund",
            params)


def write_fund_expenditure(con: duckdb.DuckDBPyConnection, year: int, month: str | None, fmt: str,
                           out: Path | str) -> FundReport | None:
    if fmt == "parquet":
        sql, params = fund_expenditure_sql(year, month)
        write_parquet(con, sql, params, out)
        return None
    if fmt == "csv":
        sql, params = fund_expenditure_sql(year, month)
        write_csv(query(con, sql, params, "fund expenditure", ""), out)
        return None
    report = fund_expenditure(con, year, month)
    if fmt == "xlsx":
        write_xlsx(report.tables, out)
    elif fmt == "html":
        Path(out).write_text(render_html(report), encoding="utf-8")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return report


# ---------------------------------------------------------------- html with inline SVG charts

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


# Chinese needs a CJK font the page cannot bring (it is one offline file): the usual ones of each system, in order —
# macOS, Windows, Linux (Noto / Source Han / WenQuanYi), then any sans-serif.
CJK_FONTS = ("'PingFang SC','Hiragino Sans GB','Microsoft YaHei','SimHei','Noto Sans CJK SC','Source Han Sans SC',"
             "'WenQuanYi Micro Hei','Droid Sans Fallback',sans-serif")


def axis_label(cat: str, n: int) -> str:
    """A category label that fits its slot: with more than six months, `2025-03` is written `3月` (the year is in
    the title), so twelve labels do not overlap."""
    if n > 6 and re.fullmatch(r"[0-9]{4}-[0-9]{2}", cat):
        return f"{int(cat[5:])}月"
    return cat


def svg_stacked_bars(title: str, categories: list[str], series: list[tuple[str, list[int]]], unit: str = "元") -> str:
    """Stacked bars of fen values per category: positives stack up from 0, negatives (reversals) down."""
    w, h, left, right, top, bottom = 820, 340, 90, 230, 40, 50
    pw, ph = w - left - right, h - top - bottom
    n_cat = len(categories)
    pos = [sum(max(v[i], 0) for _, v in series) for i in range(n_cat)]
    neg = [sum(min(v[i], 0) for _, v in series) for i in range(n_cat)]
    span = max(max(pos + [0]) - min(neg + [0]), 1)
    step = _nice_step(span / 5)
    hi = step * _ceil_div(max(pos + [0]), step)
    lo = -step * _ceil_div(-min(neg + [0]), step)
    if hi == lo:
        hi = step

    def ypos(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
           f"<title>{_e(title)}</title>",
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{_e(title)}</text>']
    for k in range(int(lo // step), int(hi // step) + 1):
        y = ypos(k * step)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="{"#333" if k == 0 else "#ddd"}"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
                   f"{_e(_short_yuan(k * step))}</text>")
    n = max(n_cat, 1)
    bw = pw / n * 0.7
    for i, cat in enumerate(categories):
        x = left + pw * (i + 0.15) / n
        up, down = 0, 0
        for s, (name, vals) in enumerate(series):
            v = vals[i]
            if v == 0:
                continue
            if v > 0:
                y1, y2, up = ypos(up + v), ypos(up), up + v
            else:
                y1, y2, down = ypos(down), ypos(down + v), down + v
            out.append(f'<rect x="{x:.1f}" y="{y1:.1f}" width="{bw:.1f}" height="{y2 - y1:.1f}" '
                       f'fill="{PALETTE[s % len(PALETTE)]}"><title>{_e(cat)} {_e(name)}: {_e(yuan(v))} {unit}'
                       f"</title></rect>")
        out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph + 18}" font-size="11" text-anchor="middle">'
                   f"{_e(axis_label(cat, n_cat))}</text>")
    for s, (name, _) in enumerate(series):
        y = top + 10 + 20 * s
        out.append(f'<rect x="{left + pw + 15}" y="{y}" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"/>')
        out.append(f'<text x="{left + pw + 32}" y="{y + 11}" font-size="12">{_e(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def svg_ratio_line(title: str, categories: list[str], ratios: list[Decimal | None], target: Decimal | None) -> str:
    """Monthly ratio (0–100%) as a line with points, and the target as a dashed line."""
    w, h, left, right, top, bottom = 820, 300, 90, 230, 40, 50
    pw, ph = w - left - right, h - top - bottom

    def ypos(r: Decimal) -> float:
        return top + ph - ph * float(min(max(r, Decimal(0)), Decimal(1)))

    n = max(len(categories), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
           f"<title>{_e(title)}</title>",
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{_e(title)}</text>']
    for k in range(0, 11, 2):
        y = ypos(Decimal(k) / 10)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{k * 10}%</text>')
    if target is not None:
        y = ypos(target)
        out.append(f'<line class="target" x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#d62728" '
                   f'stroke-dasharray="6 4"><title>target {_e(percent(target))}</title></line>')
        out.append(f'<text x="{left + pw + 15}" y="{y + 4:.1f}" font-size="12" fill="#d62728">'
                   f"target {_e(percent(target))}</text>")
    pts = [(left + pw * (i + 0.5) / n, ypos(r), c, r) for i, (c, r) in enumerate(zip(categories, ratios, strict=True))
           if r is not None]
    if len(pts) > 1:
        out.append('<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in pts) + '"/>')
    for x, y, c, r in pts:
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#1f77b4"><title>{_e(c)}: {_e(percent(r))}'
                   f"</title></circle>")
        out.append(f'<text x="{x:.1f}" y="{y - 8:.1f}" font-size="11" text-anchor="middle">{_e(percent(r))}</text>')
    for i, c in enumerate(categories):
        out.append(f'<text x="{left + pw * (i + 0.5) / n:.1f}" y="{top + ph + 18}" font-size="11" '
                   f'text-anchor="middle">{_e(axis_label(c, len(categories)))}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _nice_step(x: float) -> int:
    """A round step (1, 2 or 5 × 10^k fen) at least x."""
    x = max(int(x), 1)
    p = 1
    while p * 10 <= x:
        p *= 10
    for m in (1, 2, 5, 10):
        if m * p >= x:
            return m * p
    return 10 * p


def _short_yuan(fen: int) -> str:
    y = fen / 100
    if abs(y) >= 1e8:
        return f"{y / 1e8:g}亿"
    if abs(y) >= 1e4:
        return f"{y / 1e4:g}万"
    return f"{y:g}"


def html_table(t: Table, limit: int | None = None) -> str:
    cols = list(t.df.columns)
    head = "".join(f"<th>{_e(t.label(c))}<br><code>{_e(c)}</code></th>" for c in cols)
    body = []
    rows = t.df.iter_rows() if limit is None else t.df.head(limit).iter_rows()
    for r in rows:
        cells = []
        for c, v in zip(cols, r, strict=True):
            num = c in t.money or c in t.ratio or isinstance(v, int) and not isinstance(v, bool)
            cells.append(f'<td{" class=num" if num else ""} data-col="{_e(c)}">{_e(text_of(t, c, v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (f"<p class=note>{t.df.height - limit} more rows in the xlsx or csv export.</p>"
            if limit is not None and t.df.height > limit else "")
    return (f'<table data-name="{_e(t.name)}"><caption>{_e(t.title)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>{more}")


def render_html(r: FundReport) -> str:
    bm = r.by_month.df.filter(~pl.col("month").str.starts_with("合计"))
    months = bm["month"].to_list()
    fund_series = [(f"{FUND_LABEL[f]} {f}", [int(v or 0) for v in bm[f].to_list()])
                   for f in [*POOLED_FUNDS, "hosp_part_amt"]]
    lv = r.by_level_month.df
    levels = sorted(set(lv["hosp_lv"].to_list()))
    lv_series = []
    for level in levels:
        vals = {m: int(v or 0) for m, v in lv.filter(pl.col("hosp_lv") == level).select("month", "fund_pay_sumamt")
                .iter_rows()}
        lv_series.append((f"{LEVEL_LABEL.get(level, level)} (level {level})", [vals.get(m, 0) for m in months]))
    rt = r.ratio.df
    title = f"基金支出报表 Fund expenditure {period_text(r.year, r.month)}"
    charts = [
        ("每月基金支出 Monthly expenditure by fund",
         svg_stacked_bars("每月基金支出 Monthly expenditure by fund (元)", months, fund_series), r.by_month),
        ("每月基金支出(按医院等级) Monthly fund payments by institution level",
         svg_stacked_bars("基金支付合计按医院等级 Fund payments by level (元)", months, lv_series), None),
        ("县域内住院政策范围内支付比例 In-county inpatient payment ratio (POLICY §3.6)",
         svg_ratio_line("县域内住院支付比例 In-county inpatient payment ratio", rt["month"].to_list(),
                        rt["payment_ratio"].to_list(), r.target), r.ratio),
    ]
    sections = []
    for heading, svg, table in charts:
        sections.append((heading, svg + (html_table(table) if table is not None else "")))
    sections += [(t.title, html_table(t)) for t in r.tables[2:6]]
    return html_page(title, r.notes, sections)


def html_page(title: str, notes: list[tuple[str, str]], sections: list[tuple[str, str]]) -> str:
    """One self-contained page: a title, the notes as a definition list, then (heading, html) sections."""
    css = (f"body{{font-family:{CJK_FONTS};margin:24px;color:#222}}svg text{{font-family:{CJK_FONTS}}}"
           "table{border-collapse:collapse;margin:8px 0 24px;font-size:13px}"
           "th,td{border:1px solid #ccc;padding:3px 8px}th{background:#DDEBF7;vertical-align:bottom}"
           "th code{color:#666;font-weight:normal;font-size:11px}td.num{text-align:right}"
           "caption{text-align:left;font-weight:bold;padding:4px 0}.note{color:#666;font-size:12px}"
           "section{margin-bottom:32px}")
    parts = ["<!DOCTYPE html>", '<html lang="zh-CN"><head><meta charset="utf-8">',
             f"<title>{_e(title)}</title><style>{css}</style></head><body>", f"<h1>{_e(title)}</h1>",
             "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in notes) + "</dl>"]
    parts += [f"<section><h2>{_e(heading)}</h2>{body}</section>" for heading, body in sections]
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- explain one person's year

# Which payer a reason code speaks about (the rest are about the whole line).
def payer_of_code(code: str) -> str:
    if code.startswith("HIFMI_"):
        return "hifmi_pay"
    if code.startswith("TILT_"):
        return "maf_tilt_pay"
    if code.startswith(("MAF_", "NO_ASSISTANCE", "OFFSITE_903_NO_ASSISTANCE")):
        return "maf_pay"
    if code.startswith("OUT_OF_SCOPE_"):
        return "hosp_part_amt"
    if code in ("REVERSAL", "RULE_PENDING", "PAY_AFTER_TREATMENT"):
        return "line"
    return "hifp_pay"


def explain_person(con: duckdb.DuckDBPyConnection, psn_no: str, year: int | None = None) -> str:
    """One person's year as text: every line with each payer's amount and reasons, its explanation,
    and each accumulator before and after (per line where the line's column is stored, per month always)."""
    from transforms.engine import ACCUMULATORS
    from transforms.line_reasons import LINE_REASONS

    if year is None:
        row = con.execute("SELECT max(substr(month, 1, 4)) FROM adjudicated WHERE psn_no = ?", [psn_no]).fetchall()[0]
        if row[0] is None:
            raise LookupError(f"no adjudicated line of person {psn_no} in the database")
        year = int(row[0])
    lines = query(con, "SELECT * FROM adjudicated WHERE psn_no = ? AND month LIKE ? ORDER BY setl_time, setl_id",
                  [psn_no, f"{year:04d}-%"]).df
    acc = query(con, "SELECT month, name, value FROM accumulators WHERE psn_no = ? AND year = ? ORDER BY month, name",
                [psn_no, year]).df
    safe = terminal_safe
    out: list[str] = [f"yibao explain {safe(psn_no)} — year {year}"]
    if has_table(con, "persons"):
        p = con.execute("SELECT psn_name_masked, certno_masked, identity_group, insuplc_admdvs, rural, as_of "
                        "FROM persons WHERE psn_no = ?", [psn_no]).fetchall()
        p = p[0] if p else None
        if p:
            out.append(f"person: name {safe(p[0] or '–')}, certno {safe(p[1] or '–')}, insured in {safe(p[3] or '–')}"
                       f", rural {p[4]}, identity group {safe(p[2] or '–')} (masked snapshot as of {p[5]})")
    if lines.height == 0:
        out.append(f"no adjudicated line of {safe(psn_no)} in {year}")
        return "\n".join(out)
    tot = {c: int(lines[c].sum()) for c in ("medfee_sumamt", "fund_pay_sumamt", "hosp_part_amt", "acct_pay",
                                            "acct_mulaid_pay", "psn_cash_pay")}
    out.append(f"{lines.height} lines; total cost {yuan(tot['medfee_sumamt'])} = funds {yuan(tot['fund_pay_sumamt'])}"
               f" + institution {yuan(tot['hosp_part_amt'])} + own account {yuan(tot['acct_pay'])}"
               f" + family accounts {yuan(tot['acct_mulaid_pay'])} + cash {yuan(tot['psn_cash_pay'])}")

    # Per-line accumulators whose per-line column is stored: month-start value from the table, then running.
    stored = {name: col for name, col in ACCUMULATORS.items() if col in lines.columns}
    month_end: dict[tuple[str, str], int] = {(m, n): int(v) for m, n, v in acc.iter_rows()}

    def before_month(name: str, month: str) -> int:
        earlier = [m for (m, n) in month_end if n == name and m < month]
        return month_end[(max(earlier), name)] if earlier else 0

    running: dict[str, int] = {}
    current_month = None
    width = max(display_width(f"{FUND_LABEL[f]} ({f})") for f, _ in FUNDS)
    for i, r in enumerate(lines.iter_rows(named=True), start=1):
        if r["month"] != current_month:
            current_month = r["month"]
            running = {n: before_month(n, current_month) for n in stored}
        where = "in county" if r["in_county"] else ("in city" if r["in_city"] else
                                                    f"out of city ({r['offsite_type_eff'] or '?'})")
        out.append("")
        out.append(f"[{i}] {r['setl_time']:%Y-%m-%d %H:%M:%S}  {safe(r['setl_id'])}  {r['ledger']}"
                   f" ({LEDGER_LABEL.get(r['ledger'], '')}) at {safe(r['fixmedins_code'] or '?')}"
                   f" level {r['hosp_lv'] or '?'}, {where}"
                   + (f"  — reversal of {safe(r['orig_setl_id'])}" if r["orig_setl_id"] else ""))
        out.append(f"    total cost {yuan(r['medfee_sumamt'])}: in scope {yuan(r['inscp_scp_amt'])}, out of catalogue "
                   f"{yuan(r['fulamt_ownpay_amt'])}, over limit {yuan(r['overlmt_selfpay'])}")
        codes = [c for c in (r["reason_codes"] or "").split(",") if c]
        for f, label in FUNDS:
            mine = [c for c in codes if payer_of_code(c) == f]
            why = "; ".join(f"{c}: {LINE_REASONS.get(c, '')}" for c in mine)
            out.append(f"    {pad(f'{label} ({f})', width)}  {yuan(r[f]):>14}" + (f"   {why}" if why else ""))
        for c in codes:
            if payer_of_code(c) == "line":
                out.append(f"    {c}: {LINE_REASONS.get(c, '')}")
        for frag in (r["explanation"] or "").split("; "):
            out.append(f"      · {safe(frag)}")
        moves = []
        for name, col in stored.items():
            b = running[name]
            running[name] = b + int(r[col] or 0)
            moves.append(f"{name} {yuan(b)} → {yuan(running[name])}")
        if moves:
            out.append("    accumulators: " + "; ".join(moves))
    out.append("")
    out.append("accumulators by month (end of the month before → end of the month):")
    for m, name, v in acc.iter_rows():
        out.append(f"  {m}  {name:<24} {yuan(before_month(name, m)):>14} → {yuan(int(v)):>14}")
    return "\n".join(out)


def to_stdout_safe(text: str) -> str:
    return "\n".join(terminal_safe(line) for line in text.split("\n"))


def csv_text(table: Table) -> str:
    """The csv of a table as a string (for tests and small outputs)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(csv_rows(table))
    return buf.getvalue()
