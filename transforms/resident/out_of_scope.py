"""Suizhou out-of-scope cost control for the rural low-income population (控制政策范围外医疗费用), POLICY §3.10.

For a stay (ledgers of `out_of_scope.ledgers`) of a rural low-income person (an identity of
`identities.rural_low_income_identities` valid on the settlement date, and `persons.rural` when
`identities.rural_low_income_requires_rural`; A-9):

  out_of_scope = out-of-catalogue (fulamt_ownpay_amt) + over-limit (overlmt_selfpay)
  limit        = out_of_scope.limit[relation][level], relation = in_county / out_of_county_in_province /
                 out_of_province ("none" = not controlled)
  violation    = out_of_scope / total > limit, compared exactly as out_of_scope × 10,000 > limit_bp × total
  excess       = round_half_up(out_of_scope − limit × total), rounded once (§1.3, §3.10 rev. 3)
  A line held for review (§3.6, A-28) is not judged: it charges nothing to the institution; §3.10 is judged on
  the line that releases the stay (each line on its own amounts).
  hosp_part_amt = excess, when the institution is inside Suizhou (in_city) and
                 `out_of_scope.excess_borne_by_institution_in_city`: the institution bears it and the
                 person does not pay it (psn_part_amt = total − funds − hosp_part_amt, engine totals).

A later stage: it runs after the funds (DESIGN.md "Order of funds": … assistance → institution share).
The institution's share never exceeds what the funds left to the person. Reversals are left alone:
the engine gives a reversal its original's hosp_part_amt negated (`_apply_reversals`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from flows.policies import MissingParameter, Policies
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.money import BP, expr_round_half_up_div, rate_to_bp
from transforms.params import UNLIMITED, attach
from transforms.resident.inpatient import in_list_on_date
from transforms.stage import Stage

REGION, SCHEME, TOPIC = "suizhou", "resident", "out_of_scope"
RELATIONS = ("in_county", "out_of_county_in_province", "out_of_province")
NOT_CONTROLLED = -1  # a "none" limit in the policy file, kept distinct from a missing value (null)
PAYING_FUNDS = ("hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay")


def relation_expr() -> pl.Expr:
    """The institution's relation to the person's county (POLICY §1.9), as the limit table keys it."""
    return (
        pl.when(pl.col("in_county")).then(pl.lit("in_county"))
        .when(pl.col("in_province")).then(pl.lit("out_of_county_in_province"))
        .otherwise(pl.lit("out_of_province"))
    )


def limit_bp_of(value: Any) -> int:
    return NOT_CONTROLLED if value == UNLIMITED else rate_to_bp(value)


def limit_frame(policies: Policies) -> pl.DataFrame:
    """The dated limit table flattened: since, `relation:level` key, limit_bp (−1 = none, null = missing)."""
    param = policies.parameter(REGION, SCHEME, f"{TOPIC}.limit")
    keys = sorted({f"{rel}:{lv}" for dv in param.values for rel, by_lv in (dv.value or {}).items()
                   for lv in (by_lv or {})})
    rows = []
    for dv in param.values:
        table = {f"{rel}:{lv}": v for rel, by_lv in (dv.value or {}).items() for lv, v in (by_lv or {}).items()}
        for k in keys:  # a version without a key (or a null version) makes that key missing from its date
            v = table.get(k)
            rows.append((dv.since, k, None if v is None else limit_bp_of(v), dv.assumption))
    return pl.DataFrame(rows, schema={"since": pl.Date, "__oos_key": pl.String, "oos_limit_raw": pl.Int64,
                                      "__assumption": pl.String}, orient="row").sort("since")


def _attach_limit(df: pl.DataFrame, policies: Policies, used: set, need: pl.Expr) -> pl.DataFrame:
    pf = limit_frame(policies)
    left = df.with_row_index("__row").with_columns(
        pl.concat_str([relation_expr(), pl.lit(":"), pl.col("hosp_lv").fill_null("?")]).alias("__oos_key"))
    joined = (left.sort("setl_date")
              .join_asof(pf, left_on="setl_date", right_on="since", by="__oos_key", strategy="backward",
                         check_sortedness=False)
              .sort("__row").drop("__row", "since"))
    mask = joined.select(need.fill_null(False).alias("n"))["n"]
    for a in joined.filter(mask)["__assumption"].unique().to_list():
        used.add((REGION, SCHEME, f"{TOPIC}.limit", a))
    bad = joined.filter(mask & pl.col("oos_limit_raw").is_null())
    if bad.height:
        first = bad.row(0, named=True)
        raise MissingParameter(REGION, SCHEME, f"{TOPIC}.limit[{first['__oos_key']}]", first["setl_date"])
    return joined.drop("__oos_key", "__assumption")


def _col_or_zero(df: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name).fill_null(0) if name in df.columns else pl.lit(0, pl.Int64)


def control_out_of_scope(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds oos_rural_low_income, oos_controlled, oos_relation, oos_amt, oos_limit_bp, oos_violation,
    oos_excess, oos_to_institution; sets hosp_part_amt on the violations the institution bears."""
    not_rev = ~pl.col("is_reversal")
    has_ids = not_rev & (pl.col("identities").list.len() > 0)
    in_ids = in_list_on_date(df, policies, REGION, SCHEME, "identities.rural_low_income_identities", used,
                             "identities", need=has_ids)
    df = df.with_columns(in_ids.alias("__rli_id"))
    df = attach(df, policies, REGION, SCHEME, "identities.rural_low_income_requires_rural", "__req_rural",
                convert=bool, dtype=pl.Boolean, need=pl.col("__rli_id") & not_rev, used=used)
    rli = pl.col("__rli_id") & not_rev & (pl.col("rural").fill_null(False) | ~pl.col("__req_rural").fill_null(True))
    df = df.with_columns(rli.alias("oos_rural_low_income")).drop("__rli_id", "__req_rural")
    ledger_ok = in_list_on_date(df, policies, REGION, SCHEME, f"{TOPIC}.ledgers", used, "ledger",
                                need=pl.col("oos_rural_low_income"))
    held = pl.col("held_inert").fill_null(False) if "held_inert" in df.columns else pl.lit(False)
    df = df.with_columns((pl.col("oos_rural_low_income") & ledger_ok & ~held).alias("oos_controlled"))
    df = _attach_limit(df, policies, used, need=pl.col("oos_controlled"))

    controlled = pl.col("oos_controlled")
    limit = pl.when(controlled & (pl.col("oos_limit_raw") != NOT_CONTROLLED)).then(pl.col("oos_limit_raw"))
    oos = pl.col("fulamt_ownpay_amt") + pl.col("overlmt_selfpay")
    total = pl.col("medfee_sumamt")
    df = df.with_columns(
        pl.when(controlled).then(relation_expr()).otherwise(pl.lit(None, pl.String)).alias("oos_relation"),
        pl.when(controlled).then(oos).otherwise(None).alias("oos_amt"),
        limit.otherwise(None).alias("oos_limit_bp"),
    ).drop("oos_limit_raw")
    violation = (pl.col("oos_limit_bp").is_not_null() & (total > 0)
                 & (pl.col("oos_amt") * BP > pl.col("oos_limit_bp") * total))
    df = df.with_columns(violation.fill_null(False).alias("oos_violation"))
    # round(out_of_scope − limit × total) once, in basis-point fen (not out_of_scope − round(limit × total))
    excess = pl.when(pl.col("oos_violation")).then(
        expr_round_half_up_div(pl.col("oos_amt") * BP - pl.col("oos_limit_bp") * total, BP)).otherwise(0)
    df = df.with_columns(excess.alias("oos_excess"))

    df = attach(df, policies, REGION, SCHEME, f"{TOPIC}.excess_borne_by_institution_in_city", "__to_inst",
                convert=bool, dtype=pl.Boolean, need=pl.col("oos_violation") & pl.col("in_city"), used=used)
    to_inst = pl.col("oos_violation") & pl.col("in_city") & pl.col("__to_inst").fill_null(False)
    df = df.with_columns(to_inst.alias("oos_to_institution")).drop("__to_inst")
    # What the funds left to the person: the institution's share never goes beyond it.
    left_to_person = total - sum((_col_or_zero(df, f) for f in PAYING_FUNDS), pl.lit(0, pl.Int64))
    share = pl.min_horizontal(pl.col("oos_excess"), pl.max_horizontal(left_to_person, 0))
    return df.with_columns(
        pl.when(pl.col("oos_to_institution")).then(share).otherwise(_col_or_zero(df, "hosp_part_amt"))
        .cast(pl.Int64).alias("hosp_part_amt"))


def _ratio_bp() -> pl.Expr:
    total = pl.col("medfee_sumamt")
    return pl.when(total > 0).then(expr_round_half_up_div(pl.col("oos_amt") * BP, total))


def _reasons() -> list[pl.Expr]:
    c = pl.col("oos_controlled") & ~pl.col("is_reversal")
    return [
        code_if(c & pl.col("oos_limit_bp").is_null(), "OUT_OF_SCOPE_NOT_CONTROLLED"),
        code_if(c & pl.col("oos_limit_bp").is_not_null() & ~pl.col("oos_violation"), "OUT_OF_SCOPE_WITHIN_LIMIT"),
        code_if(c & pl.col("oos_violation") & ~pl.col("oos_to_institution"), "OUT_OF_SCOPE_VIOLATION"),
        code_if(c & pl.col("oos_to_institution"), "OUT_OF_SCOPE_EXCESS_TO_INSTITUTION"),
    ]


def _explain() -> list[pl.Expr]:
    y = fen_text
    c = pl.col("oos_controlled") & ~pl.col("is_reversal")
    head = [
        "out-of-scope control (§3.10, rural low-income): ", pl.col("oos_relation").str.replace_all("_", " "),
        " level ", pl.col("hosp_lv").fill_null("?"), ", out of scope ", y(pl.col("oos_amt")), " of ",
        y(pl.col("medfee_sumamt")), " (", bp_text(_ratio_bp()).fill_null("–"), ")",
    ]
    return [
        when_text(c & pl.col("oos_limit_bp").is_null(), *head, ": no limit for this institution, not controlled"),
        when_text(c & pl.col("oos_limit_bp").is_not_null() & ~pl.col("oos_violation"), *head,
                  ", limit ", bp_text(pl.col("oos_limit_bp")), ": within the limit"),
        when_text(c & pl.col("oos_violation"), *head, ", limit ", bp_text(pl.col("oos_limit_bp")),
                  ": over the limit by ", y(pl.col("oos_excess")),
                  pl.when(pl.col("oos_to_institution"))
                  .then(pl.concat_str([pl.lit(", "), y(pl.col("hosp_part_amt")),
                                       pl.lit(" borne by the institution (the person does not pay it)")]))
                  .otherwise(pl.lit(", institution outside Suizhou: the person pays it"))),
    ]


STAGE = Stage(
    name="out-of-scope control (§3.10)",
    run=control_out_of_scope,
    defaults={"oos_rural_low_income": pl.Boolean, "oos_controlled": pl.Boolean, "oos_relation": pl.String,
              "oos_amt": pl.Int64, "oos_limit_bp": pl.Int64, "oos_violation": pl.Boolean, "oos_excess": pl.Int64,
              "oos_to_institution": pl.Boolean},
    reasons=_reasons,
    explain=_explain,
)
