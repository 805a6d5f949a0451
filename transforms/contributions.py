"""Contributions per person and year (参保缴费): POLICY §3.1 (Suizhou residents), §4.1 (Xiangyang employees).

Pure: registers and policies in, one row per person and year out (DATA.md §4 `contributions`):
psn_no, year, region, scheme, kind, months, personal_amt, government_amt, employer_amt (ours), reason.
Money in Int64 fen; an amount that cannot be computed is null and `reason` names what is missing —
never a guess (POLICY preamble, §6). A missing parameter does not stop anything here: the table
reports it person by person.

Residents of Suizhou (insutype 390, 4213xx, enrolled by 31 Dec of Y): the year's personal standard
(contributions.personal_standard, 400 in 2025, missing before) minus the single highest help of the
identities valid on 31 December of Y−1 (help_identity_date, A-19; 就高不就低, 不得重复): a rate of the
standard (help_rate: 100% / 90% / 50%) or a fixed amount (help_amount: the poverty_exit taper 160 /
70 / 50 / 0). The government pays the help (government_amt), the person the rest (personal_amt).
Before 2025 the help rates and the standard are missing: a person whose help cannot be known gets
nulls; a poverty_exit person of 2024 gets government 50 and a null personal share (the standard is
missing). Xiangyang residents: the standard is missing in the source (§4.7), reported as such.

Employees of Xiangyang (persons with employment periods, 4206xx): a month of Y is due when the
period valid on its first day (the same pick as the account credits: latest begin, then the most
favourable) is not terminated or suspended (arrears are dues owed). Employer-based (not flexible,
in service): employer 8.5% and employee 2% of the period's contrib_base, each rounded half-up per
month. Flexible workers: the contribution year's single base (contributions.flexible_base, 3,450 for
2022-07-01 – 2023-06-30, missing after) × 10% + 7 (combined) or × 8% + 7 (pooling-only) a month
(E4: 352 / 283), all personal. Retirees pay nothing, except those still contributing monthly, whose
rate the source does not give (reported missing).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from flows.policies import MissingParameter, Policies
from transforms.accounts import EMPLOYMENT_SCHEMA, PERIOD_TIE_DESC, PERIOD_TIE_NAMES, PERIOD_TIES, _register
from transforms.money import apply_rate, rate_to_bp
from transforms.params import yuan_to_fen

CONTRIBUTION_SCHEMA: dict[str, pl.DataType] = {
    "psn_no": pl.String, "year": pl.Int32, "region": pl.String, "scheme": pl.String, "kind": pl.String,
    "months": pl.Int32, "personal_amt": pl.Int64, "government_amt": pl.Int64, "employer_amt": pl.Int64,
    "reason": pl.String,
}
PERSON_SCHEMA: dict[str, pl.DataType] = {"psn_no": pl.String, "insutype": pl.String, "insuplc_admdvs": pl.String,
                                         "enrol_date": pl.Date}
IDENTITY_SCHEMA: dict[str, pl.DataType] = {"psn_no": pl.String, "identity": pl.String, "begndate": pl.Date,
                                           "enddate": pl.Date}
SUIZHOU, XIANGYANG = "4213", "4206"
NO_DUES_STATES = ("terminated", "suspended")


def _yuan(fen: int | None) -> str:
    if fen is None:
        return "?"
    return f"{fen // 100:,}.{fen % 100:02d}"


def _try(policies: Policies, region: str, scheme: str, name: str, on: dt.date) -> tuple[Any, str | None]:
    """(value, None) or (None, 'missing: region/scheme/name in force on date')."""
    try:
        return policies.value(region, scheme, name, on), None
    except MissingParameter as e:
        return None, f"missing: {region}/{scheme}/{e.name} in force on {on.isoformat()}"


def contributions(registers: dict[str, pl.DataFrame], policies: Policies, year: int) -> pl.DataFrame:
    """Every resident's and employee's contribution of `year` (see the module docstring)."""
    parts = [_suizhou_residents(registers, policies, year), _xiangyang_residents(registers, year),
             _employees(registers, policies, year)]
    return pl.concat([p.select(list(CONTRIBUTION_SCHEMA)).cast(CONTRIBUTION_SCHEMA) for p in parts]).sort("psn_no")


def _residents(registers: dict[str, pl.DataFrame], city: str, year: int) -> pl.DataFrame:
    p = _register(registers, "persons", PERSON_SCHEMA)
    return p.filter((pl.col("insutype") == "390") & pl.col("insuplc_admdvs").str.starts_with(city)
                    & (pl.col("enrol_date").is_null() | (pl.col("enrol_date") <= dt.date(year, 12, 31)))).select("psn_no")


def _xiangyang_residents(registers: dict[str, pl.DataFrame], year: int) -> pl.DataFrame:
    res = _residents(registers, XIANGYANG, year)
    return res.with_columns(
        pl.lit(year, pl.Int32).alias("year"), pl.lit("xiangyang").alias("region"), pl.lit("resident").alias("scheme"),
        pl.lit("resident").alias("kind"), pl.lit(None, pl.Int32).alias("months"),
        pl.lit(None, pl.Int64).alias("personal_amt"), pl.lit(None, pl.Int64).alias("government_amt"),
        pl.lit(None, pl.Int64).alias("employer_amt"),
        pl.lit("missing: xiangyang/resident/contributions.personal_standard (POLICY §4.7: the source gives the "
               "period, September–December of Y−1, but no amount)").alias("reason"))


def _suizhou_residents(registers: dict[str, pl.DataFrame], policies: Policies, year: int) -> pl.DataFrame:
    region, scheme = "suizhou", "resident"
    res = _residents(registers, SUIZHOU, year)
    on = dt.date(year, 1, 1)
    std, std_missing = _try(policies, region, scheme, "contributions.personal_standard", on)
    std_fen = None if std is None else yuan_to_fen(std)
    rates, rates_missing = _try(policies, region, scheme, "contributions.help_rate", on)
    amounts, amounts_missing = _try(policies, region, scheme, "contributions.help_amount", on)
    combo, combo_missing = _try(policies, region, scheme, "contributions.help_combination", on)
    when, when_missing = _try(policies, region, scheme, "contributions.help_identity_date", on)
    if combo is not None and combo != "highest":
        raise NotImplementedError(f"contributions.help_combination = {combo!r}: only highest is implemented")
    # the help of each identity (fen), or the reason it cannot be known; identities in neither table: no help
    helps: dict[str, tuple[int | None, str]] = {}
    for ident, amount in (amounts or {}).items():
        helps[str(ident)] = (None if amount is None else yuan_to_fen(amount), f"{ident}: help {_yuan(yuan_to_fen(amount))}"
                             if amount is not None else f"missing: help_amount[{ident}]")
    for ident, rate in (rates or {}).items():
        if rate is None:
            helps[str(ident)] = (None, f"missing: suizhou/resident/contributions.help_rate[{ident}]")
        elif std_fen is None:
            helps[str(ident)] = (None, f"{ident}: help {rate} of the standard — {std_missing}")
        else:
            helps[str(ident)] = (apply_rate(std_fen, rate_to_bp(rate)), f"{ident}: help {rate} of {_yuan(std_fen)}")
    unknown_help = rates_missing or amounts_missing or combo_missing or when_missing  # any other identity: unknown
    judge = (dt.date(year + int(when["year_offset"]), int(when["month"]), int(when["day"])) if when else None)
    ids = _register(registers, "identities", IDENTITY_SCHEMA)
    if judge is not None:
        ids = ids.filter((pl.col("begndate") <= judge) & (pl.col("enddate").is_null() | (pl.col("enddate") >= judge)))
    else:
        ids = ids.clear()
    ids = ids.join(res, on="psn_no", how="semi").select("psn_no", "identity").unique().sort("psn_no", "identity")
    table = pl.DataFrame(
        [(k, v[0], v[1]) for k, v in helps.items()],
        schema={"identity": pl.String, "help": pl.Int64, "help_text": pl.String}, orient="row")
    cand = ids.join(table, on="identity", how="left").with_columns(
        pl.when(pl.col("help_text").is_null() & pl.lit(unknown_help is None)).then(0)
        .otherwise(pl.col("help")).alias("help"),
        pl.coalesce(pl.col("help_text"),
                    pl.when(pl.lit(unknown_help is None)).then(pl.col("identity") + pl.lit(": no help"))
                    .otherwise(pl.col("identity") + pl.lit(f": help unknown — {unknown_help}"))).alias("help_text"))
    best = cand.group_by("psn_no").agg(
        pl.col("help").max().alias("help"),
        pl.col("help").null_count().alias("n_unknown"),
        pl.col("help_text").sort_by(pl.col("help").fill_null(-1), descending=True).first().alias("best_text"),
        pl.col("identity").sort().str.join(", ").alias("all_ids"),
        pl.col("help_text").filter(pl.col("help").is_null()).first().alias("unknown_text"),
    )
    out = res.join(best, on="psn_no", how="left").with_columns(
        pl.col("n_unknown").fill_null(0),
        pl.when(pl.col("all_ids").is_null()).then(0).otherwise(pl.col("help")).alias("help"))
    gov = pl.when(pl.col("n_unknown") > 0).then(None).otherwise(pl.col("help"))
    personal = pl.when(gov.is_null() | pl.lit(std_fen is None)).then(None).otherwise(
        (pl.lit(std_fen, pl.Int64) - gov).clip(lower_bound=0))
    on_text = f"identities on {judge.isoformat()} (A-19)" if judge else (when_missing or "")
    reason = (
        pl.when(pl.col("n_unknown") > 0).then(pl.concat_str([pl.col("unknown_text"), pl.lit(f"; {on_text}")]))
        .when(pl.col("all_ids").is_null()).then(pl.lit(
            f"ordinary: no help; personal standard {_yuan(std_fen)}" if std_fen is not None else
            f"ordinary: no help; {std_missing}"))
        .otherwise(pl.concat_str([
            pl.col("best_text"), pl.lit(" (the single highest help of "), pl.col("all_ids"), pl.lit("; "), pl.lit(on_text),
            pl.lit(")" if std_fen is not None else f"); {std_missing}")]))
    )
    return out.select(
        "psn_no", pl.lit(year, pl.Int32).alias("year"), pl.lit(region).alias("region"), pl.lit(scheme).alias("scheme"),
        pl.lit("resident").alias("kind"), pl.lit(None, pl.Int32).alias("months"),
        personal.cast(pl.Int64).alias("personal_amt"), gov.cast(pl.Int64).alias("government_amt"),
        pl.lit(None, pl.Int64).alias("employer_amt"), reason.alias("reason"))


def _month_values(policies: Policies, days: list[dt.date]) -> pl.DataFrame:
    region, scheme = "xiangyang", "employee"
    rows = []
    for d in days:
        er, er_m = _try(policies, region, scheme, "contributions.employer_rate", d)
        ee, ee_m = _try(policies, region, scheme, "contributions.employee_rate", d)
        fb, fb_m = _try(policies, region, scheme, "contributions.flexible_base", d)
        fc, fc_m = _try(policies, region, scheme, "contributions.flexible_rate_combined", d)
        fp, fp_m = _try(policies, region, scheme, "contributions.flexible_rate_pooling_only", d)
        fx, fx_m = _try(policies, region, scheme, "contributions.flexible_critical_illness_per_month", d)
        rows.append((d, None if er is None else rate_to_bp(er), None if ee is None else rate_to_bp(ee),
                     er_m or ee_m, None if fb is None else yuan_to_fen(fb),
                     None if fc is None else rate_to_bp(fc), None if fp is None else rate_to_bp(fp),
                     None if fx is None else yuan_to_fen(fx), fb_m or fx_m, fc_m, fp_m))
    return pl.DataFrame(rows, orient="row", schema={
        "day": pl.Date, "employer_bp": pl.Int64, "employee_bp": pl.Int64, "employer_missing": pl.String,
        "flex_base": pl.Int64, "flex_combined_bp": pl.Int64, "flex_pooling_bp": pl.Int64, "flex_extra": pl.Int64,
        "flex_missing": pl.String, "flex_combined_missing": pl.String, "flex_pooling_missing": pl.String})


def _rate(amount: pl.Expr, bp: pl.Expr) -> pl.Expr:
    return (2 * amount * bp + 10_000) // 20_000  # half-up, amounts >= 0 (transforms/money.apply_rate)


def _employees(registers: dict[str, pl.DataFrame], policies: Policies, year: int) -> pl.DataFrame:
    persons = _register(registers, "persons", PERSON_SCHEMA).filter(pl.col("insuplc_admdvs").str.starts_with(XIANGYANG))
    emp = _register(registers, "employment", EMPLOYMENT_SCHEMA).join(persons, on="psn_no", how="semi")
    start, end = dt.date(year, 1, 1), dt.date(year, 12, 31)
    emp = emp.filter((pl.col("begndate") <= end) & (pl.col("enddate").is_null() | (pl.col("enddate") >= start)))
    if emp.height == 0:
        return pl.DataFrame(schema=CONTRIBUTION_SCHEMA)
    days = [dt.date(year, m, 1) for m in range(1, 13)]
    grid = emp.select("psn_no").unique().join(pl.DataFrame({"day": days}), how="cross")
    j = (grid.join(emp, on="psn_no", how="inner")
         .filter((pl.col("begndate") <= pl.col("day")) & (pl.col("enddate").is_null() | (pl.col("day") <= pl.col("enddate"))))
         .with_columns(*PERIOD_TIES)
         .sort(["psn_no", "day", "begndate", *PERIOD_TIE_NAMES], descending=[False, False, True, *PERIOD_TIE_DESC],
               nulls_last=True)
         .unique(["psn_no", "day"], keep="first", maintain_order=True))
    j = j.join(_month_values(policies, days), on="day", how="left")
    flex = pl.col("flexible").fill_null(False)
    due = ~pl.col("benefit").is_in(list(NO_DUES_STATES))
    kind = (pl.when(~due).then(pl.lit("none"))
            .when(pl.col("psn_type") == "12").then(
                pl.when(pl.col("retire_kind") == "contributing").then(pl.lit("retired_contributing"))
                .otherwise(pl.lit("none")))
            .when(flex).then(pl.concat_str([pl.lit("flexible_"), pl.col("contrib_mode").fill_null("?")]))
            .otherwise(pl.lit("employer")))
    j = j.with_columns(kind.alias("mkind"))
    base_flex = pl.col("flex_base")
    personal = (
        pl.when(pl.col("mkind") == "employer").then(_rate(pl.col("contrib_base"), pl.col("employee_bp")))
        .when(pl.col("mkind") == "flexible_combined").then(_rate(base_flex, pl.col("flex_combined_bp")) + pl.col("flex_extra"))
        .when(pl.col("mkind") == "flexible_pooling_only").then(_rate(base_flex, pl.col("flex_pooling_bp")) + pl.col("flex_extra"))
        .when(pl.col("mkind") == "none").then(0)
    )
    employer = (pl.when(pl.col("mkind") == "employer").then(_rate(pl.col("contrib_base"), pl.col("employer_bp")))
                .when(pl.col("mkind") != "retired_contributing").then(0))
    missing = (
        pl.when(pl.col("mkind") == "employer").then(
            pl.coalesce(pl.col("employer_missing"),
                        pl.when(pl.col("contrib_base").is_null()).then(pl.lit("missing: employment.contrib_base"))))
        .when(pl.col("mkind") == "flexible_combined").then(pl.coalesce("flex_missing", "flex_combined_missing"))
        .when(pl.col("mkind") == "flexible_pooling_only").then(pl.coalesce("flex_missing", "flex_pooling_missing"))
        .when(pl.col("mkind") == "flexible_?").then(pl.lit("missing: employment.contrib_mode of a flexible worker"))
        .when(pl.col("mkind") == "retired_contributing").then(pl.lit(
            "missing: the monthly dues of a retiree still contributing (POLICY §4.2 names the modes, §4.1 gives no rate)"))
    )
    j = j.with_columns(personal.alias("m_personal"), employer.alias("m_employer"), missing.alias("m_missing"))
    j = j.with_columns(pl.when(pl.col("m_missing").is_not_null()).then(None).otherwise(pl.col("m_personal")).alias("m_personal"),
                       pl.when(pl.col("m_missing").is_not_null()).then(None).otherwise(pl.col("m_employer")).alias("m_employer"))
    due_month = pl.col("mkind") != "none"
    agg = j.group_by("psn_no").agg(
        due_month.sum().cast(pl.Int32).alias("months"),
        pl.col("m_missing").is_not_null().sum().alias("n_missing"),
        pl.col("m_personal").sum().alias("personal_amt"), pl.col("m_employer").sum().alias("employer_amt"),
        pl.col("m_missing").drop_nulls().first().alias("first_missing"),
        pl.col("day").filter(pl.col("m_missing").is_not_null()).min().alias("missing_from"),
        pl.col("mkind").filter(due_month).unique().sort().str.join("+").alias("kinds"),
        (pl.col("mkind") == "employer").sum().alias("n_employer"),
        pl.col("mkind").str.starts_with("flexible_").sum().alias("n_flexible"),
    )
    everyone = emp.select("psn_no").unique().join(agg, on="psn_no", how="left")
    kind_col = pl.when(pl.col("kinds").is_null() | (pl.col("kinds") == "")).then(pl.lit("none")).otherwise(pl.col("kinds"))
    reason = (
        pl.when(pl.col("n_missing") > 0).then(pl.format(
            "{} (from {}; {} of {} months due cannot be computed)", pl.col("first_missing"),
            pl.col("missing_from").cast(pl.String), pl.col("n_missing"), pl.col("months")))
        .when(pl.col("months").fill_null(0) == 0).then(pl.lit(
            "no contribution due: retired, terminated or suspended on the first of every month of the year"))
        .otherwise(pl.format("{} months due: {} employer-based (employer 8.5%, employee 2% of the base), {} flexible "
                             "(base × 10% + 7 combined / × 8% + 7 pooling-only)", pl.col("months"),
                             pl.col("n_employer"), pl.col("n_flexible")))
    )
    none = pl.col("n_missing") > 0
    return everyone.select(
        "psn_no", pl.lit(year, pl.Int32).alias("year"), pl.lit("xiangyang").alias("region"),
        pl.lit("employee").alias("scheme"), kind_col.alias("kind"), pl.col("months").fill_null(0).cast(pl.Int32),
        pl.when(none).then(None).otherwise(pl.col("personal_amt").fill_null(0)).alias("personal_amt"),
        pl.lit(0, pl.Int64).alias("government_amt"),
        pl.when(none).then(None).otherwise(pl.col("employer_amt").fill_null(0)).alias("employer_amt"),
        reason.alias("reason"))


def summary(frame: pl.DataFrame) -> pl.DataFrame:
    """Totals by region, scheme and kind: persons, amounts (fen), persons whose amounts are missing."""
    def total(c: str) -> pl.Expr:  # the sum of the known amounts; null when none is known
        return pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c)

    return (frame.group_by("year", "region", "scheme", "kind")
            .agg(pl.len().alias("persons"), total("personal_amt"), total("government_amt"), total("employer_amt"),
                 pl.col("personal_amt").is_null().sum().alias("missing"))
            .sort("year", "region", "scheme", "kind"))
