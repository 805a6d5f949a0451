"""Attach to each accepted line what the rules need to know about it (pure polars).

Region and scheme come from the person (insuplc_admdvs, insutype); where the care happened
(in county / city / province, POLICY §1.9) from the institution's admdvs; identities valid
on the settlement date (POLICY §1.6); the ledger from med_type (DATA.md §2).
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.frames import join_left
from transforms.params import in_dated_list

# Pooling regions by the first four digits of a county code (DATA.md §3).
REGION_BY_CITY = {"4213": "suizhou", "4206": "xiangyang"}
SCHEME_BY_INSUTYPE = {"310": "employee", "390": "resident"}

STAY_LEDGERS = ("inpatient", "maternity", "day_surgery")
# §3.4 A-25: the ledger of a certification kind (DATA.md §3), where a pharmacy purchase claimed under it goes
CERT_LEDGER = {"hypertension": "two_disease", "diabetes": "two_disease", "chronic": "chronic", "special": "chronic",
               "special_transplant": "chronic", "special_dialysis": "chronic", "special_mental": "chronic",
               "special_drug": "special_drug"}
PHARMACY_CERT_LEDGERS = "outpatient_pool.pharmacy_certification_ledgers"  # the parameter of A-25, per scheme


def ledger_expr() -> pl.Expr:
    """DATA.md §4 ledger of a line, from med_type (and rescue flag, certification kind)."""
    mt = pl.col("med_type")
    rescue = pl.col("is_emergency_rescue").fill_null(False)
    return (
        # §3.5, §1.12: a rescue, or an emergency visit settled after its stay's settling line, is a stay
        pl.when(mt.is_in(["21", "22", "24"]) | ((mt == "13") & (rescue | pl.col("merged_into_stay"))))
        .then(pl.lit("inpatient"))
        .when(mt == "52").then(pl.lit("maternity"))
        .when(mt == "28").then(pl.lit("day_surgery"))
        .when(mt == "9901").then(pl.lit("two_disease"))
        .when(mt.is_in(["14", "140104", "140201"]) & (pl.col("cert_kind") == "special_drug"))
        .then(pl.lit("special_drug"))
        .when(mt.is_in(["14", "140104", "140201"])).then(pl.lit("chronic"))
        .when((mt == "41") & (pl.col("cert_kind") == "special_drug")).then(pl.lit("special_drug"))
        .when(mt == "41").then(pl.lit("pharmacy"))
        .otherwise(pl.lit("outpatient_pool"))  # 11, 13 (not a rescue), 51
    )


def pharmacy_on_certification(out: pl.DataFrame, policies: Policies, used: set | None) -> pl.DataFrame:
    """§3.4 A-25: a pharmacy purchase (41) claimed under a certification valid on the date is adjudicated on that
    certification's ledger (CERT_LEDGER) when its scheme has the ledger — the list
    `outpatient_pool.pharmacy_certification_ledgers` of the line's region and scheme on its date; otherwise it
    follows the pharmacy rules of its scheme (ledger pharmacy)."""
    claimed = (pl.col("med_type") == "41") & pl.col("cert_kind").is_not_null() & pl.col("region").is_not_null()
    sub = (out.with_row_index("__row").filter(claimed)
           .select("__row", "region", "scheme", "setl_date",
                   pl.col("cert_kind").replace_strict(CERT_LEDGER, default=None).alias("__cert_ledger")))
    if sub.height == 0:
        return out
    hit = pl.Series("hit", [False] * sub.height, dtype=pl.Boolean)
    for region, scheme in sub.select("region", "scheme").unique().drop_nulls().iter_rows():
        mine = (sub["region"] == region) & (sub["scheme"] == scheme)
        listed = in_dated_list(sub, policies, region, scheme, PHARMACY_CERT_LEDGERS, "__cert_ledger",
                               need=pl.lit(mine), used=used)
        hit = hit | (mine & listed)
    ledger = sub["__cert_ledger"].zip_with(hit, pl.Series("ledger", ["pharmacy"] * sub.height, dtype=pl.String))
    return out.with_columns(out["ledger"].scatter(sub["__row"], ledger))


def enrich(lines: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies | None = None,
           used: set | None = None) -> pl.DataFrame:
    """The enriched lines; with `policies`, pharmacy purchases under a certification take its ledger (A-25)."""
    persons = registers["persons"].select(
        "psn_no",
        pl.col("insutype").alias("psn_insutype"),
        "insuplc_admdvs",
        pl.col("rural").fill_null(False).alias("rural"),
    )
    inst = registers["institutions"].select(
        "fixmedins_code",
        "fixmedins_type",
        pl.col("dedc_hosp_lv").cast(pl.String).alias("hosp_lv"),
        "facility",
        pl.col("admdvs").alias("inst_admdvs"),
        pl.col("offsite_outpatient_enabled").fill_null(False).alias("offsite_outpatient_enabled"),
    )
    presc = registers["institutions"].select(
        pl.col("fixmedins_code").alias("presc_fixmedins_code"),
        pl.col("dedc_hosp_lv").cast(pl.String).alias("presc_hosp_lv"),
    )
    certs = registers["certifications"].select(
        "psn_no", "dise_cert_code", pl.col("kind").alias("cert_kind"),
        pl.col("dise_codg").alias("cert_dise_codg"),
        pl.col("begndate").alias("cert_begndate"), pl.col("enddate").alias("cert_enddate"),
    )
    out = (
        lines.with_columns(
            pl.col("setl_time").dt.date().alias("setl_date"),
            pl.col("setl_time").dt.year().cast(pl.Int32).alias("year"),
            pl.col("is_emergency_rescue").fill_null(False),
        )
        .join(persons, on="psn_no", how="left")
        .join(inst, on="fixmedins_code", how="left")
        .join(presc, on="presc_fixmedins_code", how="left")
    )
    # The certification the line is claimed under, valid on the date (validation guarantees one exists).
    claimed = (
        out.select("setl_id", "psn_no", "dise_cert_code", "setl_date")
        .filter(pl.col("dise_cert_code").is_not_null())
        .join(certs, on=["psn_no", "dise_cert_code"], how="inner")
        .filter((pl.col("cert_begndate") <= pl.col("setl_date"))
                & (pl.col("cert_enddate").is_null() | (pl.col("setl_date") <= pl.col("cert_enddate"))))
        .group_by("setl_id").agg(pl.col("cert_kind").first(), pl.col("cert_dise_codg").first())
    )
    out = join_left(out, claimed, "setl_id")
    out = out.with_columns(
        pl.col("insuplc_admdvs").str.slice(0, 4).replace_strict(REGION_BY_CITY, default=None).alias("region"),
        pl.col("insutype").replace_strict(SCHEME_BY_INSUTYPE, default=None).alias("scheme"),
        (pl.col("inst_admdvs") == pl.col("insuplc_admdvs")).alias("in_county"),
        (pl.col("inst_admdvs").str.slice(0, 4) == pl.col("insuplc_admdvs").str.slice(0, 4)).alias("in_city"),
        (pl.col("inst_admdvs").str.slice(0, 2) == pl.col("insuplc_admdvs").str.slice(0, 2)).alias("in_province"),
    )
    # §1.12: an emergency visit (13) settled after its stay's settling line is a line of that stay
    # (transforms/merged_stays.py marks it `after_stay_line`; one settled before it is outpatient care at its time)
    after = pl.col("after_stay_line").fill_null(False) if "after_stay_line" in out.columns else pl.lit(False)
    out = out.with_columns(((pl.col("med_type") == "13") & after).alias("merged_into_stay"))
    out = out.with_columns(ledger_expr().alias("ledger"))
    if policies is not None:
        out = pharmacy_on_certification(out, policies, used)
    # POLICY §1.9: an out-of-city line without offsite_type is 101 when it is an emergency, else 903.
    emergency = (pl.col("med_type") == "24") | pl.col("is_emergency_rescue") | pl.col("merged_into_stay")
    out = out.with_columns(
        pl.when(pl.col("in_city")).then(pl.lit(None, pl.String))
        .when(pl.col("offsite_type").is_not_null()).then(pl.col("offsite_type"))
        .when(emergency).then(pl.lit("101"))
        .otherwise(pl.lit("903")).alias("offsite_type_eff")
    )
    return out.with_columns(identities_on_date(out, registers["identities"]),
                            certifications_on_date(out, registers["certifications"]))


def certifications_on_date(lines: pl.DataFrame, certifications: pl.DataFrame) -> pl.Series:
    """The person's certifications valid on each line's settlement date (POLICY §1.6), as a list of
    {dise_cert_code, kind, dise_codg} (null when none): the engine twin of the reference's `ctx.certs`.
    Used by §3.4 (does a special drug belong to a certified special disease of the person)."""
    valid = (
        lines.select("setl_id", "psn_no", "setl_date")
        .join(certifications.select("psn_no", "dise_cert_code", "kind", "dise_codg", "begndate", "enddate"),
              on="psn_no", how="inner")
        .filter((pl.col("begndate") <= pl.col("setl_date"))
                & (pl.col("enddate").is_null() | (pl.col("setl_date") <= pl.col("enddate"))))
        .group_by("setl_id").agg(pl.struct("dise_cert_code", "kind", "dise_codg").alias("certs_on_date"))
    )
    got = lines.select("setl_id").join(valid, on="setl_id", how="left", maintain_order="left")
    return got["certs_on_date"]


def identities_on_date(lines: pl.DataFrame, identities: pl.DataFrame) -> pl.Series:
    """The person's identities valid on each line's settlement date, as a sorted list (POLICY §1.6)."""
    valid = (
        lines.select("setl_id", "psn_no", "setl_date")
        .join(identities.select("psn_no", "identity", "begndate", "enddate"), on="psn_no", how="inner")
        .filter((pl.col("begndate") <= pl.col("setl_date"))
                & (pl.col("enddate").is_null() | (pl.col("setl_date") <= pl.col("enddate"))))
        .group_by("setl_id").agg(pl.col("identity").unique().sort())
    )
    ids = lines.select("setl_id").join(valid, on="setl_id", how="left", maintain_order="left")["identity"]
    return ids.fill_null(pl.lit([], pl.List(pl.String))).alias("identities")
