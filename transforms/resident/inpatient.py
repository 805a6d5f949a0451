"""Suizhou resident stays: inpatient, maternity stays, day surgery, emergency rescue as a stay.

POLICY §3.5–§3.6. For one stay:
  pre-self-pay B  = 10% × class B                      (§1.4, only on the ledgers of A-16)
  in_scope        = class A + class B − pre-self-pay B
  offsite pre     = offsite rate × in_scope            (out of the city: 101 → 10%, 903 → 20%; A-4: before the deductible)
  base            = in_scope − offsite pre
  deductible      = by level, in/out of the city; 0 for day surgery (§3.5) and exempt identities (§3.6)
  hifp (raw)      = rate(level) × (base − deductible), then the annual cap (§3.7, engine)
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.accumulate import capped_payment
from transforms.enrich import STAY_LEDGERS
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.money import expr_apply_rate
from transforms.params import attach, in_dated_list, rate, yuan_to_fen
from transforms.stage import Stage, mark_handled

REGION, SCHEME = "suizhou", "resident"


def stay_mask() -> pl.Expr:
    return pl.col("ledger").is_in(list(STAY_LEDGERS))


def class_b_preselfpay(lines: pl.DataFrame, policies: Policies, used: set, region: str, scheme: str,
                       topic: str) -> pl.DataFrame:
    """`preselfpay_amt` and `inscp_scp_amt` of every line (POLICY §1.4, A-16)."""
    applies = in_list_on_date(lines, policies, region, scheme, f"{topic}.class_b_preselfpay_ledgers", used,
                              "ledger", need=pl.col("cls_b_amt") != 0)
    lines = lines.with_columns(applies.alias("__b_applies"))
    # the rate is needed only where it applies (a region without it can still adjudicate its other ledgers, §4.7)
    lines = attach(lines, policies, region, scheme, f"{topic}.class_b_preselfpay_rate", "__b_rate",
                   convert=rate, need=(pl.col("cls_b_amt") != 0) & pl.col("__b_applies"), used=used)
    pre = pl.when(pl.col("__b_applies").fill_null(False)).then(
        expr_apply_rate(pl.col("cls_b_amt"), pl.col("__b_rate").fill_null(0))).otherwise(0)
    return lines.with_columns(pre.alias("preselfpay_amt")).with_columns(
        (pl.col("cls_a_amt") + pl.col("cls_b_amt") - pl.col("preselfpay_amt")).alias("inscp_scp_amt")
    ).drop("__b_rate", "__b_applies")


def adjudicate_stays(lines: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds offsite_preselfpay_amt, act_pay_dedc, hifp_rate_bp, hifp_raw, pool_prop_selfpay, held flags.

    Non-stay lines get zeros/nulls here; other ledgers fill their own columns.
    """
    stay = stay_mask()
    p = "inpatient"
    # Rescue out of the city follows the offsite-101 rules (§3.5, A-2).
    lines = lines.with_columns(
        pl.when(stay & ~pl.col("in_city") & pl.col("is_emergency_rescue")).then(pl.lit("101"))
        .otherwise(pl.col("offsite_type_eff")).alias("offsite_type_eff")
    )
    out_city_stay = stay & ~pl.col("in_city")
    lines = attach(lines, policies, REGION, SCHEME, f"{p}.offsite_preselfpay_rate", "__off_rate",
                   convert=rate, keyed_by="offsite_type_eff", need=out_city_stay, used=used)
    lines = attach(lines, policies, REGION, SCHEME, f"{p}.deductible_in_city", "__ded_in",
                   convert=yuan_to_fen, keyed_by="hosp_lv", need=stay & pl.col("in_city"), used=used)
    lines = attach(lines, policies, REGION, SCHEME, f"{p}.deductible_out_of_city", "__ded_out",
                   convert=yuan_to_fen, keyed_by="hosp_lv", need=out_city_stay, used=used)
    lines = attach(lines, policies, REGION, SCHEME, f"{p}.fund_rate", "hifp_rate_bp",
                   convert=rate, keyed_by="hosp_lv", need=stay, used=used)
    exempt = in_list_on_date(lines, policies, REGION, SCHEME, f"{p}.deductible_exempt_identities", used,
                             "identities", need=stay)
    trauma_counties = in_list_on_date(lines, policies, REGION, SCHEME, f"{p}.trauma_report_required_counties",
                                      used, "insuplc_admdvs", need=stay & (pl.col("med_type") == "22"))
    lines = lines.with_columns(exempt.alias("deductible_exempt"), trauma_counties.alias("__trauma_county"))
    held = stay & (pl.col("med_type") == "22") & pl.col("__trauma_county") & pl.col("trauma_report_no").is_null()
    lines = lines.with_columns(held.alias("held_for_review")).drop("__trauma_county")
    lines = attach(lines, policies, REGION, SCHEME, f"{p}.held_line_moves_nothing", "__inert", convert=bool,
                   dtype=pl.Boolean, need=pl.col("held_for_review"), used=used)
    # a held line that moves nothing (no deductible here; not judged under §3.10, out_of_scope.py)
    lines = lines.with_columns((pl.col("held_for_review") & pl.col("__inert").fill_null(False)).alias("held_inert"))
    off_pre = pl.when(out_city_stay).then(expr_apply_rate(pl.col("inscp_scp_amt"), pl.col("__off_rate"))).otherwise(0)
    lines = lines.with_columns(off_pre.alias("offsite_preselfpay_amt"))
    base = pl.col("inscp_scp_amt") - pl.col("offsite_preselfpay_amt")
    ded = (
        pl.when(~stay | (pl.col("ledger") == "day_surgery") | pl.col("deductible_exempt")).then(0)
        .when(pl.col("in_city")).then(pl.col("__ded_in"))
        .otherwise(pl.col("__ded_out"))
    )
    # The deductible is per stay: every line of one stay (same mdtrt_id — interim settlements, the
    # emergency visit merged into it, §3.5) draws on one deductible: a running total capped at D
    # (primitive 2), carried across months as `stay_ded_used:<mdtrt_id>`. A reversal gives back exactly
    # what its original took.
    # A held trauma stay line (§3.6, A-28) takes none of the deductible: it moves no accumulator until released.
    toward = (pl.when(~stay).then(0)
              .when(pl.col("is_reversal")).then(pl.col("rev_act_pay_dedc").fill_null(0))
              .when(pl.col("held_inert")).then(0)
              .otherwise(pl.max_horizontal(base, 0)))
    lines = lines.with_columns(pl.when(stay).then(ded).otherwise(0).alias("deductible_fen"))
    lines = lines.with_columns(
        capped_payment(toward, pl.col("deductible_fen"), pl.col("carried_stay_ded_used"),
                       ["psn_no", "year", "mdtrt_id"]).alias("act_pay_dedc"))
    lines = lines.with_columns(pl.when(stay).then(pl.col("act_pay_dedc")).otherwise(0).alias("stay_ded_added"))
    after = pl.max_horizontal(base - pl.col("act_pay_dedc"), 0)
    raw = pl.when(~pl.col("held_for_review")).then(expr_apply_rate(after, pl.col("hifp_rate_bp"))).otherwise(0)
    lines = lines.with_columns(pl.when(stay).then(after).otherwise(None).alias("after_deductible"))
    lines = mark_handled(lines, stay, raw)
    lines = lines.with_columns(
        pl.when(stay).then(pl.col("after_deductible") - pl.col("hifp_raw")).otherwise(pl.col("pool_prop_selfpay"))
        .alias("pool_prop_selfpay"))
    return lines.drop("__ded_in", "__ded_out", "__inert").rename({"__off_rate": "offsite_rate_bp"})


def _reasons() -> list[pl.Expr]:
    stay = stay_mask() & ~pl.col("is_reversal")
    return [
        code_if(pl.col("held_for_review"), "HELD_FOR_REVIEW"),
        code_if(stay & pl.col("is_emergency_rescue") & (pl.col("med_type") == "13"), "EMERGENCY_AS_STAY"),
        code_if(stay & (pl.col("offsite_type_eff") == "101"), "OFFSITE_101"),
        code_if(stay & (pl.col("offsite_type_eff") == "903"), "OFFSITE_903"),
        code_if(stay & (pl.col("ledger") == "day_surgery"), "NO_DEDUCTIBLE_DAY_SURGERY"),
        code_if(stay & pl.col("deductible_exempt") & (pl.col("ledger") != "day_surgery"), "DEDUCTIBLE_EXEMPT"),
        code_if(stay & (pl.col("inscp_scp_amt") <= 0), "NO_IN_SCOPE_COST"),
        code_if(stay & (pl.col("inscp_scp_amt") > 0) & (pl.col("after_deductible") == 0)
                & ~pl.col("held_for_review"), "BELOW_DEDUCTIBLE"),
    ]


def _explain() -> list[pl.Expr]:
    stay = stay_mask() & pl.col("after_deductible").is_not_null()
    y = fen_text
    return [
        when_text(stay & (pl.col("offsite_preselfpay_amt") != 0), "out-of-city pre-self-pay ",
                  bp_text(pl.col("offsite_rate_bp")), " = ", y(pl.col("offsite_preselfpay_amt"))),
        when_text(stay, "deductible ", y(pl.col("deductible_fen")), " per stay, taken ", y(pl.col("act_pay_dedc"))),
        when_text(stay & ~pl.col("held_for_review"), "basic fund ", bp_text(pl.col("hifp_rate_bp")), " × ",
                  y(pl.col("after_deductible")), " = ", y(pl.col("hifp_raw"))),
    ]


STAGE = Stage(
    name="resident stays (§3.5–§3.6)",
    run=adjudicate_stays,
    accumulators={"stay_ded_used:{mdtrt_id}": "stay_ded_added"},
    defaults={"after_deductible": pl.Int64, "deductible_fen": pl.Int64, "hifp_rate_bp": pl.Int64,
              "offsite_rate_bp": pl.Int64, "held_for_review": pl.Boolean, "held_inert": pl.Boolean,
              "deductible_exempt": pl.Boolean},
    reasons=_reasons,
    explain=_explain,
)


def in_list_on_date(lines: pl.DataFrame, policies: Policies, region: str, scheme: str, name: str,
                    used: set, col: str, need: pl.Expr | None = None) -> pl.Series:
    """Whether a line's `col` (a value, or a list of values) is in a dated list parameter on its date."""
    return in_dated_list(lines, policies, region, scheme, name, col, need=need, used=used)
