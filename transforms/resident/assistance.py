"""Suizhou resident medical assistance (医疗救助), POLICY §3.9: basic and tilt assistance, pay-after-treatment.

Runs after critical illness (DESIGN.md "Order of funds"), on the lines of persons who hold an
assistance identity on the settlement date (POLICY §1.6).

Assistance class (救助对象类别): `assistance.class_by_identity` maps identities to classes 1–4;
identities not in the map (other_hardship, S3, ordinary) have none. With several identities the
person gets the most favourable class (就高不就低, §1.6), which is the one paying most: the LOWEST
class number (class 1 has no deductible and 100%, each later class a higher deductible, a lower
rate and a tilt cap of its own).

Basic assistance (基本救助), per line in order within the person-year:
  eligible  = class 1–4 & ledger in `assistance.ledgers` & the basic fund handled the line & not
              held for review & care sought properly (in the city, or offsite type in
              `assistance.basic_offsite_types`: 101; 903 gets none)
  base      = in_scope − hifp − hifmi [− burden_excluded_amt: chronic cost above its limit]
  deductible taken (annual, by class; the class may change mid-year) = deductible_part(base, D_class)
  raw       = round(F(B_before + base)) − round(F(B_before)), F(B) = rate_class × max(0, B − D_class)
              (§1.3: the difference of the rounded yearly amounts; rate × (base − taken) before rounding)
  maf_pay   = raw limited by the yearly cap (capped_payment)
Tilt assistance (倾斜救助), on eligible lines inside Hubei:
  tilt base = in_scope − hifp − hifmi − maf [− burden_excluded_amt]
  above     = tilt base − deductible_part(tilt base, threshold[class][location])   (A-8)
  raw       = round(G(T_before + tilt base)) − round(G(T_before)), G(T) = rate[location] × max(0, T − threshold)
              (80% in Suizhou, 70% elsewhere in Hubei; rate × above before rounding)
  maf_tilt_pay = raw limited by the class's yearly cap (none for classes 1–2)
Ineligible lines add nothing to either accumulator.

Reversals (§1.7) pay back the negated original (`rev_maf_pay`, `rev_maf_tilt_pay`) and move the
accumulators back by exactly what the original added. Whether the original was eligible (its
class lies on its own settlement date, which may differ from the reversal's) is read from the
original's reason code MAF_CLASS_<n> (`rev_reason_codes`, carried by the engine); its bases are
recomputed from its negated amounts.

Pay-after-treatment (先诊疗后付费): `deposit_waived` on stays of rural low-income persons
(identities.rural_low_income_identities, with the rural attribute, A-9) in their county.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from flows.policies import MissingParameter, Policies
from transforms.accumulate import capped_payment, deductible_part
from transforms.enrich import STAY_LEDGERS
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.money import expr_apply_rate
from transforms.params import UNLIMITED, rate, version_index, yuan_to_fen
from transforms.resident.inpatient import in_list_on_date
from transforms.stage import Stage

REGION, SCHEME, TOPIC = "suizhou", "resident", "assistance"
PERSON_YEAR = ["psn_no", "year"]
NO_CAP = 10**15  # "none" in a policy file: an explicit absence of a cap (fen)
CLASS_CODE = "MAF_CLASS_"  # reason code MAF_CLASS_<n>: the line was eligible for basic assistance in class n
IN_CITY, OUT_OF_CITY_IN_PROVINCE = "in_city", "out_of_city_in_province"


def _money_or_none(v: Any) -> int:
    return NO_CAP if v == UNLIMITED else yuan_to_fen(v)


def lookup(df: pl.DataFrame, policies: Policies, name: str, out: str, *, key: pl.Expr | None = None,
           flatten: Callable[[Any], dict] | None = None, convert: Callable[[Any], Any] = lambda v: v,
           dtype: pl.DataType = pl.Int64, need: pl.Expr | None = None, used: set | None = None,
           date_col: str = "setl_date") -> pl.DataFrame:
    """Add `out` = the value of a dated parameter in force on each row's date, at the row's `key`.

    Unlike an as-of join per key, the version in force is found first and the key looked up in that
    version only, so a key dropped from a later version is absent there (not taken from an older one).
    `flatten` turns a version's value into {key: value} (default: the mapping itself). Rows selected
    by `need` whose value is missing stop the run with MissingParameter (POLICY §1.8).
    """
    p = policies.parameter(REGION, SCHEME, name)
    rows = []
    for i, dv in enumerate(p.values):
        if dv.value is None:
            continue
        items = {"": dv.value} if key is None else (flatten or (lambda v: v))(dv.value)
        for k, v in (items or {}).items():
            rows.append((i, str(k), None if v is None else convert(v)))
    table = pl.DataFrame(rows, schema={"__v": pl.Int64, "__k": pl.String, out: dtype}, orient="row")
    since = pl.Series([v.since for v in p.values], dtype=pl.Date)
    # Only the version, key and need columns are joined (the wide line frame is never sorted or copied).
    narrow = df.select(version_index(df[date_col], since).alias("__v"),
                       (key.cast(pl.String) if key is not None else pl.lit("")).alias("__k"),
                       (need if need is not None else pl.lit(True)).fill_null(False).alias("__need"))
    joined = narrow.join(table, on=["__v", "__k"], how="left", maintain_order="left")
    bad = joined["__need"] & joined[out].is_null()
    if bad.any():
        first = int(bad.arg_true()[0])
        at = f"[{joined['__k'][first]}]" if key is not None else ""
        raise MissingParameter(REGION, SCHEME, f"{name}{at}", df[date_col][first])
    if used is not None:
        for v in joined.filter(pl.col("__need"))["__v"].drop_nulls().unique().to_list():
            used.add((REGION, SCHEME, name, p.values[v].assumption))
    return df.with_columns(joined[out])


def assistance_class(df: pl.DataFrame, policies: Policies, used: set | None = None,
                     ids_col: str = "identities", date_col: str = "setl_date") -> pl.Series:
    """Class 1–4 of each row from its identities (a list) on its date; null = no assistance identity.

    Several identities: the most favourable class, i.e. the lowest class number (§1.6).
    """
    base = df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__i"), date_col, ids_col).explode(ids_col)
    has = pl.col(ids_col).is_not_null()
    hit = lookup(base, policies, f"{TOPIC}.class_by_identity", "__class", key=pl.col(ids_col), convert=int,
                 need=pl.lit(False), used=None, date_col=date_col)
    # the map itself must exist on the date of any row with an identity
    lookup(base.filter(has), policies, f"{TOPIC}.class_by_identity", "__any", convert=lambda v: True,
           dtype=pl.Boolean, used=used, date_col=date_col)
    best = hit.group_by("__i").agg(pl.col("__class").min())
    return (pl.DataFrame({"__i": pl.int_range(df.height, dtype=pl.UInt32, eager=True)})
            .join(best, on="__i", how="left", maintain_order="left")["__class"].alias("maf_class"))


def _excluded(df: pl.DataFrame, prefix: str = "") -> pl.Expr:
    """Chronic cost above its limit (another stage's `burden_excluded_amt`), when present: no assistance base."""
    col = f"{prefix}burden_excluded_amt"
    return pl.col(col).fill_null(0) if col in df.columns else pl.lit(0, pl.Int64)


def _rev(df: pl.DataFrame, col: str) -> pl.Expr:
    return pl.col(f"rev_{col}").fill_null(0) if f"rev_{col}" in df.columns else pl.lit(0, pl.Int64)


def yearly_difference(before: pl.Expr, base: pl.Expr, deductible: pl.Expr, rate_bp: pl.Expr) -> pl.Expr:
    """§1.3, §3.9: a line's assistance read off the yearly function F(B) = rate × max(0, B − deductible) of the
    accumulated base B, as round(F(before + base)) − round(F(before)) — never round(rate × the line's part), which
    is off by a fen on many lines and makes a year's lines miss the rounded yearly amount. The yearly cap is
    applied after, on the running paid total (capped_payment), which is round(min(cap, F)) for integer caps."""
    deductible, rate_bp = deductible.fill_null(0), rate_bp.fill_null(0)
    return (expr_apply_rate(pl.max_horizontal(before + base - deductible, 0), rate_bp)
            - expr_apply_rate(pl.max_horizontal(before - deductible, 0), rate_bp))


def adjudicate_assistance(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Adds maf_* and tilt_* columns, maf_pay, maf_tilt_pay and deposit_waived."""
    rev = pl.col("is_reversal")
    df = df.with_columns(assistance_class(df, policies, used), pl.lit(True).alias("maf_seen"))
    # A reversal carries its original's class (the class on the original's date), or none.
    orig_class = (pl.col("rev_reason_codes").str.extract(CLASS_CODE + r"(\d+)", 1).cast(pl.Int64)
                  if "rev_reason_codes" in df.columns else pl.lit(None, pl.Int64))
    df = df.with_columns(pl.when(rev).then(orig_class).otherwise(pl.col("maf_class")).alias("maf_class"))
    has_class = pl.col("maf_class").is_not_null()

    covered = in_list_on_date(df, policies, REGION, SCHEME, f"{TOPIC}.ledgers", used, "ledger", need=has_class)
    proper_offsite = in_list_on_date(df, policies, REGION, SCHEME, f"{TOPIC}.basic_offsite_types", used,
                                     "offsite_type_eff", need=has_class & ~pl.col("in_city"))
    df = df.with_columns(covered.alias("maf_ledger_covered"), proper_offsite.alias("__proper_offsite"))
    df = df.with_columns((pl.col("in_city") | pl.col("__proper_offsite")).alias("maf_proper_care"))
    basic_ok = (has_class & pl.col("maf_ledger_covered") & pl.col("handled")
                & ~pl.col("held_for_review").fill_null(False) & pl.col("maf_proper_care"))
    # A reversal is eligible exactly when its original was (the original's class code says so).
    df = df.with_columns(pl.when(rev).then(has_class).otherwise(basic_ok).alias("maf_eligible"))
    elig = pl.col("maf_eligible")
    need = elig & ~rev

    # ---- basic assistance
    base_now = pl.max_horizontal(pl.col("inscp_scp_amt") - pl.col("hifp_pay") - pl.col("hifmi_pay") - _excluded(df), 0)
    base_rev = pl.min_horizontal(_rev(df, "inscp_scp_amt") - _rev(df, "hifp_pay") - _rev(df, "hifmi_pay")
                                 - _excluded(df, "rev_"), 0)
    df = df.with_columns(pl.when(~elig).then(0).when(rev).then(base_rev).otherwise(base_now).alias("maf_base"))
    cls = pl.col("maf_class").cast(pl.String)
    df = lookup(df, policies, f"{TOPIC}.basic_deductible", "maf_deductible", key=cls, convert=yuan_to_fen,
                need=need, used=used)
    df = lookup(df, policies, f"{TOPIC}.basic_rate", "maf_rate_bp", key=cls, convert=rate, need=need, used=used)
    df = lookup(df, policies, f"{TOPIC}.basic_annual_cap", "maf_cap", convert=_money_or_none, need=need, used=used)
    taken = deductible_part(pl.col("maf_base"), pl.col("maf_deductible").fill_null(0), pl.col("carried_maf_base"),
                            PERSON_YEAR)
    df = df.with_columns(
        (pl.col("carried_maf_base") + pl.col("maf_base").cum_sum().over(PERSON_YEAR) - pl.col("maf_base"))
        .alias("maf_base_before"),
        pl.when(need).then(taken).otherwise(0).alias("maf_deductible_taken"),
    )
    df = df.with_columns((pl.col("maf_base") - pl.col("maf_deductible_taken")).alias("maf_after_deductible"))
    raw = (pl.when(~elig).then(0).when(rev).then(_rev(df, "maf_pay"))
           .otherwise(yearly_difference(pl.col("maf_base_before"), pl.col("maf_base"), pl.col("maf_deductible"),
                                        pl.col("maf_rate_bp"))))
    df = df.with_columns(raw.alias("maf_raw"), pl.col("maf_cap").fill_null(NO_CAP))
    df = df.with_columns(capped_payment(pl.col("maf_raw"), pl.col("maf_cap"), pl.col("carried_maf_paid"), PERSON_YEAR)
                         .alias("maf_pay"))
    df = df.with_columns((pl.col("carried_maf_paid") + pl.col("maf_pay").cum_sum().over(PERSON_YEAR)
                          - pl.col("maf_pay")).alias("maf_paid_before"))

    # ---- tilt assistance
    in_prov_only = lookup(df.select("setl_date", elig.alias("__e")), policies, f"{TOPIC}.tilt_in_province_only",
                          "__ipo", convert=bool, dtype=pl.Boolean, need=pl.col("__e"), used=used)["__ipo"]
    df = df.with_columns(in_prov_only.fill_null(True).alias("__in_prov_only"))
    df = df.with_columns(
        (elig & (pl.col("in_province") | ~pl.col("__in_prov_only"))).alias("tilt_eligible"),
        pl.when(pl.col("in_city")).then(pl.lit(IN_CITY)).otherwise(pl.lit(OUT_OF_CITY_IN_PROVINCE))
        .alias("tilt_location"),
    )
    telig = pl.col("tilt_eligible")
    tneed = telig & ~rev
    tbase_now = pl.max_horizontal(pl.col("inscp_scp_amt") - pl.col("hifp_pay") - pl.col("hifmi_pay")
                                  - pl.col("maf_pay") - _excluded(df), 0)
    tbase_rev = pl.min_horizontal(_rev(df, "inscp_scp_amt") - _rev(df, "hifp_pay") - _rev(df, "hifmi_pay")
                                  - _rev(df, "maf_pay") - _excluded(df, "rev_"), 0)
    df = df.with_columns(pl.when(~telig).then(0).when(rev).then(tbase_rev).otherwise(tbase_now).alias("tilt_base"))
    df = lookup(df, policies, f"{TOPIC}.tilt_threshold", "tilt_threshold",
                key=pl.concat_str([cls, pl.lit("/"), pl.col("tilt_location")]),
                flatten=lambda v: {f"{c}/{loc}": t for c, by_loc in v.items() for loc, t in (by_loc or {}).items()},
                convert=yuan_to_fen, need=tneed, used=used)
    df = lookup(df, policies, f"{TOPIC}.tilt_rate", "tilt_rate_bp", key=pl.col("tilt_location"), convert=rate,
                need=tneed, used=used)
    df = lookup(df, policies, f"{TOPIC}.tilt_annual_cap", "tilt_cap", key=cls, convert=_money_or_none,
                need=tneed, used=used)
    below = deductible_part(pl.col("tilt_base"), pl.col("tilt_threshold").fill_null(0), pl.col("carried_tilt_base"),
                            PERSON_YEAR)
    df = df.with_columns(
        (pl.col("carried_tilt_base") + pl.col("tilt_base").cum_sum().over(PERSON_YEAR) - pl.col("tilt_base"))
        .alias("tilt_base_before"),
        pl.when(tneed).then(pl.col("tilt_base") - below).otherwise(0).alias("tilt_above"),
    )
    traw = (pl.when(~telig).then(0).when(rev).then(_rev(df, "maf_tilt_pay"))
            .otherwise(yearly_difference(pl.col("tilt_base_before"), pl.col("tilt_base"), pl.col("tilt_threshold"),
                                         pl.col("tilt_rate_bp"))))
    df = df.with_columns(traw.alias("tilt_raw"), pl.col("tilt_cap").fill_null(NO_CAP))
    df = df.with_columns(capped_payment(pl.col("tilt_raw"), pl.col("tilt_cap"), pl.col("carried_tilt_paid"),
                                        PERSON_YEAR).alias("maf_tilt_pay"))
    df = df.with_columns((pl.col("carried_tilt_paid") + pl.col("maf_tilt_pay").cum_sum().over(PERSON_YEAR)
                          - pl.col("maf_tilt_pay")).alias("tilt_paid_before"))

    return _pay_after_treatment(df.drop("__proper_offsite", "__in_prov_only"), policies, used)


def _pay_after_treatment(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """§3.9 先诊疗后付费: stays of rural low-income persons (A-9) in their county waive the deposit."""
    stay_here = pl.col("ledger").is_in(list(STAY_LEDGERS)) & pl.col("in_county") & ~pl.col("is_reversal")
    low_income = in_list_on_date(df, policies, REGION, SCHEME, "identities.rural_low_income_identities", used,
                                 "identities", need=stay_here)
    df = df.with_columns(low_income.alias("__low_income"))
    flags = df.select("setl_date", (stay_here & pl.col("__low_income")).alias("__n"))
    requires_rural = lookup(flags, policies, "identities.rural_low_income_requires_rural", "__rr", convert=bool,
                            dtype=pl.Boolean, need=pl.col("__n"), used=used)["__rr"]
    switch = lookup(flags, policies, f"{TOPIC}.pay_after_treatment", "__pat", convert=bool, dtype=pl.Boolean,
                    need=pl.col("__n"), used=used)["__pat"]
    df = df.with_columns(requires_rural.fill_null(True).alias("__rr"), switch.fill_null(False).alias("__pat"))
    waived = stay_here & pl.col("__low_income") & (pl.col("rural") | ~pl.col("__rr")) & pl.col("__pat")
    return df.with_columns(waived.alias("deposit_waived")).drop("__low_income", "__rr", "__pat")


def _reasons() -> list[pl.Expr]:
    seen = pl.col("maf_seen") & ~pl.col("is_reversal")
    elig = pl.col("maf_eligible") & ~pl.col("is_reversal")
    has_class = pl.col("maf_class").is_not_null()
    telig = pl.col("tilt_eligible") & ~pl.col("is_reversal")
    ok_line = pl.col("handled") & ~pl.col("held_for_review").fill_null(False)
    return [
        pl.when(pl.col("maf_eligible")).then(pl.lit(CLASS_CODE) + pl.col("maf_class").cast(pl.String))
        .otherwise(pl.lit(None, pl.String)),
        code_if(seen & ~has_class, "NO_ASSISTANCE_IDENTITY"),
        code_if(seen & has_class & ~pl.col("maf_ledger_covered"), "MAF_NOT_COVERED"),
        code_if(seen & has_class & pl.col("maf_ledger_covered") & ok_line & ~pl.col("maf_proper_care"),
                "OFFSITE_903_NO_ASSISTANCE"),
        code_if(elig & (pl.col("maf_base") == 0), "MAF_NO_SELF_PAY"),
        code_if(elig & (pl.col("maf_base") > 0) & (pl.col("maf_after_deductible") == 0), "MAF_BELOW_DEDUCTIBLE"),
        code_if(elig & (pl.col("maf_raw") > 0) & (pl.col("maf_pay") == 0), "MAF_CAP_REACHED"),
        code_if(elig & (pl.col("maf_pay") > 0) & (pl.col("maf_pay") < pl.col("maf_raw")), "MAF_CAP_PARTLY"),
        code_if(elig & ~pl.col("tilt_eligible"), "TILT_NOT_IN_PROVINCE"),
        code_if(telig & (pl.col("tilt_base") == 0), "TILT_NO_SELF_PAY"),
        code_if(telig & (pl.col("tilt_base") > 0) & (pl.col("tilt_above") == 0), "TILT_BELOW_THRESHOLD"),
        code_if(telig & (pl.col("tilt_raw") > 0) & (pl.col("maf_tilt_pay") == 0), "TILT_CAP_REACHED"),
        code_if(telig & (pl.col("maf_tilt_pay") > 0) & (pl.col("maf_tilt_pay") < pl.col("tilt_raw")),
                "TILT_CAP_PARTLY"),
        code_if(pl.col("deposit_waived"), "PAY_AFTER_TREATMENT"),
    ]


def _cap_text(cap: pl.Expr) -> pl.Expr:
    return pl.when(cap >= NO_CAP).then(pl.lit("none")).otherwise(fen_text(cap))


def _left_text(cap: pl.Expr, paid_before: pl.Expr, pay: pl.Expr) -> pl.Expr:
    y = fen_text
    return pl.when(cap >= NO_CAP).then(pl.lit("no cap")).otherwise(pl.concat_str([
        pl.lit("cap "), y(cap), pl.lit(" left before "), y(cap - paid_before), pl.lit(", after "),
        y(cap - paid_before - pay)]))


def _explain() -> list[pl.Expr]:
    y = fen_text
    elig = pl.col("maf_eligible") & ~pl.col("is_reversal")
    telig = pl.col("tilt_eligible") & ~pl.col("is_reversal")
    return [
        when_text(elig, "assistance class ", pl.col("maf_class").cast(pl.String), ": base ", y(pl.col("maf_base")),
                  " = in scope − basic fund − critical illness; accumulated ", y(pl.col("maf_base_before")), " → ",
                  y(pl.col("maf_base_before") + pl.col("maf_base")), "; annual deductible ",
                  y(pl.col("maf_deductible")), ", taken ", y(pl.col("maf_deductible_taken")), "; ",
                  bp_text(pl.col("maf_rate_bp")), " × ", y(pl.col("maf_after_deductible")),
                  " as round(F(after)) − round(F(before)) = ", y(pl.col("maf_raw")), "; ", _left_text(pl.col("maf_cap"), pl.col("maf_paid_before"),
                                                         pl.col("maf_pay")),
                  "; assistance paid ", y(pl.col("maf_pay"))),
        when_text(telig, "tilt assistance (", pl.when(pl.col("tilt_location") == IN_CITY).then(pl.lit("in Suizhou"))
                  .otherwise(pl.lit("elsewhere in Hubei")), "): self-pay left ", y(pl.col("tilt_base")),
                  ", accumulated ", y(pl.col("tilt_base_before")), " → ",
                  y(pl.col("tilt_base_before") + pl.col("tilt_base")), ", threshold ", y(pl.col("tilt_threshold")),
                  ", above it ", y(pl.col("tilt_above")), "; ", bp_text(pl.col("tilt_rate_bp")),
                  " as round(F(after)) − round(F(before)) = ", y(pl.col("tilt_raw")), "; ", _left_text(pl.col("tilt_cap"), pl.col("tilt_paid_before"),
                                                          pl.col("maf_tilt_pay")),
                  "; tilt paid ", y(pl.col("maf_tilt_pay"))),
        when_text(pl.col("is_reversal") & pl.col("maf_eligible"), "assistance of the original (class ",
                  pl.col("maf_class").cast(pl.String), ") taken back: base ", y(pl.col("maf_base")), ", tilt base ",
                  y(pl.col("tilt_base"))),
        when_text(pl.col("deposit_waived"), "pay after treatment: rural low-income person in their county, "
                  "deposit waived (only the deductible at admission)"),
    ]


STAGE = Stage(
    name="medical assistance (§3.9)",
    run=adjudicate_assistance,
    accumulators={"maf_base": "maf_base", "maf_paid": "maf_pay", "tilt_base": "tilt_base",
                  "tilt_paid": "maf_tilt_pay"},
    defaults={"maf_seen": pl.Boolean, "maf_class": pl.Int64, "maf_ledger_covered": pl.Boolean,
              "maf_proper_care": pl.Boolean, "maf_eligible": pl.Boolean, "maf_base_before": pl.Int64,
              "maf_deductible": pl.Int64, "maf_deductible_taken": pl.Int64, "maf_after_deductible": pl.Int64,
              "maf_rate_bp": pl.Int64, "maf_raw": pl.Int64, "maf_cap": pl.Int64, "maf_paid_before": pl.Int64,
              "tilt_eligible": pl.Boolean, "tilt_location": pl.String, "tilt_base_before": pl.Int64,
              "tilt_threshold": pl.Int64, "tilt_above": pl.Int64, "tilt_rate_bp": pl.Int64, "tilt_raw": pl.Int64,
              "tilt_cap": pl.Int64, "tilt_paid_before": pl.Int64, "deposit_waived": pl.Boolean},
    reasons=_reasons,
    explain=_explain,
)
