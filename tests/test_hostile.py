"""Hostile and broken input (issue 6): whatever bytes arrive, the ingest ends in rows accepted or rejected with a
reason, or in one clear InputFileError naming the file — never a traceback, never a partial write, and always
rows_in = rows_accepted + rows_rejected.

The properties drive flows/ingest.py `read_table` and transforms/validate.py `validate_settlements` directly
(fast); the last tests run whole months through `yibao run` in a separate process.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.ingest import InputFileError, load_registers, read_table
from transforms.reasons import REJECT_REASONS
from transforms.validate import validate_settlements

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
MONTH = "2025-01"
REGS = load_registers(SAMPLE)
with open(SAMPLE / MONTH / "hospital_settlements.csv", encoding="utf-8", newline="") as _f:
    _rows = list(csv.reader(_f))
HEADER, TEMPLATE = _rows[0], dict(zip(_rows[0], _rows[1], strict=True))  # a line the sample accepts
KNOWN = pl.DataFrame(schema={"setl_id": pl.String, "psn_no": pl.String, "orig_setl_id": pl.String,
                             **{c: pl.Int64 for c in ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay",
                                                      "cls_a_amt", "cls_b_amt")}})
EXAMPLES = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def ingest(folder: Path, name: str, content: bytes) -> tuple[str, object]:
    """One file through the ingest: ("error", message) or ("rows", (raw, accepted, rejects)). Anything else
    (another exception) fails the test with its traceback."""
    path = folder / MONTH / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    try:
        raw = read_table(path, folder)
    except InputFileError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"{MONTH}/{name}: "), msg
        return "error", msg
    accepted, rejects = validate_settlements(raw, MONTH, REGS, KNOWN)
    assert raw.height == accepted.height + rejects.height  # rows_in = rows_accepted + rows_rejected
    assert rejects["reason_code"].is_in(list(REJECT_REASONS)).all()
    assert rejects.select(pl.col("reason", "source_file", "source_row", "raw").is_null().any()).row(0) == (False,) * 4
    # money stays integer fen; nothing of the engine sees a float
    assert all(accepted.schema[c] == pl.Int64 for c in ("medfee_sumamt", "cls_a_amt", "cls_b_amt"))
    return "rows", (raw, accepted, rejects)


def csv_bytes(rows: list[dict], header: list[str] = HEADER, encoding: str = "utf-8") -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r.get(h, "") for h in header])
    return buf.getvalue().encode(encoding)


def row(**changes) -> dict:
    r = {**TEMPLATE, **changes}
    return r


def reason_of(result, setl_id: str) -> str | None:
    kind, value = result
    assert kind == "rows"
    _, accepted, rejects = value
    hit = rejects.filter(pl.col("setl_id") == setl_id)
    if hit.height:
        return hit["reason_code"][0]
    assert accepted.filter(pl.col("setl_id") == setl_id).height == 1
    return None


# ------------------------------------------------------------------------------------------- whole files
@EXAMPLES
@given(st.binary(max_size=4000))
def test_random_bytes_as_csv(tmp_path_factory, data):
    ingest(tmp_path_factory.mktemp("b"), "hospital_settlements.csv", data)


@EXAMPLES
@given(st.binary(max_size=4000))
def test_random_bytes_as_parquet(tmp_path_factory, data):
    kind, msg = ingest(tmp_path_factory.mktemp("b"), "hospital_settlements.parquet", data)
    assert kind == "error" and ("Parquet" in msg or "missing required" in msg)


def _parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


GOOD_PARQUET = _parquet([row(setl_id=f"S{i}") for i in range(50)])


@EXAMPLES
@given(st.integers(0, len(GOOD_PARQUET) - 1))
def test_truncated_parquet_is_one_clear_error(tmp_path_factory, cut):
    kind, msg = ingest(tmp_path_factory.mktemp("t"), "pharmacy_settlements.parquet", GOOD_PARQUET[:cut])
    assert kind == "error" and "unreadable Parquet" in msg


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_utf8_bom_and_gb18030_read_the_same_chinese_text(tmp_path, encoding):
    rows = [row(setl_id="S1", psn_name="梁文成·𠀀", fixmedins_name="襄阳市中心医院")]
    kind, (raw, accepted, _) = ingest(tmp_path, "hospital_settlements.csv", csv_bytes(rows, encoding=encoding))
    assert kind == "rows" and accepted.height == 1
    assert raw["psn_name"].to_list() == ["梁文成·𠀀"] and raw["fixmedins_name"].to_list() == ["襄阳市中心医院"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "big5", "shift_jis", "latin-1"])
def test_wrong_encodings_end_in_one_error_or_the_same_codes(tmp_path, encoding):
    """Text in another encoding either cannot be decoded (one error), decodes to a header without the required
    columns (one error), or decodes as GB18030 (which takes most byte pairs): then the ASCII codes and amounts
    the adjudication reads are the same, only the Chinese names (never used) come out garbled."""
    text = csv_bytes([row(setl_id="S1", psn_name="梁文成")]).decode("utf-8")
    kind, value = ingest(tmp_path, "hospital_settlements.csv", text.encode(encoding, errors="replace"))
    if kind == "rows":
        raw, accepted, _ = value
        assert encoding in ("big5", "shift_jis", "latin-1") and raw["psn_name"].to_list() != ["梁文成"]
        assert accepted.height == 1 and accepted["psn_no"].to_list() == [TEMPLATE["psn_no"]]
    else:
        assert encoding in ("utf-16", "utf-32") or "undecodable" in value


def test_a_field_longer_than_a_read_block_ends_in_a_reason(tmp_path):
    from flows.ingest import CSV_BLOCK
    result = ingest(tmp_path, "hospital_settlements.csv",
                    csv_bytes([row(setl_id="S1", psn_no="9" * (CSV_BLOCK + 10)), row(setl_id="S2")]))
    assert reason_of(result, "S1") == "UNKNOWN_PERSON" and reason_of(result, "S2") is None


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["setl_id", "psn_no", "dise_codg", "medfee_sumamt", "psn_name"]),
       st.integers(1_000, 3_000_000))
def test_huge_fields_end_in_a_reason(tmp_path_factory, column, size):
    big = ("9" if column == "medfee_sumamt" else "字") * size
    result = ingest(tmp_path_factory.mktemp("h"), "hospital_settlements.csv",
                    csv_bytes([row(**{"setl_id": "S1", column: big}), row(setl_id="S2")]))
    expected = {"psn_no": "UNKNOWN_PERSON", "medfee_sumamt": "BAD_VALUE"}
    if column in expected:
        assert reason_of(result, "S1") == expected[column]
    assert reason_of(result, "S2") is None


@pytest.mark.parametrize("header", [
    [*HEADER, "psn_no"],                       # the same name twice
    [*HEADER[:-1], " " + HEADER[0]],           # the same name once padded
    [*HEADER, "source_row"],                   # a name the pipeline reserves
])
def test_duplicated_or_reserved_headers_are_one_clear_error(tmp_path, header):
    kind, msg = ingest(tmp_path, "hospital_settlements.csv", csv_bytes([row()], header=header))
    assert kind == "error" and ("duplicated header name" in msg or "reserved" in msg)
    table = pa.table([pa.array(["x"]) for _ in header], names=header)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    kind, msg = ingest(tmp_path, "pharmacy_settlements.parquet", sink.getvalue())
    assert kind == "error" and ("duplicated header name" in msg or "reserved" in msg)


# ------------------------------------------------------------------------------------------- fields
FORMULA = st.sampled_from(["=", "+", "-", "@", "\t=", "=cmd|' /C calc'!A0", "=HYPERLINK(\"http://x\")", "+1+1",
                           "-2", "@SUM(A1)"])
CONTROL = st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=5)


@EXAMPLES
@given(st.sampled_from(["setl_id", "psn_no", "mdtrt_id", "fixmedins_code", "dise_codg", "psn_name",
                        "medfee_sumamt", "setl_time", "insutype"]),
       st.one_of(FORMULA, CONTROL, st.tuples(FORMULA, CONTROL).map("".join)),
       st.sampled_from(["prefix", "replace"]))
def test_formula_like_and_control_characters(tmp_path_factory, column, text, how):
    value = text + TEMPLATE[column] if how == "prefix" else text
    result = ingest(tmp_path_factory.mktemp("f"), "hospital_settlements.csv",
                    csv_bytes([row(**{"setl_id": "S1", column: value}), row(setl_id="S2")]))
    if result[0] == "error":  # a control character that ends the row (NUL, a bare line break) leaves it ragged
        assert "ragged" in result[1] or "unreadable" in result[1]
        return
    _, (raw, accepted, rejects) = result
    if column not in ("setl_id", "psn_name", "dise_codg", "mdtrt_id") and value.strip() != TEMPLATE[column]:
        assert rejects.height >= 1  # a code, person or amount that is not what it should be never passes
    stored = pl.concat([accepted.select(pl.col(pl.String)), rejects.select("raw")], how="diagonal_relaxed")
    assert stored.height == raw.height


@pytest.mark.parametrize("column, value, reason", [
    ("setl_time", "0000-01-01 10:00:00", "BAD_VALUE"),
    ("setl_time", "1899-12-31 10:00:00", "BAD_VALUE"),
    ("setl_time", "9999-12-31 23:59:59", "WRONG_MONTH"),
    ("setl_time", "2025-01-32 10:00:00", "BAD_VALUE"),
    ("setl_time", "2025-02-29 10:00:00", "BAD_VALUE"),
    ("setl_time", "2025-01-15 24:00:00", "BAD_VALUE"),
    ("setl_time", "20250115 10:00:00", "BAD_VALUE"),
    ("setl_time", "+12025-01-15 10:00:00", "BAD_VALUE"),
    ("begndate", "0001-01-01", "BAD_VALUE"),
    ("begndate", "2025-1-1", None),  # DATA.md §1: month and day without their leading zero are read
    ("begndate", "2025/1/1", None),  # as a spreadsheet re-saves it
    ("begndate", "1/1/2025", "BAD_VALUE"),  # day-first: ambiguous, never guessed
    ("begndate", "25/1/1", "BAD_VALUE"),  # two-digit year
    ("enddate", "9999-12-31", None),       # a far end date is a date; the stay is read as it is
    ("enddate", "1900-01-01", "BAD_VALUE"),  # before begndate
    ("begndate", "１９９０-01-01", "BAD_VALUE"),  # full-width digits are not digits here
])
def test_dates_out_of_range(tmp_path, column, value, reason):
    result = ingest(tmp_path, "hospital_settlements.csv", csv_bytes([row(setl_id="S1", **{column: value})]))
    assert reason_of(result, "S1") == reason


AMOUNTS = ["medfee_sumamt", "cls_a_amt", "cls_b_amt", "fulamt_ownpay_amt", "overlmt_selfpay", "hifp_pay"]


@EXAMPLES
@given(st.sampled_from(AMOUNTS),
       st.one_of(st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str).filter(lambda s: not
                                                                                    s.endswith("0")),
                 st.sampled_from(["1e3", "1E+02", "1.5e-2", "12.3e1", "NaN", "inf", "-inf", "1,000.00", "0x10",
                                  "١٢٣", "１２", "12.", ".5", "+12.00", "12.00元", "¥12", "1 000", "--1", "1.2.3",
                                  "9999999999999999.99"])))
def test_amounts_with_three_decimals_exponents_or_other_notations_are_rejected(tmp_path_factory, column, text):
    result = ingest(tmp_path_factory.mktemp("a"), "hospital_settlements.csv",
                    csv_bytes([row(**{"setl_id": "S1", column: text}), row(setl_id="S2")]))
    assert reason_of(result, "S1") == "BAD_VALUE"
    assert reason_of(result, "S2") is None


@pytest.mark.parametrize("text", ["-0", "-0.0", "-0.00", "0.00", "-000.00"])
def test_negative_zero_is_zero_fen_and_no_negative_amount(tmp_path, text):
    r = row(setl_id="S1", overlmt_selfpay=text)
    result = ingest(tmp_path, "hospital_settlements.csv", csv_bytes([r]))
    assert reason_of(result, "S1") is None
    _, (_, accepted, _) = result
    assert accepted["overlmt_selfpay"].to_list() == [0]


def test_negative_zero_in_parquet_floats_and_decimals(tmp_path):
    from decimal import Decimal
    table = pa.Table.from_pylist([row(setl_id="S1"), row(setl_id="S2")])
    for name, values in [("overlmt_selfpay", pa.array([-0.0, 0.0], pa.float64())),
                         ("acct_pay", pa.array([Decimal("-0.00"), None], pa.decimal128(18, 2)))]:
        table = table.set_column(table.column_names.index(name), name, values)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    kind, (raw, accepted, rejects) = ingest(tmp_path, "pharmacy_settlements.parquet", sink.getvalue())
    assert rejects.height == 0, rejects.to_dicts()
    assert accepted["overlmt_selfpay"].to_list() == [0, 0] and accepted["acct_pay"].to_list() == [0, None]


# ------------------------------------------------------------------------------------------- whole runs
def _bureau(tmp: Path) -> Path:
    root = tmp / "in"
    shutil.copytree(SAMPLE / "reference", root / "reference")
    (root / MONTH).mkdir()
    shutil.copy(SAMPLE / MONTH / "hospital_settlements.csv", root / MONTH / "hospital_settlements.csv")
    return root


def test_a_run_on_a_broken_file_exits_with_one_line_and_writes_nothing(tmp_path, prefect_harness):
    """Random bytes where a month's Parquet should be: `yibao run` exits 1 with one line; the database is
    byte-for-byte what it was; the runs table shows the failed run."""
    import hashlib

    from tests.test_operations import q, user_lines, yibao
    root = _bureau(tmp_path)
    db = tmp_path / "h.duckdb"
    first = yibao(["run", "--month", MONTH, "--input", str(root), "--db", str(db)])
    assert first.returncode == 0, first.stderr
    (root / MONTH / "pharmacy_settlements.parquet").write_bytes(GOOD_PARQUET[: len(GOOD_PARQUET) // 2])
    sha = hashlib.sha256(db.read_bytes()).hexdigest()
    tables = q(db, "SELECT count(*) FROM adjudicated")
    proc = yibao(["run", "--month", MONTH, "--input", str(root), "--db", str(db)])
    assert proc.returncode == 1
    lines = user_lines(proc.stderr)
    assert lines == [lines[0]] and lines[0].startswith(
        f"yibao: {MONTH}/pharmacy_settlements.parquet: unreadable Parquet")
    assert q(db, "SELECT count(*) FROM adjudicated") == tables
    status, error = q(db, "SELECT status, error FROM runs ORDER BY started_at DESC LIMIT 1")[0]
    assert status == "failed" and "pharmacy_settlements.parquet" in error
    # only the runs table changed: every month table is as it was
    from flows import store
    assert sha != hashlib.sha256(db.read_bytes()).hexdigest()
    assert q(db, "SELECT count(*) FROM runs WHERE status='succeeded'") == [(1,)]
    assert all(q(db, f"SELECT count(DISTINCT run_id) FROM {t} WHERE month=?", [MONTH])[0][0] <= 1
               for t in store.MONTH_TABLES)


def test_a_run_with_every_kind_of_hostile_row_accounts_for_each(tmp_path, prefect_harness):
    """One month whose file mixes good lines with every hostile field: the run succeeds, every hostile row is in
    rejects with its reason, and rows_in = rows_accepted + rows_rejected in the runs table."""
    from flows.monthly import month_flow
    from tests.test_operations import q
    root = _bureau(tmp_path)
    hostile = [row(setl_id="H1", medfee_sumamt="1.234"), row(setl_id="H2", cls_a_amt="1e3"),
               row(setl_id="H3", psn_no="=cmd|' /C calc'!A0"), row(setl_id="H4", insutype="3\x0790"),
               row(setl_id="H5", setl_time="9999-12-31 23:59:59"), row(setl_id="H6", begndate="0001-01-01"),
               row(setl_id="H7", fixmedins_code="@SUM(A1)"), row(setl_id="H8", medfee_sumamt="NaN"),
               row(setl_id="H9", overlmt_selfpay="-0.00")]  # negative zero: zero, accepted
    (root / MONTH / "pharmacy_settlements.csv").write_bytes(csv_bytes(hostile, encoding="gb18030"))
    db = tmp_path / "h.duckdb"
    month_flow(MONTH, str(root), str(db))
    rows_in, acc, rej = q(db, "SELECT rows_in, rows_accepted, rows_rejected FROM runs WHERE status='succeeded'")[0]
    assert rows_in == acc + rej and rej >= 8
    got = dict(q(db, "SELECT setl_id, reason_code FROM rejects WHERE source_file LIKE '%pharmacy%'"))
    assert got == {"H1": "BAD_VALUE", "H2": "BAD_VALUE", "H3": "UNKNOWN_PERSON", "H4": "BAD_VALUE",
                   "H5": "WRONG_MONTH", "H6": "BAD_VALUE", "H7": "UNKNOWN_INSTITUTION", "H8": "BAD_VALUE"}
    assert q(db, "SELECT overlmt_selfpay FROM settlements WHERE setl_id='H9'") == [(0,)]


@EXAMPLES
@given(st.sampled_from(sorted(p.name for p in (SAMPLE / "reference").iterdir())),
       st.sampled_from(["random", "truncate", "duplicate_header", "empty"]), st.binary(min_size=1, max_size=500))
def test_broken_registers_are_one_clear_error(tmp_path_factory, name, how, noise):
    """A register the run cannot trust stops the run with one line naming it (flows/ingest.py load_registers)."""
    root = tmp_path_factory.mktemp("r")
    shutil.copytree(SAMPLE / "reference", root / "reference")
    target = root / "reference" / name
    data = target.read_bytes()
    if how == "random":
        data = noise
    elif how == "truncate":
        data = data[: len(data) // 3]
    elif how == "duplicate_header":
        if target.suffix == ".csv":
            head, _, rest = data.partition(b"\n")
            first = head.split(b",")[0]
            data = head.rstrip(b"\r") + b"," + first + b"\n" + rest
        else:
            table = pq.read_table(io.BytesIO(data))
            table = table.append_column(table.column_names[0], table.column(0))
            sink = io.BytesIO()
            pq.write_table(table, sink)
            data = sink.getvalue()
    else:
        data = b""
    target.write_bytes(data)
    try:
        load_registers(root)
    except InputFileError as e:
        assert "\n" not in str(e) and str(e).startswith(f"reference/{target.stem}")
    else:  # a truncated CSV can still be a whole register of fewer rows; nothing else loads
        assert how == "truncate" and target.suffix == ".csv"
