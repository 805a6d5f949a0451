"""Suizhou on-application medical assistance (依申请救助), POLICY §3.9 and A-15. Pure: frames in, frame out.

A person newly confirmed as an assistance person of classes 1–4 (`assistance.application_classes`;
other_hardship and S3 cannot apply) has the lines settled in the 12 months before the confirmation
date assisted once:

  window      = [confirm_date − 12 months, confirm_date)   (`window_end` is exclusive; a month
                 shorter than the day clamps: 29 Feb → 28 Feb)
  lines       = the person's adjudicated lines settled in the window, on `assistance.application_ledgers`
                (stays, chronic within limits, special drugs), excluding lines the basic fund did not
                settle (HELD_FOR_REVIEW, RULE_PENDING) and settlements that were reversed (the original
                and its reversal both leave; a refunded settlement is nobody's cost)
  base        = Σ max(0, in_scope − hifp − hifmi − maf − maf_tilt [− burden_excluded_amt])
  paid        = min(cap 40,000 (A-15, its own), 60% × (base − 6,000)), half-up once
  at most `assistance.application_per_year` (1) PAID application per person per calendar year of the
  confirmation date, counting `previous` (earlier runs' results) and earlier applications of this
  batch in order (confirm_date, app_id); a refused application does not use it up.

The class comes from the application's `identity`; an application without one takes the person's
identities valid on the confirmation date from the register (the most favourable, i.e. lowest, class).

Output, one row per application: app_id, psn_no, confirm_date, window_start, window_end, base_amt,
paid_amt (Int64 fen), lines (Int64), status (`paid` / `refused`), reason (code, APPLICATION_REASONS)
and explanation (text). Refusals before the window is examined (NOT_SUIZHOU_RESIDENT,
NOT_ASSISTANCE_CLASS) carry base 0 and lines 0; later refusals show the base and lines examined.
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.enrich import REGION_BY_CITY, SCHEME_BY_INSUTYPE
from transforms.explain import bp_text, fen_text
from transforms.money import expr_apply_rate
from transforms.params import rate, yuan_to_fen
from transforms.resident.assistance import NO_CAP, TOPIC, assistance_class, lookup

APPLICATION_REASONS: dict[str, str] = {
    "PAID": "paid: 60% of the window's self-pay above 6,000 (POLICY §3.9)",
    "CAPPED": "paid the on-application cap of 40,000 (POLICY §3.9, A-15)",
    "NOT_SUIZHOU_RESIDENT": "the person is not in the register as a Suizhou resident",
    "NOT_ASSISTANCE_CLASS": "the identity is not of assistance classes 1–4 (other_hardship, S3, ordinary cannot apply)",
    "ALREADY_PAID_THIS_YEAR": "an on-application payment was already made in the confirmation date's year (年度内一次性)",
    "NO_LINES_IN_WINDOW": "no assisted line (stays, chronic, special drugs) settled in the 12 months before confirmation",
    "BELOW_THRESHOLD": "the window's in-scope self-pay does not exceed 6,000",
}

OUTPUT_SCHEMA = {"app_id": pl.String, "psn_no": pl.String, "confirm_date": pl.Date, "window_start": pl.Date,
                 "window_end": pl.Date, "base_amt": pl.Int64, "paid_amt": pl.Int64, "lines": pl.Int64,
                 "status": pl.String, "reason": pl.String, "explanation": pl.String}

NOT_SETTLED_CODES = ("HELD_FOR_REVIEW", "RULE_PENDING")


def apply_applications(applications: pl.DataFrame, adjudicated: pl.DataFrame, registers: dict[str, pl.DataFrame],
                       policies: Policies, *, previous: pl.DataFrame | None = None) -> pl.DataFrame:
    """One record per application (columns OUTPUT_SCHEMA).

    applications: app_id, psn_no, confirm_date (Date), identity (optional, may be null).
    adjudicated: the persons' stored adjudicated rows (any months; at least the 12 months before each
      confirmation date): setl_id, psn_no, setl_time, ledger, orig_setl_id, inscp_scp_amt, hifp_pay,
      hifmi_pay, maf_pay, maf_tilt_pay, reason_codes (optional burden_excluded_amt).
    registers: persons (and identities, used when an application has no identity).
    previous: results of earlier runs (psn_no, confirm_date, status): their paid applications count
      toward the once-a-year limit.
    """
    if applications.height == 0:
        return pl.DataFrame(schema=OUTPUT_SCHEMA)
    apps = applications.with_columns(pl.col("confirm_date").cast(pl.Date), pl.col("app_id").cast(pl.String),
                                     pl.col("psn_no").cast(pl.String))
    if "identity" not in apps.columns:
        apps = apps.with_columns(pl.lit(None, pl.String).alias("identity"))
    apps = apps.select("app_id", "psn_no", "confirm_date", "identity").sort(["confirm_date", "app_id"])

    # Suizhou residents only (the person's insurance place and scheme).
    persons = registers["persons"].select(
        "psn_no",
        pl.col("insuplc_admdvs").str.slice(0, 4).replace_strict(REGION_BY_CITY, default=None).alias("__region"),
        pl.col("insutype").replace_strict(SCHEME_BY_INSUTYPE, default=None).alias("__scheme"))
    apps = apps.join(persons, on="psn_no", how="left", maintain_order="left").with_columns(
        ((pl.col("__region") == "suizhou") & (pl.col("__scheme") == "resident")).fill_null(False).alias("__resident"))
    res = pl.col("__resident")

    # Identities: the application's, else the register's valid on the confirmation date.
    reg_ids = (apps.select("app_id", "psn_no", "confirm_date")
               .join(registers["identities"].select("psn_no", "identity", "begndate", "enddate"), on="psn_no")
               .filter((pl.col("begndate") <= pl.col("confirm_date"))
                       & (pl.col("enddate").is_null() | (pl.col("confirm_date") <= pl.col("enddate"))))
               .group_by("app_id").agg(pl.col("identity").unique().sort().alias("__reg_ids")))
    apps = apps.join(reg_ids, on="app_id", how="left", maintain_order="left").with_columns(
        pl.when(pl.col("identity").is_not_null()).then(pl.concat_list(pl.col("identity")))
        .otherwise(pl.col("__reg_ids").fill_null(pl.lit([], pl.List(pl.String)))).alias("__ids"))
    apps = apps.with_columns(pl.when(res).then(pl.col("__ids")).otherwise(pl.lit([], pl.List(pl.String)))
                             .alias("__ids"))
    apps = apps.with_columns(assistance_class(apps, policies, ids_col="__ids", date_col="confirm_date")
                             .alias("__class"))
    d = "confirm_date"
    apps = lookup(apps, policies, f"{TOPIC}.application_classes", "__classes", date_col=d, need=res,
                  convert=lambda v: [str(c) for c in v or []], dtype=pl.List(pl.String))
    apps = apps.with_columns(
        (res & pl.col("__classes").list.contains(pl.col("__class").cast(pl.String)).fill_null(False)).alias("__ok"))
    ok = pl.col("__ok")
    apps = lookup(apps, policies, f"{TOPIC}.application_window_months", "__months", date_col=d, convert=int,
                  need=pl.lit(True))
    apps = lookup(apps, policies, f"{TOPIC}.application_ledgers", "__ledgers", date_col=d, need=ok,
                  convert=lambda v: [str(x) for x in v or []], dtype=pl.List(pl.String))
    apps = lookup(apps, policies, f"{TOPIC}.application_threshold", "__threshold", date_col=d, need=ok,
                  convert=yuan_to_fen)
    apps = lookup(apps, policies, f"{TOPIC}.application_rate", "__rate_bp", date_col=d, need=ok, convert=rate)
    apps = lookup(apps, policies, f"{TOPIC}.application_cap", "__cap", date_col=d, need=ok,
                  convert=lambda v: NO_CAP if v == "none" else yuan_to_fen(v))
    apps = lookup(apps, policies, f"{TOPIC}.application_per_year", "__per_year", date_col=d, need=ok, convert=int)
    apps = apps.with_columns(
        pl.col(d).dt.offset_by(pl.concat_str([pl.lit("-"), pl.col("__months").cast(pl.String), pl.lit("mo")]))
        .alias("window_start"),
        pl.col(d).alias("window_end"),
    )

    sums = _window_sums(apps.filter(ok), adjudicated)
    apps = apps.join(sums, on="app_id", how="left", maintain_order="left").with_columns(
        pl.col("base_amt").fill_null(0), pl.col("lines").fill_null(0))
    raw = expr_apply_rate(pl.max_horizontal(pl.col("base_amt") - pl.col("__threshold").fill_null(0), 0),
                          pl.col("__rate_bp").fill_null(0))
    apps = apps.with_columns(raw.alias("__raw")).with_columns(
        pl.min_horizontal(pl.col("__raw"), pl.col("__cap").fill_null(0)).alias("__payable"))
    apps = _once_a_year(apps, previous)

    reason = (
        pl.when(~res).then(pl.lit("NOT_SUIZHOU_RESIDENT"))
        .when(~ok).then(pl.lit("NOT_ASSISTANCE_CLASS"))
        .when(pl.col("__already")).then(pl.lit("ALREADY_PAID_THIS_YEAR"))
        .when((pl.col("__payable") <= 0) & (pl.col("lines") == 0)).then(pl.lit("NO_LINES_IN_WINDOW"))
        .when(pl.col("__payable") <= 0).then(pl.lit("BELOW_THRESHOLD"))
        .when(pl.col("__payable") < pl.col("__raw")).then(pl.lit("CAPPED"))
        .otherwise(pl.lit("PAID"))
    )
    apps = apps.with_columns(reason.alias("reason"))
    paid = pl.col("reason").is_in(["PAID", "CAPPED"])
    apps = apps.with_columns(
        pl.when(paid).then(pl.col("__payable")).otherwise(0).cast(pl.Int64).alias("paid_amt"),
        pl.when(paid).then(pl.lit("paid")).otherwise(pl.lit("refused")).alias("status"),
        pl.when(ok).then(pl.col("base_amt")).otherwise(0).cast(pl.Int64).alias("base_amt"),
        pl.when(ok).then(pl.col("lines")).otherwise(0).cast(pl.Int64).alias("lines"),
    )
    return apps.with_columns(_explanation().alias("explanation")).select(list(OUTPUT_SCHEMA))


def _window_sums(apps: pl.DataFrame, adjudicated: pl.DataFrame) -> pl.DataFrame:
    """base_amt and lines per application from the person's unreversed, settled lines in the window."""
    adj = adjudicated
    for c in ("orig_setl_id", "reason_codes"):
        if c not in adj.columns:
            adj = adj.with_columns(pl.lit(None, pl.String).alias(c))
    excluded = pl.col("burden_excluded_amt").fill_null(0) if "burden_excluded_amt" in adj.columns else pl.lit(0)
    reversed_ids = adj.filter(pl.col("orig_setl_id").is_not_null())["orig_setl_id"].implode()
    codes = pl.col("reason_codes").fill_null("").str.split(",")
    adj = adj.filter(pl.col("orig_setl_id").is_null() & ~pl.col("setl_id").is_in(reversed_ids)
                     & ~codes.list.set_intersection(pl.lit(list(NOT_SETTLED_CODES))).list.len().gt(0))
    adj = adj.select(
        "psn_no", "ledger", pl.col("setl_time").dt.date().alias("__setl_date"),
        pl.max_horizontal(pl.col("inscp_scp_amt") - pl.col("hifp_pay") - pl.col("hifmi_pay") - pl.col("maf_pay")
                          - pl.col("maf_tilt_pay") - excluded, 0).cast(pl.Int64).alias("__base"))
    hits = (apps.select("app_id", "psn_no", "window_start", "window_end", "__ledgers")
            .join(adj, on="psn_no", how="inner")
            .filter((pl.col("window_start") <= pl.col("__setl_date")) & (pl.col("__setl_date") < pl.col("window_end"))
                    & pl.col("__ledgers").list.contains(pl.col("ledger"))))
    return hits.group_by("app_id").agg(pl.col("__base").sum().cast(pl.Int64).alias("base_amt"),
                                       pl.len().cast(pl.Int64).alias("lines"))


def _once_a_year(apps: pl.DataFrame, previous: pl.DataFrame | None) -> pl.DataFrame:
    """`__already`: the person already has `per_year` paid applications in the confirmation year before this one.

    Applications are few (a handful a month): walked in order (confirm_date, app_id), which is exact
    whatever the limit and the order of refusals.
    """
    count: dict[tuple[str, int], int] = {}
    if previous is not None and previous.height:
        prev = previous.filter(pl.col("status") == "paid").select(
            "psn_no", pl.col("confirm_date").cast(pl.Date).dt.year().alias("y"))
        for psn, y in prev.iter_rows():
            count[(psn, y)] = count.get((psn, y), 0) + 1
    already = []
    for psn, day, ok, payable, per_year in apps.select("psn_no", "confirm_date", "__ok", "__payable",
                                                       "__per_year").iter_rows():
        k = (psn, day.year)
        done = ok and count.get(k, 0) >= (per_year or 0)
        already.append(done)
        if ok and not done and payable > 0:
            count[k] = count.get(k, 0) + 1
    return apps.with_columns(pl.Series("__already", already, dtype=pl.Boolean))


def _explanation() -> pl.Expr:
    y = fen_text
    window = pl.concat_str([pl.lit("window "), pl.col("window_start").cast(pl.String), pl.lit(" to "),
                            pl.col("window_end").cast(pl.String), pl.lit(" (exclusive)")])
    detail = pl.concat_str([
        window, pl.lit(": "), pl.col("lines").cast(pl.String), pl.lit(" lines, self-pay left "), y(pl.col("base_amt")),
        pl.lit("; above threshold "), y(pl.col("__threshold").fill_null(0)), pl.lit(": "),
        y(pl.max_horizontal(pl.col("base_amt") - pl.col("__threshold").fill_null(0), 0)), pl.lit(" × "),
        bp_text(pl.col("__rate_bp").fill_null(0)), pl.lit(" = "), y(pl.col("__raw")), pl.lit(", cap "),
        y(pl.col("__cap").fill_null(0)), pl.lit("; paid "), y(pl.col("paid_amt"))])
    cls = pl.concat_str([pl.lit("class "), pl.col("__class").cast(pl.String), pl.lit("; ")])
    return (
        pl.when(pl.col("reason") == "NOT_SUIZHOU_RESIDENT").then(pl.lit("not a Suizhou resident"))
        .when(pl.col("reason") == "NOT_ASSISTANCE_CLASS").then(pl.concat_str([
            pl.lit("identities "), pl.col("__ids").list.join(", "), pl.lit(" give no assistance class 1–4")]))
        .when(pl.col("reason") == "ALREADY_PAID_THIS_YEAR").then(pl.concat_str([
            cls, pl.lit("already paid once in "), pl.col("confirm_date").dt.year().cast(pl.String), pl.lit("; "),
            window, pl.lit(": "), pl.col("lines").cast(pl.String), pl.lit(" lines, self-pay left "),
            y(pl.col("base_amt"))]))
        .otherwise(pl.concat_str([cls, detail]))
    )
