"""benchmarks/compare_db.py: two databases compared row for row, run ids and times left out."""

from __future__ import annotations

import duckdb

from benchmarks.compare_db import compare, main


def _db(path, rows):
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE adjudicated (run_id VARCHAR, setl_id VARCHAR, hifp_pay DECIMAL(18,2))")
    con.executemany("INSERT INTO adjudicated VALUES (?, ?, ?)", rows)
    con.close()


def test_same_rows_under_other_run_ids_are_the_same_and_one_fen_is_not(tmp_path, capsys):
    _db(tmp_path / "a.duckdb", [("r1", "S1", "100.00"), ("r1", "S2", "5.00")])
    _db(tmp_path / "b.duckdb", [("r2", "S1", "100.00"), ("r2", "S2", "5.00")])
    _db(tmp_path / "c.duckdb", [("r3", "S1", "100.00"), ("r3", "S2", "5.01")])
    assert compare(str(tmp_path / "a.duckdb"), str(tmp_path / "b.duckdb")) == [("adjudicated", 2, 2, 0, 0)]
    assert compare(str(tmp_path / "a.duckdb"), str(tmp_path / "c.duckdb")) == [("adjudicated", 2, 2, 1, 1)]
    assert main([str(tmp_path / "a.duckdb"), str(tmp_path / "c.duckdb")]) == 1
    assert "DIFFERS adjudicated" in capsys.readouterr().out
