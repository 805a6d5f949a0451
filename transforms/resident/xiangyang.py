"""Xiangyang urban-rural residents (城乡居民, POLICY §4.7): what the source gives is adjudicated; a line that needs
a value the source does not give stops the run before anything is written, naming the parameter (§1.8, §6).

prepare   class-B pre-self-pay and in-scope cost (§1.4; the rate is needed only on its ledgers, A-16), then the
          lines that need a missing parameter stop the run (`_stop_where_missing`):
            a person holding on the date an identity of assistance.assistance_identities (特困, 低保, 返贫致贫,
              因病致贫: seed 003 names them as assistance persons) → assistance.class_by_identity (missing; the
              rates and thresholds are missing too): every line of such a person, whatever its ledger, since
              which ledgers assistance covers is not given either
            a line on a ledger of critical_illness.ledgers (none: §4.7 lists no critical-illness benefit)
              → critical_illness.threshold
            stays (inpatient, maternity, day surgery, rescue as a stay) → inpatient.deductible_in_city /
              deductible_out_of_city / offsite_preselfpay_rate, inpatient.fund_rate (the source gives only
              "起付线以上…按比例报销" without values)
            two-disease (9901) → two_disease.fund_rate; special drugs → chronic.special_drug_rate
            out-of-city general outpatient care → outpatient_pool.offsite_requires_enabled
OUTPATIENT general outpatient (普通门诊, ledger outpatient_pool: med_type 11, 13 not a rescue, 51) at a designated
          medical institution of a level in outpatient_pool.levels_allowed (every level):
            counted = min(in_scope, max(0, 800 − counted before))   the year's first 800 of outpatient cost
                      (annual_cost_limit; accumulator xyr_op_cost, across months)
            raw     = fund_rate(level) 50% × counted, half-up once; pool_prop_selfpay = counted − raw
            paid    = min(raw, max(0, 400 − paid before))           annual_cap (50% of 800; it binds only where
                      half-up rounding of many lines would pass 400 by a few fen; accumulator xyr_op_paid)
          In-scope cost is class A + class B (no class-B pre-self-pay outside stays, A-16); "门诊医疗费用" is read
          as in-catalogue cost, as every benefit of the rulebook (§1.4). No deductible (outpatient_pool.deductible
          0, required) and no daily limit (the rule is complete without one; outpatient_pool.daily_limit is not
          read). At a pharmacy (ledger pharmacy, or an outpatient line at a pharmacy): the benefit is "在定点医疗
          机构" only, so the fund pays 0 (PHARMACY_NOT_COVERED), as for Suizhou residents.
CHRONIC   37 chronic/special diseases (ledger chronic, claimed under a certification valid on the date):
            within  = the per-disease limit of transforms/chronic_limit.py (annual_limit_per_disease: "none" —
                      the resident rule states no limit; accumulator xyr_chronic_used:<dise_cert_code>)
            taken   = min(within, max(0, 600 − taken before))       chronic.deductible per person and year over
                      all certified diseases (chronic.deductible_scope = person; accumulator xyr_chronic_ded)
            raw     = fund_rate(kind) × (within − taken): chronic / special 60%, dialysis, anti-rejection and
                      severe mental illness 80%; pool_prop_selfpay = within − taken − raw; act_pay_dedc = taken
          Not certified: nothing paid, nothing accumulated (NOT_CERTIFIED).
CAP       annual_cap.hifp 400,000 over annual_cap.hifp_ledgers (the stays: "住院…每年最高限额40万元"); today no
          stay reaches it (their deductibles and rates are missing). Outpatient pooling has its own 800/400.
No critical-illness insurance (critical_illness.ledgers is empty) and no assistance for persons without an
assistance identity: hifmi, maf 0 with HIFMI_NOT_COVERED and NO_ASSISTANCE_IDENTITY.

Reversals (§1.7): not recomputed; each accumulator moves back by what the original added, read from its stored
row (negated by the engine as rev_…): counted = hifp_pay + hifp_cap_cut + pool_prop_selfpay; op paid = hifp_pay;
chronic within = hifp_pay + hifp_cap_cut + pool_prop_selfpay + act_pay_dedc, deductible taken = act_pay_dedc.
Every running total is `capped_payment`, which takes a negative amount back exactly.
The plain-Python twin is transforms/reference/xiangyang_resident.py.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from flows.policies import Policies
from transforms.accumulate import capped_payment, running_before
from transforms.chronic_limit import NO_LIMIT, limit_fen, within_disease_limit
from transforms.enrich import STAY_LEDGERS
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.money import expr_apply_rate
from transforms.params import attach, rate, yuan_to_fen
from transforms.resident.inpatient import class_b_preselfpay, in_list_on_date
from transforms.stage import Stage, mark_handled

REGION, SCHEME = "xiangyang", "resident"
PERSON_YEAR = ["psn_no", "year"]
OUTPATIENT = ("outpatient_pool", "pharmacy")
DISEASE_KINDS = ("chronic", "special", "special_transplant", "special_dialysis", "special_mental")
CHR_USED_ACC = "xyr_chronic_used"  # per certification: "xyr_chronic_used:<dise_cert_code>"


def rev(col: str) -> pl.Expr:
    """The original's amount, negated, on a reversal line (engine `_join_originals`); 0 when unknown."""
    return pl.col(f"rev_{col}").fill_null(0)


def needs(df: pl.DataFrame, policies: Policies, used: set, name: str, mask: pl.Expr) -> list[Any]:
    """The parameter's values on the dates of the lines `mask` selects. A missing value stops the run naming the
    parameter and the date (MissingParameter, POLICY §1.8)."""
    out = []
    for on in sorted(df.filter(mask.fill_null(False))["setl_date"].unique().to_list()):
        dv = policies.at(REGION, SCHEME, name, on)
        used.add((REGION, SCHEME, name, dv.assumption))
        out.append(dv.value)
    return out


def _require(df: pl.DataFrame, policies: Policies, used: set, name: str, mask: pl.Expr, expected: Any,
             convert=lambda v: v) -> None:
    """A rule switch whose only implemented value is `expected`: any other value stops the run naming it."""
    for v in needs(df, policies, used, name, mask):
        if convert(v) != expected:
            raise NotImplementedError(f"{REGION}/{SCHEME}/{name} = {v!r}: only {expected!r} is implemented (§4.7)")


def _stop_where_missing(df: pl.DataFrame, policies: Policies, used: set) -> None:
    """The lines §4.7 gives no rule for: their missing parameter stops the run (module docstring)."""
    fwd = ~pl.col("is_reversal")
    ledger = pl.col("ledger")
    holder = in_list_on_date(df, policies, REGION, SCHEME, "assistance.assistance_identities", used, "identities",
                             need=fwd)
    needs(df.filter(holder), policies, used, "assistance.class_by_identity", fwd)
    hifmi = in_list_on_date(df, policies, REGION, SCHEME, "critical_illness.ledgers", used, "ledger", need=fwd)
    needs(df.filter(hifmi), policies, used, "critical_illness.threshold", fwd)
    stay = fwd & ledger.is_in(list(STAY_LEDGERS))
    in_city = pl.col("in_city").fill_null(False)
    needs(df, policies, used, "inpatient.deductible_in_city", stay & in_city & (ledger != "day_surgery"))
    needs(df, policies, used, "inpatient.offsite_preselfpay_rate", stay & ~in_city)
    needs(df, policies, used, "inpatient.deductible_out_of_city", stay & ~in_city & (ledger != "day_surgery"))
    needs(df, policies, used, "inpatient.fund_rate", stay)
    if df.select(stay.any()).item():  # every value given, but the stay rules are not written for Xiangyang yet
        raise NotImplementedError(f"{REGION}/{SCHEME}: the inpatient parameters are given, but Xiangyang resident "
                                  "stays are not implemented (transforms/resident/xiangyang.py)")
    needs(df, policies, used, "two_disease.fund_rate", fwd & (ledger == "two_disease"))
    needs(df, policies, used, "chronic.special_drug_rate", fwd & (ledger == "special_drug"))


def prepare(part: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    part = class_b_preselfpay(part, policies, used, REGION, SCHEME, "inpatient")
    _stop_where_missing(part, policies, used)
    return part.with_columns(
        pl.lit(0, pl.Int64).alias("hifp_raw"), pl.lit(False).alias("handled"),
        pl.lit(0, pl.Int64).alias("pool_prop_selfpay"), pl.lit(0, pl.Int64).alias("act_pay_dedc"),
        pl.lit(0, pl.Int64).alias("offsite_preselfpay_amt"), pl.lit(True).alias("xyr_line"),
    )


# --------------------------------------------------------------------------- general outpatient


def adjudicate_outpatient(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Sets hifp_raw, pool_prop_selfpay and handled on ledgers outpatient_pool and pharmacy; adds xyr_op_*."""
    mine, r = pl.col("ledger").is_in(list(OUTPATIENT)), pl.col("is_reversal")
    if not df.select(mine.any()).item():
        return df
    at_pharmacy = ((pl.col("ledger") == "pharmacy") | (pl.col("fixmedins_type") == "pharmacy")
                   | (pl.col("facility") == "pharmacy")).fill_null(False)
    inst = mine & ~r & ~at_pharmacy
    df = df.with_columns(pl.when(mine).then(mine & ~r & at_pharmacy).alias("xyr_op_pharmacy"))
    _require(df, policies, used, "outpatient_pool.deductible", inst, 0, yuan_to_fen)
    level_ok = in_list_on_date(df, policies, REGION, SCHEME, "outpatient_pool.levels_allowed", used, "hosp_lv",
                               need=inst)
    df = df.with_columns(pl.when(inst).then(level_ok).alias("xyr_op_level_ok"))
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.offsite_requires_enabled", "__req", dtype=pl.Boolean,
                convert=bool, need=inst & ~pl.col("in_city"), used=used)
    elig = (inst & pl.col("xyr_op_level_ok")
            & (pl.col("in_city") | ~pl.col("__req").fill_null(True) | pl.col("offsite_outpatient_enabled")))
    df = df.with_columns(pl.when(mine).then(elig.fill_null(False)).alias("xyr_op_eligible")).drop("__req")
    el = pl.col("xyr_op_eligible").fill_null(False)
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.annual_cost_limit", "xyr_op_cost_limit",
                convert=yuan_to_fen, need=el, used=used)
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.fund_rate", "xyr_op_rate_bp", convert=rate,
                keyed_by="hosp_lv", need=el, used=used)
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.annual_cap", "xyr_op_cap", convert=yuan_to_fen,
                need=el, used=used)
    in_scope = pl.max_horizontal(pl.col("inscp_scp_amt"), 0)
    x_cost = (pl.when(el).then(in_scope)
              .when(mine & r).then(rev("hifp_pay") + rev("hifp_cap_cut") + rev("pool_prop_selfpay")).otherwise(0))
    df = df.with_columns(capped_payment(x_cost, pl.col("xyr_op_cost_limit").fill_null(NO_LIMIT),
                                        pl.col("carried_xyr_op_cost"), PERSON_YEAR).alias("xyr_op_cost_add"))
    df = df.with_columns(
        running_before(pl.col("xyr_op_cost_add"), pl.col("carried_xyr_op_cost"), PERSON_YEAR).alias("__cost_before"),
        pl.when(el).then(expr_apply_rate(pl.col("xyr_op_cost_add"), pl.col("xyr_op_rate_bp"))).otherwise(0)
        .alias("__raw"))
    x_paid = pl.when(el).then(pl.col("__raw")).when(mine & r).then(rev("hifp_pay")).otherwise(0)
    df = df.with_columns(capped_payment(x_paid, pl.col("xyr_op_cap").fill_null(NO_LIMIT),
                                        pl.col("carried_xyr_op_paid"), PERSON_YEAR).alias("xyr_op_paid_add"))
    df = df.with_columns(
        running_before(pl.col("xyr_op_paid_add"), pl.col("carried_xyr_op_paid"), PERSON_YEAR).alias("__paid_before"))
    df = df.with_columns(
        pl.when(el).then(pl.col("xyr_op_cost_add")).alias("xyr_op_counted"),
        pl.when(el).then(pl.col("__cost_before")).alias("xyr_op_cost_before"),
        pl.when(el).then(pl.col("__paid_before")).alias("xyr_op_paid_before"),
        pl.when(el).then(pl.col("xyr_op_paid_add")).when(mine).then(0).alias("xyr_op_pay"),
    ).drop("__cost_before", "__paid_before")
    df = mark_handled(df, mine, pl.col("__raw"))
    return df.with_columns(
        pl.when(el).then(pl.col("xyr_op_counted") - pl.col("__raw")).otherwise(pl.col("pool_prop_selfpay"))
        .alias("pool_prop_selfpay")).drop("__raw")


def _op_reasons() -> list[pl.Expr]:
    fwd = pl.col("ledger").is_in(list(OUTPATIENT)) & ~pl.col("is_reversal")
    el = fwd & pl.col("xyr_op_eligible")
    over = el & (pl.col("xyr_op_counted") < pl.col("inscp_scp_amt"))
    return [
        code_if(fwd & pl.col("xyr_op_pharmacy"), "PHARMACY_NOT_COVERED"),
        code_if(fwd & ~pl.col("xyr_op_pharmacy") & ~pl.col("xyr_op_level_ok"), "OP_LEVEL_NOT_ALLOWED"),
        code_if(fwd & ~pl.col("xyr_op_pharmacy") & pl.col("xyr_op_level_ok") & ~pl.col("xyr_op_eligible"),
                "OFFSITE_NOT_ENABLED"),
        code_if(el & (pl.col("inscp_scp_amt") <= 0), "NO_IN_SCOPE_COST"),
        code_if(over & (pl.col("xyr_op_counted") == 0), "XY_OP_COST_LIMIT_REACHED"),
        code_if(over & (pl.col("xyr_op_counted") > 0), "XY_OP_COST_LIMIT_PARTLY"),
    ]


def _op_explain() -> list[pl.Expr]:
    y = fen_text
    fwd = pl.col("ledger").is_in(list(OUTPATIENT)) & ~pl.col("is_reversal")
    el = fwd & pl.col("xyr_op_eligible")
    cost_left = (pl.col("xyr_op_cost_limit") - pl.col("xyr_op_cost_before")).clip(lower_bound=0)
    return [
        when_text(fwd & pl.col("xyr_op_pharmacy"), "pharmacy purchase: Xiangyang resident general outpatient care "
                  "is paid only at designated medical institutions (§4.7)"),
        when_text(el, "general outpatient (§4.7): the year's first ", y(pl.col("xyr_op_cost_limit")),
                  " of outpatient cost is paid at ", bp_text(pl.col("xyr_op_rate_bp")), "; left before ", y(cost_left),
                  ", counted ", y(pl.col("xyr_op_counted")), " of in scope ", y(pl.col("inscp_scp_amt"))),
        when_text(el, "fund ", bp_text(pl.col("xyr_op_rate_bp")), " × ", y(pl.col("xyr_op_counted")), " = ",
                  y(pl.col("hifp_raw")), ", annual cap ", y(pl.col("xyr_op_cap")), " (paid before ",
                  y(pl.col("xyr_op_paid_before")), "): pays ", y(pl.col("xyr_op_pay"))),
    ]


OUTPATIENT_STAGE = Stage(
    name="Xiangyang resident general outpatient (§4.7)",
    run=adjudicate_outpatient,
    accumulators={"xyr_op_cost": "xyr_op_cost_add", "xyr_op_paid": "xyr_op_paid_add"},
    defaults={"xyr_op_pharmacy": pl.Boolean, "xyr_op_level_ok": pl.Boolean, "xyr_op_eligible": pl.Boolean,
              "xyr_op_cost_limit": pl.Int64, "xyr_op_rate_bp": pl.Int64, "xyr_op_cap": pl.Int64,
              "xyr_op_cost_add": pl.Int64, "xyr_op_paid_add": pl.Int64, "xyr_op_counted": pl.Int64,
              "xyr_op_cost_before": pl.Int64, "xyr_op_paid_before": pl.Int64, "xyr_op_pay": pl.Int64},
    reasons=_op_reasons,
    explain=_op_explain,
)


# --------------------------------------------------------------------------- chronic/special outpatient


def adjudicate_chronic(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Sets hifp_raw, act_pay_dedc, pool_prop_selfpay, chronic_over_limit_amt and handled on ledger chronic."""
    mine, r = pl.col("ledger") == "chronic", pl.col("is_reversal")
    if not df.select(mine.any()).item():
        return df
    cov = mine & ~r & pl.col("cert_kind").is_in(list(DISEASE_KINDS)).fill_null(False)
    df = df.with_columns(pl.when(mine).then(cov).alias("xyr_chr_covered"))
    _require(df, policies, used, "chronic.deductible_scope", cov, "person", str)
    df = attach(df, policies, REGION, SCHEME, "chronic.fund_rate", "xyr_chr_rate_bp", convert=rate,
                keyed_by="cert_kind", need=cov, used=used)
    df = attach(df, policies, REGION, SCHEME, "chronic.annual_limit_per_disease", "xyr_chr_limit", convert=limit_fen,
                keyed_by="cert_kind", need=cov, used=used)
    df = attach(df, policies, REGION, SCHEME, "chronic.deductible", "xyr_chr_deductible", convert=yuan_to_fen,
                need=cov, used=used)
    in_scope = pl.max_horizontal(pl.col("inscp_scp_amt"), 0)
    rev_within = rev("hifp_pay") + rev("hifp_cap_cut") + rev("pool_prop_selfpay") + rev("act_pay_dedc")
    x = pl.when(cov).then(in_scope).when(mine & r).then(rev_within).otherwise(0)
    df = within_disease_limit(df, x, pl.col("xyr_chr_limit"), f"carried_{CHR_USED_ACC}", "xyr_chr_added",
                              "xyr_chr_used_before")
    x_ded = pl.when(cov).then(pl.col("xyr_chr_added")).when(mine & r).then(rev("act_pay_dedc")).otherwise(0)
    df = df.with_columns(capped_payment(x_ded, pl.col("xyr_chr_deductible").fill_null(NO_LIMIT),
                                        pl.col("carried_xyr_chronic_ded"), PERSON_YEAR).alias("xyr_chr_ded_add"))
    df = df.with_columns(
        pl.when(cov).then(running_before(pl.col("xyr_chr_ded_add"), pl.col("carried_xyr_chronic_ded"), PERSON_YEAR))
        .alias("xyr_chr_ded_before"),
        pl.when(cov).then(pl.col("xyr_chr_added")).alias("xyr_chr_within"),
    )
    after = pl.col("xyr_chr_within") - pl.col("xyr_chr_ded_add")
    df = df.with_columns(pl.when(cov).then(expr_apply_rate(after, pl.col("xyr_chr_rate_bp"))).alias("xyr_chr_raw"))
    df = mark_handled(df, mine, pl.when(cov).then(pl.col("xyr_chr_raw")).otherwise(0))
    over = pl.col("chronic_over_limit_amt") if "chronic_over_limit_amt" in df.columns else pl.lit(None, pl.Int64)
    return df.with_columns(
        pl.when(cov).then(after - pl.col("xyr_chr_raw")).otherwise(pl.col("pool_prop_selfpay")).alias("pool_prop_selfpay"),
        pl.when(cov).then(pl.col("xyr_chr_ded_add")).otherwise(pl.col("act_pay_dedc")).alias("act_pay_dedc"),
        pl.when(cov).then(in_scope - pl.col("xyr_chr_within")).when(mine & ~r).then(0).otherwise(over)
        .cast(pl.Int64).alias("chronic_over_limit_amt"),
    )


def _chr_reasons() -> list[pl.Expr]:
    fwd = (pl.col("ledger") == "chronic") & ~pl.col("is_reversal")
    cov = fwd & pl.col("xyr_chr_covered")
    return [
        code_if(fwd & ~pl.col("xyr_chr_covered"), "NOT_CERTIFIED"),
        code_if(cov & (pl.col("inscp_scp_amt") <= 0), "NO_IN_SCOPE_COST"),
        code_if(cov & (pl.col("xyr_chr_within") > 0) & (pl.col("xyr_chr_within") == pl.col("xyr_chr_ded_add")),
                "BELOW_DEDUCTIBLE"),
    ]


def _chr_explain() -> list[pl.Expr]:
    y = fen_text
    fwd = (pl.col("ledger") == "chronic") & ~pl.col("is_reversal")
    cov = fwd & pl.col("xyr_chr_covered")
    code = pl.col("dise_cert_code").fill_null("none")
    limited = pl.col("xyr_chr_limit") < NO_LIMIT
    return [
        when_text(fwd & ~pl.col("xyr_chr_covered"), "no chronic/special certification claimed (certification ", code,
                  "): basic fund 0 (§4.7)"),
        when_text(cov, "chronic/special outpatient (§4.7) under certification ", code, " (", pl.col("cert_kind"),
                  "): rate ", bp_text(pl.col("xyr_chr_rate_bp"))),
        when_text(cov & limited, "annual limit of ", code, " ", y(pl.col("xyr_chr_limit")), ": used before ",
                  y(pl.col("xyr_chr_used_before")), ", within ", y(pl.col("xyr_chr_within"))),
        when_text(cov, "yearly deductible ", y(pl.col("xyr_chr_deductible")), " over every certified disease: taken "
                  "before ", y(pl.col("xyr_chr_ded_before")), ", on this line ", y(pl.col("xyr_chr_ded_add"))),
        when_text(cov, "basic fund ", bp_text(pl.col("xyr_chr_rate_bp")), " × ",
                  y(pl.col("xyr_chr_within") - pl.col("xyr_chr_ded_add")), " = ", y(pl.col("xyr_chr_raw"))),
    ]


CHRONIC_STAGE = Stage(
    name="Xiangyang resident chronic/special outpatient (§4.7)",
    run=adjudicate_chronic,
    accumulators={f"{CHR_USED_ACC}:{{dise_cert_code}}": "xyr_chr_added", "xyr_chronic_ded": "xyr_chr_ded_add"},
    defaults={"xyr_chr_covered": pl.Boolean, "xyr_chr_rate_bp": pl.Int64, "xyr_chr_limit": pl.Int64,
              "xyr_chr_deductible": pl.Int64, "xyr_chr_added": pl.Int64, "xyr_chr_used_before": pl.Int64,
              "xyr_chr_ded_add": pl.Int64, "xyr_chr_ded_before": pl.Int64, "xyr_chr_within": pl.Int64,
              "xyr_chr_raw": pl.Int64},
    reasons=_chr_reasons,
    explain=_chr_explain,
)


# --------------------------------------------------------------------------- annual cap


def annual_cap(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """annual_cap.hifp over annual_cap.hifp_ledgers; elsewhere hifp_pay is the stage's payment (outpatient: after
    its own cap). Sets hifp_pay, hifp_cap_cut; hifp_cap and hifp_paid_before on the cap's ledgers only."""
    r = pl.col("is_reversal")
    cap_line = in_list_on_date(df, policies, REGION, SCHEME, "annual_cap.hifp_ledgers", used, "ledger")
    df = df.with_columns(cap_line.alias("__cap_line"))
    op = pl.col("ledger").is_in(list(OUTPATIENT))
    clash = df.filter(pl.col("__cap_line") & op)
    if clash.height:
        raise NotImplementedError(f"{REGION}/{SCHEME}/annual_cap.hifp_ledgers lists {clash['ledger'][0]}: outpatient "
                                  "care under two caps is not implemented")
    df = attach(df, policies, REGION, SCHEME, "annual_cap.hifp", "hifp_cap", convert=yuan_to_fen,
                need=pl.col("__cap_line") & ~r & (pl.col("hifp_raw") != 0), used=used)
    op_pay = pl.col("xyr_op_pay").fill_null(0) if "xyr_op_pay" in df.columns else pl.lit(0, pl.Int64)
    stage_pay = pl.when(op).then(op_pay).otherwise(pl.col("hifp_raw"))
    cap_in = pl.when(pl.col("__cap_line") & r).then(rev("hifp_pay")).when(pl.col("__cap_line")).then(stage_pay).otherwise(0)
    df = df.with_columns(capped_payment(cap_in, pl.col("hifp_cap").fill_null(NO_LIMIT), pl.col("carried_xyr_hifp_paid"),
                                        PERSON_YEAR).alias("xyr_hifp_capped"))
    df = df.with_columns(
        pl.when(pl.col("__cap_line")).then(pl.col("xyr_hifp_capped")).otherwise(stage_pay).alias("hifp_pay"),
        pl.when(pl.col("__cap_line")).then(
            running_before(pl.col("xyr_hifp_capped"), pl.col("carried_xyr_hifp_paid"), PERSON_YEAR))
        .alias("hifp_paid_before"),
        pl.when(pl.col("__cap_line")).then(pl.col("hifp_cap")).alias("hifp_cap"),
        pl.when(r).then(rev("hifp_pay")).otherwise(pl.col("hifp_raw")).alias("hifp_raw"),
    ).drop("__cap_line")
    return df.with_columns((pl.col("hifp_raw") - pl.col("hifp_pay")).alias("hifp_cap_cut"))


def _cap_reasons() -> list[pl.Expr]:
    # prepare stopped the run for every line on a critical-illness ledger or of an assistance person (§4.7)
    fwd = pl.col("xyr_line") & ~pl.col("is_reversal")
    return [code_if(fwd, "HIFMI_NOT_COVERED"), code_if(fwd, "NO_ASSISTANCE_IDENTITY")]


def _cap_explain() -> list[pl.Expr]:
    fwd = pl.col("xyr_line") & ~pl.col("is_reversal")
    return [when_text(fwd, "no critical-illness insurance and no medical assistance for this Xiangyang resident (§4.7: "
                      "none listed; the person holds no assistance identity)")]


CAP = Stage(
    name="Xiangyang resident basic-fund annual cap (§4.7)",
    run=annual_cap,
    accumulators={"xyr_hifp_paid": "xyr_hifp_capped"},
    defaults={"xyr_line": pl.Boolean},
    reasons=_cap_reasons,
    explain=_cap_explain,
)

BASIC = [OUTPATIENT_STAGE, CHRONIC_STAGE]
LATER: list[Stage] = []
ALL = [*BASIC, CAP]
