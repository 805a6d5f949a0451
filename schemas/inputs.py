"""pandera.polars models of the input frames (DATA.md §1–§3) and the rejects frame.

One model per frame, and they are the single source of truth for the input columns:
`transforms/validate.py` reads each model's fields (dtype, `nullable`, `isin` codes and the
`metadata` below) to parse the text read by `flows/ingest.py`, and validates every typed frame
it returns against its model, eagerly (STACK-NOTES: a LazyFrame is only checked for names/dtypes).

Field metadata:
- `kind`: how the input text is parsed — `text`, `code` (an `isin` dictionary), `digits6`
  (a county code), `certno` (18-character resident ID with a valid checksum), `date`
  (`YYYY-MM-DD`), `datetime` (`YYYY-MM-DD HH:MM:SS`), `money` (yuan text → Int64 fen), `bool`.
- `input`: `required` — the column must be in the file header (InputFileError otherwise);
  `optional` — the file may leave it out (read as all empty). Fields without `input`
  (`source_file`, `source_row`, `month`) are added by the pipeline.
- `default`: the typed value of an empty cell (booleans: empty = false).
A non-nullable field with no default is "required" in the DATA.md sense: an empty cell is
MISSING_REQUIRED (settlements) or a register error.
"""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from transforms.accumulator_names import KEYED_PREFIXES, PLAIN_NAMES
from transforms.reasons import REJECT_REASONS

# ---------------------------------------------------------------- dictionaries (DATA.md §2–§3)
INSUTYPES = ("310", "390")  # 310 employee basic, 390 resident basic
MED_TYPES = ("11", "13", "14", "140104", "140201", "9901", "21", "22", "24", "28", "41", "51", "52")
OFFSITE_TYPES = ("101", "903")
# POLICY §1.8 / §3.3 / §4.4: which med_types have a rule in which scheme. Two-disease (9901)
# is a resident benefit only; every other care type exists in both schemes.
MED_TYPE_RULES: dict[str, frozenset[str]] = {
    "390": frozenset(MED_TYPES),
    "310": frozenset(MED_TYPES) - {"9901"},
}
GENDERS = ("1", "2")
IDENTITIES = (
    "tekun", "orphan", "dibao", "fanpin",  # S1
    "dibao_edge", "monitor_unstable", "monitor_edge", "monitor_sudden", "illness_poor", "other_hardship",  # S2
    "disabled", "mental", "family_planning", "poverty_exit", "veteran",  # S3
)
PSN_TYPES = ("11", "12")  # in service, retired
CONTRIB_MODES = ("combined", "pooling_only")
RETIRE_KINDS = ("normal", "backpay_pooling_only", "backpay_mixed", "contributing")
BENEFITS = ("normal", "suspended", "arrears", "unverified", "terminated")
CERT_KINDS = (
    "hypertension", "diabetes", "chronic", "special", "special_transplant", "special_dialysis",
    "special_mental", "special_drug",
)
INSTITUTION_TYPES = ("hospital", "pharmacy")
HOSP_LEVELS = ("1", "2", "3")
FACILITIES = ("village_clinic", "township", "hospital", "pharmacy")
RELATIONS = ("spouse", "parent", "child")  # POLICY §4.5; others are rejected bindings
MAX_LIVE_USERS = 6  # POLICY §4.5: at most 6 users per authoriser

MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"

Datetime = Annotated[pl.Datetime, "us", None]

REGISTER_NAMES = (
    "persons", "identities", "employment", "certifications", "institutions", "family_bindings",
    "account_balances", "opening_accumulators",
)
OPTIONAL_REGISTERS = frozenset({"account_balances", "opening_accumulators"})

_MONEY = ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt")
SETTLEMENT_AMOUNTS = _MONEY  # the amounts a reversal negates and the identity adds up
REPORTED_AMOUNTS = ("hifp_pay", "hifmi_pay", "maf_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay")


def _m(kind: str, input: str | None = "required", **extra) -> dict:
    meta = {"kind": kind, **extra}
    if input is not None:
        meta["input"] = input
    return meta


def certno_valid(expr: pl.Expr) -> pl.Expr:
    """GB 11643 checksum of an 18-character resident ID (17 digits + digit or X), vectorized."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    s = expr.str.to_uppercase()
    shape = s.str.contains(r"^[0-9]{17}[0-9X]$")
    total = pl.sum_horizontal(
        [s.str.slice(i, 1).cast(pl.Int64, strict=False) * w for i, w in enumerate(weights)]
    )
    check = (total % 11).replace_strict(
        list(range(11)), list("10X98765432"), return_dtype=pl.String, default=None
    )
    return (shape & (check == s.str.slice(17, 1))).fill_null(False)


def _end_not_before_begin(data: PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        (pl.col("enddate").is_null() | pl.col("begndate").is_null() | (pl.col("enddate") >= pl.col("begndate")))
        .alias("ok")
    )


# ---------------------------------------------------------------- settlements (DATA.md §2)
class RawSettlementModel(pa.DataFrameModel):
    """Concatenated `read_table` output of one month: every input column is text (or null).

    Required columns must exist; optional ones may be absent (validate adds them as empty);
    unknown extra columns are allowed and ignored.
    """

    setl_id: str = pa.Field(nullable=True)
    mdtrt_id: str = pa.Field(nullable=True)
    psn_no: str = pa.Field(nullable=True)
    insutype: str = pa.Field(nullable=True)
    med_type: str = pa.Field(nullable=True)
    fixmedins_code: str = pa.Field(nullable=True)
    begndate: str | None = pa.Field(nullable=True)
    enddate: str | None = pa.Field(nullable=True)
    setl_time: str = pa.Field(nullable=True)
    dise_codg: str | None = pa.Field(nullable=True)
    dise_cert_code: str | None = pa.Field(nullable=True)
    offsite_type: str | None = pa.Field(nullable=True)
    presc_fixmedins_code: str | None = pa.Field(nullable=True)
    trauma_report_no: str | None = pa.Field(nullable=True)
    is_emergency_rescue: str | None = pa.Field(nullable=True)
    medfee_sumamt: str = pa.Field(nullable=True)
    fulamt_ownpay_amt: str = pa.Field(nullable=True)
    overlmt_selfpay: str = pa.Field(nullable=True)
    cls_a_amt: str = pa.Field(nullable=True)
    cls_b_amt: str = pa.Field(nullable=True)
    orig_setl_id: str | None = pa.Field(nullable=True)
    hifp_pay: str | None = pa.Field(nullable=True)
    hifmi_pay: str | None = pa.Field(nullable=True)
    maf_pay: str | None = pa.Field(nullable=True)
    acct_pay: str | None = pa.Field(nullable=True)
    acct_mulaid_pay: str | None = pa.Field(nullable=True)
    psn_cash_pay: str | None = pa.Field(nullable=True)
    source_file: str = pa.Field(nullable=False)
    source_row: pl.Int64 = pa.Field(nullable=False, ge=1)

    class Config:
        name = "raw_settlements"
        strict = False


class SettlementModel(pa.DataFrameModel):
    """The typed settlement frame (CONVENTIONS.md): output of validation, input of adjudication."""

    setl_id: str = pa.Field(nullable=False, unique=True, metadata=_m("text"))
    mdtrt_id: str = pa.Field(nullable=False, metadata=_m("text"))
    psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    insutype: str = pa.Field(nullable=False, isin=INSUTYPES, metadata=_m("code"))
    med_type: str = pa.Field(nullable=False, isin=MED_TYPES, metadata=_m("code"))
    fixmedins_code: str = pa.Field(nullable=False, metadata=_m("text"))
    begndate: pl.Date = pa.Field(nullable=True, metadata=_m("date", "optional"))
    enddate: pl.Date = pa.Field(nullable=True, metadata=_m("date", "optional"))
    setl_time: Datetime = pa.Field(nullable=False, metadata=_m("datetime"))
    dise_codg: str = pa.Field(nullable=True, metadata=_m("text", "optional"))
    dise_cert_code: str = pa.Field(nullable=True, metadata=_m("text", "optional"))
    offsite_type: str = pa.Field(nullable=True, isin=OFFSITE_TYPES, metadata=_m("code", "optional"))
    presc_fixmedins_code: str = pa.Field(nullable=True, metadata=_m("text", "optional"))
    trauma_report_no: str = pa.Field(nullable=True, metadata=_m("text", "optional"))
    is_emergency_rescue: pl.Boolean = pa.Field(nullable=False, metadata=_m("bool", "optional", default=False))
    medfee_sumamt: pl.Int64 = pa.Field(nullable=False, metadata=_m("money"))
    fulamt_ownpay_amt: pl.Int64 = pa.Field(nullable=False, metadata=_m("money"))
    overlmt_selfpay: pl.Int64 = pa.Field(nullable=False, metadata=_m("money"))
    cls_a_amt: pl.Int64 = pa.Field(nullable=False, metadata=_m("money"))
    cls_b_amt: pl.Int64 = pa.Field(nullable=False, metadata=_m("money"))
    orig_setl_id: str = pa.Field(nullable=True, metadata=_m("text", "optional"))
    hifp_pay: pl.Int64 = pa.Field(nullable=True, metadata=_m("money", "optional"))
    hifmi_pay: pl.Int64 = pa.Field(nullable=True, metadata=_m("money", "optional"))
    maf_pay: pl.Int64 = pa.Field(nullable=True, metadata=_m("money", "optional"))
    acct_pay: pl.Int64 = pa.Field(nullable=True, metadata=_m("money", "optional"))
    acct_mulaid_pay: pl.Int64 = pa.Field(nullable=True, metadata=_m("money", "optional"))
    psn_cash_pay: pl.Int64 = pa.Field(nullable=True, metadata=_m("money", "optional"))
    source_file: str = pa.Field(nullable=False)
    source_row: pl.Int64 = pa.Field(nullable=False, ge=1)
    month: str = pa.Field(nullable=False, str_matches=MONTH_PATTERN)

    class Config:
        name = "settlements"
        strict = False

    @pa.dataframe_check
    def amounts_add_up(cls, data: PolarsData) -> pl.LazyFrame:
        """medfee_sumamt = cls_a_amt + cls_b_amt + fulamt_ownpay_amt + overlmt_selfpay (DATA.md §2)."""
        return data.lazyframe.select(
            (pl.col("medfee_sumamt") == pl.sum_horizontal(_MONEY[1:])).alias("ok")
        )

    @pa.dataframe_check
    def negative_only_on_reversals(cls, data: PolarsData) -> pl.LazyFrame:
        nonneg = pl.all_horizontal([pl.col(c).fill_null(0) >= 0 for c in _MONEY + REPORTED_AMOUNTS])
        return data.lazyframe.select((pl.col("orig_setl_id").is_not_null() | nonneg).alias("ok"))

    @pa.dataframe_check
    def setl_time_in_month(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("setl_time").dt.strftime("%Y-%m") == pl.col("month")).alias("ok"))

    @pa.dataframe_check
    def med_type_has_rule(cls, data: PolarsData) -> pl.LazyFrame:
        ok = pl.lit(False)
        for insutype, med_types in MED_TYPE_RULES.items():
            ok = ok | ((pl.col("insutype") == insutype) & pl.col("med_type").is_in(sorted(med_types)))
        return data.lazyframe.select(ok.alias("ok"))


class RejectModel(pa.DataFrameModel):
    """One row per rejected input line (DATA.md §4 `rejects`)."""

    source_file: str = pa.Field(nullable=False)
    source_row: pl.Int64 = pa.Field(nullable=False, ge=1)
    setl_id: str = pa.Field(nullable=True)
    reason_code: str = pa.Field(nullable=False, isin=list(REJECT_REASONS))
    reason: str = pa.Field(nullable=False)
    raw: str = pa.Field(nullable=False)

    class Config:
        name = "rejects"
        strict = True
        ordered = True


# ---------------------------------------------------------------- registers (DATA.md §3)
class PersonModel(pa.DataFrameModel):
    psn_no: str = pa.Field(nullable=False, unique=True, metadata=_m("text"))
    certno: str = pa.Field(nullable=False, unique=True, metadata=_m("certno"))
    psn_name: str = pa.Field(nullable=True, metadata=_m("text"))
    gend: str = pa.Field(nullable=False, isin=GENDERS, metadata=_m("code"))
    brdy: pl.Date = pa.Field(nullable=False, metadata=_m("date"))
    insutype: str = pa.Field(nullable=False, isin=INSUTYPES, metadata=_m("code"))
    insuplc_admdvs: str = pa.Field(nullable=False, str_matches=r"^[0-9]{6}$", metadata=_m("digits6"))
    rural: pl.Boolean = pa.Field(nullable=False, metadata=_m("bool", default=False))
    enrol_date: pl.Date = pa.Field(nullable=True, metadata=_m("date"))

    class Config:
        name = "persons"
        strict = False

    @pa.check("certno", name="certno_checksum")
    def certno_checksum(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(certno_valid(pl.col(data.key)))


class IdentityModel(pa.DataFrameModel):
    psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    identity: str = pa.Field(nullable=False, isin=IDENTITIES, metadata=_m("code"))
    begndate: pl.Date = pa.Field(nullable=False, metadata=_m("date"))
    enddate: pl.Date = pa.Field(nullable=True, metadata=_m("date"))

    class Config:
        name = "identities"
        strict = False

    @pa.dataframe_check(name="enddate >= begndate")
    def period(cls, data: PolarsData) -> pl.LazyFrame:
        return _end_not_before_begin(data)


class EmploymentModel(pa.DataFrameModel):
    psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    psn_type: str = pa.Field(nullable=False, isin=PSN_TYPES, metadata=_m("code"))
    flexible: pl.Boolean = pa.Field(nullable=False, metadata=_m("bool", default=False))
    contrib_mode: str = pa.Field(nullable=True, isin=CONTRIB_MODES, metadata=_m("code"))
    contrib_base: pl.Int64 = pa.Field(nullable=True, ge=0, metadata=_m("money"))
    retire_kind: str = pa.Field(nullable=True, isin=RETIRE_KINDS, metadata=_m("code"))
    benefit: str = pa.Field(nullable=False, isin=BENEFITS, metadata=_m("code"))
    begndate: pl.Date = pa.Field(nullable=False, metadata=_m("date"))
    enddate: pl.Date = pa.Field(nullable=True, metadata=_m("date"))

    class Config:
        name = "employment"
        strict = False

    @pa.dataframe_check(name="enddate >= begndate")
    def period(cls, data: PolarsData) -> pl.LazyFrame:
        return _end_not_before_begin(data)

    @pa.dataframe_check(name="retire_kind is given for retired (12) and only for them")
    def retire_kind_iff_retired(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            ((pl.col("psn_type") == "12") == pl.col("retire_kind").is_not_null()).alias("ok")
        )

    @pa.dataframe_check(name="contrib_mode is given for in-service (11) periods")
    def contrib_mode_in_service(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            ((pl.col("psn_type") != "11") | pl.col("contrib_mode").is_not_null()).alias("ok")
        )


class CertificationModel(pa.DataFrameModel):
    psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    dise_cert_code: str = pa.Field(nullable=False, metadata=_m("text"))
    dise_codg: str = pa.Field(nullable=True, metadata=_m("text"))
    kind: str = pa.Field(nullable=False, isin=CERT_KINDS, metadata=_m("code"))
    begndate: pl.Date = pa.Field(nullable=False, metadata=_m("date"))
    enddate: pl.Date = pa.Field(nullable=True, metadata=_m("date"))

    class Config:
        name = "certifications"
        strict = False

    @pa.dataframe_check(name="enddate >= begndate")
    def period(cls, data: PolarsData) -> pl.LazyFrame:
        return _end_not_before_begin(data)


class InstitutionModel(pa.DataFrameModel):
    fixmedins_code: str = pa.Field(nullable=False, unique=True, metadata=_m("text"))
    fixmedins_name: str = pa.Field(nullable=True, metadata=_m("text"))
    fixmedins_type: str = pa.Field(nullable=False, isin=INSTITUTION_TYPES, metadata=_m("code"))
    dedc_hosp_lv: str = pa.Field(nullable=True, isin=HOSP_LEVELS, metadata=_m("code"))
    facility: str = pa.Field(nullable=False, isin=FACILITIES, metadata=_m("code"))
    admdvs: str = pa.Field(nullable=False, str_matches=r"^[0-9]{6}$", metadata=_m("digits6"))
    offsite_outpatient_enabled: pl.Boolean = pa.Field(nullable=False, metadata=_m("bool", default=False))

    class Config:
        name = "institutions"
        strict = False

    @pa.dataframe_check(name="dedc_hosp_lv is given for hospitals")
    def hospital_level(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            ((pl.col("fixmedins_type") != "hospital") | pl.col("dedc_hosp_lv").is_not_null()).alias("ok")
        )


class FamilyBindingModel(pa.DataFrameModel):
    """Bindings kept (POLICY §4.5). The relation is checked by splitting, not by failing the run."""

    authoriser_psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    user_psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    relation: str = pa.Field(nullable=False, metadata=_m("text"))
    begndate: pl.Date = pa.Field(nullable=False, metadata=_m("date"))
    enddate: pl.Date = pa.Field(nullable=True, metadata=_m("date"))

    class Config:
        name = "family_bindings"
        strict = False

    @pa.dataframe_check(name="enddate >= begndate")
    def period(cls, data: PolarsData) -> pl.LazyFrame:
        return _end_not_before_begin(data)


class KeptFamilyBindingModel(FamilyBindingModel):
    relation: str = pa.Field(nullable=False, isin=RELATIONS, metadata=_m("text"))

    class Config:
        name = "family_bindings"
        strict = False


class RejectedFamilyBindingModel(FamilyBindingModel):
    source_file: str = pa.Field(nullable=False)
    source_row: pl.Int64 = pa.Field(nullable=False, ge=1)
    reason: str = pa.Field(nullable=False)

    class Config:
        name = "family_bindings_rejected"
        strict = False


class AccountBalanceModel(pa.DataFrameModel):
    psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    as_of: pl.Date = pa.Field(nullable=False, metadata=_m("date"))
    balc: pl.Int64 = pa.Field(nullable=False, ge=0, metadata=_m("money"))

    class Config:
        name = "account_balances"
        strict = False
        unique = ["psn_no", "as_of"]


class OpeningAccumulatorModel(pa.DataFrameModel):
    """Year-to-date state for a bureau starting mid-year (期初累计值, DATA.md §3, POLICY §1.13): one row per
    person, year and accumulator, as the run of the month `as_of` ends would have stored it. `name` is one of the
    documented accumulator names (transforms/accumulator_names.py); every one of them is money (yuan)."""
    psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    year: pl.Int32 = pa.Field(nullable=False, metadata=_m("int"))
    name: str = pa.Field(nullable=False, metadata=_m("text"))
    value: pl.Int64 = pa.Field(nullable=False, ge=0, metadata=_m("money"))
    as_of: pl.Date = pa.Field(nullable=False, metadata=_m("date"))

    class Config:
        name = "opening_accumulators"
        strict = False
        unique = ["psn_no", "year", "name"]

    @pa.check("name", name="a documented accumulator name (docs/ACCUMULATORS.md)")
    def known_name(cls, data: PolarsData) -> pl.LazyFrame:
        name = pl.col(data.key)
        prefix = name.str.extract(r"^(\w+):.+$", 1)
        return data.lazyframe.select(name.is_in(sorted(PLAIN_NAMES)) | prefix.is_in(sorted(KEYED_PREFIXES)).fill_null(False))

    @pa.dataframe_check(name="as_of is the last day of a month of `year`")
    def as_of_month_end(cls, data: PolarsData) -> pl.LazyFrame:
        d = pl.col("as_of")
        return data.lazyframe.select(((d.dt.offset_by("1d").dt.day() == 1) & (d.dt.year() == pl.col("year")))
                                     .alias("ok"))


REGISTER_MODELS: dict[str, type[pa.DataFrameModel]] = {
    "persons": PersonModel,
    "identities": IdentityModel,
    "employment": EmploymentModel,
    "certifications": CertificationModel,
    "institutions": InstitutionModel,
    "family_bindings": FamilyBindingModel,
    "account_balances": AccountBalanceModel,
    "opening_accumulators": OpeningAccumulatorModel,
}


# ---------------------------------------------------------------- applications (DATA.md §3, POLICY §3.9)
class ApplicationModel(pa.DataFrameModel):
    app_id: str = pa.Field(nullable=False, unique=True, metadata=_m("text"))
    psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    identity: str = pa.Field(nullable=False, isin=IDENTITIES, metadata=_m("code"))
    confirm_date: pl.Date = pa.Field(nullable=False, metadata=_m("date"))
    source_file: str = pa.Field(nullable=False)
    source_row: pl.Int64 = pa.Field(nullable=False, ge=1)
    month: str = pa.Field(nullable=False, str_matches=MONTH_PATTERN)

    class Config:
        name = "applications"
        strict = False


# ---------------------------------------------------------------- maternity events (docs/MATERNITY_INPUT.md, POLICY §4.6)
MATERNITY_KINDS = ("natural", "caesarean", "miscarriage")


class MaternityEventModel(pa.DataFrameModel):
    """One delivery or miscarriage of an insured Xiangyang employee, in the month folder of its event_date."""

    psn_no: str = pa.Field(nullable=False, metadata=_m("text"))
    event_date: pl.Date = pa.Field(nullable=False, metadata=_m("date"))
    kind: str = pa.Field(nullable=False, isin=MATERNITY_KINDS, metadata=_m("code"))
    babies: pl.Int32 = pa.Field(nullable=True, metadata=_m("int"))
    gestation_months: pl.Int32 = pa.Field(nullable=True, metadata=_m("int"))
    delivery_cost: pl.Int64 = pa.Field(nullable=True, ge=0, metadata=_m("money", "optional"))
    spouse_employee: pl.Boolean = pa.Field(nullable=True, metadata=_m("bool", "optional"))
    source_file: str = pa.Field(nullable=False)
    source_row: pl.Int64 = pa.Field(nullable=False, ge=1)
    month: str = pa.Field(nullable=False, str_matches=MONTH_PATTERN)

    class Config:
        name = "maternity_events"
        strict = False


def input_columns(model: type[pa.DataFrameModel], which: str | None = None) -> list[str]:
    """Input columns of a model in declaration order; `which` = "required"/"optional" filters."""
    out = []
    for name, col in model.to_schema().columns.items():
        io = (col.metadata or {}).get("input")
        if io is not None and (which is None or io == which):
            out.append(name)
    return out


def required_input_columns(kind: str) -> list[str]:
    """Columns a file of this kind must have in its header: `settlements`, `applications`, or a register."""
    if kind == "settlements":
        return input_columns(SettlementModel, "required")
    if kind == "applications":
        return input_columns(ApplicationModel, "required")
    if kind == "maternity_events":
        return input_columns(MaternityEventModel, "required")
    return input_columns(REGISTER_MODELS[kind], "required")
