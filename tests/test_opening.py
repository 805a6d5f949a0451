"""Starting mid-year (POLICY §1.13, DATA.md §3 `opening_accumulators`): a bureau whose first month is March loads
the year-to-date state at the end of February and writes exactly the rows a January start writes for March and
April. And the accumulator names a register row may use are documented once (transforms/accumulator_names.py)."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from flows.monthly import RunError, year_flow
from tests.builders import q
from transforms.accumulator_names import CATALOGUE, is_known, markdown
from transforms.engine import ACCUMULATORS

DOC = Path(__file__).resolve().parents[1] / "docs" / "ACCUMULATORS.md"


def test_every_engine_accumulator_is_documented_once_and_nothing_else():
    assert set(CATALOGUE) == set(ACCUMULATORS)
    assert all(unit in ("yuan",) and pol.startswith("§") and meaning for meaning, unit, pol in CATALOGUE.values())
    assert DOC.read_text(encoding="utf-8").endswith(markdown())  # the doc's table is the catalogue's
    assert is_known("hifp_paid") and is_known("stay_ded_used:MD2025000001")
    assert not is_known("stay_ded_used:") and not is_known("hifp_paid:x") and not is_known("bogus")


def _read(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False,
                                                                                encoding="utf8-lossy")


def _write(frame: pl.DataFrame, path: Path) -> None:
    path.unlink()
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    else:  # written back as UTF-8 (the reader detects the encoding)
        frame.write_csv(path.with_suffix(".csv"))


def _without_reversals_of_earlier_months(src: Path, dst: Path, months: list[str]) -> None:
    """The bureau's months with the reversals of January–February lines taken out of March and April: a bureau
    that starts in March has no original for them (validation rejects such a reversal), so the two runs could
    not agree on those lines; everything else is the bureau's own."""
    shutil.copytree(src / "reference", dst / "reference")
    early: set[str] = set()
    for m in months:
        shutil.copytree(src / m, dst / m)
        for f in sorted((dst / m).glob("*_settlements*")):
            frame = _read(f)
            if m > "2025-02" and "orig_setl_id" in frame.columns:
                frame = frame.filter(~pl.col("orig_setl_id").is_in(sorted(early)) | pl.col("orig_setl_id").is_null())
                _write(frame, f)
            else:
                early |= set(frame["setl_id"].drop_nulls().to_list())


def test_a_march_start_on_opening_state_writes_the_rows_of_a_january_start(bureau, tmp_path, prefect_harness):
    months = ["2025-01", "2025-02", "2025-03", "2025-04"]
    full = tmp_path / "full"
    _without_reversals_of_earlier_months(bureau, full, months)
    db_jan = tmp_path / "jan.duckdb"
    year_flow(2025, str(full), str(db_jan))

    # The bureau starting in March: registers, the state at the end of February, March and April only.
    mid = tmp_path / "mid"
    shutil.copytree(full / "reference", mid / "reference")
    for m in months[2:]:
        shutil.copytree(full / m, mid / m)
    for f in (mid / "reference").glob("account_balances.*"):
        f.unlink()
    state = q(db_jan, "SELECT psn_no, year, name, arg_max(value, month) FROM accumulators"
                      " WHERE year = 2025 AND month <= '2025-02' GROUP BY ALL ORDER BY ALL")
    assert len(state) > 100  # the bureau's persons carry real state into March
    pl.DataFrame([(p, y, n, str(v), "2025-02-28") for p, y, n, v in state],
                 schema=["psn_no", "year", "name", "value", "as_of"], orient="row").write_csv(
        mid / "reference" / "opening_accumulators.csv")
    pl.DataFrame([(p, str(a), str(b)) for p, a, b in q(
        db_jan, "SELECT psn_no, as_of, balc FROM account_month_end WHERE month = '2025-02' ORDER BY ALL")],
        schema=["psn_no", "as_of", "balc"], orient="row").write_csv(mid / "reference" / "account_balances.csv")
    db_mid = tmp_path / "mid.duckdb"
    year_flow(2025, str(mid), str(db_mid))

    later = "WHERE month >= '2025-03'"
    for table in ("adjudicated", "account_ledger", "account_month_end", "settlements", "rejects"):
        rows_jan = q(db_jan, f"SELECT * EXCLUDE (run_id) FROM {table} {later} ORDER BY ALL")
        assert rows_jan == q(db_mid, f"SELECT * EXCLUDE (run_id) FROM {table} {later} ORDER BY ALL"), table
    assert len(q(db_mid, f"SELECT 1 FROM adjudicated {later}")) > 200
    # the state at the end of April, whatever month each value was stored in (the opening one: February's)
    at_april = ("SELECT psn_no, year, name, arg_max(value, month) FROM accumulators WHERE month <= '2025-04'"
                " GROUP BY ALL HAVING arg_max(value, month) <> 0 ORDER BY ALL")
    assert q(db_jan, at_april) == q(db_mid, at_april)


def test_a_month_whose_previous_month_is_missing_is_refused_without_opening_state(bureau, tmp_path, prefect_harness):
    mid = tmp_path / "mid"
    shutil.copytree(bureau / "reference", mid / "reference")
    shutil.copytree(bureau / "2025-03", mid / "2025-03")
    with pytest.raises(RunError, match=r"2025-03 starts from .* end of 2025-02.*opening_accumulators"):
        year_flow(2025, str(mid), str(tmp_path / "x.duckdb"))


def test_opening_rows_that_break_the_contract_are_named_with_their_row():
    """DATA.md §3: an unknown accumulator name, an as_of that is not a month end of `year`, a negative value and
    a repeated (person, year, name) are each a problem of their own row; the good rows are read (yuan → fen)."""
    from transforms.validate import type_register
    raw = pl.DataFrame({
        "psn_no": ["P1", "P2", "P3", "P4", "P5", "P5"],
        "year": ["2025"] * 6,
        "name": ["hifp_paid", "stay_ded_used:MD1", "bogus", "hifmi_burden", "maf_base", "maf_base"],
        "value": ["1234.56", "900", "1", "2", "-3", "4"],
        "as_of": ["2025-06-30", "2025-06-30", "2025-06-30", "2025-06-29", "2025-06-30", "2025-06-30"],
    }).with_columns(pl.lit("reference/opening_accumulators.csv").alias("source_file"),
                    pl.int_range(1, 7).cast(pl.Int64).alias("source_row"))
    typed, rejects, _ = type_register("opening_accumulators", raw)
    assert typed.filter(pl.col("source_row") <= 2).select("name", "value").rows() == [
        ("hifp_paid", 123456), ("stay_ded_used:MD1", 90000)]  # 1,234.56 yuan = 123,456 fen
    assert sorted(set(rejects["source_row"].to_list())) == [3, 4, 5, 6]
    assert set(rejects["source_file"].to_list()) == {"reference/opening_accumulators.csv"}
    text = " ".join(rejects["reason"].to_list())
    assert "bogus" in text and "last day of a month" in text


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "input"


def test_opening_state_carries_a_persons_cap_and_burden_into_a_later_month(tmp_path, prefect_harness):
    """POLICY §1.13 with §3.6–§3.8, by hand. P003 (Suizhou resident, poverty_exit: S3, benefits as an ordinary
    resident, no assistance) opened at the end of June with hifp_paid 140,000, hifmi_burden 50,000 and hifmi_paid
    23,800 (= F(50,000) = 60% × 18,000 + 65% × 20,000). July has no line (a header-only file: written); in August a
    level-3 city stay (H001: deductible 900, 70%) of 20,000 class A:
        basic fund raw (20,000 − 900) × 70% = 13,370; the cap leaves 150,000 − 140,000 = 10,000 → hifp 10,000;
        burden 20,000 − 10,000 = 10,000 → 60,000: hifmi F(60,000) − F(50,000) = (10,800 + 65% × 30,000)
        − 23,800 = 30,300 − 23,800 = 6,500; the person pays 20,000 − 10,000 − 6,500 = 3,500."""
    root = tmp_path / "in"
    shutil.copytree(FIXTURE / "reference", root / "reference")
    header = (FIXTURE / "2025-03" / "hospital_settlements_01.csv").read_text(encoding="utf-8").splitlines()[0]
    (root / "2025-07").mkdir()
    (root / "2025-07" / "hospital_settlements.csv").write_text(header + "\n", encoding="utf-8")
    (root / "2025-08").mkdir()
    (root / "2025-08" / "hospital_settlements.csv").write_text(
        header + "\nS801,M801,P003,390,21,H001,2025-08-01,2025-08-09,2025-08-10 10:00:00,I21,,,,,false,"
        "20000.00,0.00,0.00,20000.00,0.00,\n", encoding="utf-8")
    (root / "reference" / "opening_accumulators.csv").write_text(
        "psn_no,year,name,value,as_of\nP003,2025,hifp_paid,140000.00,2025-06-30\n"
        "P003,2025,hifmi_burden,50000.00,2025-06-30\nP003,2025,hifmi_paid,23800.00,2025-06-30\n", encoding="utf-8")
    db = tmp_path / "y.duckdb"
    year_flow(2025, str(root), str(db))
    assert q(db, "SELECT hifp_pay, hifp_cap_cut, hifmi_pay, psn_part_amt FROM adjudicated WHERE setl_id = 'S801'") == [
        (Decimal("10000.00"), Decimal("3370.00"), Decimal("6500.00"), Decimal("3500.00"))]
    # the opening state is stored as June's, the month's moves as August's
    assert q(db, "SELECT month, name, value FROM accumulators WHERE psn_no = 'P003' ORDER BY month, name") == [
        ("2025-06", "hifmi_burden", Decimal("50000.00")), ("2025-06", "hifmi_paid", Decimal("23800.00")),
        ("2025-06", "hifp_paid", Decimal("140000.00")),
        ("2025-08", "hifmi_burden", Decimal("60000.00")), ("2025-08", "hifmi_paid", Decimal("30300.00")),
        ("2025-08", "hifp_paid", Decimal("150000.00")), ("2025-08", "stay_ded_used:M801", Decimal("900.00"))]
