"""Validation: raw text frames in, typed frames and rejects out (pure polars, no I/O).

`validate_settlements` turns one month of settlement text (the concatenated `read_table`
frames of `flows/ingest.py`) into the typed settlement frame of CONVENTIONS.md and a rejects
frame, one output row per input row (`len(accepted) + len(rejects) == len(raw)`).

How the checks are organised (DATA.md §2, POLICY §1.7–§1.8, §6):
- Field parsing is driven by the pandera models of `schemas/inputs.py`: each model field says
  its kind (date, money, code …), whether it may be empty and its dictionary, so the parser
  and the model cannot drift apart. Every cell is stripped of surrounding whitespace; an empty
  cell is null.
- Each check is a (condition, message) pair of polars expressions (`Problems`). Conditions are
  evaluated on every row into one boolean column per reason code (`flag.<CODE>`); messages are
  built only for rejected rows. `reason_code` is the first flagged code in the order of
  `REJECT_REASONS`; `reason` lists every problem found ("CODE: detail; detail | CODE: detail").
  A check whose inputs could not be read is not evaluated (an unreadable amount is BAD_VALUE,
  never also AMOUNT_MISMATCH; an unknown person is not also SCHEME_MISMATCH).
- Cross-row checks (duplicates, reversals) are joins and sorts, never row loops.
  Duplicates: the first line of a setl_id in (source_file, source_row) order is the original,
  every later one is DUPLICATE_SETL_ID, whatever else is wrong with the first.
  "Earlier in this month" for reversals means earlier in line order (setl_time, setl_id)
  (POLICY §1.2), so results do not depend on how lines were split into files.
- The accepted frame is validated eagerly by `SettlementModel` (a DataFrame, not a LazyFrame:
  STACK-NOTES), the rejects frame by `RejectModel`.

Registers (`type_register`, `unknown_person_rows`, `split_family_bindings`) use the same
parser; a register row that breaks the contract is a reject of its own (POLICY §1.14) and the
rest of the register is used (`flows/ingest.load_registers`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import pandera.errors
import pandera.polars as pa
import polars as pl

from schemas.inputs import (
    INSUTYPES,
    MAX_LIVE_USERS,
    MED_TYPE_RULES,
    REGISTER_MODELS,
    RELATIONS,
    REPORTED_AMOUNTS,
    SETTLEMENT_AMOUNTS,
    ApplicationModel,
    FamilyBindingModel,
    KeptFamilyBindingModel,
    MaternityEventModel,
    RawSettlementModel,
    RejectedFamilyBindingModel,
    RejectModel,
    SettlementModel,
    certno_valid,
)
from transforms.enrich import REGION_BY_CITY
from transforms.reasons import REJECT_REASONS

REASON_ORDER: tuple[str, ...] = tuple(REJECT_REASONS)

IDX = "__i"  # position of the row in the input frame
TYPED = "__t."  # prefix of the typed twin of a text column
FLAG = "flag."  # prefix of the per-reason-code flag column
SOURCE = ("source_file", "source_row")

MONTH_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
# Only ASCII digits: polars' (Rust) and Python's `\d` also match other scripts' digits.
_DATE = r"(19[0-9]{2}|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
DATE_RE = rf"^{_DATE}$"
DATETIME_RE = rf"^{_DATE} ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{{1,6}})?$"
MONEY_RE = r"^(?P<sign>-)?(?P<whole>[0-9]{1,15})(?:\.(?P<frac>[0-9]{1,2}))?$"  # as money.yuan_text_to_fen
DIGITS6_RE = r"^[0-9]{6}$"
CONTROL_RE = r"[\x00-\x1F\x7F]"
TRUE_TEXT = ("true", "t", "1", "yes", "y", "是")
FALSE_TEXT = ("false", "f", "0", "no", "n", "否")
SHOW_CHARS = 40  # a value quoted in a reason is cut to this many characters


@dataclass(frozen=True)
class FieldSpec:
    """One input column, as declared by a pandera model field (see schemas/inputs.py)."""

    name: str
    kind: str
    nullable: bool
    default: object | None
    codes: tuple[str, ...] | None
    input: str

    @property
    def required(self) -> bool:
        return not self.nullable and self.default is None


@cache
def field_specs(model: type[pa.DataFrameModel]) -> tuple[FieldSpec, ...]:
    specs = []
    for name, col in model.to_schema().columns.items():
        meta = col.metadata or {}
        if "input" not in meta:
            continue
        codes = None
        for check in col.checks:
            if check.name == "isin":
                codes = tuple(check.statistics["allowed_values"])
        specs.append(FieldSpec(name, meta["kind"], col.nullable, meta.get("default"), codes, meta["input"]))
    return tuple(specs)


# ---------------------------------------------------------------------------- expression helpers
def _t(name: str) -> pl.Expr:
    return pl.col(TYPED + name)


def show(e: pl.Expr) -> pl.Expr:
    """A text value quoted for a reason: cut to SHOW_CHARS, control characters replaced by '?'."""
    cut = e.str.slice(0, SHOW_CHARS).str.replace_all(CONTROL_RE, "?")
    more = pl.when(e.str.len_chars() > SHOW_CHARS).then(pl.lit("…")).otherwise(pl.lit(""))
    return pl.concat_str([pl.lit("'"), cut, more, pl.lit("'")])


def yuan(e: pl.Expr) -> pl.Expr:
    """Int64 fen rendered as yuan text (-12.30), for reasons."""
    a = e.abs()
    return pl.concat_str([
        pl.when(e < 0).then(pl.lit("-")).otherwise(pl.lit("")),
        (a // 100).cast(pl.String),
        pl.lit("."),
        (a % 100).cast(pl.String).str.pad_start(2, "0"),
    ])


def clean_text(e: pl.Expr) -> pl.Expr:
    s = e.cast(pl.String).str.strip_chars()
    return pl.when(s.str.len_bytes() > 0).then(s)


def money_to_fen(text: pl.Expr) -> pl.Expr:
    """Vectorized `transforms.money.yuan_text_to_fen` on stripped text: null where not an amount."""
    parts = text.str.strip_prefix("-").str.split_exact(".", 1)
    whole = parts.struct.field("field_0").cast(pl.Int64, strict=False)
    frac = parts.struct.field("field_1").fill_null("").str.pad_end(2, "0").cast(pl.Int64, strict=False)
    fen = whole * 100 + frac
    return pl.when(text.str.contains(MONEY_RE)).then(
        pl.when(text.str.starts_with("-")).then(-fen).otherwise(fen))


def _any_messages(msgs: list[pl.Expr], sep: str = "; ") -> pl.Expr:
    """Join non-null messages; null when there is none."""
    if not msgs:
        return pl.lit(None, pl.String)
    if len(msgs) == 1:
        return msgs[0]
    return pl.when(pl.any_horizontal([m.is_not_null() for m in msgs])).then(
        pl.concat_str(msgs, separator=sep, ignore_nulls=True)
    )


class Problems:
    """Row checks by reason code, each a (condition, message) pair of row-local expressions.

    Conditions are evaluated on every row (cheap booleans, `flag.<CODE>` columns); messages are
    built only for the rows that are rejected. Conditions and messages may refer only to columns
    of the working frame (window results are materialised first), so that evaluating them on the
    rejected subset gives the same answer.
    """

    def __init__(self) -> None:
        self.checks: dict[str, list[tuple[pl.Expr, pl.Expr]]] = {c: [] for c in REASON_ORDER}

    def add(self, code: str, cond: pl.Expr, msg: pl.Expr) -> None:
        self.checks[code].append((cond.fill_null(False), msg))

    def flag(self, code: str) -> pl.Expr:
        conds = [c for c, _ in self.checks[code]]
        return (pl.any_horizontal(conds) if conds else pl.lit(False)).alias(FLAG + code)

    def message(self, code: str) -> pl.Expr:
        return _any_messages([pl.when(c).then(m) for c, m in self.checks[code]])


def _typed_expr(spec: FieldSpec, t: pl.Expr) -> pl.Expr:
    k = spec.kind
    if k == "text":
        out = t
    elif k == "code":
        out = pl.when(t.is_in(list(spec.codes or ()))).then(t)
    elif k == "digits6":
        out = pl.when(t.str.contains(DIGITS6_RE)).then(t)
    elif k == "certno":
        out = pl.when(certno_valid(t)).then(t.str.to_uppercase())
    elif k == "date":
        t = spreadsheet_date(t)
        out = pl.when(t.str.contains(DATE_RE)).then(t.str.strptime(pl.Date, "%Y-%m-%d", strict=False))
    elif k == "datetime":
        t = spreadsheet_date(t)
        out = pl.when(t.str.contains(DATETIME_RE)).then(
            t.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S%.f", strict=False)
        )
    elif k == "money":
        out = money_to_fen(t)
    elif k == "int":
        out = pl.when(t.str.contains(r"^[0-9]{1,4}$")).then(t.cast(pl.Int32, strict=False))
    elif k == "bool":
        low = t.str.to_lowercase()
        out = pl.when(low.is_in(TRUE_TEXT)).then(True).when(low.is_in(FALSE_TEXT)).then(False)
        if spec.default is not None:
            out = pl.when(t.is_null()).then(pl.lit(spec.default)).otherwise(out)
    else:  # pragma: no cover - a model declares an unknown kind
        raise ValueError(f"unknown field kind {k!r} for {spec.name}")
    return out


# DATA.md §1: what a spreadsheet writes when it re-saves a CSV — `/` as the separator, months, days and hours
# without their leading zero, a time without seconds (`2025/12/1 9:05`) — read as the ISO form it stands for.
# Only a four-digit year first is read: day-first (`1/12/2025`) and two-digit years (`25/12/1`) are ambiguous
# and stay unreadable (BAD_VALUE with the reason).
SPREADSHEET_DATE_RE = (r"^(?P<y>[0-9]{4})[-/](?P<m>[0-9]{1,2})[-/](?P<d>[0-9]{1,2})"
                       r"(?: (?P<H>[0-9]{1,2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2}(?:\.[0-9]{1,6})?))?)?$")

AMBIGUOUS_DATE_RE = r"^[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{2,4}(?:[ T].*)?$"  # 1/12/2025, 25/12/1, 12-01-25


def spreadsheet_date(t: pl.Expr) -> pl.Expr:
    """`2025/12/1` → `2025-12-01`, `2025/12/1 9:05` → `2025-12-01 09:05:00`; other text unchanged."""
    parts = t.str.extract_groups(SPREADSHEET_DATE_RE)
    pad = [parts.struct.field(f).str.pad_start(2, "0") for f in ("m", "d", "H")]
    date = pl.concat_str([parts.struct.field("y"), pad[0], pad[1]], separator="-")
    time = pl.concat_str([pad[2], parts.struct.field("M"), parts.struct.field("S").fill_null("00")], separator=":")
    iso = pl.when(parts.struct.field("H").is_null()).then(date).otherwise(pl.concat_str([date, time], separator=" "))
    return pl.when(parts.struct.field("y").is_not_null()).then(iso).otherwise(t)


_BAD_VALUE_TEXT = {
    "date": "is not a date YYYY-MM-DD (year 1900 or later)",
    "datetime": "is not a time YYYY-MM-DD HH:MM:SS",
    "money": "is not a yuan amount (plain decimal, at most 2 decimals)",
    "bool": "is not a flag (true/false)",
    "digits6": "is not a 6-digit division code",
    "certno": "is not an 18-character ID number with a valid checksum",
    "int": "is not a whole number (0–9999)",
}


def _add_field_checks(P: Problems, spec: FieldSpec) -> None:
    t, typed, name = pl.col(spec.name), _t(spec.name), pl.lit(spec.name)
    if spec.required:
        P.add("MISSING_REQUIRED", t.is_null(), pl.format("{} is empty", name))
    P.add("BAD_VALUE", t.str.contains(CONTROL_RE), pl.format("{} {} contains control characters", name, show(t)))
    if spec.kind == "code":
        allowed = pl.lit("/".join(spec.codes or ()))
        P.add("BAD_CODE", t.is_not_null() & typed.is_null(), pl.format("{} {} is not one of {}", name, show(t), allowed))
    elif spec.kind in ("date", "datetime"):  # DATA.md §1: an ambiguous form is named as such, never guessed
        ambiguous = t.str.contains(AMBIGUOUS_DATE_RE)
        P.add("BAD_VALUE", t.is_not_null() & typed.is_null() & ~ambiguous,
              pl.format("{} {} " + _BAD_VALUE_TEXT[spec.kind], name, show(t)))
        P.add("BAD_VALUE", t.is_not_null() & typed.is_null() & ambiguous,
              pl.format("{} {} is day-first or has a two-digit year: ambiguous, not guessed (write YYYY-MM-DD)",
                        name, show(t)))
    elif spec.kind in _BAD_VALUE_TEXT:
        P.add("BAD_VALUE", t.is_not_null() & typed.is_null(),
              pl.format("{} {} " + _BAD_VALUE_TEXT[spec.kind], name, show(t)))


def _prepare(raw: pl.DataFrame, specs: tuple[FieldSpec, ...]) -> pl.DataFrame:
    """Row index, source columns and the cleaned text of every input column (absent → null)."""
    for c in SOURCE:
        if c not in raw.columns:
            raise ValueError(f"raw frame has no {c} column (use flows.ingest.read_table)")
    cols = [pl.int_range(pl.len(), dtype=pl.Int64).alias(IDX),
            pl.col("source_file").cast(pl.String), pl.col("source_row").cast(pl.Int64)]
    for s in specs:
        src = pl.col(s.name) if s.name in raw.columns else pl.lit(None, pl.String)
        cols.append(clean_text(src).alias(s.name))
    return raw.select(cols)


def _parse(w: pl.DataFrame, specs: tuple[FieldSpec, ...]) -> tuple[pl.DataFrame, Problems]:
    w = w.with_columns([_typed_expr(s, pl.col(s.name)).alias(TYPED + s.name) for s in specs])
    P = Problems()
    for s in specs:
        _add_field_checks(P, s)
    return w, P


def _flag(w: pl.DataFrame, P: Problems, codes: tuple[str, ...]) -> pl.DataFrame:
    return w.with_columns([P.flag(c) for c in codes])


def _no_problem(codes: tuple[str, ...]) -> pl.Expr:
    return ~pl.any_horizontal([pl.col(FLAG + c) for c in codes])


def _split(raw: pl.DataFrame, w: pl.DataFrame, P: Problems, keep: list[str], id_col: str | None
           ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(accepted working rows with the `keep` columns, rejects frame) from the flag columns."""
    flags = [FLAG + c for c in REASON_ORDER]
    w = w.with_columns([pl.lit(False).alias(f) for f in flags if f not in w.columns])  # codes this file never checks
    bad_row = pl.any_horizontal([pl.col(f) for f in flags])
    ok = w.select([*keep, bad_row.alias("__bad")]).filter(~pl.col("__bad")).drop("__bad")
    bad = w.filter(bad_row)
    if bad.height == 0:  # skip building the (large) message expressions
        rejects = pl.DataFrame(schema={"source_file": pl.String, "source_row": pl.Int64, "setl_id": pl.String,
                                       "reason_code": pl.String, "reason": pl.String, "raw": pl.String})
        return ok, rejects
    code = pl.coalesce([pl.when(pl.col(FLAG + c)).then(pl.lit(c)) for c in REASON_ORDER])
    reason = _any_messages(
        [pl.when(pl.col(FLAG + c)).then(pl.lit(c + ": ") + P.message(c)) for c in REASON_ORDER], sep=" | ")
    fields = [c for c in raw.columns if c not in SOURCE]
    idx = bad.get_column(IDX)
    bad_raw = raw[idx.cast(pl.Int64)] if bad.height else raw.clear()
    as_json = pl.struct(fields).struct.json_encode() if fields else pl.lit("{}")
    rejects = bad.select(
        "source_file",
        "source_row",
        (pl.col(id_col) if id_col else pl.lit(None, pl.String)).alias("setl_id"),
        code.alias("reason_code"),
        reason.alias("reason"),
    ).with_columns(bad_raw.select(as_json.alias("raw")).to_series())
    RejectModel.validate(rejects)
    return ok, rejects


def check_month(month: str) -> None:
    if not isinstance(month, str) or not MONTH_RE.match(month):
        raise ValueError(f"month must be YYYY-MM, got {month!r}")


def _with_first_in_file_order(w: pl.DataFrame, key: str) -> pl.DataFrame:
    """Add where each repeated key first appears in (source_file, source_row) order:
    `__first_pos`, `__first_file`, `__first_row` (null for keys that appear once)."""
    firsts = (
        w.filter(pl.col(key).is_not_null() & pl.col(key).is_duplicated())
        .select(key, "__pos", "source_file", "source_row")
        .sort("__pos")
        .group_by(key, maintain_order=True)
        .first()
        .rename({"__pos": "__first_pos", "source_file": "__first_file", "source_row": "__first_row"})
    )
    return w.join(firsts, on=key, how="left", maintain_order="left")


def _file_position() -> pl.Expr:
    """Rank of each row in (source_file, source_row) order."""
    return (pl.col(IDX).sort_by([pl.col("source_file"), pl.col("source_row"), pl.col(IDX)])
            .arg_sort().cast(pl.Int64).alias("__pos"))


# ---------------------------------------------------------------------------- settlements
KNOWN_COLUMNS = {"setl_id": pl.String, "psn_no": pl.String, "orig_setl_id": pl.String,
                 **{c: pl.Int64 for c in SETTLEMENT_AMOUNTS},
                 # POLICY §1.12 (REVERSAL_AFTER_MERGE): the stay a line belongs to, and whether a stored stay
                 # line already merged it
                 "mdtrt_id": pl.String, "med_type": pl.String, "setl_time": pl.Datetime("us"),
                 "is_emergency_rescue": pl.Boolean, "merged": pl.Boolean}


def _known_frame(known: pl.DataFrame | None) -> pl.DataFrame:
    if known is None:
        return pl.DataFrame(schema=KNOWN_COLUMNS)
    return known.select([
        (pl.col(c).cast(t) if c in known.columns else pl.lit(None, t)).alias(c) for c, t in KNOWN_COLUMNS.items()
    ])


def _rule_exists(insutype: pl.Expr, med_type: pl.Expr) -> pl.Expr:
    ok = pl.lit(False)
    for ins, med_types in MED_TYPE_RULES.items():
        ok = ok | ((insutype == ins) & med_type.is_in(sorted(med_types)))
    return ok


def validate_settlements(raw: pl.DataFrame, month: str, registers: dict[str, pl.DataFrame],
                         known: pl.DataFrame | None, policies=None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One month of settlement text → (typed accepted frame, rejects). See the module docstring.

    raw: concatenated `read_table` frames (all String + source_file, source_row), e.g.
    `pl.concat(frames, how="diagonal")`. registers: typed frames of `load_registers`
    (persons, institutions, certifications are used). known: settlements of earlier months
    (setl_id, psn_no, orig_setl_id and the five amounts in Int64 fen; for REVERSAL_AFTER_MERGE mdtrt_id,
    med_type, setl_time, is_emergency_rescue and `merged`), possibly empty. policies: which trauma stay lines are
    held (they merge nothing, §1.12); without them every 22 without a trauma report counts as held.
    """
    check_month(month)
    RawSettlementModel.validate(raw)  # structure only: programming errors raise here
    specs = field_specs(SettlementModel)
    names = [s.name for s in specs]
    known = _known_frame(known)
    persons = registers["persons"].select("psn_no", pl.col("insutype").alias("__person_insutype"))
    institutions = registers["institutions"].get_column("fixmedins_code").implode()
    certs = registers.get("certifications")
    if certs is None:
        certs = pl.DataFrame(schema={"psn_no": pl.String, "dise_cert_code": pl.String,
                                     "begndate": pl.Date, "enddate": pl.Date})

    w = _prepare(raw, specs)
    w, P = _parse(w, specs)
    w = w.join(persons.unique("psn_no", keep="first"), on="psn_no", how="left", maintain_order="left")
    w = w.with_columns(_file_position())
    w = _with_first_in_file_order(w, "setl_id")

    is_rev = pl.col("orig_setl_id").is_not_null()
    known_person = pl.col("__person_insutype").is_not_null()

    P.add("BAD_VALUE", _t("enddate") < _t("begndate"),
          pl.format("enddate {} is before begndate {}", _t("enddate"), _t("begndate")))

    # DATA.md §2: medfee_sumamt = cls_a_amt + cls_b_amt + fulamt_ownpay_amt + overlmt_selfpay, to the fen
    parts = ("cls_a_amt", "cls_b_amt", "fulamt_ownpay_amt", "overlmt_selfpay")
    total = _t(parts[0]) + _t(parts[1]) + _t(parts[2]) + _t(parts[3])  # null if any part is unreadable
    P.add("AMOUNT_MISMATCH", total != _t("medfee_sumamt"), pl.format(
        "medfee_sumamt {} ≠ cls_a_amt + cls_b_amt + fulamt_ownpay_amt + overlmt_selfpay = {} + {} + {} + {} = {}",
        yuan(_t("medfee_sumamt")), *[yuan(_t(p)) for p in parts], yuan(total)))

    money = SETTLEMENT_AMOUNTS + REPORTED_AMOUNTS
    negatives = [pl.when(_t(c) < 0).then(pl.format("{}={}", pl.lit(c), yuan(_t(c)))) for c in money]
    P.add("NEGATIVE_AMOUNT", ~is_rev & pl.any_horizontal([_t(c) < 0 for c in money]), pl.format(
        "negative amount on a line without orig_setl_id: {}", _any_messages(negatives, ", ")))

    P.add("WRONG_MONTH", _t("setl_time").dt.strftime("%Y-%m") != month, pl.format(
        "setl_time {} is not in the folder's month {}", pl.col("setl_time"), pl.lit(month)))

    P.add("UNKNOWN_PERSON", pl.col("psn_no").is_not_null() & ~known_person,
          pl.format("psn_no {} is not in the person register", show(pl.col("psn_no"))))
    for col in ("fixmedins_code", "presc_fixmedins_code"):
        P.add("UNKNOWN_INSTITUTION", pl.col(col).is_not_null() & ~pl.col(col).is_in(institutions),
              pl.format("{} {} is not in the institution register", pl.lit(col), show(pl.col(col))))

    P.add("SCHEME_MISMATCH", known_person & (_t("insutype") != pl.col("__person_insutype")),
          pl.format("insutype {} but person {} is insured under insutype {}",
                    _t("insutype"), show(pl.col("psn_no")), pl.col("__person_insutype")))

    P.add("NO_RULE", ~_rule_exists(_t("insutype"), _t("med_type"))
          & _t("insutype").is_not_null() & _t("med_type").is_not_null(),
          pl.format("med_type {} has no rule in the scheme of insutype {} (POLICY §1.8)",
                    _t("med_type"), _t("insutype")))

    # CERT_INVALID: a certification of the same person with that code, valid on the settlement date
    cert_given = pl.col("dise_cert_code").is_not_null() & known_person & _t("setl_time").is_not_null()
    asked = w.filter(cert_given).select(IDX, "psn_no", "dise_cert_code", _t("setl_time").dt.date().alias("__d"))
    valid = (
        asked.join(certs.select("psn_no", "dise_cert_code", "begndate", "enddate"),
                   on=["psn_no", "dise_cert_code"], how="inner")
        .filter((pl.col("begndate") <= pl.col("__d"))
                & (pl.col("enddate").is_null() | (pl.col("enddate") >= pl.col("__d"))))
        .get_column(IDX).unique().implode()
    )
    P.add("CERT_INVALID", cert_given & ~pl.col(IDX).is_in(valid), pl.format(
        "dise_cert_code {} is not a certification of psn_no {} valid on {}",
        show(pl.col("dise_cert_code")), show(pl.col("psn_no")), _t("setl_time").dt.date()))

    # DUPLICATE_SETL_ID: the first line of a setl_id in (source_file, source_row) order is the one kept
    P.add("DUPLICATE_SETL_ID", pl.col("__pos") > pl.col("__first_pos"), pl.format(
        "setl_id {} already appears in {} row {}", show(pl.col("setl_id")), pl.col("__first_file"),
        pl.col("__first_row")))
    P.add("DUPLICATE_SETL_ID", pl.col("setl_id").is_in(known.get_column("setl_id").implode()),
          pl.format("setl_id {} was already loaded in an earlier month", show(pl.col("setl_id"))))

    base_codes = REASON_ORDER[: REASON_ORDER.index("DUPLICATE_SETL_ID") + 1]
    w = _flag(w, P, base_codes)
    w = w.with_columns(_no_problem(base_codes).alias("__base_ok"))
    w = _check_reversals(w, known, P)
    w = _check_reversal_after_merge(w, known, registers, policies, P)

    keep = [_t(c).alias(c) for c in names] + ["source_file", "source_row"]
    ok, rejects = _split(raw, w, P, keep, "setl_id")
    accepted = ok.with_columns(pl.lit(month).alias("month"))
    SettlementModel.validate(accepted)  # eager: DataFrame, data checks included
    return accepted, rejects


def _check_reversals(w: pl.DataFrame, known: pl.DataFrame, P: Problems) -> pl.DataFrame:
    """UNKNOWN_REVERSAL, ALREADY_REVERSED, REVERSAL_MISMATCH (POLICY §1.7), flagged."""
    amounts = SETTLEMENT_AMOUNTS
    is_rev = pl.col("orig_setl_id").is_not_null()
    # line order within the month (POLICY §1.2): setl_time, setl_id; ties by file position
    w = w.with_columns(
        pl.col(IDX).sort_by([_t("setl_time"), pl.col("setl_id"), pl.col("__pos")], nulls_last=True)
        .arg_sort().cast(pl.Int64).alias("__ord")
    )
    # what an orig_setl_id can name: settlements of earlier months, or lines of this month that
    # pass every non-reversal check (these never clash with known ids: those are duplicates)
    lookup = pl.concat([
        known.filter(pl.col("setl_id").is_not_null()).unique("setl_id", keep="first").select(
            pl.col("setl_id").alias("__o_key"),
            pl.col("psn_no").alias("__o_psn"),
            *[pl.col(c).alias("__o." + c) for c in amounts],
            pl.col("orig_setl_id").is_not_null().alias("__o_is_rev"),
            pl.lit(-1, pl.Int64).alias("__o_ord"),
        ),
        w.filter(pl.col("__base_ok") & pl.col("setl_id").is_not_null()).select(
            pl.col("setl_id").alias("__o_key"),
            pl.col("psn_no").alias("__o_psn"),
            *[_t(c).alias("__o." + c) for c in amounts],
            is_rev.alias("__o_is_rev"),
            pl.col("__ord").alias("__o_ord"),
        ),
    ])
    reversed_before = (
        known.filter(pl.col("orig_setl_id").is_not_null())
        .group_by("orig_setl_id").agg(pl.col("setl_id").min().alias("__rk_by"))
    )
    w = (w.join(lookup, left_on="orig_setl_id", right_on="__o_key", how="left", maintain_order="left")
          .join(reversed_before, on="orig_setl_id", how="left", maintain_order="left"))

    found = pl.col("__o_ord").is_not_null()
    orig = show(pl.col("orig_setl_id"))
    original_ok = is_rev & found & ~pl.col("__o_is_rev") & (pl.col("__o_ord") < pl.col("__ord"))
    P.add("UNKNOWN_REVERSAL", is_rev & ~found, pl.format(
        "orig_setl_id {} names no settlement of an earlier month or accepted earlier in this month", orig))
    P.add("UNKNOWN_REVERSAL", is_rev & found & pl.col("__o_is_rev"), pl.format(
        "orig_setl_id {} names a reversal, not a settlement", orig))
    P.add("UNKNOWN_REVERSAL", is_rev & found & ~pl.col("__o_is_rev") & (pl.col("__o_ord") > pl.col("__ord")),
          pl.format("orig_setl_id {} names a settlement that comes after this reversal in "
                    "(setl_time, setl_id) order", orig))
    P.add("ALREADY_REVERSED", is_rev & pl.col("__rk_by").is_not_null(), pl.format(
        "orig_setl_id {} was already reversed by setl_id {} in an earlier month", orig, show(pl.col("__rk_by"))))
    for c in amounts:
        P.add("REVERSAL_MISMATCH", original_ok & (_t(c) != -pl.col("__o." + c)), pl.format(
            "{} {} is not the negation of the original's {}", pl.lit(c), yuan(_t(c)), yuan(pl.col("__o." + c))))
    P.add("REVERSAL_MISMATCH", original_ok & (pl.col("psn_no") != pl.col("__o_psn")), pl.format(
        "psn_no {} is not the original's psn_no {}", show(pl.col("psn_no")), show(pl.col("__o_psn"))))
    w = _flag(w, P, ("UNKNOWN_REVERSAL", "REVERSAL_MISMATCH"))
    # within the month, the first reversal (in line order) that passes every other check wins;
    # every later reversal of the same original is ALREADY_REVERSED
    candidate = (is_rev & pl.col("__base_ok") & original_ok & pl.col("__rk_by").is_null()
                 & ~pl.col(FLAG + "UNKNOWN_REVERSAL") & ~pl.col(FLAG + "REVERSAL_MISMATCH"))
    winners = (
        w.filter(candidate)
        .group_by("orig_setl_id")
        .agg(pl.col("__ord").min().alias("__w_ord"), pl.col("setl_id").sort_by("__ord").first().alias("__w_id"))
    )
    w = w.join(winners, on="orig_setl_id", how="left", maintain_order="left")
    P.add("ALREADY_REVERSED", is_rev & (pl.col("__ord") > pl.col("__w_ord")), pl.format(
        "orig_setl_id {} is already reversed by setl_id {} in this month", orig, show(pl.col("__w_id"))))
    return _flag(w, P, ("ALREADY_REVERSED",))


def _check_reversal_after_merge(w: pl.DataFrame, known: pl.DataFrame, registers: dict[str, pl.DataFrame],
                                policies, P: Problems) -> pl.DataFrame:
    """REVERSAL_AFTER_MERGE (POLICY §1.12): a reversal of an emergency line (13, not a rescue) that a stay line
    has merged — a stored one (`known.merged`), or a stay line (21/22/24, not held, same psn_no, mdtrt_id and
    year) accepted in this month between the emergency line and the reversal. The institution reverses the stay
    line instead."""
    from transforms.merged_stays import STAY_LINE_TYPES, held_lines
    codes = ("UNKNOWN_REVERSAL", "REVERSAL_MISMATCH", "ALREADY_REVERSED")
    ok = pl.col("__base_ok") & _no_problem(codes)
    cols = [pl.col("psn_no"), _t("mdtrt_id").alias("mdtrt_id"), _t("med_type").alias("med_type"),
            _t("setl_time").alias("setl_time")]
    here = w.filter(pl.col("__base_ok")).select(IDX, "__ord", pl.col("setl_id"), *cols, _t("orig_setl_id").alias("orig"),
                                                _t("insutype").alias("insutype"),
                                                _t("trauma_report_no").alias("trauma_report_no"),
                                                _t("is_emergency_rescue").fill_null(False).alias("rescue"))
    revs = w.filter(ok & pl.col("orig_setl_id").is_not_null()).select(IDX, "__ord", pl.col("psn_no"),
                                                                      _t("orig_setl_id").alias("orig"))
    if revs.height == 0:
        return _flag(w, P, ("REVERSAL_AFTER_MERGE",))
    origs = pl.concat([
        known.select("setl_id", "mdtrt_id", "med_type", "setl_time",
                     pl.col("is_emergency_rescue").fill_null(False).alias("rescue"),
                     pl.col("merged").fill_null(False), pl.lit(-1, pl.Int64).alias("o_ord")),
        here.filter(pl.col("orig").is_null()).select(
            "setl_id", "mdtrt_id", "med_type", pl.col("setl_time").cast(pl.Datetime("us")), "rescue",
            pl.lit(False).alias("merged"), pl.col("__ord").alias("o_ord")),
    ]).filter((pl.col("med_type") == "13") & ~pl.col("rescue")).unique("setl_id", keep="first")
    cand = revs.join(origs.rename({"setl_id": "orig"}), on="orig", how="inner")
    stays = here.filter(pl.col("orig").is_null() & pl.col("med_type").is_in(STAY_LINE_TYPES))
    stays = stays.with_columns(pl.col("setl_time").dt.date().alias("setl_date"))
    stays = stays.filter(~held_lines(stays, registers, policies)).select(
        "psn_no", "mdtrt_id", pl.col("setl_time").dt.year().alias("s_year"), pl.col("__ord").alias("s_ord"))
    between = (cand.join(stays, on=["psn_no", "mdtrt_id"], how="inner")
               .filter((pl.col("s_year") == pl.col("setl_time").dt.year()) & (pl.col("s_ord") > pl.col("o_ord"))
                       & (pl.col("s_ord") < pl.col("__ord"))))
    hit = pl.concat([cand.filter(pl.col("merged"))[IDX], between[IDX]]).unique()
    P.add("REVERSAL_AFTER_MERGE", pl.col(IDX).is_in(hit.implode()), pl.format(
        "orig_setl_id {} names an emergency line already merged into its stay (mdtrt_id {}) by a stay line: "
        "reverse the stay line instead (POLICY §1.12)", show(pl.col("orig_setl_id")), show(pl.col("mdtrt_id"))))
    return _flag(w, P, ("REVERSAL_AFTER_MERGE",))


# ---------------------------------------------------------------------------- applications
def validate_applications(raw: pl.DataFrame, month: str, registers: dict[str, pl.DataFrame]
                          ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Assistance applications of one month (POLICY §3.9) → (typed accepted, rejects).

    Same row contract as settlements. Codes used: MISSING_REQUIRED, BAD_VALUE, BAD_CODE
    (identity), UNKNOWN_PERSON, DUPLICATE_SETL_ID (an app_id repeated within the month: the
    first in (source_file, source_row) order is kept). rejects.setl_id is null; raw has app_id.
    """
    check_month(month)
    specs = field_specs(ApplicationModel)
    w = _prepare(raw, specs)
    w, P = _parse(w, specs)
    w = w.with_columns(_file_position())
    w = _with_first_in_file_order(w, "app_id")
    persons = registers["persons"].get_column("psn_no").implode()
    P.add("UNKNOWN_PERSON", pl.col("psn_no").is_not_null() & ~pl.col("psn_no").is_in(persons),
          pl.format("psn_no {} is not in the person register", show(pl.col("psn_no"))))
    P.add("DUPLICATE_SETL_ID", pl.col("__pos") > pl.col("__first_pos"), pl.format(
        "app_id {} already appears in {} row {}", show(pl.col("app_id")), pl.col("__first_file"),
        pl.col("__first_row")))
    return _month_rows(raw, w, P, specs, month, ApplicationModel)


def _month_rows(raw: pl.DataFrame, w: pl.DataFrame, P: Problems, specs: tuple[FieldSpec, ...], month: str,
                model: type[pa.DataFrameModel]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(typed accepted rows of a month's file kind, validated by `model`, rejects) once every check is added."""
    w = _flag(w, P, REASON_ORDER)
    keep = [_t(s.name).alias(s.name) for s in specs] + ["source_file", "source_row"]
    ok, rejects = _split(raw, w, P, keep, None)
    accepted = ok.with_columns(pl.lit(month).alias("month"))
    model.validate(accepted)
    return accepted, rejects


XIANGYANG_CITY = next(city for city, region in REGION_BY_CITY.items() if region == "xiangyang")


def validate_maternity_events(raw: pl.DataFrame, month: str, registers: dict[str, pl.DataFrame]
                              ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Maternity events of one month (docs/MATERNITY_INPUT.md, POLICY §4.6) → (typed accepted, rejects).

    Same row contract as settlements (every row accepted or rejected with file, row and reason). Codes:
    MISSING_REQUIRED, BAD_VALUE, BAD_CODE (kind), NEGATIVE_AMOUNT (delivery_cost), WRONG_MONTH (event_date
    outside the folder's month), UNKNOWN_PERSON, NOT_XIANGYANG_EMPLOYEE, EVENT_INCOMPLETE. rejects.setl_id is null.
    """
    check_month(month)
    specs = field_specs(MaternityEventModel)
    w = _prepare(raw, specs)
    w, P = _parse(w, specs)
    persons = registers["persons"].select("psn_no", pl.col("insutype").alias("__insutype"),
                                          pl.col("insuplc_admdvs").alias("__admdvs"))
    w = w.join(persons, left_on=TYPED + "psn_no", right_on="psn_no", how="left", maintain_order="left")
    P.add("NEGATIVE_AMOUNT", _t("delivery_cost") < 0, pl.format("delivery_cost {} is negative", show(pl.col("delivery_cost"))))
    P.add("WRONG_MONTH", _t("event_date").dt.strftime("%Y-%m") != month, pl.format(
        "event_date {} is not in the folder's month {}", show(pl.col("event_date")), pl.lit(month)))
    P.add("UNKNOWN_PERSON", pl.col("psn_no").is_not_null() & pl.col("__insutype").is_null(),
          pl.format("psn_no {} is not in the person register", show(pl.col("psn_no"))))
    P.add("NOT_XIANGYANG_EMPLOYEE", pl.col("__insutype").is_not_null()
          & ((pl.col("__insutype") != "310") | ~pl.col("__admdvs").str.starts_with(XIANGYANG_CITY)),
          pl.format("psn_no {} is insured as {} in {}, not as a Xiangyang employee (POLICY §4.6)",
                    show(pl.col("psn_no")), pl.col("__insutype"), pl.col("__admdvs")))
    delivery = _t("kind").is_in(["natural", "caesarean"])
    P.add("EVENT_INCOMPLETE", delivery & (_t("babies").is_null() | (_t("babies") < 1)),
          pl.format("a {} delivery needs babies >= 1, got {}", _t("kind"), show(pl.col("babies"))))
    P.add("EVENT_INCOMPLETE", (_t("kind") == "miscarriage") & _t("gestation_months").is_null(),
          pl.lit("a miscarriage needs gestation_months"))
    return _month_rows(raw, w, P, specs, month, MaternityEventModel)


# ---------------------------------------------------------------------------- registers
PROBLEM_SCHEMA = {"source_file": pl.String, "source_row": pl.Int64, "problem": pl.String}
WARNING_SCHEMA = {"source_file": pl.String, "source_row": pl.Int64, "warning": pl.String}
EMPTY_REJECTS = {"source_file": pl.String, "source_row": pl.Int64, "setl_id": pl.String, "reason_code": pl.String,
                 "reason": pl.String, "raw": pl.String}


@dataclass(frozen=True)
class RegisterReading:
    """How register rows the contract leaves open are read (POLICY §1.14), from policies/ (flows/ingest.py)."""

    retire_kind_when_empty: str = "normal"  # an empty retire_kind on a retired period


def _employment_readings(typed: pl.DataFrame, reading: RegisterReading) -> tuple[pl.DataFrame, pl.DataFrame]:
    """POLICY §1.14: a retire_kind on an in-service period changes no computation — ignored, with a warning;
    an empty retire_kind on a retired period is read as `reading.retire_kind_when_empty` (A-30), with a warning."""
    in_service_kind = (pl.col("psn_type") == "11") & pl.col("retire_kind").is_not_null()
    retired_empty = (pl.col("psn_type") == "12") & pl.col("retire_kind").is_null()
    warnings = typed.filter(in_service_kind | retired_empty).select(
        "source_file", "source_row",
        pl.when(in_service_kind)
        .then(pl.format("retire_kind {} on an in-service (11) period is ignored (POLICY §1.14)",
                        show(pl.col("retire_kind"))))
        .otherwise(pl.lit(f"empty retire_kind on a retired (12) period read as {reading.retire_kind_when_empty!r}"
                          " (POLICY §1.14, A-30)"))
        .alias("warning"))
    typed = typed.with_columns(
        pl.when(in_service_kind).then(None)
        .when(retired_empty).then(pl.lit(reading.retire_kind_when_empty))
        .otherwise(pl.col("retire_kind")).alias("retire_kind"))
    return typed, warnings


# Register → its readings (POLICY §1.14) applied to the typed rows before the model's checks. A register without
# one (most, and any new register: its pandera model in schemas.inputs.REGISTER_MODELS is all it needs) has none.
REGISTER_READINGS = {"employment": _employment_readings}


def type_register(name: str, raw: pl.DataFrame, reading: RegisterReading | None = None
                  ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A register's text → (typed rows with source_file/source_row, rejects, warnings) — POLICY §1.14, DATA.md §3.

    Generic over the register's pandera model (schemas.inputs.REGISTER_MODELS): a row whose field cannot be read
    (MISSING_REQUIRED, BAD_CODE, BAD_VALUE) or that fails one of the model's checks (a duplicated key, a period
    ending before it begins: BAD_VALUE, "fails <check>") is a reject (DATA.md §4 `rejects` columns, `setl_id`
    empty) and the other rows are kept. warnings (source_file, source_row, warning): rows kept with a reading
    (REGISTER_READINGS).
    """
    model = REGISTER_MODELS[name]
    specs = field_specs(model)
    w = _prepare(raw, specs)
    w, P = _parse(w, specs)
    w = _flag(w, P, REASON_ORDER)
    typed, rejects = _split(raw, w, P, [_t(s.name).alias(s.name) for s in specs] + list(SOURCE), None)
    warnings = pl.DataFrame(schema=WARNING_SCHEMA)
    if name in REGISTER_READINGS:
        typed, warnings = REGISTER_READINGS[name](typed, reading or RegisterReading())
    problems = _pandera_problems(typed, model)
    if problems.height:
        problems = problems.group_by(list(SOURCE), maintain_order=True).agg(pl.col("problem").str.join("; "))
        typed = typed.join(problems, on=list(SOURCE), how="anti", maintain_order="left")
        warnings = warnings.join(problems, on=list(SOURCE), how="anti", maintain_order="left")
        rejects = pl.concat([rejects, register_rejects(raw, problems, "BAD_VALUE")])
    return typed, rejects.sort(list(SOURCE), maintain_order=True), warnings


def register_rejects(raw: pl.DataFrame, problems: pl.DataFrame, code: str) -> pl.DataFrame:
    """Problems (source_file, source_row, problem) of a register as `rejects` rows with the row as text."""
    fields = [c for c in raw.columns if c not in SOURCE]
    as_json = pl.struct(fields).struct.json_encode() if fields else pl.lit("{}")
    rows = raw.select(*SOURCE, as_json.alias("raw"))
    out = problems.join(rows, on=list(SOURCE), how="left", maintain_order="left").select(
        "source_file", "source_row", pl.lit(None, pl.String).alias("setl_id"), pl.lit(code).alias("reason_code"),
        pl.format("{}: {}", pl.lit(code), pl.col("problem")).alias("reason"), pl.col("raw").fill_null("{}"))
    RejectModel.validate(out)
    return out


def _pandera_problems(typed: pl.DataFrame, model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """Row problems found by the model's checks (uniqueness, periods, …), via failure_cases.index."""
    try:
        model.validate(typed, lazy=True)
    except pandera.errors.SchemaErrors as e:
        fc = e.failure_cases
        if fc.get_column("index").null_count():  # schema-level (dtype, missing column): a bug here
            raise
        rows = typed.select(list(SOURCE)).with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
        return (
            fc.with_columns(pl.col("index").cast(pl.Int64))
            .join(rows, on="index", how="left")
            .select(
                "source_file",
                "source_row",
                pl.when(pl.col("schema_context") == "Column")
                .then(pl.format("{} {} fails {}", pl.col("column"),
                                show(pl.col("failure_case").cast(pl.String)), pl.col("check")))
                .otherwise(pl.format("fails {}", pl.col("check")))
                .alias("problem"),
            )
        )
    return pl.DataFrame(schema=PROBLEM_SCHEMA)


REFERENCES = (
    ("identities", "psn_no"),
    ("employment", "psn_no"),
    ("certifications", "psn_no"),
    ("family_bindings", "authoriser_psn_no"),
    ("family_bindings", "user_psn_no"),
    ("account_balances", "psn_no"),
    ("opening_accumulators", "psn_no"),
)


def unknown_person_rows(registers: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Rows of registers naming a person that is not in persons (or whose persons row was rejected), per register:
    problems frames (source_file, source_row, problem) — POLICY §1.14, such a person is unknown."""
    persons = registers["persons"].get_column("psn_no").implode()
    out: dict[str, list[pl.DataFrame]] = {}
    for name, col in REFERENCES:
        frame = registers.get(name)
        if frame is None:
            continue
        bad = frame.filter(~pl.col(col).is_in(persons)).select(
            "source_file", "source_row",
            pl.format("{} {} is not in the person register", pl.lit(col), show(pl.col(col))).alias("problem"))
        out.setdefault(name, []).append(bad)
    return {k: pl.concat(v).unique(list(SOURCE), keep="first", maintain_order=True).sort("source_row")
            for k, v in out.items()}


def split_family_bindings(bindings: pl.DataFrame, persons: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """POLICY §4.5: (kept, rejected) bindings; rejected carries `reason`.

    Rejected: a relation other than spouse/parent/child; an authoriser binding themself; an
    authoriser who is not an employee (insutype 310); a binding that would give its authoriser a
    7th live user on its begin date (bindings taken in begin-date order, then file order; a
    rejected binding does not count). Both frames keep source_file/source_row.
    """
    employees = persons.filter(pl.col("insutype") == INSUTYPES[0]).get_column("psn_no").implode()
    first = _any_messages([
        pl.when(~pl.col("relation").is_in(RELATIONS)).then(pl.format(
            "relation {} is not one of {}", show(pl.col("relation")), pl.lit("/".join(RELATIONS)))),
        pl.when(pl.col("authoriser_psn_no") == pl.col("user_psn_no")).then(pl.lit(
            "an authoriser cannot bind themself")),
        pl.when(~pl.col("authoriser_psn_no").is_in(employees)).then(pl.format(
            "authoriser {} is not an employee (insutype 310)", show(pl.col("authoriser_psn_no")))),
    ])
    b = bindings.with_columns(first.alias("reason"))
    # 7th live user: only authorisers with more than MAX_LIVE_USERS remaining bindings can exceed it
    b = b.with_columns(
        (pl.col("reason").is_null().sum().over("authoriser_psn_no") > MAX_LIVE_USERS).alias("__crowded"))
    crowded = (b.filter(pl.col("__crowded") & pl.col("reason").is_null())
                .sort("authoriser_psn_no", "begndate", "source_file", "source_row"))
    seventh: list[tuple[str, int, str]] = []
    kept_by_auth: dict[str, list[tuple]] = {}
    for row in crowded.iter_rows(named=True):
        kept = kept_by_auth.setdefault(row["authoriser_psn_no"], [])
        day = row["begndate"]
        live = {u for (u, beg, end) in kept
                if beg <= day and (end is None or end >= day) and u != row["user_psn_no"]}
        if len(live) >= MAX_LIVE_USERS:
            seventh.append((row["source_file"], row["source_row"],
                            f"would give authoriser {row['authoriser_psn_no']} a {len(live) + 1}th live user"
                            f" on {day.isoformat()} (at most {MAX_LIVE_USERS}, POLICY §4.5)"))
        else:
            kept.append((row["user_psn_no"], day, row["enddate"]))
    if seventh:
        extra = pl.DataFrame(seventh, schema={"source_file": pl.String, "source_row": pl.Int64,
                                              "__r7": pl.String}, orient="row")
        b = b.join(extra, on=list(SOURCE), how="left", maintain_order="left").with_columns(
            pl.coalesce("reason", "__r7").alias("reason"))
    cols = list(FamilyBindingModel.to_schema().columns)
    kept_frame = b.filter(pl.col("reason").is_null()).select(cols + list(SOURCE))
    rejected = b.filter(pl.col("reason").is_not_null()).select(cols + list(SOURCE) + ["reason"])
    KeptFamilyBindingModel.validate(kept_frame)
    RejectedFamilyBindingModel.validate(rejected)
    return kept_frame, rejected
