"""Maternity benefits of Xiangyang employees (生育待遇): POLICY §4.6. Pure: events in, benefits out.

Input `maternity_events` (docs/MATERNITY_INPUT.md): psn_no, event_date, kind (`natural` / `caesarean`
/ `miscarriage`), babies (deliveries, ≥ 1), gestation_months (miscarriages, completed months), and
optionally delivery_cost (fen; the delivery's medical cost) and spouse_employee (bool; the husband
is an employee of an urban employer insured in the scheme).

Allowance days (生育津贴计发天数, maternity.allowance_days in force on the event date):
natural delivery 128, caesarean 143, each additional baby of a multiple birth +15; a miscarriage
before 4 completed months 15, from 4 to under 7 months 42. A miscarriage at 7 months or later has
no value in the source: its days are null with the reason (never a guess). The allowance in yuan
needs the employer's average wage, which no input carries: only the days are computed.

Flexible workers (the employment period valid on the event date is flexible): a delivery gets the
maternity medical subsidy up to maternity.flexible_delivery_subsidy_max (2,500) — `subsidy_cap`,
and `subsidy_amt` = min(delivery_cost, cap) when the cost is given — unless the husband is an
insured urban employee (maternity.flexible_spouse_employee_standard): then the delivery follows the
employee standard (`subsidy_cap` null, reason says so). Miscarriages are not deliveries: no subsidy.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from flows.policies import MissingParameter, Policies
from transforms.accounts import EMPLOYMENT_SCHEMA, PERIOD_TIE_DESC, PERIOD_TIE_NAMES, PERIOD_TIES, _register
from transforms.params import yuan_to_fen

REGION, SCHEME = "xiangyang", "employee"
KINDS = ("natural", "caesarean", "miscarriage")
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "psn_no": pl.String, "event_date": pl.Date, "kind": pl.String, "babies": pl.Int32, "gestation_months": pl.Int32,
    "delivery_cost": pl.Int64, "spouse_employee": pl.Boolean,
}
BENEFIT_SCHEMA: dict[str, pl.DataType] = {
    **EVENT_SCHEMA, "allowance_days": pl.Int32, "flexible": pl.Boolean, "subsidy_cap": pl.Int64,
    "subsidy_amt": pl.Int64, "reason": pl.String,
}


class MaternityEventError(ValueError):
    """An event row that cannot be read (unknown kind, no babies on a delivery, no gestation on a miscarriage)."""


def allowance_days(kind: str, babies: int | None, gestation_months: int | None, table: dict) -> tuple[int | None, str]:
    """Days of one event from the allowance_days table in force on its date: (days or None, reason)."""
    t = {str(k): v for k, v in table.items()}
    if kind in ("natural", "caesarean"):
        if babies is None or babies < 1:
            raise MaternityEventError(f"a {kind} delivery needs babies >= 1, got {babies!r}")
        extra = (babies - 1) * int(t["extra_baby"])
        days = int(t[kind]) + extra
        more = f" + {babies - 1} × {t['extra_baby']} for the extra bab{'y' if babies == 2 else 'ies'}" if babies > 1 else ""
        return days, f"{kind} delivery: {t[kind]} days{more} (§4.6)"
    if kind == "miscarriage":
        if gestation_months is None or gestation_months < 0:
            raise MaternityEventError(f"a miscarriage needs gestation_months >= 0, got {gestation_months!r}")
        if gestation_months < 4:
            return int(t["miscarriage_under_4_months"]), "miscarriage before 4 months: 15 days (§4.6)"
        if gestation_months < 7:
            return int(t["miscarriage_4_to_7_months"]), "miscarriage from 4 to under 7 months: 42 days (§4.6)"
        return None, ("missing: allowance days of a miscarriage at 7 months or later (the source gives "
                      "< 4 and 4–< 7 months only)")
    raise MaternityEventError(f"unknown maternity event kind {kind!r} (one of {', '.join(KINDS)})")


def maternity_benefits(events: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies) -> pl.DataFrame:
    """One row per event: the event's columns, allowance_days, flexible, subsidy_cap, subsidy_amt, reason.

    A parameter missing on an event's date raises MissingParameter naming it (POLICY §1.8).
    """
    ev = events.select([pl.col(c).cast(t) if c in events.columns else pl.lit(None, t).alias(c)
                        for c, t in EVENT_SCHEMA.items()]).with_row_index("__i")
    emp = _register(registers, "employment", EMPLOYMENT_SCHEMA)
    on_date = (ev.select("__i", "psn_no", "event_date").join(emp, on="psn_no", how="inner")
               .filter((pl.col("begndate") <= pl.col("event_date"))
                       & (pl.col("enddate").is_null() | (pl.col("event_date") <= pl.col("enddate"))))
               .with_columns(*PERIOD_TIES)
               .sort(["__i", "begndate", *PERIOD_TIE_NAMES], descending=[False, True, *PERIOD_TIE_DESC], nulls_last=True)
               .unique("__i", keep="first", maintain_order=True)
               .select("__i", pl.col("flexible").fill_null(False).alias("flexible")))
    ev = ev.join(on_date, on="__i", how="left").with_columns(pl.col("flexible").fill_null(False))
    rows = []
    for r in ev.iter_rows(named=True):
        d: dt.date = r["event_date"]
        table = policies.value(REGION, SCHEME, "maternity.allowance_days", d)
        days, why = allowance_days(r["kind"], r["babies"], r["gestation_months"], table)
        cap = amt = None
        if r["flexible"] and r["kind"] in ("natural", "caesarean"):
            spouse_rule = policies.value(REGION, SCHEME, "maternity.flexible_spouse_employee_standard", d)
            if spouse_rule and r["spouse_employee"]:
                why += "; flexible worker whose husband is an insured employee: delivery costs follow the employee standard"
            else:
                cap = yuan_to_fen(policies.value(REGION, SCHEME, "maternity.flexible_delivery_subsidy_max", d))
                if r["delivery_cost"] is not None:
                    amt = min(r["delivery_cost"], cap)
                why += f"; flexible worker: maternity medical subsidy up to {cap // 100:,} per delivery"
        rows.append((r["__i"], days, cap, amt, why))
    got = pl.DataFrame(rows, orient="row", schema={"__i": pl.UInt32, "allowance_days": pl.Int32, "subsidy_cap": pl.Int64,
                                                    "subsidy_amt": pl.Int64, "reason": pl.String})
    return ev.join(got, on="__i", how="left").sort("__i").select(list(BENEFIT_SCHEMA))


__all__ = ["BENEFIT_SCHEMA", "EVENT_SCHEMA", "KINDS", "MaternityEventError", "MissingParameter", "allowance_days",
           "maternity_benefits"]
