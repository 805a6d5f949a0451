"""Employment status of a Xiangyang employee on the settlement date, and the benefit period (POLICY §4.1, §4.3).

From the `employment` register (DATA.md §3: psn_no, psn_type 11 in service / 12 retired, flexible, benefit
normal / suspended / arrears / unverified / terminated, begndate, enddate):

  the period     the period valid on the settlement date (begndate <= date <= enddate, open end). Several valid
                 periods: the one that began last; equal begin dates: the most favourable (§1.6) — benefit normal
                 first, then retired (12) before in service, then not flexible — and last the benefit name.
  emp_status     in_service (11) / retired (12) of that period: it picks the outpatient deductible, rate and cap.

Outside the benefit period no fund pays anything on any ledger (§4.3; POLICY extends the seed's outpatient rule
to every ledger, policies/README "Disagreements" 4) and the cost counts toward no deductible, cap or band.
`benefit_block` is the reason, the first that applies in this order:

  TERMINATED                 the period's benefit is in outpatient_pool.no_fund_no_account_states
  WAITING_PERIOD             the period is flexible and the date lies in the first
                             outpatient_pool.flexible_waiting_months (6) months from the begin date of the person's
                             EARLIEST flexible period: [begin, begin + 6 months), month-end clamped (31 Aug → 28 Feb)
  EMPLOYER_ENROLMENT_MONTH   the date's calendar month is that of the begin date of the person's earliest
                             non-flexible period (outpatient_pool.employer_enrolment_month_waiting)
  NO_EMPLOYMENT_PERIOD       no period is valid on the date: not insured as an employee that day
  SUSPENDED / ARREARS / UNVERIFIED   the period's benefit is in outpatient_pool.no_fund_account_allowed_states

The hard kind — the first three, and NO_EMPLOYMENT_PERIOD when outpatient_pool.no_employment_period_kind is
`hard` (A-27: not insured on the date) — bars the personal account too ("也不可以使用个人账户支付门诊费用"), but
only on the ledgers of outpatient_pool.hard_exclusion_account_bar_ledgers (A-26: outpatient-type lines; on a
stay the account may pay the person's share). `acct_allowed` (read by the personal-account stage) is false on
exactly those lines, true otherwise and on lines of other schemes (engine default).

The flexible-worker wait is applied only while the period on the date is flexible: a person who moves from
flexible work to an employer within the six months is governed by the employer rules (the enrolment month)
from then on. The employer enrolment month is a calendar month, whatever period holds on the date.
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.employee import REGION, SCHEME
from transforms.explain import when_text
from transforms.frames import join_left
from transforms.params import attach
from transforms.stage import Stage

EMPLOYMENT_SCHEMA = {"psn_no": pl.String, "psn_type": pl.String, "flexible": pl.Boolean, "contrib_mode": pl.String,
                     "contrib_base": pl.Int64, "retire_kind": pl.String, "benefit": pl.String, "begndate": pl.Date,
                     "enddate": pl.Date}
STATUS_BY_PSN_TYPE = {"11": "in_service", "12": "retired"}
WAITING, ENROLMENT, NO_PERIOD = "WAITING_PERIOD", "EMPLOYER_ENROLMENT_MONTH", "NO_EMPLOYMENT_PERIOD"
BLOCK_CODES = ("TERMINATED", WAITING, ENROLMENT, NO_PERIOD, "SUSPENDED", "ARREARS", "UNVERIFIED")
# the hard kind: the personal account may not pay either (on outpatient-type ledgers, A-26); NO_PERIOD too, A-27
NO_ACCOUNT_CODES = ("TERMINATED", WAITING, ENROLMENT, NO_PERIOD)


def empty_employment() -> pl.DataFrame:
    return pl.DataFrame(schema=EMPLOYMENT_SCHEMA)


def employment_on_date(lines: pl.DataFrame, employment: pl.DataFrame | None) -> pl.DataFrame:
    """Adds emp_psn_type, emp_flexible, emp_benefit (the period valid on setl_date; null without one),
    emp_status, and the person's emp_flex_begin / emp_employer_begin (earliest flexible / non-flexible
    period begin, over all the person's periods)."""
    emp = employment if employment is not None else empty_employment()
    emp = emp.select("psn_no", pl.col("psn_type").cast(pl.String), pl.col("flexible").fill_null(False),
                     pl.col("benefit").cast(pl.String), "begndate", "enddate")
    first = emp.group_by("psn_no").agg(
        pl.col("begndate").filter(pl.col("flexible")).min().alias("emp_flex_begin"),
        pl.col("begndate").filter(~pl.col("flexible")).min().alias("emp_employer_begin"),
    )
    df = lines.with_row_index("__er")
    on_date = (
        df.select("__er", "psn_no", "setl_date")
        .join(emp, on="psn_no", how="inner")
        .filter((pl.col("begndate") <= pl.col("setl_date"))
                & (pl.col("enddate").is_null() | (pl.col("setl_date") <= pl.col("enddate"))))
        .with_columns((pl.col("benefit") != "normal").alias("__k1"), (pl.col("psn_type") != "12").alias("__k2"))
        .sort(["__er", "begndate", "__k1", "__k2", "flexible", "benefit"],
              descending=[False, True, False, False, False, False])
        .group_by("__er", maintain_order=True).first()
        .select("__er", pl.col("psn_type").alias("emp_psn_type"), pl.col("flexible").alias("emp_flexible"),
                pl.col("benefit").alias("emp_benefit"))
    )
    df = join_left(df, on_date, "__er").drop("__er")
    df = join_left(df, first, "psn_no")
    return df.with_columns(
        pl.col("emp_psn_type").replace_strict(STATUS_BY_PSN_TYPE, default=None, return_dtype=pl.String)
        .alias("emp_status"))


def _in_list(df: pl.DataFrame, policies: Policies, used: set, name: str, col: str, need: pl.Expr) -> pl.Expr:
    """Whether `col` is in a dated list parameter on the line's date (a column expression on `df`)."""
    tmp = attach(df.select("setl_date", col, need.alias("__need")), policies, REGION, SCHEME, name, "__list",
                 convert=lambda v: [str(x) for x in (v or [])], dtype=pl.List(pl.String), need=pl.col("__need"),
                 used=used)
    return pl.lit(tmp.select(pl.col("__list").list.contains(pl.col(col)).fill_null(False))["__list"])


def benefit_status(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds benefit_block (a code of BLOCK_CODES or null), acct_allowed, emp_wait_until (the first day after a
    flexible worker's waiting months). Needs the columns of `employment_on_date`."""
    p = "outpatient_pool"
    employee = pl.lit(True)  # the engine hands over the Xiangyang employee lines only: every line needs them
    df = attach(df, policies, REGION, SCHEME, f"{p}.flexible_waiting_months", "__wait_months", need=employee,
                used=used)
    df = attach(df, policies, REGION, SCHEME, f"{p}.employer_enrolment_month_waiting", "__enrol_on", convert=bool,
                dtype=pl.Boolean, need=employee, used=used)
    df = attach(df, policies, REGION, SCHEME, f"{p}.no_employment_period_kind", "__no_period_kind",
                convert=str, dtype=pl.String, need=employee, used=used)
    bad = df.filter(~pl.col("__no_period_kind").is_in(["hard", "account_allowed"]))
    if bad.height:
        r = bad.row(0, named=True)
        raise NotImplementedError(f"{REGION}/{SCHEME}/{p}.no_employment_period_kind = {r['__no_period_kind']!r} on "
                                  f"{r['setl_date']}: hard or account_allowed (A-27)")
    bar = _in_list(df, policies, used, f"{p}.hard_exclusion_account_bar_ledgers", "ledger", employee)
    df = df.with_columns(bar.alias("__bar_ledger"))
    no_acct = _in_list(df, policies, used, f"{p}.no_fund_no_account_states", "emp_benefit", employee)
    acct_ok = _in_list(df, policies, used, f"{p}.no_fund_account_allowed_states", "emp_benefit", employee)
    df = df.with_columns(
        pl.col("emp_flex_begin").dt.offset_by(pl.format("{}mo", pl.col("__wait_months"))).alias("emp_wait_until"),
        no_acct.alias("__no_acct_state"), acct_ok.alias("__acct_state"),
    )
    waiting = (pl.col("emp_flexible").fill_null(False) & (pl.col("emp_flex_begin") <= pl.col("setl_date"))
               & (pl.col("setl_date") < pl.col("emp_wait_until"))).fill_null(False)
    enrol = (pl.col("__enrol_on").fill_null(False)
             & (pl.col("setl_date").dt.truncate("1mo") == pl.col("emp_employer_begin").dt.truncate("1mo"))
             ).fill_null(False)
    state_code = pl.col("emp_benefit").str.to_uppercase()
    block = (
        pl.when(pl.col("__no_acct_state")).then(state_code)
        .when(waiting).then(pl.lit(WAITING))
        .when(enrol).then(pl.lit(ENROLMENT))
        .when(pl.col("emp_psn_type").is_null()).then(pl.lit(NO_PERIOD))
        .when(pl.col("__acct_state")).then(state_code)
        .otherwise(pl.lit(None, pl.String))
    )
    df = df.with_columns(block.alias("benefit_block"))
    no_period_hard = pl.col("emp_psn_type").is_null() & (pl.col("__no_period_kind") == "hard")
    hard = pl.col("__no_acct_state") | waiting | enrol | no_period_hard
    df = df.with_columns(
        (~(hard & pl.col("__bar_ledger"))).alias("acct_allowed"),
        pl.when(pl.col("emp_flexible").fill_null(False)).then(pl.col("emp_wait_until")).alias("emp_wait_until"),
    )
    unknown = df.filter(pl.col("benefit_block").is_not_null() & ~pl.col("benefit_block").is_in(list(BLOCK_CODES)))
    if unknown.height:
        r = unknown.row(0, named=True)
        raise NotImplementedError(f"benefit state {r['emp_benefit']!r} listed in {REGION}/{SCHEME}/{p}.*_states on "
                                  f"{r['setl_date']} has no reason code (transforms/employee/status.py)")
    return df.drop("__wait_months", "__enrol_on", "__no_acct_state", "__acct_state", "__no_period_kind",
                   "__bar_ledger")


def _reasons() -> list[pl.Expr]:
    return [pl.when(~pl.col("is_reversal") & pl.col("benefit_block").is_not_null()).then(pl.col("benefit_block"))]


def _explain() -> list[pl.Expr]:
    status = pl.col("emp_status").fill_null("?").str.replace("_", " ")
    flex = pl.when(pl.col("emp_flexible").fill_null(False)).then(pl.lit(", flexible worker")).otherwise(pl.lit(""))
    block = pl.col("benefit_block")
    fwd = ~pl.col("is_reversal")
    why = (
        pl.when(block == WAITING).then(pl.concat_str([pl.lit("a flexible worker's first months, until "),
                                                      pl.col("emp_wait_until").cast(pl.String)]))
        .when(block == ENROLMENT).then(pl.concat_str([pl.lit("the month the employer first enrolled the person ("),
                                                      pl.col("emp_employer_begin").cast(pl.String), pl.lit(")")]))
        .when(block == NO_PERIOD).then(pl.lit("no employment period on the date"))
        .otherwise(pl.concat_str([pl.lit("benefit "), pl.col("emp_benefit").fill_null("?")]))
    )
    return [
        when_text(pl.col("emp_psn_type").is_not_null(), "employee ", status, flex, ", benefit ",
                  pl.col("emp_benefit"), " on the date"),
        when_text(fwd & block.is_not_null(), "outside the benefit period (§4.3): ", why,
                  " — no fund pays; the cost counts toward no deductible, cap or band"),
        when_text(fwd & block.is_not_null() & ~pl.col("acct_allowed").fill_null(True),
                  "the personal account may not pay either (§4.3): cash"),
        when_text(fwd & block.is_not_null() & pl.col("acct_allowed").fill_null(True),
                  "the personal account may pay"),
    ]


STAGE = Stage(
    name="employee status and benefit period (§4.1, §4.3)",
    run=benefit_status,
    defaults={"emp_psn_type": pl.String, "emp_status": pl.String, "emp_flexible": pl.Boolean,
              "emp_benefit": pl.String, "emp_flex_begin": pl.Date, "emp_employer_begin": pl.Date,
              "emp_wait_until": pl.Date, "benefit_block": pl.String},
    reasons=_reasons,
    explain=_explain,
)
