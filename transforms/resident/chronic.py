"""Suizhou resident chronic and special-disease outpatient (门诊慢特病) and separately paid drugs
(单独支付药品, the negotiated "dual-channel" drugs), POLICY §3.4.

Lines: ledger `chronic` (med_type 14 / 140104 / 140201 claimed under a certification that is not a
drug qualification) and ledger `special_drug` (med_type 14 / 140104 / 140201 / 41 claimed under a
`special_drug` qualification); see transforms/enrich.py. For a line claimed under the certification
`dise_cert_code` of kind k, valid on the settlement date:

  rate        chronic.fund_rate[k]: chronic 60%, special 70%, special_transplant / special_dialysis 80%;
              special_mental its own value (70%), or special's when the parameter gives none for it.
              special_drug: chronic.special_drug_rate (50%), but a drug that belongs to a certified
              special disease of the person takes that disease's rate
              (chronic.special_drug_takes_disease_rate).
  deductible  none (A-3). chronic.deductible is read and must be 0: any other value stops the run
              (how it would accumulate is not in the source — never a guess).
  limit       chronic.annual_limit_per_disease[k] (A-21: chronic 10,000 yuan of in-scope cost per
              disease per year; special kinds and special drugs "none"):
                within = min(in_scope, max(0, limit − used before))
              `capped_payment` over (psn_no, year, dise_cert_code), from the accumulator
              `chronic_limit_used:<dise_cert_code>` (the in-scope cost counted within the limit this
              year; kept for every certified line, also where the limit is "none", so that a limit
              that changes by date counts the whole year's cost).
  over limit  chronic_over_limit_amt = in_scope − within: the person's; it enters no critical-illness
              or assistance base (`burden_excluded_amt`, subtracted by those stages).
  hifp (raw)  rate × within, half-up once; pool_prop_selfpay = within − raw; then the annual cap
              of the basic fund (§3.7, engine). Critical illness (§3.8) takes
              burden = in_scope − hifp − burden_excluded_amt on the ledgers of its parameter.

"Belongs to a certified special disease": the drug's disease — the ICD-10 the drug qualification was
granted for (`certifications.dise_codg` of the special_drug row; A-29, chronic.special_drug_disease_icd_from
= qualification: the line's diagnosis does not decide) — has
the same ICD-10 category (first three characters, as A-23 compares codes) as a certification of kind
special / special_transplant / special_dialysis / special_mental of the person valid on the
settlement date. Several such diseases: the highest rate (§1.6, the most favourable). A chronic
(kind `chronic`) certification does not lend its rate to a drug: the source names special diseases.

Not certified: a `chronic` line claimed under no certification, or under a two-disease
qualification (kinds hypertension / diabetes), is not chronic/special care: the basic fund pays
nothing (NOT_CERTIFIED) and its in-scope cost enters no critical-illness or assistance base either
(`burden_excluded_amt` = in_scope; `chronic_over_limit_amt` 0).

Reversals (§1.7): not recomputed. What the original counted within the limit is
hifp_pay + hifp_cap_cut + pool_prop_selfpay (= its raw fund + co-payment = within), all columns of
the stored adjudicated row; the reversal adds the negated amount (rev_hifp_pay + rev_hifp_cap_cut +
rev_pool_prop_selfpay) to `chronic_limit_used:<dise_cert_code>`, and its excluded burden
`rev_burden_excluded_amt` = rev_inscp_scp_amt − that (later stages subtract it from their negated
bases). This holds for every original of these ledgers (not certified: within 0). The negative
amount goes through `capped_payment` as the annual cap's reversals do (engine `_annual_cap`): with
P_{i-1} <= C_i, min(P_{i-1} + r, C_i) = P_{i-1} + r for r < 0, so it is taken back exactly and
later lines of the disease find the limit freed (POLICY §1.7; the reference's `_acc`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from flows.policies import Policies
from transforms.chronic_limit import limit_explanations, limit_fen, within_disease_limit
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.frames import join_left
from transforms.money import expr_apply_rate
from transforms.params import attach, rate, yuan_to_fen
from transforms.stage import Stage, mark_handled

REGION, SCHEME, TOPIC = "suizhou", "resident", "chronic"
LEDGERS = ("chronic", "special_drug")
DISEASE_KINDS = ("chronic", "special", "special_transplant", "special_dialysis", "special_mental")
SPECIAL_KINDS = ("special", "special_transplant", "special_dialysis", "special_mental")
ICD_FROM = ("qualification", "line_diagnosis")  # chronic.special_drug_disease_icd_from
LIMIT_ACC = "chronic_limit_used"  # per certified disease: "chronic_limit_used:<dise_cert_code>"


def icd_category(e: pl.Expr) -> pl.Expr:
    """ICD-10 category: the first three characters, upper case (N18.5 → N18)."""
    return e.str.strip_chars().str.to_uppercase().str.slice(0, 3)


def _mine() -> pl.Expr:
    return pl.col("ledger").is_in(list(LEDGERS))


def _covered() -> pl.Expr:
    """A line of these ledgers claimed under a certification that carries a rate."""
    return _mine() & ((pl.col("ledger") == "special_drug") | pl.col("cert_kind").is_in(list(DISEASE_KINDS)))


def _rev(col: str) -> pl.Expr:
    return pl.col(f"rev_{col}").fill_null(0)


def by_kind(df: pl.DataFrame, policies: Policies, name: str, kind_col: str, out: str,
            convert: Callable[[Any], Any], need: pl.Expr, used: set) -> pl.DataFrame:
    """`out` = a parameter keyed by certification kind, in force on the line's date. special_mental
    without a value of its own takes special's (§3.4: a special disease unless the parameters say
    otherwise). A needed value that is missing stops the run (MissingParameter)."""
    mental = pl.col(kind_col) == "special_mental"
    df = attach(df, policies, REGION, SCHEME, name, "__own", convert=convert, keyed_by=kind_col,
                need=need & ~mental, used=used)
    df = attach(df.with_columns(pl.lit("special").alias("__as_special")), policies, REGION, SCHEME, name,
                "__special", convert=convert, keyed_by="__as_special", need=need & mental & pl.col("__own").is_null(),
                used=used)
    return df.with_columns(
        pl.when(mental).then(pl.coalesce("__own", "__special")).otherwise(pl.col("__own")).alias(out)
    ).drop("__own", "__special", "__as_special")


def _special_disease(df: pl.DataFrame, policies: Policies, used: set, want: pl.Expr) -> pl.DataFrame:
    """For special-drug lines (`want`): the certified special disease the drug belongs to with the
    highest rate — sd_disease_rate_bp, sd_disease_cert, sd_disease_kind (null when none)."""
    df = attach(df, policies, REGION, SCHEME, f"{TOPIC}.special_drug_disease_icd_from", "__icd_from", convert=str,
                dtype=pl.String, need=want, used=used)
    bad = df.filter(want & ~pl.col("__icd_from").is_in(list(ICD_FROM)))
    if bad.height:
        r = bad.row(0, named=True)
        raise NotImplementedError(f"{REGION}/{SCHEME}/{TOPIC}.special_drug_disease_icd_from = {r['__icd_from']!r} on "
                                  f"{r['setl_date']}: one of {ICD_FROM} (A-29)")
    # the qualification's ICD-10 decides, not the line's diagnosis (unless the switch says line_diagnosis)
    drug_icd = (pl.when((pl.col("__icd_from") == "line_diagnosis") & (pl.col("dise_codg").str.len_chars() > 0))
                .then(pl.col("dise_codg")).otherwise(pl.col("cert_dise_codg")))
    df = df.with_row_index("__r")
    cand = (df.filter(want)
            .select("__r", "setl_date", icd_category(drug_icd).alias("__icd"), "certs_on_date")
            .explode("certs_on_date").unnest("certs_on_date")
            .filter(pl.col("kind").is_in(list(SPECIAL_KINDS)) & (pl.col("__icd").str.len_chars() > 0)
                    & (icd_category(pl.col("dise_codg")) == pl.col("__icd"))))
    cand = by_kind(cand, policies, f"{TOPIC}.fund_rate", "kind", "__rate", rate, pl.lit(True), used)
    best = (cand.sort(["__r", "__rate", "dise_cert_code"], descending=[False, True, False])
            .group_by("__r", maintain_order=True).first()
            .select("__r", pl.col("__rate").alias("sd_disease_rate_bp"), pl.col("dise_cert_code").alias("sd_disease_cert"),
                    pl.col("kind").alias("sd_disease_kind")))
    return join_left(df, best, "__r").drop("__r", "__icd_from")


def adjudicate_chronic(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds the chronic_* / sd_* columns, burden_excluded_amt, rev_burden_excluded_amt; sets hifp_raw,
    pool_prop_selfpay and handled on the lines of ledgers chronic and special_drug."""
    mine, rev = _mine(), pl.col("is_reversal")
    new = mine & ~rev
    covered = _covered()
    disease = covered & (pl.col("ledger") == "chronic")
    drug = mine & (pl.col("ledger") == "special_drug")

    df = attach(df, policies, REGION, SCHEME, f"{TOPIC}.deductible", "__deductible", convert=yuan_to_fen,
                need=new, used=used)
    bad = df.filter(new & (pl.col("__deductible") != 0))
    if bad.height:
        r = bad.row(0, named=True)
        raise NotImplementedError(f"parameter {REGION}/{SCHEME}/{TOPIC}.deductible is {r['__deductible']} fen on "
                                  f"{r['setl_date']}: a chronic/special deductible is not implemented (A-3 reads none)")
    df = df.drop("__deductible")

    df = by_kind(df, policies, f"{TOPIC}.fund_rate", "cert_kind", "__disease_rate", rate, disease & ~rev, used)
    df = attach(df, policies, REGION, SCHEME, f"{TOPIC}.special_drug_rate", "special_drug_rate_bp", convert=rate,
                need=drug & ~rev, used=used)
    df = attach(df, policies, REGION, SCHEME, f"{TOPIC}.special_drug_takes_disease_rate", "__takes", convert=bool,
                dtype=pl.Boolean, need=drug & ~rev, used=used)
    df = _special_disease(df, policies, used, drug & ~rev & pl.col("__takes").fill_null(False))
    df = df.with_columns(
        pl.when(disease).then(pl.col("__disease_rate"))
        .when(drug).then(pl.coalesce("sd_disease_rate_bp", "special_drug_rate_bp"))
        .otherwise(None).alias("chronic_rate_bp"),
        pl.when(mine).then(covered).otherwise(None).alias("chronic_covered"),
    ).drop("__disease_rate", "__takes")
    df = by_kind(df, policies, f"{TOPIC}.annual_limit_per_disease", "cert_kind", "chronic_limit_fen", limit_fen,
                 covered & ~rev, used)

    # The yearly limit per certified disease: a running total per (person, year, certification).
    in_scope = pl.max_horizontal(pl.col("inscp_scp_amt"), 0)
    rev_within = _rev("hifp_pay") + _rev("hifp_cap_cut") + _rev("pool_prop_selfpay")
    x = pl.when(covered & ~rev).then(in_scope).when(mine & rev).then(rev_within).otherwise(0)
    df = df.with_columns(x.alias("__x"))
    df = within_disease_limit(df, pl.col("__x"), pl.col("chronic_limit_fen"), f"carried_{LIMIT_ACC}",
                              "chronic_limit_added", "chronic_limit_before")
    within = pl.when(covered & ~rev).then(pl.col("chronic_limit_added")).otherwise(0)
    rev_excluded = _rev("inscp_scp_amt") - pl.col("__x")
    df = df.with_columns(
        pl.when(new).then(within).otherwise(None).alias("chronic_within_limit_amt"),
        pl.when(covered & ~rev).then(in_scope - within).when(covered & rev).then(rev_excluded)
        .when(mine).then(0).otherwise(None).alias("chronic_over_limit_amt"),
        pl.when(new).then(in_scope - within).when(mine & rev).then(rev_excluded)
        .otherwise(None).alias("burden_excluded_amt"),
        pl.when(mine & rev).then(rev_excluded).otherwise(None).alias("rev_burden_excluded_amt"),
    ).drop("__x")
    raw = pl.when(new).then(expr_apply_rate(pl.col("chronic_within_limit_amt"), pl.col("chronic_rate_bp").fill_null(0)))
    df = mark_handled(df, mine, raw.otherwise(0))
    return df.with_columns(
        pl.when(new).then(pl.col("chronic_within_limit_amt") - pl.col("hifp_raw")).otherwise(pl.col("pool_prop_selfpay"))
        .alias("pool_prop_selfpay"))


def _reasons() -> list[pl.Expr]:
    new = _mine() & ~pl.col("is_reversal")
    cov = new & pl.col("chronic_covered")
    return [
        code_if(new & ~pl.col("chronic_covered"), "NOT_CERTIFIED"),
        code_if(new & (pl.col("inscp_scp_amt") <= 0), "NO_IN_SCOPE_COST"),
        code_if(cov & (pl.col("inscp_scp_amt") > 0) & (pl.col("chronic_within_limit_amt") == 0),
                "CHRONIC_LIMIT_REACHED"),
        code_if(cov & (pl.col("chronic_within_limit_amt") > 0) & (pl.col("chronic_over_limit_amt") > 0),
                "CHRONIC_LIMIT_PARTLY"),
        code_if(new & (pl.col("ledger") == "special_drug") & pl.col("sd_disease_rate_bp").is_not_null(),
                "SPECIAL_DRUG_DISEASE_RATE"),
    ]


def _explain() -> list[pl.Expr]:
    y = fen_text
    mine, rev = _mine(), pl.col("is_reversal")
    new = mine & ~rev
    cov = new & pl.col("chronic_covered")
    code = pl.col("dise_cert_code").fill_null("none")
    return [
        when_text(cov & (pl.col("ledger") == "chronic"), "chronic/special outpatient (§3.4) under certification ",
                  code, " (", pl.col("cert_kind"), ", ICD-10 ", pl.col("cert_dise_codg").fill_null("?"), "): rate ",
                  bp_text(pl.col("chronic_rate_bp")), ", no deductible (A-3)"),
        when_text(cov & (pl.col("ledger") == "special_drug") & pl.col("sd_disease_rate_bp").is_null(),
                  "special drug (§3.4) under qualification ", code, ": rate ", bp_text(pl.col("chronic_rate_bp")),
                  ", no deductible (A-3)"),
        when_text(cov & (pl.col("ledger") == "special_drug") & pl.col("sd_disease_rate_bp").is_not_null(),
                  "special drug (§3.4) under qualification ", code, " belongs to certified special disease ",
                  pl.col("sd_disease_cert"), " (", pl.col("sd_disease_kind"), "): the disease's rate ",
                  bp_text(pl.col("chronic_rate_bp")), " instead of ", bp_text(pl.col("special_drug_rate_bp")),
                  ", no deductible (A-3)"),
        when_text(new & ~pl.col("chronic_covered"), "no chronic/special certification or special-drug qualification "
                  "claimed (certification ", code, pl.when(pl.col("cert_kind").is_not_null())
                  .then(pl.lit(", kind ") + pl.col("cert_kind")).otherwise(pl.lit("")),
                  "): basic fund 0; in scope ", y(pl.col("inscp_scp_amt")),
                  " is the person's, outside critical-illness and assistance bases"),
        *limit_explanations(cov, "chronic_limit_fen", "chronic_limit_before", "chronic_limit_added",
                            ": the person's, outside critical-illness and assistance bases"),
        when_text(cov, "basic fund ", bp_text(pl.col("chronic_rate_bp")), " × ", y(pl.col("chronic_within_limit_amt")),
                  " = ", y(pl.col("hifp_raw"))),
        when_text(mine & rev & (pl.col("chronic_limit_added") != 0), "limit used of ", code, " moves back by ",
                  y(-pl.col("chronic_limit_added"))),
    ]


STAGE = Stage(
    name="resident chronic/special outpatient and special drugs (§3.4)",
    run=adjudicate_chronic,
    accumulators={f"{LIMIT_ACC}:{{dise_cert_code}}": "chronic_limit_added"},
    defaults={"chronic_covered": pl.Boolean, "chronic_rate_bp": pl.Int64, "special_drug_rate_bp": pl.Int64,
              "sd_disease_rate_bp": pl.Int64, "sd_disease_cert": pl.String, "sd_disease_kind": pl.String,
              "chronic_limit_fen": pl.Int64, "chronic_limit_before": pl.Int64, "chronic_within_limit_amt": pl.Int64,
              "chronic_over_limit_amt": pl.Int64, "burden_excluded_amt": pl.Int64,
              "rev_burden_excluded_amt": pl.Int64},
    reasons=_reasons,
    explain=_explain,
)
