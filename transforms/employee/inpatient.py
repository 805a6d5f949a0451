"""Xiangyang employee stays: inpatient (21, 22, 24, and emergency rescue 13 adjudicated as a stay), maternity
stays (52) and day surgery (28) — POLICY §4.4 with the resident pattern of §3.5–§3.6 and the employee values of
A-12 (policies/xiangyang/employee/inpatient.yaml, emergency_day_surgery.yaml).

For one stay inside the benefit period (status.py):
  pre-self-pay B  = 10% × class B                  (§1.4, inpatient.class_b_preselfpay_ledgers, A-16; stages.prepare)
  in_scope        = class A + class B − pre-self-pay B
  offsite pre     = inpatient.offsite_preselfpay_rate[offsite type] × in_scope   (0% for employees: "the same out
                    of the city"; a rescue out of the city takes emergency_day_surgery.rescue_offsite_type, A-2)
  base            = in_scope − offsite pre
  deductible      = per stay by level (A-5 pattern): inpatient.deductible_in_city / _out_of_city 200 / 500 / 900;
                    day surgery emergency_day_surgery.day_surgery_deductible (0). One stay is one mdtrt_id: its
                    lines (interim settlements) draw on one deductible, taken = min(max(base, 0), D − used before)
                    (`capped_payment` per person, year and mdtrt_id; keyed accumulator emp_stay_ded_used:<mdtrt_id>)
  hifp (raw)      = inpatient.fund_rate[level] 92 / 90 / 82% × max(0, base − deductible), half-up once; day surgery
                    at the inpatient rate (day_surgery_fund_rate_from); then the employee annual cap (A-17, stages.py)
  pool_prop_selfpay = (base − deductible) − raw
A reversal gives back exactly the deductible its original took (its act_pay_dedc, negated: a capped payment of
r < 0 is r). Outside the benefit period: every amount 0, nothing counts.
No trauma hold (a Suizhou rule, §3.6 A-6) and no critical illness or assistance for employees.
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.accumulate import capped_payment
from transforms.employee import NO_LIMIT, REGION, SCHEME, require, rev
from transforms.enrich import STAY_LEDGERS
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.money import expr_apply_rate
from transforms.params import attach, rate, yuan_to_fen
from transforms.stage import Stage, mark_handled

E = "emergency_day_surgery"
DED_ACC = "emp_stay_ded_used"  # per stay: "emp_stay_ded_used:<mdtrt_id>"
STAY_KEY = ["psn_no", "year", "mdtrt_id"]  # a stay's lines interleave with the person's other lines


def stay() -> pl.Expr:
    return pl.col("ledger").is_in(list(STAY_LEDGERS))


def rescue_as_stay() -> pl.Expr:
    """Emergency rescue not followed by a stay (or ending in death): med_type 13 with the rescue flag (§3.5)."""
    return (pl.col("med_type") == "13") & pl.col("is_emergency_rescue")


def adjudicate_stays(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds the emp_stay_* columns; sets offsite_type_eff (rescues), offsite_preselfpay_amt, act_pay_dedc,
    pool_prop_selfpay, hifp_raw and handled on the stay lines."""
    s, r = stay(), pl.col("is_reversal")
    if not df.select(s.any()).item():
        return df
    cand = s & ~r & pl.col("benefit_block").is_null()
    day = pl.col("ledger") == "day_surgery"
    rescue = pl.col("is_emergency_rescue")
    require(df, policies, used, f"{E}.rescue_without_stay_as_inpatient", cand & rescue_as_stay(), True, bool)
    require(df, policies, used, f"{E}.rescue_deductible_applies", cand & rescue_as_stay(), True, bool)
    require(df, policies, used, f"{E}.day_surgery_fund_rate_from", cand & day, "inpatient.fund_rate", str)
    df = attach(df, policies, REGION, SCHEME, f"{E}.rescue_offsite_type", "__rescue_type", convert=str,
                dtype=pl.String, need=cand & rescue & ~pl.col("in_city"), used=used)
    df = df.with_columns(
        pl.when(s & rescue & ~pl.col("in_city")).then(pl.col("__rescue_type")).otherwise(pl.col("offsite_type_eff"))
        .alias("offsite_type_eff")).drop("__rescue_type")
    out_city = cand & ~pl.col("in_city")
    df = attach(df, policies, REGION, SCHEME, "inpatient.offsite_preselfpay_rate", "emp_stay_offsite_rate_bp",
                convert=rate, keyed_by="offsite_type_eff", need=out_city, used=used)
    df = attach(df, policies, REGION, SCHEME, "inpatient.deductible_in_city", "__ded_in", convert=yuan_to_fen,
                keyed_by="hosp_lv", need=cand & ~day & pl.col("in_city"), used=used)
    df = attach(df, policies, REGION, SCHEME, "inpatient.deductible_out_of_city", "__ded_out", convert=yuan_to_fen,
                keyed_by="hosp_lv", need=cand & ~day & ~pl.col("in_city"), used=used)
    df = attach(df, policies, REGION, SCHEME, f"{E}.day_surgery_deductible", "__ded_day", convert=yuan_to_fen,
                need=cand & day, used=used)
    df = attach(df, policies, REGION, SCHEME, "inpatient.fund_rate", "emp_stay_rate_bp", convert=rate,
                keyed_by="hosp_lv", need=cand, used=used)
    df = df.with_columns(
        pl.when(cand).then(
            pl.when(day).then(pl.col("__ded_day")).when(pl.col("in_city")).then(pl.col("__ded_in"))
            .otherwise(pl.col("__ded_out"))).alias("emp_stay_deductible"),
        pl.when(out_city).then(expr_apply_rate(pl.col("inscp_scp_amt"), pl.col("emp_stay_offsite_rate_bp")))
        .when(cand).then(0).alias("__off_pre"),
    ).drop("__ded_in", "__ded_out", "__ded_day")
    base = pl.col("inscp_scp_amt") - pl.col("__off_pre")
    toward = pl.when(cand).then(pl.max_horizontal(base, 0)).when(s & r).then(rev("act_pay_dedc")).otherwise(0)
    df = df.with_columns(
        capped_payment(toward, pl.col("emp_stay_deductible").fill_null(NO_LIMIT), pl.col(f"carried_{DED_ACC}"),
                       STAY_KEY, contiguous=False).alias("emp_stay_ded_added"))
    df = df.with_columns(
        pl.when(cand).then(pl.col("emp_stay_ded_added")).alias("__taken"),
        pl.when(cand).then(pl.col(f"carried_{DED_ACC}") + pl.col("emp_stay_ded_added").cum_sum().over(STAY_KEY)
                           - pl.col("emp_stay_ded_added")).alias("emp_stay_ded_before"),
    )
    df = df.with_columns(pl.when(cand).then(pl.max_horizontal(base - pl.col("__taken"), 0)).alias("emp_stay_after"))
    df = df.with_columns(
        pl.when(cand).then(expr_apply_rate(pl.col("emp_stay_after"), pl.col("emp_stay_rate_bp"))).alias("emp_stay_raw"))
    df = mark_handled(df, s, pl.when(cand).then(pl.col("emp_stay_raw")).otherwise(0))
    fwd = s & ~r
    return df.with_columns(
        pl.when(fwd).then(pl.col("__off_pre").fill_null(0)).otherwise(pl.col("offsite_preselfpay_amt"))
        .alias("offsite_preselfpay_amt"),
        pl.when(fwd).then(pl.col("__taken").fill_null(0)).otherwise(pl.col("act_pay_dedc")).alias("act_pay_dedc"),
        pl.when(fwd).then((pl.col("emp_stay_after") - pl.col("emp_stay_raw")).fill_null(0))
        .otherwise(pl.col("pool_prop_selfpay")).alias("pool_prop_selfpay"),
    ).drop("__off_pre", "__taken")


def _reasons() -> list[pl.Expr]:
    fwd = stay() & ~pl.col("is_reversal")
    live = fwd & pl.col("emp_stay_after").is_not_null()
    return [
        code_if(fwd & rescue_as_stay(), "EMERGENCY_AS_STAY"),
        code_if(fwd & (pl.col("offsite_type_eff") == "101"), "OFFSITE_101"),
        code_if(fwd & (pl.col("offsite_type_eff") == "903"), "OFFSITE_903"),
        code_if(live & (pl.col("ledger") == "day_surgery"), "NO_DEDUCTIBLE_DAY_SURGERY"),
        code_if(live & (pl.col("inscp_scp_amt") <= 0), "NO_IN_SCOPE_COST"),
        code_if(live & (pl.col("inscp_scp_amt") > 0) & (pl.col("emp_stay_after") == 0), "BELOW_DEDUCTIBLE"),
    ]


def _explain() -> list[pl.Expr]:
    y = fen_text
    live = stay() & ~pl.col("is_reversal") & pl.col("emp_stay_after").is_not_null()
    kind = (pl.when(rescue_as_stay()).then(pl.lit("emergency rescue adjudicated as a stay (§3.5, A-2)"))
            .when(pl.col("ledger") == "day_surgery").then(pl.lit("day surgery, inpatient rate, no deductible"))
            .when(pl.col("ledger") == "maternity").then(pl.lit("maternity stay, as an ordinary stay"))
            .otherwise(pl.lit("stay")))
    return [
        when_text(live, "employee ", kind, " (§4.4, A-12)"),
        when_text(live & (pl.col("offsite_preselfpay_amt") != 0), "out-of-city pre-self-pay ",
                  bp_text(pl.col("emp_stay_offsite_rate_bp")), " = ", y(pl.col("offsite_preselfpay_amt"))),
        when_text(live, "deductible ", y(pl.col("emp_stay_deductible")), " per stay (", pl.col("mdtrt_id"),
                  "), taken before ", y(pl.col("emp_stay_ded_before")), ", on this line ", y(pl.col("act_pay_dedc"))),
        when_text(live, "basic fund ", bp_text(pl.col("emp_stay_rate_bp")), " × ", y(pl.col("emp_stay_after")), " = ",
                  y(pl.col("emp_stay_raw"))),
    ]


STAGE = Stage(
    name="employee stays, maternity stays, day surgery, rescue as a stay (§4.4)",
    run=adjudicate_stays,
    accumulators={f"{DED_ACC}:{{mdtrt_id}}": "emp_stay_ded_added"},
    defaults={"emp_stay_ded_added": pl.Int64, "emp_stay_ded_before": pl.Int64, "emp_stay_offsite_rate_bp": pl.Int64, "emp_stay_deductible": pl.Int64, "emp_stay_rate_bp": pl.Int64,
              "emp_stay_after": pl.Int64, "emp_stay_raw": pl.Int64},
    reasons=_reasons,
    explain=_explain,
)
