"""Operations and reliability (issue 6): unchanged reruns, readers during a run, kills at any point, retries."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from flows import store
from tests.builders import q

MONTHS = ["2025-01", "2025-02", "2025-03"]


@pytest.fixture(scope="module")
def ops_bureau(tmp_path_factory) -> Path:
    from flows.sample import write_sample
    out = tmp_path_factory.mktemp("ops-bureau")
    write_sample(out, persons=150, year=2025, months=len(MONTHS), seed=11, fmt="mixed", invalid_rate=0.01)
    return out


@pytest.fixture(scope="module")
def ops_loaded(ops_bureau, tmp_path_factory, prefect_harness) -> Path:
    from flows.monthly import year_flow
    db = tmp_path_factory.mktemp("ops-db") / "y.duckdb"
    year_flow(2025, str(ops_bureau), str(db))
    return db


@pytest.fixture
def bureau(ops_bureau) -> Path:
    return ops_bureau


@pytest.fixture
def db(ops_loaded, tmp_path) -> Path:
    """A private copy of the loaded database for a test that changes it."""
    copy = tmp_path / "y.duckdb"
    shutil.copy(ops_loaded, copy)
    return copy




def tables(db: Path) -> dict:
    """Every month table's row count and content hash (order-independent)."""
    return {t: q(db, f"SELECT count(*), sum(hash(COLUMNS(*))::HUGEINT) FROM {t}")[0] for t in store.MONTH_TABLES}


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def yibao(args: list[str], env: dict | None = None, wait: bool = True):
    """`yibao …` in a separate process, against the session's Prefect test server (no second server to start)."""
    from prefect.settings import PREFECT_API_URL
    full_env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), **(env or {})}
    cmd = [sys.executable, "-m", "flows.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600)


def user_lines(stderr: str) -> list[str]:
    """What the user reads on stderr, without DuckDB 2.0's nanobind 'leaked' report at interpreter exit."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("nanobind:", " - ", "See https"))]


# ------------------------------------------------------------------------------------------- unchanged reruns
def test_identical_rerun_is_reported_unchanged_and_rewrites_nothing(db, bureau):
    from flows.monthly import month_flow
    before, last = tables(db), q(db, "SELECT run_id FROM runs WHERE month='2025-02' AND status='succeeded'")[0][0]
    n_runs = q(db, "SELECT count(*) FROM runs")[0][0]
    ids = month_flow("2025-02", str(bureau), str(db))
    assert len(ids) == 1  # the cascade to 2025-03 stops: nothing upstream of it changed
    status, matches, rows_in = q(db, "SELECT status, matches_run_id, rows_in FROM runs WHERE run_id=?", ids)[0]
    assert (status, matches) == ("unchanged", last)
    assert rows_in == q(db, "SELECT rows_in FROM runs WHERE run_id=?", [last])[0][0]
    assert tables(db) == before
    assert q(db, "SELECT count(*) FROM runs")[0][0] == n_runs + 1
    assert store.loaded_months(duckdb.connect(str(db), read_only=True)) == MONTHS


def test_a_changed_input_file_reruns_the_month_and_the_later_ones(db, bureau, tmp_path):
    from flows.monthly import month_flow
    changed = tmp_path / "in"
    shutil.copytree(bureau, changed)
    register = sorted((changed / "reference").glob("*.csv"))[0]
    register.write_bytes(register.read_bytes() + b"\n")  # one byte more, no value changed (blank lines skipped)
    ids = month_flow("2025-02", str(changed), str(db))
    assert [i[:7] for i in ids] == ["2025-02", "2025-03"]
    assert [r[0] for r in q(db, "SELECT status FROM runs WHERE list_contains(?, run_id) ORDER BY started_at",
                            [ids])] == ["succeeded", "succeeded"]
    # 2025-03 was computed on the new 2025-02 run
    assert q(db, "SELECT prev_run_id FROM runs WHERE run_id=?", [ids[1]])[0][0] == ids[0]


def test_a_changed_policy_or_code_reruns(db, bureau, tmp_path, monkeypatch):
    import flows.monthly as monthly
    from flows.policies import POLICY_ROOT
    pol = tmp_path / "policies"
    shutil.copytree(POLICY_ROOT, pol)
    target = sorted(pol.rglob("*.yaml"))[0]
    target.write_text(target.read_text(encoding="utf-8") + "\n# reviewed\n", encoding="utf-8")
    monkeypatch.setattr(monthly, "POLICY_ROOT", pol)
    ids = monthly.month_flow("2025-03", str(bureau), str(db))
    assert q(db, "SELECT status FROM runs WHERE run_id=?", ids)[0][0] == "succeeded"
    monkeypatch.setattr(monthly, "code_version", lambda: "git:v9 src:000000000000")
    ids = monthly.month_flow("2025-03", str(bureau), str(db))
    assert q(db, "SELECT status FROM runs WHERE run_id=?", ids)[0][0] == "succeeded"
    ids = monthly.month_flow("2025-03", str(bureau), str(db))  # and now it is the same again
    assert q(db, "SELECT status FROM runs WHERE run_id=?", ids)[0][0] == "unchanged"


def test_the_cli_reports_an_unchanged_month_in_one_line(db, bureau):
    proc = yibao(["run", "--month", "2025-03", "--input", str(bureau), "--db", str(db)])
    assert proc.returncode == 0, proc.stderr
    assert "2025-03: unchanged since run 2025-03-" in proc.stdout and "nothing rewritten" in proc.stdout


# ------------------------------------------------------------------------------------------- readers and writers
def test_a_run_succeeds_while_an_auditor_holds_a_read_only_session(db, bureau):
    """DuckDB refuses a read-write open while another process has the file open read-only; the writer works
    on a copy and renames it over the file, so the auditor's session never fails a run."""
    before = q(db, "SELECT count(*) FROM runs")[0][0]
    reader = subprocess.Popen(
        [sys.executable, "-c", f"""
import duckdb, sys
con = duckdb.connect({str(db)!r}, read_only=True)
print(con.execute("SELECT count(*) FROM runs").fetchone()[0], flush=True)
sys.stdin.readline()   # the auditor's session stays open until the test says so
print(con.execute("SELECT count(*) FROM runs").fetchone()[0], flush=True)
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert int(reader.stdout.readline()) == before  # the session is open
        proc = yibao(["run", "--month", "2025-03", "--force", "--input", str(bureau), "--db", str(db)])
        assert proc.returncode == 0, proc.stderr
        out, _ = reader.communicate("\n", timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert int(out.strip()) == before  # the auditor kept reading the snapshot the session opened
    assert q(db, "SELECT count(*) FROM runs")[0][0] == before + 1  # new sessions see the new run


def test_readers_read_committed_months_while_a_run_is_in_progress(db, bureau):
    """A separate writer process runs 2025-02 (and re-runs 2025-03); meanwhile this process opens the database
    read-only again and again: every open succeeds and always sees whole months."""
    whole = q(db, "SELECT month, count(*) FROM adjudicated GROUP BY month ORDER BY month")
    writer = yibao(["run", "--month", "2025-02", "--force", "--input", str(bureau), "--db", str(db)], wait=False)
    reads = 0
    try:
        while writer.poll() is None or reads == 0:
            assert q(db, "SELECT month, count(*) FROM adjudicated GROUP BY month ORDER BY month") == whole
            reads += 1
    finally:
        out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err
    assert reads > 1
    assert q(db, "SELECT count(*) FROM runs WHERE status='succeeded' AND triggered_by='rerun after 2025-02'")[0][0] >= 1


def test_in_place_writes_the_same_rows_without_copying_the_database(db, bureau, tmp_path, monkeypatch):
    """`yibao run --in-place`: the month and its cascade written into the file itself (no `<db>.next`), with
    the very rows the private-copy run writes."""
    from flows.monthly import month_flow
    from tests.builders import table_rows
    copied = tmp_path / "copied.duckdb"
    shutil.copy(db, copied)
    month_flow("2025-02", str(bureau), str(copied), force=True)

    def no_copy(*a, **k):
        raise AssertionError("the database was copied")
    monkeypatch.setattr(store.shutil, "copyfile", no_copy)
    ids = month_flow("2025-02", str(bureau), str(db), force=True, in_place=True)
    assert len(ids) == 2  # February and its cascade into March
    assert q(db, "SELECT count(*) FROM runs WHERE list_contains(?::VARCHAR[], run_id) AND status = 'succeeded'",
             [ids])[0][0] == 2
    for table in (*store.MONTH_TABLES, "contributions"):
        assert table_rows(db, table) == table_rows(copied, table), table
    assert q(db, "FROM persons ORDER BY ALL") == q(copied, "FROM persons ORDER BY ALL")
    assert not Path(f"{db}.next").exists() and not list((db.parent / ".yibao_runs").glob("*/accepted.parquet"))


def test_a_second_writer_process_refuses_at_once_with_one_line(db, bureau):
    from flows.monthly import writer_lock
    with writer_lock(str(db)):
        proc = yibao(["run", "--month", "2025-03", "--input", str(bureau), "--db", str(db)])
    assert proc.returncode == 1
    lines = user_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("yibao: ") and "another yibao run (pid" in lines[0]


# ------------------------------------------------------------------------------------------- crashes
@pytest.mark.parametrize("fault, code", [("between_tasks", 71), ("inside_write", 70)])
def test_a_run_killed_at_any_point_leaves_the_file_as_it_was_and_is_recorded_failed(db, bureau, fault, code):
    sha = file_sha(db)
    proc = yibao(["run", "--month", "2025-02", "--force", "--input", str(bureau), "--db", str(db)],
                 env={"YIBAO_FAULT": fault})
    assert proc.returncode == code, proc.stderr
    assert file_sha(db) == sha  # byte for byte: every table as before the run
    # the next writer records the killed run from its journal and clears its half-written copy
    from flows.monthly import INTERRUPTED, writer_lock
    with writer_lock(str(db)):
        pass
    failed = q(db, "SELECT month, status, error FROM runs WHERE status <> 'succeeded'")
    assert failed == [("2025-02", "failed", INTERRUPTED)]
    assert not Path(f"{db}.next").exists()
    # and the month runs again from there
    from flows.monthly import month_flow
    ids = month_flow("2025-02", str(bureau), str(db))
    assert q(db, "SELECT status FROM runs WHERE run_id=?", ids[:1])[0][0] == "unchanged"


def test_a_failed_run_is_recorded_with_its_one_line_error_and_changes_nothing_else(db, bureau, tmp_path):
    from flows.ingest import InputFileError
    from flows.monthly import month_flow
    broken = tmp_path / "in"
    shutil.copytree(bureau, broken)
    for f in (broken / "2025-03").glob("hospital_settlements.*"):
        f.unlink()
    (broken / "2025-03" / "hospital_settlements.csv").write_bytes(b"setl_id,psn_no\nS1,P1\n")
    before = tables(db)
    with pytest.raises(InputFileError):
        month_flow("2025-03", str(broken), str(db))
    assert tables(db) == before
    status, error = q(db, "SELECT status, error FROM runs ORDER BY started_at DESC LIMIT 1")[0]
    assert status == "failed" and error.startswith("2025-03/hospital_settlements.csv: missing")


# ------------------------------------------------------------------------------------------- retries
def test_tasks_retry_transient_io_only():
    import duckdb as ddb
    from prefect.states import Failed

    from flows.ingest import InputFileError
    from flows.monthly import _retry_on_transient_io, adjudicate_month, ingest_and_validate, persist
    from flows.policies import MissingParameter
    for t in (ingest_and_validate, adjudicate_month, persist):
        assert t.retries == 2 and t.retry_condition_fn is _retry_on_transient_io
    retried = {type(e).__name__ + ("/transient" if getattr(e, "transient", False) else ""):
               _retry_on_transient_io(None, None, Failed(data=e))
               for e in [OSError(5, "Input/output error"), ddb.IOException("disk"),
                         InputFileError("a.csv", "cannot read: EIO", transient=True),
                         InputFileError("a.csv", "ragged CSV"), FileNotFoundError("gone"),
                         MissingParameter("suizhou", "resident", "x"), ValueError("bad row")]}
    assert retried == {"OSError": True, "IOException": True, "InputFileError/transient": True,
                       "InputFileError": False, "FileNotFoundError": False, "MissingParameter": False,
                       "ValueError": False}


def test_a_journal_is_recorded_only_in_its_own_database(tmp_path):
    """Databases of one directory share `.yibao_runs/`: a killed run of one is never recorded in the other, and a
    journal cut short by the kill is skipped."""
    import json

    from flows.monthly import INTERRUPTED, writer_lock
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    for i, (db_, text) in enumerate([(a, None), (tmp_path / "c.duckdb", '{"run_id": "cut')]):
        stage = tmp_path / ".yibao_runs" / f"r{i}"
        stage.mkdir(parents=True)
        (stage / "run.json").write_text(text or json.dumps({
            "run_id": f"r{i}", "month": "2025-01", "input_dir": "x", "code_version": "v", "policy_version": "p",
            "triggered_by": "user", "prev_run_id": None, "started_at": "2026-01-01 02:00:00", "db": str(db_)}))
    with writer_lock(str(b)):
        pass
    assert not b.exists()  # nothing of b's own to record
    with writer_lock(str(a)):
        pass
    assert q(a, "SELECT run_id, status, error FROM runs") == [("r0", "failed", INTERRUPTED)]
    with writer_lock(str(a)):  # recorded once
        pass
    assert q(a, "SELECT count(*) FROM runs") == [(1,)]
