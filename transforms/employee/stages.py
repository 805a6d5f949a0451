"""The Xiangyang employee pipeline, in order (DESIGN.md "Order of funds"; POLICY §4):

  prepare   class-B pre-self-pay and in-scope cost (§1.4, A-16), the employment period on the date (status.py)
  BASIC     status and benefit period → outpatient pooling and pharmacy (§4.3) → stays (§4.4) → chronic (§4.4)
  CAP       the basic fund's annual cap annual_cap.hifp 550,000 (A-17) over annual_cap.hifp_ledgers (inpatient,
            maternity, day surgery, chronic: "与住院报销合计"); outpatient pooling has its own cap (§4.3)
  LATER     none: no critical-illness insurance and no medical assistance in the employee scheme (hifmi, maf 0)

A ledger no basic stage handles (two-disease 9901, which validation rejects for employees) is adjudicated with
no fund and the reason RULE_PENDING.

The annual cap (CAP): on a line of the cap's ledgers, with stage_pay the basic fund its ledger's stage computed,
  hifp_pay = min(stage_pay, max(0, 550,000 − P_{i−1})), P the year's running total of hifp_pay on those ledgers
(`capped_payment`, accumulator emp_hifp_paid; a reversal takes back its original's hifp_pay, min(r, …) = r). On
other lines hifp_pay = stage_pay (outpatient pooling: after its own cap). hifp_cap_cut = hifp_raw − hifp_pay.
The engine's generic hifp_paid (every ledger's hifp_pay) is kept as everywhere; the cap does not read it.
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.accumulate import capped_payment, running_before
from transforms.employee import (
    NO_LIMIT,
    PERSON_YEAR,
    REGION,
    SCHEME,
    chronic,
    inpatient,
    outpatient,
    require,
    rev,
    status,
)
from transforms.params import attach, yuan_to_fen
from transforms.resident.inpatient import class_b_preselfpay, in_list_on_date
from transforms.stage import Stage


def prepare(part: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies, used: set) -> pl.DataFrame:
    """Class-B pre-self-pay and in-scope cost of every line; the employment period on the date; the basic-fund
    working columns the stages set (hifp_raw, handled, act_pay_dedc, pool_prop_selfpay, offsite_preselfpay_amt)."""
    part = class_b_preselfpay(part, policies, used, REGION, SCHEME, "inpatient")
    part = status.employment_on_date(part, registers.get("employment"))
    return part.with_columns(
        pl.lit(0, pl.Int64).alias("hifp_raw"), pl.lit(False).alias("handled"),
        pl.lit(0, pl.Int64).alias("pool_prop_selfpay"), pl.lit(0, pl.Int64).alias("act_pay_dedc"),
        pl.lit(0, pl.Int64).alias("offsite_preselfpay_amt"),
    )


def annual_cap(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """A-17 over annual_cap.hifp_ledgers; sets hifp_pay, hifp_cap_cut, hifp_cap and hifp_paid_before (the last two
    only on the cap's ledgers: the engine explains the cap there), emp_hifp_capped (the accumulator's amount)."""
    r = pl.col("is_reversal")
    counted = in_list_on_date(df, policies, REGION, SCHEME, "annual_cap.hifp_ledgers", used, "ledger")
    df = df.with_columns(counted.alias("emp_cap_ledger"))
    clash = df.filter(pl.col("emp_cap_ledger") & pl.col("ledger").is_in(list(outpatient.LEDGERS)))
    if clash.height:
        raise NotImplementedError(f"{REGION}/{SCHEME}/annual_cap.hifp_ledgers lists {clash['ledger'][0]} on "
                                  f"{clash['setl_date'][0]}: outpatient pooling under two caps is not implemented")
    cap_line = pl.col("emp_cap_ledger")
    day = (pl.col("ledger") == "day_surgery") & ~r & pl.col("benefit_block").is_null()
    for on in sorted(df.filter(day)["setl_date"].unique().to_list()):  # the two parameters must agree
        listed = "day_surgery" in [str(x) for x in policies.value(REGION, SCHEME, "annual_cap.hifp_ledgers", on)]
        require(df.filter(day & (pl.col("setl_date") == on)), policies, used,
                "emergency_day_surgery.day_surgery_counts_toward_annual_cap", pl.lit(True), listed, bool)
    df = attach(df, policies, REGION, SCHEME, "annual_cap.hifp", "hifp_cap", convert=yuan_to_fen,
                need=cap_line & ~r & (pl.col("hifp_raw") != 0), used=used)
    op_pay = pl.col("emp_op_pay") if "emp_op_pay" in df.columns else pl.lit(0, pl.Int64)  # no outpatient lines
    stage_pay = pl.when(pl.col("ledger").is_in(list(outpatient.LEDGERS)) & ~r).then(op_pay).otherwise(pl.col("hifp_raw"))
    df = df.with_columns(
        pl.when(r).then(rev("hifp_pay")).otherwise(pl.col("hifp_raw")).alias("hifp_raw"),
        stage_pay.alias("__stage_pay"),
    )
    cap_in = pl.when(cap_line & r).then(rev("hifp_pay")).when(cap_line).then(pl.col("__stage_pay")).otherwise(0)
    df = df.with_columns(
        capped_payment(cap_in, pl.when(cap_line).then(pl.col("hifp_cap")).otherwise(None).fill_null(NO_LIMIT),
                       pl.col("carried_emp_hifp_paid"), PERSON_YEAR).alias("emp_hifp_capped"))
    df = df.with_columns(
        pl.when(cap_line).then(pl.col("emp_hifp_capped")).otherwise(pl.col("__stage_pay")).alias("hifp_pay"),
        pl.when(cap_line).then(
            running_before(pl.col("emp_hifp_capped"), pl.col("carried_emp_hifp_paid"), PERSON_YEAR))
        .alias("hifp_paid_before"),
        pl.when(cap_line).then(pl.col("hifp_cap")).alias("hifp_cap"),
    ).drop("__stage_pay")
    return df.with_columns((pl.col("hifp_raw") - pl.col("hifp_pay")).alias("hifp_cap_cut"))


CAP = Stage(
    name="employee basic-fund annual cap (§4.4, A-17)",
    run=annual_cap,
    accumulators={"emp_hifp_paid": "emp_hifp_capped"},
    defaults={"emp_cap_ledger": pl.Boolean},
)

BASIC = [status.STAGE, outpatient.STAGE, inpatient.STAGE, chronic.STAGE]
LATER: list[Stage] = []
ALL = [*BASIC, CAP, *LATER]
