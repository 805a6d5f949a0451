"""Register noise (POLICY §1.14, A-30) is read away before adjudication, row by row: an employment register with
a retire_kind on in-service periods and empty retire_kinds on retired ones reads exactly as its clean twin (each
noisy row a warning), and a register row that breaks the contract is rejected on its own while the rest is read.
So the engine and the reference, which both adjudicate the registers as read, see no noise (a property)."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.inputs import RETIRE_KINDS
from transforms.validate import type_register

COLUMNS = ["psn_no", "psn_type", "flexible", "contrib_mode", "contrib_base", "retire_kind", "benefit", "begndate",
           "enddate"]


@st.composite
def employment_rows(draw):
    """Clean employment rows as text (DATA.md §3): in service with no retire_kind, retired with one."""
    rows = []
    for i in range(draw(st.integers(1, 12))):
        retired = draw(st.booleans())
        kind = draw(st.sampled_from(RETIRE_KINDS)) if retired else ""
        mode = "" if retired and kind != "contributing" else draw(st.sampled_from(["combined", "pooling_only"]))
        base = f"{draw(st.integers(100_000, 2_000_000)) / 100:.2f}" if mode else ""
        rows.append([f"P{i:03d}", "12" if retired else "11", "false", mode, base, kind, "normal",
                     f"20{draw(st.integers(10, 24))}-01-01", ""])
    return rows


def _read(rows):
    raw = pl.DataFrame(rows, schema=COLUMNS, orient="row").with_columns(
        pl.lit("reference/employment.csv").alias("source_file"), pl.int_range(1, len(rows) + 1).alias("source_row"))
    return type_register("employment", raw)


@settings(max_examples=60, deadline=None)
@given(employment_rows(), st.data())
def test_noisy_employment_register_reads_as_its_clean_twin(rows, data):
    noisy, noise = [list(r) for r in rows], 0
    for r in noisy:
        if r[1] == "11" and data.draw(st.booleans()):  # a retire_kind on an in-service period: ignored
            r[5] = data.draw(st.sampled_from(RETIRE_KINDS))
            noise += 1
        elif r[1] == "12" and r[5] == "normal" and data.draw(st.booleans()):  # empty on a retired period: normal
            r[5] = ""
            noise += 1
    clean, clean_rejects, clean_warnings = _read(rows)
    typed, rejects, warnings = _read(noisy)
    assert clean_rejects.height == 0 and clean_warnings.height == 0
    assert rejects.height == 0
    assert typed.drop("source_file").equals(clean.drop("source_file"))
    assert warnings.height == noise


def test_a_bad_register_row_is_rejected_alone():
    """Row 2 has a base that is not an amount and row 3 an unknown benefit: each is a reject naming its row;
    rows 1 and 4 are read."""
    rows = [["P001", "11", "false", "combined", "3450.00", "", "normal", "2023-01-01", ""],
            ["P002", "11", "false", "combined", "34,50", "", "normal", "2023-01-01", ""],
            ["P003", "11", "false", "combined", "3450.00", "", "paused", "2023-01-01", ""],
            ["P004", "12", "false", "", "", "normal", "normal", "2010-01-01", ""]]
    typed, rejects, _ = _read(rows)
    assert typed["psn_no"].to_list() == ["P001", "P004"]
    assert typed["contrib_base"].to_list() == [345_000, None]  # 3,450.00 yuan = 345,000 fen
    assert rejects.select("source_row", "reason_code").rows() == [(2, "BAD_VALUE"), (3, "BAD_CODE")]
