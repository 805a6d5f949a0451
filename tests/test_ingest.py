"""flows/ingest.py: reading CSV (UTF-8, BOM, GB18030) and Parquet as text, folders, registers."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.ingest import REGISTER_RECORDS, InputFileError, load_registers, month_files, read_table
from schemas.inputs import REGISTER_MODELS, RejectedFamilyBindingModel

FIXTURES = Path(__file__).parent / "fixtures" / "input"


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg
    return msg


# ------------------------------------------------------------------------------------ CSV
def test_gb18030_csv_with_chinese_text_quotes_and_commas():
    df = read_table(FIXTURES / "reference" / "persons.csv", FIXTURES)
    assert df.columns[:3] == ["psn_no", "certno", "psn_name"]
    assert df.columns[-2:] == ["source_file", "source_row"]
    assert all(t == pl.String for t in df.select(pl.exclude("source_row")).dtypes)
    assert df.schema["source_row"] == pl.Int64
    assert df.get_column("psn_name").to_list()[:5] == ["张三", "李四", "王五", "赵六", '钱七, 小名"阿七"']
    assert df.get_column("source_file").unique().to_list() == ["reference/persons.csv"]
    assert df.get_column("source_row").to_list() == list(range(1, 12))
    # empty cells are null
    assert df.filter(pl.col("psn_no") == "P003").get_column("enrol_date").to_list() == [None]
    assert df.filter(pl.col("psn_no") == "P004").get_column("rural").to_list() == [None]


def test_utf8_bom_csv():
    raw = (FIXTURES / "reference" / "institutions.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    df = read_table(FIXTURES / "reference" / "institutions.csv", FIXTURES)
    assert df.columns[0] == "fixmedins_code"  # no BOM in the first name
    assert df.get_column("fixmedins_name").to_list() == ["随州市中心医院", "曾都区东城卫生院", "襄阳大药房"]
    assert df.get_column("dedc_hosp_lv").to_list() == ["3", "1", None]


def test_crlf_csv_extra_column_and_formula_text_kept_verbatim():
    df = read_table(FIXTURES / "2025-03" / "pharmacy_settlements_01.csv", FIXTURES)
    assert df.height == 4
    assert df.get_column("source_file").unique().to_list() == ["2025-03/pharmacy_settlements_01.csv"]
    assert df.get_column("note").to_list() == ["处方, 外配", None, None, "=cmd|'/c calc'!A1"]
    assert df.get_column("setl_time").to_list()[0] == "2025-03-15 16:30:00"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


HEADER = ("setl_id,mdtrt_id,psn_no,insutype,med_type,fixmedins_code,setl_time,"
          "medfee_sumamt,fulamt_ownpay_amt,overlmt_selfpay,cls_a_amt,cls_b_amt")


def test_missing_required_column_is_one_line(tmp_path):
    header = HEADER.replace(",medfee_sumamt", "")
    p = _write(tmp_path / "2025-03" / "hospital_settlements_x.csv", (header + "\n").encode())
    with pytest.raises(InputFileError) as e:
        read_table(p, tmp_path)
    assert _one_line(e) == "2025-03/hospital_settlements_x.csv: missing required column medfee_sumamt"


def test_missing_several_required_columns(tmp_path):
    p = _write(tmp_path / "2025-03" / "pharmacy_settlements_x.csv", b"setl_id,psn_no\nS1,P1\n")
    with pytest.raises(InputFileError) as e:
        read_table(p, tmp_path)
    assert _one_line(e).startswith("2025-03/pharmacy_settlements_x.csv: missing required columns mdtrt_id, ")


def test_undecodable_bytes(tmp_path):
    p = _write(tmp_path / "2025-03" / "hospital_settlements_x.csv", HEADER.encode() + b"\n\xff\xfe\x80,\x81\n")
    with pytest.raises(InputFileError) as e:
        read_table(p, tmp_path)
    assert _one_line(e).startswith("2025-03/hospital_settlements_x.csv: undecodable")


def test_gbk_is_read_as_gb18030(tmp_path):
    text = "psn_no,psn_name\nP1,张三\nP2,欧阳娜娜\n"
    p = _write(tmp_path / "x.csv", text.encode("gbk"))
    assert read_table(p, tmp_path).get_column("psn_name").to_list() == ["张三", "欧阳娜娜"]


@pytest.mark.parametrize("body, problem", [
    (b"a,b,c\n1,2,3\n4,5\n", "ragged CSV"),
    (b"a,b,c\n1,2,3\n4,5,6,7\n", "ragged CSV"),
    (b"a,a,c\n1,2,3\n", "duplicated header name 'a'"),
    (b"a, a ,c\n1,2,3\n", "duplicated header name 'a'"),
    (b"", "empty file"),
    (b"\n\n", "empty file"),
    (b"a,source_row\n1,2\n", "reserved"),
])
def test_unreadable_csv(tmp_path, body, problem):
    p = _write(tmp_path / "x.csv", body)
    with pytest.raises(InputFileError) as e:
        read_table(p, tmp_path)
    msg = _one_line(e)
    assert msg.startswith("x.csv: ") and problem in msg


def test_header_only_blank_lines_whitespace_and_empty_strings(tmp_path):
    assert read_table(_write(tmp_path / "h.csv", b"a,b"), tmp_path).columns == ["a", "b", "source_file", "source_row"]
    df = read_table(_write(tmp_path / "x.csv", b' a ,b\r\n1,""\r\n\r\n , x \r\n'), tmp_path)
    assert df.columns[:2] == ["a", "b"]  # header names are stripped
    assert df.rows() == [("1", None, "x.csv", 1), (" ", " x ", "x.csv", 2)]  # values are not


def test_unsupported_file_type(tmp_path):
    p = _write(tmp_path / "x.xlsx", b"PK")
    with pytest.raises(InputFileError, match=r"^x.xlsx: unsupported file type"):
        read_table(p, tmp_path)


# ------------------------------------------------------------------------------------ Parquet
def _settlement_table(money_type: pa.DataType, amounts: list) -> pa.Table:
    n = len(amounts)
    cols = {
        "setl_id": pa.array([f"Q{i}" for i in range(n)]),
        "mdtrt_id": pa.array([f"M{i}" for i in range(n)]),
        "psn_no": pa.array(["P001"] * n),
        "insutype": pa.array(["390"] * n),
        "med_type": pa.array(["11"] * n),
        "fixmedins_code": pa.array(["H002"] * n),
        "begndate": pa.array([dt.date(2025, 3, 2)] * n, pa.date32()),
        "setl_time": pa.array([dt.datetime(2025, 3, 2, 9, 30)] * n, pa.timestamp("ms")),
        "is_emergency_rescue": pa.array([False] * n),
        "medfee_sumamt": pa.array(amounts, money_type),
        "fulamt_ownpay_amt": pa.array([0] * n, pa.int32()),
        "overlmt_selfpay": pa.array([0] * n, pa.int64()),
        "cls_a_amt": pa.array(amounts, money_type),
        "cls_b_amt": pa.array([None] * n, money_type),
    }
    return pa.table(cols)


def test_parquet_decimal_money(tmp_path):
    amounts = [Decimal("12.30"), Decimal("-0.00"), Decimal("1234567890123.45")]
    p = tmp_path / "2025-03" / "hospital_settlements_d.parquet"
    p.parent.mkdir()
    pq.write_table(_settlement_table(pa.decimal128(18, 2), amounts), p)
    df = read_table(p, tmp_path)
    assert all(t == pl.String for t in df.select(pl.exclude("source_row")).dtypes)
    assert df.get_column("medfee_sumamt").to_list() == ["12.30", "0.00", "1234567890123.45"]
    assert df.get_column("fulamt_ownpay_amt").to_list() == ["0", "0", "0"]
    assert df.get_column("begndate").to_list() == ["2025-03-02"] * 3
    assert df.get_column("setl_time").to_list() == ["2025-03-02 09:30:00"] * 3
    assert df.get_column("is_emergency_rescue").to_list() == ["false"] * 3
    assert df.get_column("cls_b_amt").to_list() == [None] * 3
    assert df.get_column("source_row").to_list() == [1, 2, 3]


def test_parquet_wide_decimal_scale_is_trimmed_to_the_fen_only_when_exact(tmp_path):
    p = tmp_path / "d4.parquet"
    pq.write_table(pa.table({"x": pa.array([Decimal("12.3000"), Decimal("1.2345"), Decimal("7.0000")],
                                           pa.decimal128(18, 4))}), p)
    assert read_table(p, tmp_path).get_column("x").to_list() == ["12.30", "1.2345", "7.00"]


def test_parquet_float_money_is_shortest_exact_text(tmp_path):
    p = tmp_path / "f.parquet"
    vals = [12.3, 0.1 + 0.2, 1e20, float("nan"), -0.0, 100.0, 1234567.89]
    pq.write_table(pa.table({"x": pa.array(vals, pa.float64()),
                             "y": pa.array([12.3, 0.5, 1.0, 2.0, 3.0, 4.0, 1234567.89], pa.float32())}), p)
    df = read_table(p, tmp_path)
    assert df.get_column("x").to_list() == ["12.3", "0.30000000000000004", "1e+20", "NaN", "-0.0", "100.0",
                                            "1234567.89"]
    # float32: its own shortest text where it can hold the fen; its exact value above 2**24 fen
    assert df.get_column("y").to_list() == ["12.3", "0.5", "1.0", "2.0", "3.0", "4.0", "1234567.875"]


def test_parquet_datetime_with_zone_is_local_time(tmp_path):
    p = tmp_path / "t.parquet"
    utc = dt.datetime(2025, 3, 31, 17, 0, tzinfo=dt.UTC)
    pq.write_table(pa.table({"t": pa.array([utc], pa.timestamp("us", tz="UTC")),
                             "u": pa.array([dt.datetime(2025, 3, 1, 8, 0, 0, 500)], pa.timestamp("ns"))}), p)
    df = read_table(p, tmp_path)
    assert df.get_column("t").to_list() == ["2025-04-01 01:00:00"]
    assert df.get_column("u").to_list() == ["2025-03-01 08:00:00.000500"]


def test_bad_parquet_and_duplicated_parquet_columns(tmp_path):
    bad = _write(tmp_path / "bad.parquet", b"PAR1 this is not parquet")
    with pytest.raises(InputFileError) as e:
        read_table(bad, tmp_path)
    assert _one_line(e).startswith("bad.parquet: unreadable Parquet")
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]), dup)
    with pytest.raises(InputFileError, match=r"^dup.parquet: duplicated header name 'a'"):
        read_table(dup, tmp_path)


def test_parquet_nested_column_is_unsupported(tmp_path):
    p = tmp_path / "n.parquet"
    pq.write_table(pa.table({"a": pa.array([[1, 2]])}), p)
    with pytest.raises(InputFileError, match=r"^n.parquet: column 'a' has unsupported type"):
        read_table(p, tmp_path)


# ------------------------------------------------------------------------------------ folders
def test_month_files(tmp_path):
    m = tmp_path / "2025-03"
    for name in ["pharmacy_settlements_b.parquet", "hospital_settlements_2.csv", "hospital_settlements_1.csv",
                 "assistance_applications.csv", "notes.txt", ".hospital_settlements_x.csv",
                 "pharmacy_settlements_a.csv"]:
        _write(m / name, b"")
    files = month_files(tmp_path, "2025-03")
    assert [p.name for p in files["settlements"]] == [
        "hospital_settlements_1.csv", "hospital_settlements_2.csv", "pharmacy_settlements_a.csv",
        "pharmacy_settlements_b.parquet"]
    assert [p.name for p in files["applications"]] == ["assistance_applications.csv"]
    with pytest.raises(InputFileError) as e:
        month_files(tmp_path, "2025-04")
    assert _one_line(e) == "2025-04: month folder does not exist"
    with pytest.raises(InputFileError):
        month_files(tmp_path, "2025-3")


# ------------------------------------------------------------------------------------ registers
REGISTER_SCHEMAS = {
    "persons": {"psn_no": pl.String, "certno": pl.String, "psn_name": pl.String, "gend": pl.String,
                "brdy": pl.Date, "insutype": pl.String, "insuplc_admdvs": pl.String, "rural": pl.Boolean,
                "enrol_date": pl.Date},
    "identities": {"psn_no": pl.String, "identity": pl.String, "begndate": pl.Date, "enddate": pl.Date},
    "employment": {"psn_no": pl.String, "psn_type": pl.String, "flexible": pl.Boolean, "contrib_mode": pl.String,
                   "contrib_base": pl.Int64, "retire_kind": pl.String, "benefit": pl.String,
                   "begndate": pl.Date, "enddate": pl.Date},
    "certifications": {"psn_no": pl.String, "dise_cert_code": pl.String, "dise_codg": pl.String,
                       "kind": pl.String, "begndate": pl.Date, "enddate": pl.Date},
    "institutions": {"fixmedins_code": pl.String, "fixmedins_name": pl.String, "fixmedins_type": pl.String,
                     "dedc_hosp_lv": pl.String, "facility": pl.String, "admdvs": pl.String,
                     "offsite_outpatient_enabled": pl.Boolean},
    "family_bindings": {"authoriser_psn_no": pl.String, "user_psn_no": pl.String, "relation": pl.String,
                        "begndate": pl.Date, "enddate": pl.Date},
    "account_balances": {"psn_no": pl.String, "as_of": pl.Date, "balc": pl.Int64},
    "opening_accumulators": {"psn_no": pl.String, "year": pl.Int32, "name": pl.String, "value": pl.Int64,
                             "as_of": pl.Date},
}


def test_load_registers_types_and_family_binding_rejects():
    regs = load_registers(FIXTURES)
    assert set(regs) == set(REGISTER_SCHEMAS) | {"family_bindings_rejected", *REGISTER_RECORDS}
    for name, schema in REGISTER_SCHEMAS.items():
        assert dict(regs[name].schema) == schema, name
        REGISTER_MODELS[name].validate(regs[name])
    persons = regs["persons"]
    assert persons.height == 11
    p4 = persons.filter(pl.col("psn_no") == "P004").row(0, named=True)
    assert p4["rural"] is False and p4["brdy"] == dt.date(1950, 3, 3)
    assert persons.filter(pl.col("psn_no") == "P003").get_column("certno").item() == "42130219900202003X"
    assert regs["employment"].get_column("contrib_base").to_list() == [345000, None, 345000, 500000]
    assert regs["account_balances"].get_column("balc").to_list() == [100000, 0]
    kept = regs["family_bindings"]
    assert kept.select("authoriser_psn_no", "user_psn_no").rows() == [
        ("P002", "P005"), ("P002", "P006"), ("P002", "P007"), ("P002", "P008"), ("P002", "P009"),
        ("P002", "P010"), ("P002", "P003"), ("P004", "P003"), ("P011", "P001")]
    rejected = regs["family_bindings_rejected"]
    RejectedFamilyBindingModel.validate(rejected)
    assert rejected.select("source_file", "source_row", "user_psn_no", "reason").rows() == [
        ("reference/family_bindings.csv", 7, "P011", "relation 'sibling' is not one of spouse/parent/child"),
        ("reference/family_bindings.csv", 8, "P001",
         "would give authoriser P002 a 7th live user on 2024-02-01 (at most 6, POLICY §4.5)"),
        ("reference/family_bindings.csv", 12, "P003", "authoriser 'P001' is not an employee (insutype 310)"),
    ]


@pytest.fixture
def input_copy(tmp_path):
    shutil.copytree(FIXTURES / "reference", tmp_path / "reference")
    return tmp_path


def _edit(root: Path, name: str, old: str, new: str, encoding: str = "utf-8") -> None:
    p = root / "reference" / name
    text = p.read_bytes().decode(encoding)
    assert old in text
    p.write_bytes(text.replace(old, new, 1).encode(encoding))


P001_ROWS = [("reference/certifications.csv", 1), ("reference/family_bindings.csv", 8),
             ("reference/family_bindings.csv", 11), ("reference/family_bindings.csv", 12),
             ("reference/identities.csv", 1)]  # the fixture's rows naming P001 (read off the CSV files)


@pytest.mark.parametrize("name, old, new, encoding, own, others", [
    # POLICY §1.14: the persons row is rejected, so P001 is unknown and the 5 rows naming P001 are UNKNOWN_PERSON
    ("persons.csv", "421302198001010011", "421302198001010012", "gb18030",
     [(1, "BAD_VALUE", "BAD_VALUE: certno '421302198001010012' is not an 18-character ID number with a valid checksum")],
     P001_ROWS),
    # a psn_no twice: neither row can be trusted; P001 and P002 become unknown (P002: 12 rows name it)
    ("persons.csv", "P002,420602197505050026", "P001,420602197505050026", "gb18030",
     [(1, "BAD_VALUE", "BAD_VALUE: psn_no 'P001' fails field_uniqueness"),
      (2, "BAD_VALUE", "BAD_VALUE: psn_no 'P001' fails field_uniqueness")], 15),
    ("persons.csv", "1975-05-05,310", "1975-05-05,320", "gb18030",
     [(2, "BAD_CODE", "BAD_CODE: insutype '320' is not one of 310/390")], 11),
    ("identities.csv", "dibao", "rich", "utf-8",
     [(1, "BAD_CODE", "BAD_CODE: identity 'rich' is not one of tekun/orphan/dibao/fanpin/dibao_edge/"
       "monitor_unstable/monitor_edge/monitor_sudden/illness_poor/other_hardship/disabled/mental/family_planning/"
       "poverty_exit/veteran")], []),
    ("identities.csv", "2020-01-01,2025-12-31", "2020-01-01,2019-12-31", "utf-8",
     [(2, "BAD_VALUE", "BAD_VALUE: fails enddate >= begndate")], []),
    ("employment.csv", "3450.00", "-1.00", "utf-8",
     [(1, "BAD_VALUE", "BAD_VALUE: contrib_base '-100' fails greater_than_or_equal_to(0)")], []),
    ("certifications.csv", "P003,C002", "P099,C002", "utf-8",
     [(2, "UNKNOWN_PERSON", "UNKNOWN_PERSON: psn_no 'P099' is not in the person register")], []),
    ("institutions.csv", "H001,随州市中心医院,hospital,3", "H001,随州市中心医院,hospital,", "utf-8",
     [(1, "BAD_VALUE", "BAD_VALUE: fails dedc_hosp_lv is given for hospitals")], []),
    ("family_bindings.csv", "P004,P003,child,2024-01-01", "P004,P003,child,2024-13-01", "utf-8",
     [(10, "BAD_VALUE", "BAD_VALUE: begndate '2024-13-01' is not a date YYYY-MM-DD (year 1900 or later)")], []),
    ("account_balances.csv", "P011,2024-12-31,0", "P011,2024-12-31,", "utf-8",
     [(2, "MISSING_REQUIRED", "MISSING_REQUIRED: balc is empty")], []),
])
def test_an_invalid_register_row_is_rejected_on_its_own(input_copy, name, old, new, encoding, own, others):
    """POLICY §1.14, DATA.md §3: the row goes to the register rejects (file, row, reason, the row as text), the
    register keeps its other rows, and the rows of other registers naming a person it removed are UNKNOWN_PERSON."""
    base = load_registers(FIXTURES)
    if name == "institutions.csv":
        p = input_copy / "reference" / name
        p.write_bytes(p.read_bytes().replace(old.encode(), new.encode(), 1))
    else:
        _edit(input_copy, name, old, new, encoding)
    regs = load_registers(input_copy)
    rejects = regs["register_rejects"]
    file = f"reference/{name}"
    assert rejects.filter(pl.col("source_file") == file).select("source_row", "reason_code", "reason").rows() == own
    assert rejects.filter(pl.col("source_file") == file)["raw"].str.starts_with("{").all()
    assert rejects["setl_id"].is_null().all()
    rest = rejects.filter(pl.col("source_file") != file)
    if isinstance(others, list):
        assert rest.select("source_file", "source_row").rows() == others
    else:
        assert rest.height == others
    assert (rest["reason_code"] == "UNKNOWN_PERSON").all()
    stem = name.removesuffix(".csv")
    assert regs[stem].height == base[stem].height - len(own)  # the rest of the register is used


def test_a_register_file_that_cannot_be_read_still_stops_the_run(input_copy):
    _edit(input_copy, "employment.csv", "3450.00", "3,450.00", "utf-8")
    with pytest.raises(InputFileError) as e:
        load_registers(input_copy)
    assert _one_line(e).startswith("reference/employment.csv: ragged CSV")


def test_retire_kind_readings_are_warnings(input_copy):
    """POLICY §1.14, A-30: an empty retire_kind on a retired (12) period reads as `normal`; a retire_kind on an
    in-service (11) period is ignored. Both rows are kept and counted as warnings."""
    _edit(input_copy, "employment.csv", "normal,normal,2010", ",normal,2010", "utf-8")  # row 2: retired, emptied
    p = input_copy / "reference" / "employment.csv"
    lines = p.read_text().splitlines()
    row1 = lines[1].split(",")
    assert row1[1] == "11" and row1[5] == ""  # row 1 is in service without a retire_kind
    row1[5] = "contributing"
    lines[1] = ",".join(row1)
    p.write_text("\n".join(lines) + "\n")
    regs = load_registers(input_copy)
    assert regs["register_rejects"].height == 0
    assert regs["register_warnings"].rows() == [
        ("reference/employment.csv", 1, "retire_kind 'contributing' on an in-service (11) period is ignored"
                                        " (POLICY §1.14)"),
        ("reference/employment.csv", 2, "empty retire_kind on a retired (12) period read as 'normal'"
                                        " (POLICY §1.14, A-30)")]
    emp = regs["employment"]
    assert emp.height == 4
    assert emp["retire_kind"].to_list()[:2] == [None, "normal"]


def test_registers_missing_ambiguous_and_optional(input_copy):
    (input_copy / "reference" / "account_balances.csv").unlink()
    regs = load_registers(input_copy)
    assert regs["account_balances"].height == 0
    assert dict(regs["account_balances"].schema) == REGISTER_SCHEMAS["account_balances"]
    pl.read_csv(input_copy / "reference" / "identities.csv").write_parquet(
        input_copy / "reference" / "identities.parquet")
    with pytest.raises(InputFileError, match="^reference/identities: both a CSV and a Parquet file"):
        load_registers(input_copy)
    (input_copy / "reference" / "identities.csv").unlink()
    assert load_registers(input_copy)["identities"].height == 2  # the Parquet one
    (input_copy / "reference" / "persons.csv").unlink()
    with pytest.raises(InputFileError, match="^reference/persons.csv: missing register"):
        load_registers(input_copy)


def test_register_missing_column(input_copy):
    p = input_copy / "reference" / "certifications.csv"
    p.write_text(p.read_text().replace(",kind,", ",kind_x,", 1))
    with pytest.raises(InputFileError) as e:
        load_registers(input_copy)
    assert _one_line(e) == "reference/certifications.csv: missing required column kind"


# ------------------------------------------------------------------------------------ properties
CELL = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["=cmd|' /C calc'!A0", "+1", "-0", "1e3", "1.234", "NaN", "1,000.00", "\x00", "\r", "\n",
                     '"', '""', ",", " ", "\t", "\ufeff", "9999-99-99", "2025-02-30", "中文,逗号"]),
    st.text(alphabet="ab\"\n,", min_size=2000, max_size=3000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELL, min_size=3, max_size=3), max_size=8),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]))
def test_csv_round_trip_of_random_cells(tmp_path, rows, encoding):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["a", "b", "c"])
    w.writerows(rows)
    text = buf.getvalue()
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:  # lone surrogates
        return
    p = _write(tmp_path / "r.csv", data)
    try:
        df = read_table(p, tmp_path)
    except InputFileError as e:
        assert "\n" not in str(e)
        return
    expected = [tuple(v if v != "" else None for v in r) for r in rows]
    if encoding == "gb18030" and df.select("a", "b", "c").rows() != expected:
        # GB18030 bytes that happen to be valid UTF-8 are read as UTF-8 (detection order)
        data.decode("utf-8")
        return
    assert df.select("a", "b", "c").rows() == expected
    assert df.get_column("source_row").to_list() == list(range(1, df.height + 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_input_file_error(tmp_path, data):
    for name in ("x.csv", "x.parquet"):
        p = _write(tmp_path / name, data)
        try:
            df = read_table(p, tmp_path)
        except InputFileError as e:
            assert "\n" not in str(e)
        else:
            assert df.columns[-2:] == ["source_file", "source_row"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5))
def test_parquet_floats_render_as_text_that_round_trips(tmp_path, values):
    p = tmp_path / "f.parquet"
    pq.write_table(pa.table({"x": pa.array(values, pa.float64())}), p)
    got = read_table(p, tmp_path).get_column("x").to_list()
    for v, s in zip(values, got, strict=True):
        if v != v:
            assert s == "NaN"
        else:
            assert float(s) == v
