"""Xiangyang employee general outpatient pooling (普通门诊统筹, POLICY §4.3) on the ledgers `outpatient_pool`
(med_type 11, 13 that is not a rescue, 51 — maternity outpatient care is general outpatient care, §4.4) and
`pharmacy` (41 without a special-drug qualification).

A line is eligible when it is inside the benefit period (status.py), outpatient_pool.in_force holds on its date
(false before the reform of 2022-12-31: 门诊不报销), and its level is in outpatient_pool.levels_allowed. The level
is the institution's, but a pharmacy claim (ledger `pharmacy`, or any line at a pharmacy) takes the prescribing
institution's level (A-11, outpatient_pool.pharmacy_level_from); without a prescribing institution it is not a
pooling claim (NO_PRESCRIBING_INSTITUTION). In and out of the city alike (no registration needed, §4.3).

For an eligible line, with status = in_service / retired of the period valid on its date:
  x           = class A + class B                 (outpatient_pool.deductible_cost_columns; no class-B
                                                   pre-self-pay, A-16; out-of-catalogue never counts)
  deductible  = clip(D_status − X_{i−1}, 0, x)    D 500 in service / 400 retired (outpatient_pool.deductible); X the
                                                   year's eligible in-catalogue cost under either status
                                                   (`deductible_part`, DESIGN 1, accumulator emp_op_ded)
  raw         = rate(status, level) × (x − deductible), half-up once
                                                   (fund_rate_retired 80/70/60, fund_rate_in_service 70/60/50 A-10)
  paid        = min(raw, max(0, C_status − P_{i−1}))  C 2,700 in service / 3,100 retired (outpatient_pool.annual_cap)
                                                   over one running total across retirement (`capped_payment`,
                                                   DESIGN 2, accumulator emp_op_paid; the cap may rise)
The line's money: act_pay_dedc = deductible, pool_prop_selfpay = (x − deductible) − raw, hifp_raw = raw; the
employee annual-cap stage (stages.py) sets hifp_pay = paid and hifp_cap_cut = raw − paid (this ledger's own
cap; it is not in annual_cap.hifp_ledgers). So x = act_pay_dedc + pool_prop_selfpay + hifp_pay + hifp_cap_cut.

Reversals (§1.7) are not recomputed: emp_op_ded moves back by the original's x (its four amounts above, negated
by the engine as rev_…: 0 for an original that was not eligible) and emp_op_paid by the original's hifp_pay.
Both go through the primitives as negative amounts: the running sums take them exactly, and a capped payment
of r < 0 is r (min(r, max(0, C − P)) = r).

Not eligible (outside the benefit period, not in force, no level): nothing paid, nothing accumulated.
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.accumulate import capped_payment, deductible_part, running_before
from transforms.employee import NO_LIMIT, PERSON_YEAR, REGION, SCHEME, require, rev
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.money import expr_apply_rate
from transforms.params import attach, rate, yuan_to_fen
from transforms.resident.inpatient import in_list_on_date
from transforms.stage import Stage, mark_handled

OP, PHARMACY = "outpatient_pool", "pharmacy"
LEDGERS = (OP, PHARMACY)
P = "outpatient_pool"


def mine() -> pl.Expr:
    return pl.col("ledger").is_in(list(LEDGERS))


def at_pharmacy() -> pl.Expr:
    return ((pl.col("fixmedins_type") == "pharmacy") | (pl.col("facility") == "pharmacy")).fill_null(False)


def adjudicate_outpatient(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds the emp_op_* columns; sets hifp_raw, act_pay_dedc, pool_prop_selfpay, handled on this stage's lines."""
    m, r = mine(), pl.col("is_reversal")
    if not df.select(m.any()).item():
        return df
    cand = m & ~r & pl.col("benefit_block").is_null()
    by_prescriber = (pl.col("ledger") == PHARMACY) | at_pharmacy()
    df = attach(df, policies, REGION, SCHEME, f"{P}.in_force", "__in_force", convert=bool, dtype=pl.Boolean,
                need=cand, used=used)
    live = cand & pl.col("__in_force").fill_null(False)
    require(df, policies, used, f"{P}.pharmacy_level_from", live & by_prescriber, "prescribing_institution")
    require(df, policies, used, f"{P}.deductible_cost_columns", live, ["cls_a_amt", "cls_b_amt"], list)
    require(df, policies, used, f"{P}.continuous_across_retirement", live, True, bool)
    require(df, policies, used, f"{P}.separate_from_chronic", live, True, bool)
    df = df.with_columns(
        pl.when(m).then(pl.when(by_prescriber).then(pl.col("presc_hosp_lv")).otherwise(pl.col("hosp_lv")))
        .alias("emp_op_level"),
        pl.when(m).then(by_prescriber).alias("emp_op_by_prescriber"),
        pl.when(m).then(cand & ~pl.col("__in_force").fill_null(False)).alias("emp_op_not_in_force"),
    )
    level_known = pl.col("emp_op_level").is_not_null()
    level_ok = in_list_on_date(df, policies, REGION, SCHEME, f"{P}.levels_allowed", used, "emp_op_level",
                               need=live & level_known)
    df = df.with_columns(
        pl.when(m).then(live & ~level_known).alias("emp_op_no_level"),
        pl.when(m).then(live & level_known & ~level_ok).alias("emp_op_level_refused"),
        pl.when(m).then(live & level_known & level_ok).alias("emp_op_eligible"),
    ).drop("__in_force")
    elig = pl.col("emp_op_eligible").fill_null(False)
    retired = pl.col("emp_status") == "retired"
    df = attach(df, policies, REGION, SCHEME, f"{P}.deductible", "emp_op_deductible", convert=yuan_to_fen,
                keyed_by="emp_status", need=elig, used=used)
    df = attach(df, policies, REGION, SCHEME, f"{P}.annual_cap", "emp_op_cap", convert=yuan_to_fen,
                keyed_by="emp_status", need=elig, used=used)
    df = attach(df, policies, REGION, SCHEME, f"{P}.fund_rate_retired", "__rate_r", convert=rate,
                keyed_by="emp_op_level", need=elig & retired, used=used)
    df = attach(df, policies, REGION, SCHEME, f"{P}.fund_rate_in_service", "__rate_s", convert=rate,
                keyed_by="emp_op_level", need=elig & ~retired, used=used)
    df = df.with_columns(
        pl.when(elig).then(pl.when(retired).then(pl.col("__rate_r")).otherwise(pl.col("__rate_s")))
        .alias("emp_op_rate_bp"),
        pl.when(elig).then(pl.col("emp_op_deductible")).alias("emp_op_deductible"),
        pl.when(elig).then(pl.col("emp_op_cap")).alias("emp_op_cap"),
    ).drop("__rate_r", "__rate_s")

    # accumulating deductible (DESIGN 1) over the year's eligible in-catalogue cost, reversals taken back
    x_rev = rev("act_pay_dedc") + rev("pool_prop_selfpay") + rev("hifp_pay") + rev("hifp_cap_cut")
    x = pl.when(elig).then(pl.col("inscp_scp_amt")).when(m & r).then(x_rev).otherwise(0)
    df = df.with_columns(x.alias("emp_op_x"))
    df = df.with_columns(
        deductible_part(pl.col("emp_op_x"), pl.col("emp_op_deductible").fill_null(0), pl.col("carried_emp_op_ded"),
                        PERSON_YEAR).alias("__ded"),
        running_before(pl.col("emp_op_x"), pl.col("carried_emp_op_ded"), PERSON_YEAR).alias("__x_before"),
    )
    df = df.with_columns(
        pl.when(elig).then(pl.col("__ded")).alias("emp_op_ded_taken"),
        pl.when(elig).then(pl.col("__x_before")).alias("emp_op_ded_before"),
    ).drop("__ded", "__x_before")
    after = pl.col("emp_op_x") - pl.col("emp_op_ded_taken")
    df = df.with_columns(pl.when(elig).then(after).alias("emp_op_after"))
    df = df.with_columns(
        pl.when(elig).then(expr_apply_rate(pl.col("emp_op_after"), pl.col("emp_op_rate_bp"))).alias("emp_op_raw"))

    # the status's annual cap over one running total (DESIGN 2)
    pay_in = pl.when(elig).then(pl.col("emp_op_raw")).when(m & r).then(rev("hifp_pay")).otherwise(0)
    df = df.with_columns(pay_in.alias("__pay_in"))
    df = df.with_columns(
        capped_payment(pl.col("__pay_in"), pl.col("emp_op_cap").fill_null(NO_LIMIT), pl.col("carried_emp_op_paid"),
                       PERSON_YEAR).alias("emp_op_pay"))
    df = df.with_columns(
        running_before(pl.col("emp_op_pay"), pl.col("carried_emp_op_paid"), PERSON_YEAR).alias("__paid_before"))
    df = df.with_columns(
        pl.when(elig).then(pl.col("__paid_before")).alias("emp_op_paid_before"),
        pl.when(elig).then(pl.col("emp_op_raw") - pl.col("emp_op_pay")).alias("emp_op_cap_cut"),
    ).drop("__pay_in", "__paid_before")

    df = mark_handled(df, m, pl.when(elig).then(pl.col("emp_op_raw")).otherwise(0))
    fwd = m & ~r
    return df.with_columns(
        pl.when(fwd).then(pl.col("emp_op_ded_taken").fill_null(0)).otherwise(pl.col("act_pay_dedc"))
        .alias("act_pay_dedc"),
        pl.when(fwd).then((pl.col("emp_op_after") - pl.col("emp_op_raw")).fill_null(0))
        .otherwise(pl.col("pool_prop_selfpay")).alias("pool_prop_selfpay"),
    )


def _reasons() -> list[pl.Expr]:
    fwd = pl.col("ledger").is_in(list(LEDGERS)) & ~pl.col("is_reversal")
    elig = fwd & pl.col("emp_op_eligible")
    return [
        code_if(fwd & pl.col("emp_op_not_in_force"), "OP_NOT_IN_FORCE"),
        code_if(fwd & pl.col("emp_op_no_level"), "NO_PRESCRIBING_INSTITUTION"),
        code_if(fwd & pl.col("emp_op_level_refused"), "OP_LEVEL_NOT_ALLOWED"),
        code_if(elig & (pl.col("inscp_scp_amt") <= 0), "NO_IN_SCOPE_COST"),
        code_if(elig & (pl.col("inscp_scp_amt") > 0) & (pl.col("emp_op_after") == 0), "BELOW_DEDUCTIBLE"),
        code_if(elig & (pl.col("emp_op_cap_cut") > 0) & (pl.col("emp_op_pay") == 0), "EMP_OP_CAP_REACHED"),
        code_if(elig & (pl.col("emp_op_cap_cut") > 0) & (pl.col("emp_op_pay") > 0), "EMP_OP_CAP_PARTLY"),
    ]


def _explain() -> list[pl.Expr]:
    y = fen_text
    fwd = pl.col("ledger").is_in(list(LEDGERS)) & ~pl.col("is_reversal")
    elig = fwd & pl.col("emp_op_eligible")
    status = pl.col("emp_status").str.replace("_", " ")
    ded_before = pl.col("emp_op_ded_before")
    left_before = (pl.col("emp_op_cap") - pl.col("emp_op_paid_before")).clip(lower_bound=0)
    left_after = (pl.col("emp_op_cap") - pl.col("emp_op_paid_before") - pl.col("emp_op_pay")).clip(lower_bound=0)
    return [
        when_text(fwd & pl.col("emp_op_not_in_force"), "employee outpatient pooling not in force on the date "
                  "(before the reform of 2022-12-31 outpatient costs were not reimbursed, §4.3)"),
        when_text(fwd & pl.col("emp_op_no_level"), "pharmacy claim without a prescribing institution: no level to "
                  "pay at, not a pooling claim (§4.3, A-11)"),
        when_text(fwd & pl.col("emp_op_level_refused"), "outpatient pooling does not pay at level ",
                  pl.col("emp_op_level"), " (§4.3)"),
        when_text(elig & pl.col("emp_op_by_prescriber"), "pharmacy claim at the prescribing institution's level ",
                  pl.col("emp_op_level"), " (A-11)"),
        when_text(elig, "outpatient pooling (§4.3), ", status, ": deductible ", y(pl.col("emp_op_deductible")),
                  " a year on in-catalogue cost (class A + B, A-16), accumulated before ", y(ded_before),
                  ", this line ", y(pl.col("emp_op_x")), " of which ", y(pl.col("emp_op_ded_taken")),
                  " to the deductible"),
        when_text(elig, "outpatient pooling ", bp_text(pl.col("emp_op_rate_bp")), " (level ", pl.col("emp_op_level"),
                  ", ", status, pl.when(status == "in service").then(pl.lit(", A-10")).otherwise(pl.lit("")), ") × ",
                  y(pl.col("emp_op_after")), " = ", y(pl.col("emp_op_raw"))),
        when_text(elig, "outpatient-pooling annual cap ", y(pl.col("emp_op_cap")), " (", status,
                  ", one total across retirement): left before ", y(left_before), ", after ", y(left_after)),
    ]


STAGE = Stage(
    name="employee outpatient pooling and pharmacy (§4.3)",
    run=adjudicate_outpatient,
    accumulators={"emp_op_ded": "emp_op_x", "emp_op_paid": "emp_op_pay"},
    defaults={"emp_op_level": pl.String, "emp_op_by_prescriber": pl.Boolean, "emp_op_not_in_force": pl.Boolean,
              "emp_op_no_level": pl.Boolean, "emp_op_level_refused": pl.Boolean, "emp_op_eligible": pl.Boolean,
              "emp_op_deductible": pl.Int64, "emp_op_cap": pl.Int64, "emp_op_rate_bp": pl.Int64,
              "emp_op_ded_taken": pl.Int64, "emp_op_ded_before": pl.Int64, "emp_op_after": pl.Int64,
              "emp_op_raw": pl.Int64, "emp_op_paid_before": pl.Int64, "emp_op_cap_cut": pl.Int64},
    reasons=_reasons,
    explain=_explain,
)
