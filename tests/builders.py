"""Tiny builders for typed registers and settlement lines, so tests state only what matters."""

from __future__ import annotations

import datetime as dt
from itertools import count

import polars as pl

_ids = count(1)

PERSON_SCHEMA = {"psn_no": pl.String, "certno": pl.String, "psn_name": pl.String, "gend": pl.String,
                 "brdy": pl.Date, "insutype": pl.String, "insuplc_admdvs": pl.String, "rural": pl.Boolean,
                 "enrol_date": pl.Date}
INST_SCHEMA = {"fixmedins_code": pl.String, "fixmedins_name": pl.String, "fixmedins_type": pl.String,
               "dedc_hosp_lv": pl.String, "facility": pl.String, "admdvs": pl.String,
               "offsite_outpatient_enabled": pl.Boolean}
IDENT_SCHEMA = {"psn_no": pl.String, "identity": pl.String, "begndate": pl.Date, "enddate": pl.Date}
CERT_SCHEMA = {"psn_no": pl.String, "dise_cert_code": pl.String, "dise_codg": pl.String, "kind": pl.String,
               "begndate": pl.Date, "enddate": pl.Date}
EMPLOYMENT_SCHEMA = {"psn_no": pl.String, "psn_type": pl.String, "flexible": pl.Boolean, "contrib_mode": pl.String,
                     "contrib_base": pl.Int64, "retire_kind": pl.String, "benefit": pl.String, "begndate": pl.Date,
                     "enddate": pl.Date}
LINE_SCHEMA = {
    "setl_id": pl.String, "mdtrt_id": pl.String, "psn_no": pl.String, "insutype": pl.String, "med_type": pl.String,
    "fixmedins_code": pl.String, "begndate": pl.Date, "enddate": pl.Date, "setl_time": pl.Datetime("us"),
    "dise_codg": pl.String, "dise_cert_code": pl.String, "offsite_type": pl.String,
    "presc_fixmedins_code": pl.String, "trauma_report_no": pl.String, "is_emergency_rescue": pl.Boolean,
    "medfee_sumamt": pl.Int64, "fulamt_ownpay_amt": pl.Int64, "overlmt_selfpay": pl.Int64, "cls_a_amt": pl.Int64,
    "cls_b_amt": pl.Int64, "orig_setl_id": pl.String, "hifp_pay": pl.Int64, "hifmi_pay": pl.Int64,
    "maf_pay": pl.Int64, "acct_pay": pl.Int64, "acct_mulaid_pay": pl.Int64, "psn_cash_pay": pl.Int64,
    "source_file": pl.String, "source_row": pl.Int64, "month": pl.String,
}

# A few institutions: Suizhou (city 4213) levels 1–3 in county 421302, one in Suixian 421321,
# Wuhan (in Hubei, out of city), Beijing (out of province).
INSTITUTIONS = [
    ("SZ1", "1", "township", "421302"), ("SZ2", "2", "hospital", "421302"), ("SZ3", "3", "hospital", "421302"),
    ("SX2", "2", "hospital", "421321"), ("WH1", "1", "hospital", "420102"), ("WH2", "2", "hospital", "420102"),
    ("WH3", "3", "hospital", "420102"), ("BJ3", "3", "hospital", "110105"), ("SZV", "1", "village_clinic", "421302"),
]


# Xiangyang (city 4206): levels 1–3, a village clinic, and a pharmacy (no level of its own; A-11).
# (code, fixmedins_type, level, facility, admdvs)
XY_INSTITUTIONS = [
    ("XY1", "hospital", "1", "township", "420602"), ("XY2", "hospital", "2", "hospital", "420602"),
    ("XY3", "hospital", "3", "hospital", "420606"), ("XYV", "hospital", "1", "village_clinic", "420624"),
    ("XYP", "pharmacy", None, "pharmacy", "420602"),
]


def institutions() -> pl.DataFrame:
    rows = [(c, f"inst {c}", "hospital", lv, fac, adm, False) for c, lv, fac, adm in INSTITUTIONS]
    rows += [(c, f"inst {c}", typ, lv, fac, adm, False) for c, typ, lv, fac, adm in XY_INSTITUTIONS]
    return pl.DataFrame(rows, schema=INST_SCHEMA, orient="row")


def person(psn_no: str, admdvs: str = "421302", insutype: str = "390", rural: bool = False) -> dict:
    return {"psn_no": psn_no, "certno": None, "psn_name": "测试", "gend": "1", "brdy": dt.date(1970, 1, 1),
            "insutype": insutype, "insuplc_admdvs": admdvs, "rural": rural, "enrol_date": dt.date(2020, 1, 1)}


def employee(psn_no: str, admdvs: str = "420602") -> dict:
    """A Xiangyang employee (insutype 310); give their lines insutype="310"."""
    return person(psn_no, admdvs=admdvs, insutype="310")


def employment(psn_no: str, begin: str | dt.date, end: str | dt.date | None = None, psn_type: str = "11",
               flexible: bool = False, benefit: str = "normal", contrib_base: int | None = 345_000) -> dict:
    """One employment period (DATA.md §3): psn_type 11 in service / 12 retired; benefit normal, suspended,
    arrears, unverified or terminated. Dates 'YYYY-MM-DD'."""
    def d(x):
        return None if x is None else (x if isinstance(x, dt.date) else dt.date.fromisoformat(x))
    retired = psn_type == "12"
    return {"psn_no": psn_no, "psn_type": psn_type, "flexible": flexible,
            "contrib_mode": None if retired else "combined", "contrib_base": None if retired else contrib_base,
            "retire_kind": "normal" if retired else None, "benefit": benefit, "begndate": d(begin), "enddate": d(end)}


def registers(persons: list[dict], identities: list[tuple] = (), certifications: list[tuple] = (),
              employment: list[dict] = ()) -> dict:
    return {
        "persons": pl.DataFrame(persons, schema=PERSON_SCHEMA),
        "institutions": institutions(),
        "identities": pl.DataFrame(list(identities), schema=IDENT_SCHEMA, orient="row"),
        "certifications": pl.DataFrame(list(certifications), schema=CERT_SCHEMA, orient="row"),
        "employment": pl.DataFrame(list(employment), schema=EMPLOYMENT_SCHEMA),
    }


def line(psn_no: str, when: str, inst: str, med_type: str = "21", a: int = 0, b: int = 0, own: int = 0,
         over: int = 0, setl_id: str | None = None, insutype: str = "390", **kw) -> dict:
    """Amounts in fen. `when` is 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS'."""
    t = dt.datetime.fromisoformat(when if " " in when else when + " 10:00:00")
    sid = setl_id or f"T{next(_ids):08d}"
    row = {k: None for k in LINE_SCHEMA}
    row.update(setl_id=sid, mdtrt_id=kw.pop("mdtrt_id", "M" + sid), psn_no=psn_no, insutype=insutype,
               med_type=med_type, fixmedins_code=inst, begndate=t.date(), enddate=t.date(), setl_time=t,
               medfee_sumamt=a + b + own + over, fulamt_ownpay_amt=own, overlmt_selfpay=over, cls_a_amt=a,
               cls_b_amt=b, is_emergency_rescue=False, source_file="test.csv", source_row=1, month=t.strftime("%Y-%m"))
    row.update(kw)
    return row


def lines(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=LINE_SCHEMA)


def reversal_of(orig: dict, when: str, setl_id: str | None = None) -> dict:
    r = dict(orig)
    t = dt.datetime.fromisoformat(when if " " in when else when + " 10:00:00")
    r.update(setl_id=setl_id or f"R{next(_ids):08d}", orig_setl_id=orig["setl_id"], setl_time=t,
             month=t.strftime("%Y-%m"))
    for k in ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt"):
        r[k] = -orig[k]
    return r


def yuan(x: float | int | str) -> int:
    """Yuan → fen, exactly (for readable test numbers)."""
    from decimal import Decimal
    return int(Decimal(str(x)) * 100)


def q(db, sql: str, params=None) -> list[tuple]:
    """Rows of a query on a database file, opened read-only (as an auditor would)."""
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def table_rows(db, table: str) -> list[tuple]:
    """Every row of a table but its run_id, in a stable order: what two runs must write alike."""
    return q(db, f"SELECT * EXCLUDE (run_id) FROM {table} ORDER BY ALL")


def examples(n: int) -> int:
    """Hypothesis examples for a slow engine-vs-reference property: `n` in `make test` (kept within its time
    budget), times YIBAO_EXAMPLES in `make test-thorough` (e.g. 10 = ten times as many random years)."""
    import os
    return max(1, round(n * float(os.environ.get("YIBAO_EXAMPLES", "1"))))


def by_month(rows: list[dict]) -> list[list[dict]]:
    """The lines of each settlement month, months in order."""
    months = sorted({r["setl_time"].strftime("%Y-%m") for r in rows})
    return [[r for r in rows if r["setl_time"].strftime("%Y-%m") == m] for m in months]


def month_by_month(rows: list[dict], step, accounts: bool = True) -> list:
    """`step(month_rows, **state)` (an engine call returning an Adjudication) for each month in order, as the
    monthly flow runs them: on the accumulators at the end of the month before — every year's, since a reversal
    gives back to its original's year (POLICY §1.7) — with the earlier months' rows as originals of reversals
    and as earlier lines of merged stays (§1.12), and, with `accounts`, the account balances and ledger."""
    import polars as pl
    carried, done, ledgers, balances, out = None, [], [], None, []
    for month_rows in by_month(rows):
        earlier = pl.concat(done, how="diagonal_relaxed") if done else None
        kw = {"carried": carried, "originals": earlier, "earlier_stays": earlier}
        if accounts:
            kw.update(balances=balances, original_ledger=pl.concat(ledgers) if ledgers else None)
        res = step(month_rows, **kw)
        out.append(res)
        done.append(res.adjudicated)
        ledgers.append(res.account_ledger)
        balances = res.account_balances
        new = res.accumulators
        carried = new if carried is None else pl.concat([carried.join(new, on=["psn_no", "year", "name"], how="anti"),
                                                         new])
    return out
