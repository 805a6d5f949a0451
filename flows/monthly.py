"""The monthly flow (DATA.md §5 `yibao run`): ingest → validate → adjudicate → persist.

Tasks pass file paths and run ids, never frames: each task reads its inputs from the run's
stage folder (`<db folder>/.yibao_runs/<run_id>/`) and writes its outputs there. The only
write to the database is `persist`, one transaction per month (flows/store.py).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task

from flows import store
from flows.ingest import load_registers, month_files, read_table
from flows.policies import POLICY_ROOT, load_policies
from flows.reports import person_snapshot, write_person_snapshot
from schemas.outputs import Accumulators, Adjudicated
from transforms.contributions import contributions
from transforms.engine import Adjudication, adjudicate, combine_adjudications, engine_persons
from transforms.resident.application import OUTPUT_SCHEMA as APPLICATION_SCHEMA
from transforms.resident.application import apply_applications
from transforms.shards import family_groups, restrict, shard_of_persons
from transforms.validate import validate_applications, validate_settlements

REGISTERS = ("persons", "identities", "employment", "certifications", "institutions", "family_bindings",
             "account_balances")
MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class RunError(RuntimeError):
    """A run cannot proceed; the message is one line for the user."""


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return "git:" + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import version
    return "yibao " + version("yibao")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class StageClock:
    """Seconds spent in each stage of a month (the issue's ingest, validation, adjudication, write), appended
    as JSON lines to $YIBAO_STAGE_TIMES when it is set (benchmarks/run.py reads them); a no-op otherwise."""

    def __init__(self, month: str):
        self.month, self.t = month, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        target = os.environ.get("YIBAO_STAGE_TIMES")
        if target:
            with open(target, "a") as fh:
                fh.write(json.dumps({"month": self.month, "stage": stage, "s": round(now - self.t, 4)}) + "\n")
        self.t = now


def previous_month(month: str) -> str | None:
    y, m = int(month[:4]), int(month[5:])
    return None if m == 1 else f"{y}-{m - 1:02d}"


@task(name="ingest-and-validate")
def ingest_and_validate(input_dir: str, month: str, db: str, stage: str) -> str:
    clock = StageClock(month)
    stage_p, root = Path(stage), Path(input_dir)
    files = month_files(root, month)
    regs = load_registers(root)
    for name, frame in regs.items():
        frame.write_parquet(stage_p / f"reg_{name}.parquet")
    raws = [read_table(p, root) for p in files["settlements"]]
    raw = pl.concat(raws, how="diagonal_relaxed") if raws else pl.DataFrame(
        schema={"source_file": pl.String, "source_row": pl.Int64})
    con = store.connect(db)
    try:
        ids = pl.concat([raw.get_column(c) for c in ("setl_id", "orig_setl_id") if c in raw.columns])
        ids = pl.concat([ids, ids.str.strip_chars()]).drop_nulls().unique().to_list() if len(ids) else []
        known = store.known_settlements(con, month, ids)  # only the rows this month's ids can match
    finally:
        con.close()
    clock.lap("ingest")
    accepted, rejects = validate_settlements(raw, month, regs, known)
    # Assistance applications (POLICY §3.9 on-application), optional: same accounting as settlements.
    app_raws = [read_table(p, root) for p in files.get("applications", [])]
    if app_raws:
        app_raw = pl.concat(app_raws, how="diagonal_relaxed")
        apps, app_rejects = validate_applications(app_raw, month, regs)
        rejects = pl.concat([rejects, app_rejects], how="diagonal_relaxed")
    else:
        app_raw, apps = pl.DataFrame(), pl.DataFrame()
    clock.lap("validation")
    apps.write_parquet(stage_p / "applications.parquet")
    accepted.write_parquet(stage_p / "accepted.parquet")
    rejects.write_parquet(stage_p / "rejects.parquet")
    reference = sorted((root / "reference").glob("*"))
    record = {
        "input_files": [{"name": str(p.relative_to(root)), "size": p.stat().st_size, "sha256": sha256_of(p)}
                        for p in [*files["settlements"], *files.get("applications", []), *reference] if p.is_file()],
        "rows_in": raw.height + app_raw.height, "rows_accepted": accepted.height + apps.height,
        "rows_rejected": rejects.height,
    }
    if record["rows_in"] != record["rows_accepted"] + record["rows_rejected"]:
        raise RunError(f"{month}: rows_in {record['rows_in']} ≠ accepted {record['rows_accepted']}"
                       f" + rejected {rejects.height}")
    (stage_p / "ingest.json").write_text(json.dumps(record, ensure_ascii=False))
    clock.lap("ingest")  # staging the accepted rows and hashing the inputs
    return str(stage_p / "ingest.json")


def _staged_registers(stage_p: Path) -> dict[str, pl.DataFrame]:
    """The typed registers ingest wrote into the run's stage folder (reg_<name>.parquet)."""
    return {p.stem[4:]: pl.read_parquet(p) for p in stage_p.glob("reg_*.parquet")}


def _month_days(month: str) -> tuple[dt.date, dt.date]:
    first = dt.date(int(month[:4]), int(month[5:]), 1)
    return first, (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)


def _engine_inputs(stage_p: Path, db: str, month: str) -> dict:
    """What the engine needs besides the lines: state carried in from the database, for the month's persons."""
    accepted = pl.read_parquet(stage_p / "accepted.parquet")
    con = store.connect(db)
    try:
        carried = store.carried_accumulators(con, month, accepted["psn_no"].unique().to_list())
        rev = accepted.filter(pl.col("orig_setl_id").is_not_null())["orig_setl_id"].to_list()
        originals = store.original_results(con, month, rev)
        balances = store.carried_balances(con, month)  # personal accounts: end of the previous month, any year
        original_ledger = store.original_ledger(con, month, rev)
    finally:
        con.close()
    return {"lines": accepted, "registers": _staged_registers(stage_p), "carried": carried,
            "originals": originals, "balances": balances,
            "original_ledger": original_ledger if original_ledger.height else None}


def _write_outputs(stage_p: Path, result: Adjudication) -> None:
    result.adjudicated.write_parquet(stage_p / "adjudicated.parquet")
    result.accumulators.write_parquet(stage_p / "accumulators.parquet")
    result.account_ledger.write_parquet(stage_p / "account_ledger.parquet")
    result.account_balances.write_parquet(stage_p / "account_month_end.parquet")
    (stage_p / "used.json").write_text(json.dumps(sorted(map(list, result.used), key=str)))


def _read_outputs(stage_p: Path) -> Adjudication:
    used = {tuple(u) for u in json.loads((stage_p / "used.json").read_text())}
    return Adjudication(adjudicated=pl.read_parquet(stage_p / "adjudicated.parquet"),
                        accumulators=pl.read_parquet(stage_p / "accumulators.parquet"), used=used,
                        account_ledger=pl.read_parquet(stage_p / "account_ledger.parquet"),
                        account_balances=pl.read_parquet(stage_p / "account_month_end.parquet"))


@task(name="adjudicate")
def adjudicate_month(stage: str, db: str, month: str) -> str:
    clock = StageClock(month)
    stage_p = Path(stage)
    inp = _engine_inputs(stage_p, db, month)
    result = adjudicate(inp.pop("lines"), inp.pop("registers"), load_policies(), **inp, period=_month_days(month))
    _finish_adjudication(stage_p, db, month, result)
    clock.lap("adjudication")
    return str(stage_p / "adjudicated.parquet")


@task(name="split-shards")
def split_shards(stage: str, db: str, month: str, shards: int) -> list[str]:
    """The month's lines and carried state split by family group (transforms/shards.py), one folder of
    Parquet files per shard: shards exchange files, never frames."""
    clock = StageClock(month)
    stage_p = Path(stage)
    inp = _engine_inputs(stage_p, db, month)
    persons = engine_persons(inp["lines"], inp["carried"], inp["balances"])
    assign = shard_of_persons(family_groups(inp["registers"], persons), shards)
    dirs = []
    for k in range(shards):
        d = stage_p / f"shard-{k:03d}"
        d.mkdir(exist_ok=True)
        persons = assign.filter(pl.col("shard") == k).select("psn_no")
        for name in ("lines", "carried", "balances", "original_ledger"):
            if inp[name] is not None:
                restrict(inp[name], persons).write_parquet(d / f"{name}.parquet")
        for name, frame in inp["registers"].items():
            restrict(frame, persons).write_parquet(d / f"reg_{name}.parquet")
        inp["originals"].write_parquet(d / "originals.parquet")  # looked up by setl_id: shared whole
        dirs.append(str(d))
    clock.lap("adjudication")
    return dirs


@task(name="adjudicate-shard")
def adjudicate_shard(shard: str, month: str) -> str:
    """One shard through the engine, on whichever worker runs it; inputs and outputs are its folder's files."""
    clock = StageClock(month)
    d = Path(shard)
    read = {n: (pl.read_parquet(d / f"{n}.parquet") if (d / f"{n}.parquet").exists() else None)
            for n in ("lines", "carried", "originals", "balances", "original_ledger")}
    result = adjudicate(read.pop("lines"), _staged_registers(d), load_policies(), **read, period=_month_days(month))
    _write_outputs(d, result)
    clock.lap("adjudication")
    return shard


@task(name="combine-shards")
def combine_shards(stage: str, db: str, month: str, shards: list[str]) -> str:
    clock = StageClock(month)
    stage_p = Path(stage)
    result = combine_adjudications([_read_outputs(Path(d)) for d in shards])
    _finish_adjudication(stage_p, db, month, result)
    for d in shards:
        shutil.rmtree(d, ignore_errors=True)
    clock.lap("adjudication")
    return str(stage_p / "adjudicated.parquet")


def _finish_adjudication(stage_p: Path, db: str, month: str, result: Adjudication) -> None:
    # Output models, eagerly (schema and data), before anything is written (schemas/outputs.py).
    Adjudicated.validate(result.adjudicated, lazy=True)
    Accumulators.validate(result.accumulators, lazy=True)
    regs = _staged_registers(stage_p)
    result.account_ledger = result.account_ledger.with_row_index("seq")
    _write_outputs(stage_p, result)
    _applications(stage_p, db, month, result.adjudicated, regs)
    if not _contributions_unchanged(stage_p, db, month):  # §3.1, §4.1
        contributions(regs, load_policies(), int(month[:4])).write_parquet(stage_p / "contributions.parquet")
    (stage_p / "adjudicate.json").write_text(json.dumps({"assumptions": result.assumptions,
                                                         "lines": result.adjudicated.height}))


def _contributions_unchanged(stage_p: Path, db: str, month: str) -> bool:
    """Contributions (person × year) depend only on the registers, the policies and the code: when the year's
    latest succeeded run had the same reference files (sha256), policy and code versions, the stored rows are
    already this run's result and are kept, not recomputed and rewritten every month."""
    refs = sorted((f["name"], f["sha256"]) for f in json.loads((stage_p / "ingest.json").read_text())["input_files"]
                  if f["name"].startswith("reference/"))
    year = int(month[:4])
    con = store.connect(db)
    try:
        me = con.execute("SELECT policy_version, code_version FROM runs WHERE run_id = ?", [stage_p.name]).fetchone()
        last = con.execute("SELECT input_files, policy_version, code_version FROM runs WHERE status = 'succeeded'"
                           " AND month LIKE ? ORDER BY finished_at DESC LIMIT 1", [f"{year}-%"]).fetchone()
        stored = con.execute("SELECT count(*) FROM contributions WHERE year = ?", [year]).fetchone()[0]
    finally:
        con.close()
    if me is None or last is None or not stored or tuple(last[1:]) != tuple(me):
        return False
    return sorted((f["name"], f["sha256"]) for f in json.loads(last[0] or "[]")
                  if f["name"].startswith("reference/")) == refs


def adjudicate_step(stage: str, db: str, month: str, shards: int = 1, fan_out: bool = False) -> str:
    """The adjudication of a month: in one piece, or in `shards` by family group — one after the other in
    this process, or submitted to the flow's task runner (`fan_out`, e.g. Dask workers)."""
    if shards <= 1:
        return adjudicate_month(stage, db, month)
    dirs = split_shards(stage, db, month, shards)
    if fan_out:
        done = [f.result() for f in [adjudicate_shard.submit(d, month) for d in dirs]]
    else:
        done = [adjudicate_shard(d, month) for d in dirs]
    return combine_shards(stage, db, month, done)


def _applications(stage_p: Path, db: str, month: str, adjudicated: pl.DataFrame, regs: dict) -> None:
    """On-application assistance (POLICY §3.9): one record per application of the month."""
    apps = pl.read_parquet(stage_p / "applications.parquet")
    if apps.height == 0:
        pl.DataFrame(schema=APPLICATION_SCHEMA).write_parquet(stage_p / "assistance_applications.parquet")
        return
    con = store.connect(db)
    try:
        earlier = store.adjudicated_of_persons(con, apps["psn_no"].unique().to_list(), month)
        previous = store.previous_applications(con, month)
    finally:
        con.close()
    window = pl.concat([earlier, adjudicated.filter(pl.col("psn_no").is_in(apps["psn_no"].implode()))],
                       how="diagonal_relaxed")
    out = apply_applications(apps, window, regs, load_policies(), previous=previous)
    out.write_parquet(stage_p / "assistance_applications.parquet")


@task(name="persist")
def persist(stage: str, db: str, month: str, run_id: str) -> str:
    clock = StageClock(month)
    stage_p = Path(stage)
    frames = {
        "settlements": pl.read_parquet(stage_p / "accepted.parquet"),
        "rejects": pl.read_parquet(stage_p / "rejects.parquet"),
        "adjudicated": pl.read_parquet(stage_p / "adjudicated.parquet"),
        "accumulators": pl.read_parquet(stage_p / "accumulators.parquet"),
        "assistance_applications": pl.read_parquet(stage_p / "assistance_applications.parquet"),
        "account_ledger": pl.read_parquet(stage_p / "account_ledger.parquet"),
        "account_month_end": pl.read_parquet(stage_p / "account_month_end.parquet"),
    }
    if (stage_p / "contributions.parquet").exists():  # absent when the stored year is unchanged
        frames["contributions"] = pl.read_parquet(stage_p / "contributions.parquet")
    record = json.loads((stage_p / "ingest.json").read_text())
    adj = json.loads((stage_p / "adjudicate.json").read_text())
    record.update(assumptions=adj["assumptions"], lines_adjudicated=adj["lines"])
    regs = _staged_registers(stage_p)
    last_day = (dt.date(int(month[:4]), int(month[5:]), 28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    snapshot = person_snapshot(regs, on=last_day)
    con = store.connect(db)
    try:
        store.write_month(con, run_id, month, frames, record)
        # Masked persons for auditors' views and explain (flows/reports.py); never clear names or IDs.
        write_person_snapshot(con, snapshot)
    finally:
        con.close()
    clock.lap("write")
    return run_id


def _run_one_month(month: str, input_dir: str, db: str, triggered_by: str, shards: int = 1,
                   fan_out: bool = False) -> str:
    logger = get_run_logger()
    if not MONTH_RE.match(month):
        raise RunError(f"not a month: {month!r} (expected YYYY-MM)")
    con = store.connect(db)
    try:
        prev = previous_month(month)
        if prev is not None and prev not in store.loaded_months(con):
            raise RunError(f"{month} starts from the accumulators at the end of {prev}, which is not loaded: "
                           f"run `yibao run --month {prev}` first")
        run_id = f"{month}-{dt.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        store.begin_run(con, {"run_id": run_id, "month": month, "input_dir": str(Path(input_dir).resolve()),
                              "code_version": code_version(), "policy_version": load_policies(POLICY_ROOT).digest,
                              "triggered_by": triggered_by})
    finally:
        con.close()
    stage = Path(db).resolve().parent / ".yibao_runs" / run_id
    stage.mkdir(parents=True, exist_ok=True)
    try:
        ingest_and_validate(input_dir, month, db, str(stage))
        adjudicate_step(str(stage), db, month, shards, fan_out)
        persist(str(stage), db, month, run_id)
    except BaseException as e:
        con = store.connect(db)
        try:
            store.fail_run(con, run_id, f"{type(e).__name__}: {e}")
        finally:
            con.close()
        raise
    shutil.rmtree(stage, ignore_errors=True)
    from flows.artifacts import publish
    publish(db, month, run_id)  # Prefect table and markdown artifacts of the month (issue 5)
    logger.info("%s: run %s succeeded", month, run_id)
    return run_id


def _later_loaded(db: str, month: str) -> list[tuple[str, str]]:
    con = store.connect(db)
    try:
        # every later month: accumulators restart each year, but personal-account balances carry into the next
        later = [m for m in store.loaded_months(con) if m > month]
        out = []
        for m in later:
            row = con.execute("SELECT input_dir FROM runs WHERE month=? AND status='succeeded' "
                              "ORDER BY started_at DESC LIMIT 1", [m]).fetchone()
            out.append((m, row[0]))
        return out
    finally:
        con.close()


def _close_interrupted_runs(db: str) -> None:
    """Runs still 'running' while we hold the writer lock were killed: their writes never committed."""
    if not Path(db).exists():
        return
    con = store.connect(db)
    try:
        con.execute("UPDATE runs SET status='failed', finished_at=now(), error='interrupted: the process ended "
                    "before the run finished; nothing of it was written' WHERE status='running'")
    finally:
        con.close()


@contextmanager
def writer_lock(db: str):
    """One writer at a time per database: a second run refuses at once (it never waits)."""
    lock_path = Path(str(db) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise RunError(f"{db} is being written by another yibao run ({holder}); try again when it ends") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {dt.datetime.now():%Y-%m-%d %H:%M:%S}")
        fh.flush()
        _close_interrupted_runs(db)
        yield
    finally:
        fh.close()


@flow(name="yibao-month", log_prints=False)
def month_flow(month: str, input_dir: str, db: str, shards: int = 1, fan_out: bool = False) -> list[str]:
    """Run one month; then re-run the later months already loaded (DATA.md §5: those of that year; later years
    too, because personal-account balances carry across years, POLICY §4.5). shards/fan_out: adjudicate_step."""
    with writer_lock(db):
        later = _later_loaded(db, month)
        run_ids = [_run_one_month(month, input_dir, db, "user", shards, fan_out)]
        for m, their_input in later:
            run_ids.append(_run_one_month(m, their_input, db, f"rerun after {month}", shards, fan_out))
        return run_ids


@flow(name="yibao-year", log_prints=False)
def year_flow(year: int, input_dir: str, db: str, shards: int = 1, fan_out: bool = False) -> list[str]:
    """Every month folder of the year, in order, in one flow run."""
    months = sorted(p.name for p in Path(input_dir).glob(f"{year}-[01][0-9]") if p.is_dir() and MONTH_RE.match(p.name))
    if not months:
        raise RunError(f"no month folders {year}-MM under {input_dir}")
    with writer_lock(db):
        return [_run_one_month(m, input_dir, db, f"year {year}", shards, fan_out) for m in months]


def dask_runner(address: str):
    """prefect-dask's task runner for `yibao run --dask ADDRESS` (a scheduler, e.g. tcp://host:8786) or
    `--dask local` (a LocalCluster of one single-threaded worker process per core). Workers report their
    task runs to PREFECT_API_URL: set it to a running server, else each worker starts a temporary one."""
    from prefect_dask import DaskTaskRunner
    if address == "local":
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": os.cpu_count() or 1, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return DaskTaskRunner(address=address)
