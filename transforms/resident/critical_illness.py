"""Suizhou resident critical-illness insurance (大病保险), POLICY §3.8.

The accumulator is the person's yearly in-scope burden left after the basic fund,
`burden = in_scope − hifp − burden_excluded_amt` (A-7; the last is chronic cost above its
limit, §3.4 / A-21), on the ledgers the parameter lists (stays, chronic/special
outpatient, special drugs). A line is paid F(acc_after) − F(acc_before) with F the banded,
rounded function of its group (S1 or others), then limited by the group's annual cap.
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.accumulate import band_value, capped_payment, running_after
from transforms.explain import code_if, fen_text, when_text
from transforms.money import rate_to_bp
from transforms.params import UNLIMITED, attach, yuan_to_fen
from transforms.resident.inpatient import in_list_on_date
from transforms.stage import Stage

REGION, SCHEME, TOPIC = "suizhou", "resident", "critical_illness"
PERSON_YEAR = ["psn_no", "year"]
NO_CAP = 10**15  # "none" in a policy file: an explicit absence of a cap (fen)


def bands_of(value: dict, group: str) -> list[tuple[int, int | None, int]]:
    return [(yuan_to_fen(b["from"]), None if b["to"] == UNLIMITED else yuan_to_fen(b["to"]), rate_to_bp(b["rate"]))
            for b in value[group]]


def adjudicate_critical_illness(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds hifmi_group, hifmi_burden, hifmi_burden_before, hifmi_raw, hifmi_cap, hifmi_pay."""
    eligible_ledger = in_list_on_date(df, policies, REGION, SCHEME, f"{TOPIC}.ledgers", used, "ledger")
    # Lines the basic fund never adjudicated (rules pending) add nothing to the burden.
    s1 = in_list_on_date(df, policies, REGION, SCHEME, f"{TOPIC}.favoured_identities", used, "identities")
    df = df.with_columns(
        (eligible_ledger & pl.col("handled") & ~pl.col("held_for_review").fill_null(False)).alias("hifmi_eligible"),
        pl.when(s1).then(pl.lit("s1")).otherwise(pl.lit("others")).alias("hifmi_group"),
    )
    elig = pl.col("hifmi_eligible")
    # In-scope cost that enters no critical-illness base (chronic cost above its limit, §3.4 / A-21),
    # set by the chronic stage (transforms/resident/chronic.py); 0 where no stage set it.
    excl, rev_excl = (pl.col(c).fill_null(0) if c in df.columns else pl.lit(0, pl.Int64)
                      for c in ("burden_excluded_amt", "rev_burden_excluded_amt"))
    burden = (
        pl.when(~elig).then(0)
        .when(pl.col("is_reversal")).then(pl.col("rev_inscp_scp_amt").fill_null(0) - pl.col("rev_hifp_pay").fill_null(0)
                                          - rev_excl)
        .otherwise(pl.col("inscp_scp_amt") - pl.col("hifp_pay") - excl)
    )
    df = df.with_columns(burden.alias("hifmi_burden"))
    df = df.with_columns(running_after(pl.col("hifmi_burden"), pl.col("carried_hifmi_burden"), PERSON_YEAR)
                         .alias("hifmi_burden_after"))
    df = df.with_columns((pl.col("hifmi_burden_after") - pl.col("hifmi_burden")).alias("hifmi_burden_before"))

    # Bands in force on each line's date (usually one version a year), by group.
    param = policies.parameter(REGION, SCHEME, f"{TOPIC}.bands")
    versions = pl.DataFrame({"since": [v.since for v in param.values], "__v": list(range(len(param.values)))},
                            schema={"since": pl.Date, "__v": pl.Int64})
    df = (df.with_row_index("__row").sort("setl_date")
          .join_asof(versions, left_on="setl_date", right_on="since", strategy="backward")
          .sort("__row").drop("__row", "since"))
    raw = pl.lit(0, pl.Int64)
    for i, dv in enumerate(param.values):
        for group in ("s1", "others"):
            if dv.value is None:
                continue
            bands = bands_of(dv.value, group)
            pay = band_value(pl.col("hifmi_burden_after"), bands) - band_value(pl.col("hifmi_burden_before"), bands)
            raw = pl.when((pl.col("__v") == i) & (pl.col("hifmi_group") == group)).then(pay).otherwise(raw)
    if df.filter(elig).height:
        for a in {param.values[i].assumption for i in df.filter(elig)["__v"].drop_nulls().unique().to_list()}:
            used.add((REGION, SCHEME, f"{TOPIC}.bands", a))
    raw = pl.when(~elig).then(0).when(pl.col("is_reversal")).then(pl.col("rev_hifmi_pay").fill_null(0)).otherwise(raw)
    df = df.with_columns(raw.alias("hifmi_raw")).drop("__v")

    df = attach(df, policies, REGION, SCHEME, f"{TOPIC}.annual_cap", "hifmi_cap",
                convert=lambda v: NO_CAP if v == UNLIMITED else yuan_to_fen(v), keyed_by="hifmi_group",
                need=elig, used=used)
    df = df.with_columns(pl.col("hifmi_cap").fill_null(NO_CAP))
    return df.with_columns(
        capped_payment(pl.col("hifmi_raw"), pl.col("hifmi_cap"), pl.col("carried_hifmi_paid"), PERSON_YEAR)
        .alias("hifmi_pay")
    )


def _reasons() -> list[pl.Expr]:
    el = pl.col("hifmi_eligible") & ~pl.col("is_reversal")
    return [
        code_if(el & (pl.col("hifmi_raw") == 0), "HIFMI_BELOW_THRESHOLD"),
        code_if(el & (pl.col("hifmi_raw") > 0) & (pl.col("hifmi_pay") == 0), "HIFMI_CAP_REACHED"),
        code_if(pl.col("hifmi_group").is_not_null() & ~pl.col("hifmi_eligible") & pl.col("handled")
                & ~pl.col("held_for_review").fill_null(False), "HIFMI_NOT_COVERED"),
    ]


def _explain() -> list[pl.Expr]:
    y = fen_text
    return [when_text(pl.col("hifmi_eligible"), "critical illness (group ", pl.col("hifmi_group"), "): burden ",
                      y(pl.col("hifmi_burden")), " = in scope − basic fund",
                      pl.when(pl.col("burden_excluded_amt").fill_null(0) != 0)
                      .then(pl.lit(" − excluded ") + y(pl.col("burden_excluded_amt"))).otherwise(pl.lit("")),
                      "; accumulated ",
                      y(pl.col("hifmi_burden_before")), " → ", y(pl.col("hifmi_burden_after")),
                      "; bands pay ", y(pl.col("hifmi_raw")), ", cap ",
                      pl.when(pl.col("hifmi_cap") >= NO_CAP).then(pl.lit("none")).otherwise(y(pl.col("hifmi_cap"))),
                      ", paid ", y(pl.col("hifmi_pay")))]


STAGE = Stage(
    name="critical illness (§3.8)",
    run=adjudicate_critical_illness,
    accumulators={"hifmi_burden": "hifmi_burden", "hifmi_paid": "hifmi_pay"},
    defaults={"hifmi_eligible": pl.Boolean, "hifmi_group": pl.String, "hifmi_burden": pl.Int64,
              "hifmi_burden_before": pl.Int64, "hifmi_burden_after": pl.Int64, "hifmi_raw": pl.Int64,
              "hifmi_cap": pl.Int64, "burden_excluded_amt": pl.Int64},
    reasons=_reasons,
    explain=_explain,
)
