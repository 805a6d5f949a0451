"""transforms/validate.py: typed settlement frame, one reject per bad row, every reason code."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.ingest import load_registers, month_files, read_table
from schemas.inputs import SettlementModel, certno_valid
from transforms.money import yuan_text_to_fen
from transforms.reasons import EVENT_ONLY_REASONS, REJECT_REASONS
from transforms.validate import clean_text, money_to_fen, validate_applications, validate_settlements

FIXTURES = Path(__file__).parent / "fixtures" / "input"
MONTH = "2025-03"
H = "2025-03/hospital_settlements_01.csv"
PH = "2025-03/pharmacy_settlements_01.csv"

TYPED_SCHEMA = {
    "setl_id": pl.String, "mdtrt_id": pl.String, "psn_no": pl.String, "insutype": pl.String,
    "med_type": pl.String, "fixmedins_code": pl.String, "begndate": pl.Date, "enddate": pl.Date,
    "setl_time": pl.Datetime("us"), "dise_codg": pl.String, "dise_cert_code": pl.String,
    "offsite_type": pl.String, "presc_fixmedins_code": pl.String, "trauma_report_no": pl.String,
    "is_emergency_rescue": pl.Boolean, "medfee_sumamt": pl.Int64, "fulamt_ownpay_amt": pl.Int64,
    "overlmt_selfpay": pl.Int64, "cls_a_amt": pl.Int64, "cls_b_amt": pl.Int64, "orig_setl_id": pl.String,
    "hifp_pay": pl.Int64, "hifmi_pay": pl.Int64, "maf_pay": pl.Int64, "acct_pay": pl.Int64,
    "acct_mulaid_pay": pl.Int64, "psn_cash_pay": pl.Int64, "source_file": pl.String, "source_row": pl.Int64,
    "month": pl.String,
}
REJECT_SCHEMA = {"source_file": pl.String, "source_row": pl.Int64, "setl_id": pl.String,
                 "reason_code": pl.String, "reason": pl.String, "raw": pl.String}


@pytest.fixture(scope="module")
def registers():
    return load_registers(FIXTURES)


@pytest.fixture(scope="module")
def known():
    """Earlier months: S100; S200 reversed by R200; S201 (500.00 = 300.00 A + 200.00 B)."""
    return pl.DataFrame({
        "setl_id": ["S100", "S200", "R200", "S201"],
        "psn_no": ["P001"] * 4,
        "orig_setl_id": [None, None, "S200", None],
        "medfee_sumamt": [5000, 8000, -8000, 50000],
        "fulamt_ownpay_amt": [0, 0, 0, 0],
        "overlmt_selfpay": [0, 0, 0, 0],
        "cls_a_amt": [5000, 8000, -8000, 30000],
        "cls_b_amt": [0, 0, 0, 20000],
    })


@pytest.fixture(scope="module")
def raw():
    files = month_files(FIXTURES, MONTH)["settlements"]
    return pl.concat([read_table(p, FIXTURES) for p in files], how="diagonal")


@pytest.fixture(scope="module")
def result(raw, registers, known):
    return validate_settlements(raw, MONTH, registers, known)


EXPECTED_REJECTS = [
    (H, 2, "S002", "MISSING_REQUIRED", "MISSING_REQUIRED: psn_no is empty"),
    (H, 3, "S003", "BAD_VALUE",
     "BAD_VALUE: cls_a_amt '600.001' is not a yuan amount (plain decimal, at most 2 decimals)"),
    (H, 4, "S004", "BAD_CODE", "BAD_CODE: insutype '999' is not one of 310/390"),
    (H, 5, "S005", "AMOUNT_MISMATCH",
     "AMOUNT_MISMATCH: medfee_sumamt 1000.00 ≠ cls_a_amt + cls_b_amt + fulamt_ownpay_amt + overlmt_selfpay"
     " = 600.00 + 299.99 + 100.00 + 0.00 = 999.99"),
    (H, 6, "S006", "NEGATIVE_AMOUNT",
     "NEGATIVE_AMOUNT: negative amount on a line without orig_setl_id: fulamt_ownpay_amt=-10.00"),
    (H, 7, "S007", "WRONG_MONTH", "WRONG_MONTH: setl_time 2025-04-01 10:00:00 is not in the folder's month 2025-03"),
    (H, 8, "S008", "UNKNOWN_PERSON", "UNKNOWN_PERSON: psn_no 'P999' is not in the person register"),
    (H, 9, "S009", "UNKNOWN_INSTITUTION",
     "UNKNOWN_INSTITUTION: fixmedins_code 'H999' is not in the institution register"),
    (H, 10, "S010", "SCHEME_MISMATCH",
     "SCHEME_MISMATCH: insutype 390 but person 'P002' is insured under insutype 310"),
    (H, 11, "S011", "NO_RULE", "NO_RULE: med_type 9901 has no rule in the scheme of insutype 310 (POLICY §1.8)"),
    (H, 12, "S012", "CERT_INVALID",
     "CERT_INVALID: dise_cert_code 'C002' is not a certification of psn_no 'P003' valid on 2025-03-10"),
    (H, 13, "S001", "DUPLICATE_SETL_ID", f"DUPLICATE_SETL_ID: setl_id 'S001' already appears in {H} row 1"),
    (H, 14, "S100", "DUPLICATE_SETL_ID", "DUPLICATE_SETL_ID: setl_id 'S100' was already loaded in an earlier month"),
    (H, 15, "R001", "UNKNOWN_REVERSAL",
     "UNKNOWN_REVERSAL: orig_setl_id 'NOPE' names no settlement of an earlier month or accepted earlier"
     " in this month"),
    (H, 16, "R002", "ALREADY_REVERSED",
     "ALREADY_REVERSED: orig_setl_id 'S200' was already reversed by setl_id 'R200' in an earlier month"),
    (H, 17, "R003", "REVERSAL_MISMATCH",
     "REVERSAL_MISMATCH: medfee_sumamt -400.00 is not the negation of the original's 500.00;"
     " cls_b_amt -100.00 is not the negation of the original's 200.00"),
    (H, 19, "R005", "ALREADY_REVERSED",
     "ALREADY_REVERSED: orig_setl_id 'S001' is already reversed by setl_id 'R004' in this month"),
    (H, 20, "S013", "AMOUNT_MISMATCH",
     "AMOUNT_MISMATCH: medfee_sumamt 60.00 ≠ cls_a_amt + cls_b_amt + fulamt_ownpay_amt + overlmt_selfpay"
     " = 50.00 + 0.00 + 0.00 + 0.00 = 50.00"
     " | WRONG_MONTH: setl_time 2025-02-28 23:59:59 is not in the folder's month 2025-03"
     " | UNKNOWN_PERSON: psn_no 'P999' is not in the person register"),
    (H, 23, "R006", "UNKNOWN_REVERSAL", "UNKNOWN_REVERSAL: orig_setl_id 'R200' names a reversal, not a settlement"),
    (PH, 2, "S018", "UNKNOWN_INSTITUTION",
     "UNKNOWN_INSTITUTION: presc_fixmedins_code 'H777' is not in the institution register"),
    (PH, 3, "S001", "DUPLICATE_SETL_ID", f"DUPLICATE_SETL_ID: setl_id 'S001' already appears in {H} row 1"),
    (PH, 4, "S019", "BAD_VALUE",
     "BAD_VALUE: setl_time '2025-03-32 10:00:00' is not a time YYYY-MM-DD HH:MM:SS;"
     " is_emergency_rescue 'maybe' is not a flag (true/false)"),
]


def test_fixture_rejects_exactly(result):
    _, rejects = result
    assert dict(rejects.schema) == REJECT_SCHEMA
    assert rejects.select(pl.exclude("raw")).rows() == EXPECTED_REJECTS


def test_every_reason_code_is_produced(result):
    _, rejects = result
    # REVERSAL_AFTER_MERGE needs a stay merged in an earlier month or in the fixture month: it is produced, with
    # its stored and same-month cases, in tests/resident/test_merged_stays.py
    assert set(rejects.get_column("reason_code")) == (set(REJECT_REASONS) - set(EVENT_ONLY_REASONS)
                                                      - {"REVERSAL_AFTER_MERGE"})  # settlements


def test_fixture_accepted_typed_frame(result, raw):
    accepted, rejects = result
    assert accepted.height + rejects.height == raw.height == 27
    assert dict(accepted.schema) == TYPED_SCHEMA
    assert accepted.columns == list(TYPED_SCHEMA)
    SettlementModel.validate(accepted)
    assert accepted.select("setl_id", "source_file", "source_row").rows() == [
        ("S001", H, 1), ("R004", H, 18), ("S015", H, 21), ("S016", H, 22), ("S017", PH, 1)]
    s001 = accepted.row(0, named=True)
    assert s001["setl_time"] == dt.datetime(2025, 3, 5, 10, 0)
    assert s001["begndate"] == dt.date(2025, 3, 1)
    assert (s001["medfee_sumamt"], s001["fulamt_ownpay_amt"], s001["cls_a_amt"], s001["cls_b_amt"]) == (
        100000, 10000, 60000, 30000)
    assert s001["month"] == MONTH and s001["is_emergency_rescue"] is False
    r004 = accepted.row(1, named=True)
    assert r004["orig_setl_id"] == "S001" and r004["overlmt_selfpay"] == 0  # "-0.00"
    s016 = accepted.row(3, named=True)
    assert s016["is_emergency_rescue"] is False  # empty = false
    s017 = accepted.row(4, named=True)
    assert (s017["medfee_sumamt"], s017["cls_a_amt"], s017["hifp_pay"], s017["hifmi_pay"], s017["acct_pay"],
            s017["psn_cash_pay"]) == (12050, 6000, 0, None, 10000, 2050)
    assert s017["presc_fixmedins_code"] == "H002"


def test_raw_is_the_original_row_as_json(result, raw):
    _, rejects = result
    r = rejects.filter(pl.col("setl_id") == "S019").row(0, named=True)
    obj = json.loads(r["raw"])
    assert obj["setl_time"] == "2025-03-32 10:00:00"
    assert obj["is_emergency_rescue"] == "maybe"
    assert obj["note"] == "=cmd|'/c calc'!A1"
    assert "source_file" not in obj and "source_row" not in obj
    original = raw.filter((pl.col("source_file") == PH) & (pl.col("source_row") == 4)).drop(
        "source_file", "source_row").row(0, named=True)
    assert obj == original


def test_result_does_not_depend_on_file_split_or_row_order(raw, registers, known):
    """POLICY §1.2: same accepted lines and reject codes whatever the files and order (no duplicates here)."""
    base = raw.filter(~pl.col("setl_id").is_in(["S001"]) | (pl.col("source_row") == 1))
    acc0, rej0 = validate_settlements(base, MONTH, registers, known)
    rng = random.Random(7)
    for _ in range(3):
        order = list(range(base.height))
        rng.shuffle(order)
        shuffled = base[order].with_columns(
            pl.format("2025-03/hospital_settlements_{}.csv", pl.int_range(pl.len()) % 3).alias("source_file"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))
        acc, rej = validate_settlements(shuffled, MONTH, registers, known)
        assert sorted(acc.get_column("setl_id")) == sorted(acc0.get_column("setl_id"))
        assert sorted(rej.select("setl_id", "reason_code", "reason").rows()) == sorted(
            rej0.select("setl_id", "reason_code", "reason").rows())


# ------------------------------------------------------------------------------------ small cases
BASE_ROW = {
    "setl_id": "T1", "mdtrt_id": "M1", "psn_no": "P001", "insutype": "390", "med_type": "11",
    "fixmedins_code": "H002", "setl_time": "2025-03-10 10:00:00", "medfee_sumamt": "100.00",
    "fulamt_ownpay_amt": "0", "overlmt_selfpay": "0", "cls_a_amt": "100.00", "cls_b_amt": "0",
}


def _raw(rows: list[dict]) -> pl.DataFrame:
    cols = list(dict.fromkeys(k for r in rows for k in {**BASE_ROW, **r}))
    full = [{c: {**BASE_ROW, "setl_id": f"T{i + 1}", **r}.get(c) for c in cols} for i, r in enumerate(rows)]
    return pl.DataFrame(full, schema={c: pl.String for c in cols}, orient="row").with_columns(
        pl.lit("2025-03/hospital_settlements_t.csv").alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))


def _codes(rows, registers, known=None) -> list[str | None]:
    raw = _raw(rows)
    acc, rej = validate_settlements(raw, MONTH, registers, known)
    assert acc.height + rej.height == raw.height
    by_row = dict(zip(rej.get_column("source_row"), rej.get_column("reason_code"), strict=True))
    return [by_row.get(i + 1) for i in range(raw.height)]


@pytest.mark.parametrize("text, code", [
    ("100.00", None), (" 100.0 ", None), ("100", None), ("1e2", "BAD_VALUE"), ("100.000", "BAD_VALUE"),
    ("1,00.00", "BAD_VALUE"), ("NaN", "BAD_VALUE"), ("+100", "BAD_VALUE"), ("１００", "BAD_VALUE"),
    ("100.", "BAD_VALUE"), (".5", "BAD_VALUE"), ("100.01", "AMOUNT_MISMATCH"),
])
def test_money_text(registers, text, code):
    assert _codes([{"medfee_sumamt": text}], registers) == [code]


def test_minus_zero_is_zero_on_an_ordinary_line(registers):
    raw = _raw([{"fulamt_ownpay_amt": "-0.00", "overlmt_selfpay": "-0"}])
    acc, rej = validate_settlements(raw, MONTH, registers, None)
    assert rej.height == 0 and acc.get_column("fulamt_ownpay_amt").to_list() == [0]


@pytest.mark.parametrize("text, code", [
    ("2025-03-10 10:00:00", None), ("2025-03-10 10:00:00.250", None), ("2025-03-10T10:00:00", "BAD_VALUE"),
    ("2025-03-10", "BAD_VALUE"), ("2025-03-10 24:00:00", "BAD_VALUE"),
    # DATA.md §1: what a spreadsheet writes when it re-saves a CSV is read; ambiguous forms are not
    ("2025-3-10 10:00:00", None), ("2025/3/10 9:05", None), ("2025/3/10 09:05:30", None),
    ("2025/3/10", "BAD_VALUE"), ("10/3/2025 9:05", "BAD_VALUE"), ("25/3/10 9:05", "BAD_VALUE"),
    ("2025-03-10 23:59:60", "BAD_VALUE"), ("2025-02-29 10:00:00", "BAD_VALUE"), ("0000-03-01 00:00:00", "BAD_VALUE"),
])
def test_setl_time_text(registers, text, code):
    assert _codes([{"setl_time": text}], registers) == [code]


def test_dates_and_codes(registers):
    assert _codes([
        {"begndate": "2025-03-01", "enddate": "2025-03-10"},
        {"begndate": "2025-03-11", "enddate": "2025-03-10"},  # end before begin
        {"begndate": "1899-12-31"},
        {"med_type": "140104"}, {"med_type": "140201"}, {"med_type": "15"},
        {"offsite_type": "101"}, {"offsite_type": "903"}, {"offsite_type": "102"},
        {"is_emergency_rescue": "TRUE"}, {"is_emergency_rescue": "1"}, {"is_emergency_rescue": "yes please"},
        {"setl_id": "T\x07"},
    ], registers) == [None, "BAD_VALUE", "BAD_VALUE", None, None, "BAD_CODE", None, None, "BAD_CODE", None, None,
                      "BAD_VALUE", "BAD_VALUE"]


def test_no_rule_only_for_two_disease_of_employees(registers):
    rows = [{"setl_id": f"T{i}", "psn_no": psn, "insutype": ins, "med_type": mt}
            for i, (psn, ins, mt) in enumerate([("P002", "310", "9901"), ("P001", "390", "9901"),
                                                ("P002", "310", "52"), ("P001", "390", "41")])]
    assert _codes(rows, registers) == ["NO_RULE", None, None, None]


def test_cert_must_be_the_persons_and_valid_on_the_date(registers):
    rows = [
        {"setl_id": "T1", "dise_cert_code": "C001"},  # P001's, valid 2025
        {"setl_id": "T2", "dise_cert_code": "C002"},  # P003's certification
        {"setl_id": "T3", "psn_no": "P003", "dise_cert_code": "C002", "setl_time": "2025-03-31 23:59:59"},
        {"setl_id": "T4", "dise_cert_code": "C999"},
    ]
    assert _codes(rows, registers) == [None, "CERT_INVALID", "CERT_INVALID", "CERT_INVALID"]


def test_reversal_rules_within_one_month(registers):
    neg = {"medfee_sumamt": "-100.00", "cls_a_amt": "-100.00"}
    rows = [
        {"setl_id": "A", "setl_time": "2025-03-02 10:00:00"},
        # reversal settled before its original: unknown at that time
        {"setl_id": "RB", "orig_setl_id": "B", "setl_time": "2025-03-03 10:00:00", **neg},
        {"setl_id": "B", "setl_time": "2025-03-04 10:00:00"},
        # first reversal of A is wrong, the second is right and wins, the third is late
        {"setl_id": "RA1", "orig_setl_id": "A", "setl_time": "2025-03-05 10:00:00",
         "medfee_sumamt": "-90.00", "cls_a_amt": "-90.00"},
        {"setl_id": "RA2", "orig_setl_id": "A", "setl_time": "2025-03-06 10:00:00", **neg},
        {"setl_id": "RA3", "orig_setl_id": "A", "setl_time": "2025-03-07 10:00:00", **neg},
        # other person
        {"setl_id": "RC", "orig_setl_id": "C", "setl_time": "2025-03-08 10:00:00", "psn_no": "P003", **neg},
        {"setl_id": "C", "setl_time": "2025-03-01 10:00:00"},
        # positive amounts on a reversal are a mismatch, not NEGATIVE_AMOUNT
        {"setl_id": "RD", "orig_setl_id": "D", "setl_time": "2025-03-09 10:00:00"},
        {"setl_id": "D", "setl_time": "2025-03-01 11:00:00"},
        # an original that is itself rejected cannot be reversed
        {"setl_id": "E", "setl_time": "2025-03-01 12:00:00", "fixmedins_code": "H999"},
        {"setl_id": "RE", "orig_setl_id": "E", "setl_time": "2025-03-10 10:00:00", **neg},
        # a negative line without orig_setl_id
        {"setl_id": "F", **neg},
    ]
    assert _codes(rows, registers) == [
        None, "UNKNOWN_REVERSAL", None, "REVERSAL_MISMATCH", None, "ALREADY_REVERSED", "REVERSAL_MISMATCH", None,
        "REVERSAL_MISMATCH", None, "UNKNOWN_INSTITUTION", "UNKNOWN_REVERSAL", "NEGATIVE_AMOUNT"]


def test_reversal_of_an_earlier_month(registers, known):
    rows = [
        {"setl_id": "R1", "orig_setl_id": "S201", "medfee_sumamt": "-500.00", "cls_a_amt": "-300.00",
         "cls_b_amt": "-200.00"},
        {"setl_id": "R2", "orig_setl_id": "S201", "medfee_sumamt": "-500.00", "cls_a_amt": "-300.00",
         "cls_b_amt": "-200.00", "setl_time": "2025-03-11 10:00:00"},
        {"setl_id": "R3", "orig_setl_id": "S100", "psn_no": "P003", "medfee_sumamt": "-50.00",
         "cls_a_amt": "-50.00"},
    ]
    assert _codes(rows, registers, known) == [None, "ALREADY_REVERSED", "REVERSAL_MISMATCH"]


def test_empty_month(registers):
    raw = _raw([BASE_ROW]).clear()
    acc, rej = validate_settlements(raw, MONTH, registers, None)
    assert acc.height == 0 and rej.height == 0
    assert dict(acc.schema) == TYPED_SCHEMA and dict(rej.schema) == REJECT_SCHEMA


def test_missing_optional_columns_and_bad_month(registers):
    acc, _ = validate_settlements(_raw([{}]), MONTH, registers, None)
    assert acc.columns == list(TYPED_SCHEMA) and acc.get_column("hifp_pay").to_list() == [None]
    with pytest.raises(ValueError):
        validate_settlements(_raw([{}]), "2025-3", registers, None)


def test_applications(registers):
    raw = pl.DataFrame({
        "app_id": ["A1", "A2", "A1", "A3", "A4", None],
        "psn_no": ["P001", "P999", "P001", "P003", "P003", "P001"],
        "identity": ["dibao", "dibao", "dibao", "nobody", "tekun", "dibao"],
        "confirm_date": ["2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04", "2025-02-30", "2025-03-01"],
    }).with_columns(pl.lit("2025-03/assistance_applications.csv").alias("source_file"),
                    pl.int_range(1, 7, dtype=pl.Int64).alias("source_row"))
    acc, rej = validate_applications(raw, MONTH, registers)
    assert acc.select("app_id", "confirm_date", "month").rows() == [("A1", dt.date(2025, 3, 1), MONTH)]
    assert rej.select("source_row", "reason_code").rows() == [
        (2, "UNKNOWN_PERSON"), (3, "DUPLICATE_SETL_ID"), (4, "BAD_CODE"), (5, "BAD_VALUE"), (6, "MISSING_REQUIRED")]


# ------------------------------------------------------------------------------------ properties
@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.from_regex(r"\A-?[0-9]{1,16}(\.[0-9]{0,3})?\Z"),
    st.text(alphabet="0123456789-.e+, ", max_size=8),
))
def test_money_to_fen_matches_the_scalar_helper(text):
    got = pl.select(money_to_fen(clean_text(pl.lit(text, pl.String)))).item()
    try:
        want = yuan_text_to_fen(text.strip())
    except ValueError:
        want = None
    assert got == want


def test_certno_checksum():
    ids = ["11010519491231002X", "11010519491231002x", "110105194912310021", "42130219900202003X", None, "1" * 18]
    assert pl.select(certno_valid(pl.Series(ids, dtype=pl.String))).to_series().to_list() == [
        True, True, False, True, False, False]


NASTY = st.sampled_from([
    "", " ", "=cmd|' /C calc'!A0", "@SUM(A1)", "\x00", "\x1b[31m", "\r\n", "1e3", "1.234", "-0", "-0.00",
    "NaN", "inf", "1,000.00", "９", "2025-03-10 10:00:00", "2025-13-01 00:00:00", "9999-12-31 23:59:59",
    "0001-01-01", "2025-02-29", "P001", "P002", "H001", "D001", "390", "310", "9901", "21", "S200", "S201",
    "R200", "T1", "C001", "true", "x" * 5000, "中文",
])
CELLS = st.one_of(NASTY, st.text(max_size=10), st.from_regex(r"\A-?[0-9]{1,4}(\.[0-9]{1,3})?\Z"))
COLUMNS = list(BASE_ROW) + ["orig_setl_id", "dise_cert_code", "is_emergency_rescue", "begndate", "enddate",
                            "offsite_type", "presc_fixmedins_code", "hifp_pay"]


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries({c: CELLS for c in COLUMNS}), min_size=0, max_size=12),
       month=st.sampled_from(["2025-03", "2024-12"]))
def test_random_cells_only_ever_become_rejects(registers, known, rows, month):
    raw = pl.DataFrame(rows, schema={c: pl.String for c in COLUMNS}, orient="row").with_columns(
        pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in COLUMNS
    ).with_columns(pl.lit(f"{month}/hospital_settlements_h.csv").alias("source_file"),
                   pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))
    acc, rej = validate_settlements(raw, month, registers, known)
    assert acc.height + rej.height == raw.height
    assert set(rej.get_column("reason_code")) <= set(REJECT_REASONS)
    assert sorted(acc.get_column("source_row").to_list() + rej.get_column("source_row").to_list()) == list(
        range(1, raw.height + 1))
    for r in rej.iter_rows(named=True):
        assert r["reason"].startswith(r["reason_code"] + ": ")
        json.loads(r["raw"])
    assert dict(acc.schema) == TYPED_SCHEMA


def test_parquet_decimal_and_float_money_end_to_end(tmp_path, registers):
    """Parquet money: decimals and floats exact to the fen are accepted in fen; inexact floats are BAD_VALUE."""
    def table(ids, total, a, money_type):
        n = len(ids)
        return pa.table({
            "setl_id": ids, "mdtrt_id": ids, "psn_no": ["P001"] * n, "insutype": ["390"] * n,
            "med_type": ["11"] * n, "fixmedins_code": ["H002"] * n,
            "setl_time": pa.array([dt.datetime(2025, 3, 9, 8, 0)] * n, pa.timestamp("us")),
            "medfee_sumamt": pa.array(total, money_type), "fulamt_ownpay_amt": pa.array([0] * n, money_type),
            "overlmt_selfpay": pa.array([0] * n, money_type), "cls_a_amt": pa.array(a, money_type),
            "cls_b_amt": pa.array([0] * n, money_type), "is_emergency_rescue": pa.array([None] * n, pa.bool_()),
        })

    folder = tmp_path / MONTH
    folder.mkdir()
    pq.write_table(table(["D1", "D2"], [Decimal("12.30"), Decimal("0.07")], [Decimal("12.30"), Decimal("0.07")],
                         pa.decimal128(18, 2)), folder / "hospital_settlements_dec.parquet")
    pq.write_table(table(["F1", "F2", "F3"], [12.3, 0.1 + 0.2, 1e3], [12.3, 0.3, 1000.0], pa.float64()),
                   folder / "pharmacy_settlements_float.parquet")
    raw = pl.concat([read_table(p, tmp_path) for p in month_files(tmp_path, MONTH)["settlements"]],
                    how="diagonal")
    acc, rej = validate_settlements(raw, MONTH, registers, None)
    assert acc.height + rej.height == raw.height == 5
    assert acc.select("setl_id", "medfee_sumamt", "cls_a_amt", "is_emergency_rescue").rows() == [
        ("D1", 1230, 1230, False), ("D2", 7, 7, False), ("F1", 1230, 1230, False), ("F3", 100000, 100000, False)]
    assert rej.select("setl_id", "reason_code", "reason").rows() == [
        ("F2", "BAD_VALUE", "BAD_VALUE: medfee_sumamt '0.30000000000000004' is not a yuan amount"
                            " (plain decimal, at most 2 decimals)")]
