"""Xiangyang employee chronic/special outpatient (门诊慢特病, 37 diseases) and special drugs, POLICY §4.4.

Lines: ledger `chronic` (med_type 14 / 140104 / 140201 claimed under a certification that is not a drug
qualification) and `special_drug` (claimed under a `special_drug` qualification); see transforms/enrich.py. A
separate ledger from outpatient pooling (§4.3: own accumulators; one cost is paid by one ledger only).

For a line inside the benefit period (status.py), claimed under certification `dise_cert_code` of kind k:
  deductible  none: chronic.deductible must be 0 (A-12); any other value stops the run (not implemented)
  rate        chronic.fund_rate[k]: 80%; special_mental, special_transplant, special_dialysis 90% (A-12).
              special_drug: chronic.special_drug_rate — missing for employees (seed 003 has no rule), so a
              special-drug line inside the benefit period stops the run naming it (POLICY §1.8, never a guess).
  limit       chronic.annual_limit_per_disease[k] (A-21: chronic 10,000 of in-scope cost per disease and year;
              special kinds "none"): within = min(in_scope, max(0, limit − used before)), a running total per
              (person, year, certification) from the keyed accumulator `emp_chronic_used:<dise_cert_code>`
              (kept also where the limit is "none", so a limit that changes by date counts the whole year)
  over limit  chronic_over_limit_amt = in_scope − within: the person's
  hifp (raw)  rate × within, half-up once; pool_prop_selfpay = within − raw; then the employee annual cap (A-17,
              stages.py: chronic is in annual_cap.hifp_ledgers)
Not certified (no certification, or a two-disease one): nothing paid, nothing accumulated (NOT_CERTIFIED).
Outside the benefit period: nothing paid, nothing accumulated.

Reversals (§1.7): what the original counted within the limit is hifp_pay + hifp_cap_cut + pool_prop_selfpay
(= raw + co-payment = within; 0 for an original outside the period or not certified); the reversal adds it,
negated by the engine as rev_…, to `emp_chronic_used:<dise_cert_code>` through `capped_payment`, which takes a
negative amount exactly (min(r, max(0, C − P)) = r).
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.chronic_limit import limit_explanations, limit_fen, within_disease_limit
from transforms.employee import REGION, SCHEME, require, rev
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.money import expr_apply_rate
from transforms.params import attach, rate, yuan_to_fen
from transforms.stage import Stage, mark_handled

LEDGERS = ("chronic", "special_drug")
DISEASE_KINDS = ("chronic", "special", "special_transplant", "special_dialysis", "special_mental")
USED_ACC = "emp_chronic_used"  # per certification: "emp_chronic_used:<dise_cert_code>"


def mine() -> pl.Expr:
    return pl.col("ledger").is_in(list(LEDGERS))


def adjudicate_chronic(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds the emp_chr_* columns and chronic_over_limit_amt; sets hifp_raw, pool_prop_selfpay, handled."""
    m, r = mine(), pl.col("is_reversal")
    if not df.select(m.any()).item():
        return df
    live = m & ~r & pl.col("benefit_block").is_null()
    drug = pl.col("ledger") == "special_drug"
    covered = live & (drug | pl.col("cert_kind").is_in(list(DISEASE_KINDS)))
    require(df, policies, used, "chronic.deductible", live, 0, yuan_to_fen)
    df = df.with_columns(pl.when(m).then(covered).alias("emp_chr_covered"))
    cov = pl.col("emp_chr_covered").fill_null(False)
    df = attach(df, policies, REGION, SCHEME, "chronic.fund_rate", "__disease_rate", convert=rate,
                keyed_by="cert_kind", need=cov & ~drug, used=used)
    df = attach(df, policies, REGION, SCHEME, "chronic.special_drug_rate", "__drug_rate", convert=rate,
                need=cov & drug, used=used)
    df = attach(df, policies, REGION, SCHEME, "chronic.annual_limit_per_disease", "__limit", convert=limit_fen,
                keyed_by="cert_kind", need=cov, used=used)
    df = df.with_columns(
        pl.when(cov).then(pl.when(drug).then(pl.col("__drug_rate")).otherwise(pl.col("__disease_rate")))
        .alias("emp_chr_rate_bp"),
        pl.when(cov).then(pl.col("__limit")).alias("emp_chr_limit"),
    ).drop("__disease_rate", "__drug_rate", "__limit")

    in_scope = pl.max_horizontal(pl.col("inscp_scp_amt"), 0)
    rev_within = rev("hifp_pay") + rev("hifp_cap_cut") + rev("pool_prop_selfpay")
    x = pl.when(cov).then(in_scope).when(m & r).then(rev_within).otherwise(0)
    df = within_disease_limit(df, x, pl.col("emp_chr_limit"), f"carried_{USED_ACC}", "emp_chr_added", "__before")
    df = df.with_columns(
        pl.when(cov).then(pl.col("__before")).alias("emp_chr_used_before"),
        pl.when(cov).then(pl.col("emp_chr_added")).alias("emp_chr_within"),
    ).drop("__before")
    df = df.with_columns(
        pl.when(cov).then(in_scope - pl.col("emp_chr_within")).when(m & ~r).then(0)
        .otherwise(pl.col("chronic_over_limit_amt") if "chronic_over_limit_amt" in df.columns else None)
        .cast(pl.Int64).alias("chronic_over_limit_amt"),
        pl.when(cov).then(expr_apply_rate(pl.col("emp_chr_within"), pl.col("emp_chr_rate_bp"))).alias("emp_chr_raw"),
    )
    df = mark_handled(df, m, pl.when(cov).then(pl.col("emp_chr_raw")).otherwise(0))
    return df.with_columns(
        pl.when(m & ~r).then((pl.col("emp_chr_within") - pl.col("emp_chr_raw")).fill_null(0))
        .otherwise(pl.col("pool_prop_selfpay")).alias("pool_prop_selfpay"))


def _reasons() -> list[pl.Expr]:
    live = mine() & ~pl.col("is_reversal") & pl.col("benefit_block").is_null()
    cov = live & pl.col("emp_chr_covered")
    return [
        code_if(live & ~pl.col("emp_chr_covered"), "NOT_CERTIFIED"),
        code_if(cov & (pl.col("inscp_scp_amt") <= 0), "NO_IN_SCOPE_COST"),
        code_if(cov & (pl.col("inscp_scp_amt") > 0) & (pl.col("emp_chr_within") == 0), "CHRONIC_LIMIT_REACHED"),
        code_if(cov & (pl.col("emp_chr_within") > 0) & (pl.col("chronic_over_limit_amt") > 0), "CHRONIC_LIMIT_PARTLY"),
    ]


def _explain() -> list[pl.Expr]:
    y = fen_text
    live = mine() & ~pl.col("is_reversal") & pl.col("benefit_block").is_null()
    cov = live & pl.col("emp_chr_covered")
    code = pl.col("dise_cert_code").fill_null("none")
    return [
        when_text(live & ~pl.col("emp_chr_covered"), "no chronic/special certification claimed (certification ", code,
                  pl.when(pl.col("cert_kind").is_not_null()).then(pl.lit(", kind ") + pl.col("cert_kind"))
                  .otherwise(pl.lit("")), "): basic fund 0 (§4.4)"),
        when_text(cov, "employee chronic/special outpatient (§4.4, A-12) under certification ", code, " (",
                  pl.col("cert_kind"), "): rate ", bp_text(pl.col("emp_chr_rate_bp")), ", no deductible"),
        *limit_explanations(cov, "emp_chr_limit", "emp_chr_used_before", "emp_chr_within", ": the person's"),
        when_text(cov, "basic fund ", bp_text(pl.col("emp_chr_rate_bp")), " × ", y(pl.col("emp_chr_within")), " = ",
                  y(pl.col("emp_chr_raw"))),
    ]


STAGE = Stage(
    name="employee chronic/special outpatient (§4.4)",
    run=adjudicate_chronic,
    accumulators={f"{USED_ACC}:{{dise_cert_code}}": "emp_chr_added"},
    defaults={"emp_chr_covered": pl.Boolean, "emp_chr_rate_bp": pl.Int64, "emp_chr_limit": pl.Int64,
              "emp_chr_added": pl.Int64, "emp_chr_used_before": pl.Int64, "emp_chr_within": pl.Int64,
              "emp_chr_raw": pl.Int64},
    reasons=_reasons,
    explain=_explain,
)
