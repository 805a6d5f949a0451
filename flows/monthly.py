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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
from prefect import flow, get_run_logger, task

from flows import progress, store
from flows.errors import drop_locals, error_line
from flows.ingest import REGISTER_RECORDS, InputFileError, _relname, load_registers, month_files, read_table
from flows.policies import POLICY_ROOT, load_policies
from flows.reports import person_snapshot, write_person_snapshot
from schemas.outputs import Accumulators, Adjudicated, MaternityBenefits
from transforms.contributions import contributions
from transforms.engine import (
    Adjudication,
    adjudicate,
    combine_adjudications,
    engine_persons,
    moved_accumulators,
)
from transforms.maternity import BENEFIT_SCHEMA, maternity_benefits
from transforms.resident.application import OUTPUT_SCHEMA as APPLICATION_SCHEMA
from transforms.resident.application import apply_applications
from transforms.shards import family_groups, shard_of_persons, split_by_shard
from transforms.supervision import LINE_COLUMNS, history_since, supervise
from transforms.validate import validate_applications, validate_maternity_events, validate_settlements

REGISTERS = ("persons", "identities", "employment", "certifications", "institutions", "family_bindings",
             "account_balances")
MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class RunError(RuntimeError):
    """A run cannot proceed; the message is one line for the user."""


def code_version() -> str:
    """git describe (or the package version) plus a digest of the code itself: a rerun is 'unchanged' only
    when the code that computes it is the same, whatever the describe string says (a dirty tree, a local edit)."""
    src = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for p in sorted(f for d in ("flows", "transforms", "schemas") for f in (src / d).rglob("*.py")):
        h.update(p.relative_to(src).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    digest = h.hexdigest()[:12]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()} src:{digest}"
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import version
    return f"yibao {version('yibao')} src:{digest}"


def transient_io(exc: BaseException) -> bool:
    """Worth retrying: the file system or the database file hiccuped (network mount, disk busy). Never an input
    that is wrong (InputFileError unless marked transient), a validation or policy failure, or a missing file."""
    if isinstance(exc, InputFileError):
        return exc.transient
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    return isinstance(exc, OSError | duckdb.IOException)


def _retry_on_transient_io(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: retries for I/O only (issue 6); validation failures end the task at once."""
    try:
        exc = state.result(raise_on_failure=False)
    except BaseException as e:  # the result itself could not be read back
        exc = e
    return isinstance(exc, BaseException) and transient_io(exc)


# I/O tasks: two retries a few seconds apart, only for transient I/O errors (transient_io).
IO_RETRIES = {"retries": 2, "retry_delay_seconds": [5, 30], "retry_condition_fn": _retry_on_transient_io}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_files(root: Path, month: str) -> list[dict]:
    """Name, size and sha256 of every file a month's run reads: its settlement, application and maternity-event
    files and the registers (reference/)."""
    files = month_files(root, month)
    reference = sorted((root / "reference").glob("*"))
    return [{"name": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": sha256_of(p)}
            for p in [*files["settlements"], *files.get("applications", []), *files.get("maternity", []), *reference]
            if p.is_file()]


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


class RunRefused(RunError):
    """DATA.md §5: the month's inputs cannot make a month (an empty month folder, a settlement file whose every data
    row is rejected): the month is not written, its `runs` row says `refused` and why; the message names the file."""


TOP_REASONS = 3  # reject reasons shown per file in the run record and the summary line


def file_counts(raw: pl.DataFrame, rejects: pl.DataFrame) -> dict[str, dict]:
    """source_file → rows read, accepted, rejected and the top reject reasons (code, rows) of that file."""
    if raw.height == 0:
        return {}
    read = raw.group_by("source_file").len("rows_read")
    rej = rejects.group_by("source_file", maintain_order=True).agg(
        pl.len().alias("rows_rejected"), pl.col("reason").first().str.split(" | ").list.first().str.split("; ").list.first()
        .alias("first_reason"))
    top = (rejects.group_by("source_file", "reason_code").len("n")
           .sort(["source_file", "n", "reason_code"], descending=[False, True, False])
           .group_by("source_file", maintain_order=True).head(TOP_REASONS)
           .group_by("source_file", maintain_order=True).agg(pl.struct("reason_code", "n").alias("top_reasons")))
    out = {}
    for r in (read.join(rej, on="source_file", how="left").join(top, on="source_file", how="left")
              .with_columns(pl.col("rows_rejected").fill_null(0)).iter_rows(named=True)):
        out[r["source_file"]] = {"rows_read": r["rows_read"], "rows_accepted": r["rows_read"] - r["rows_rejected"],
                                 "rows_rejected": r["rows_rejected"], "first_reason": r["first_reason"],
                                 "top_reasons": [[t["reason_code"], t["n"]] for t in (r["top_reasons"] or [])]}
    return out


def refusal(month: str, settlement_files: list[str], counts: dict[str, dict]) -> str | None:
    """DATA.md §5: why the month is refused, naming the file, or None. A header-only file is fine (no lines)."""
    if not settlement_files:
        return (f"{month} refused: no settlement file in {month}/ (hospital_settlements*, pharmacy_settlements*);"
                " the month was not written")
    for name in settlement_files:
        c = counts.get(name)
        if c and c["rows_read"] and not c["rows_accepted"]:
            reasons = ", ".join(f"{code} {n:,}" for code, n in c["top_reasons"])
            return (f"{month} refused: {name}: all {c['rows_read']:,} rows rejected ({reasons}; first: "
                    f"{c['first_reason']}); the month was not written")
    return None


@task(name="ingest-and-validate", **IO_RETRIES)
def ingest_and_validate(input_dir: str, month: str, db: str, stage: str) -> str:
    clock = StageClock(month)
    stage_p, root = Path(stage), Path(input_dir)
    files = month_files(root, month)
    if not files["settlements"]:  # DATA.md §5: an empty month folder is not a month
        raise RunRefused(refusal(month, [], {}))
    regs = load_registers(root)
    records = {name: regs.pop(name) for name in REGISTER_RECORDS}
    for name, frame in regs.items():
        frame.write_parquet(stage_p / f"reg_{name}.parquet")
    raws = [read_table(p, root) for p in files["settlements"]]
    raw = pl.concat(raws, how="diagonal_relaxed") if raws else pl.DataFrame(
        schema={"source_file": pl.String, "source_row": pl.Int64})
    ids: list[str] = []
    for c in ("setl_id", "orig_setl_id"):
        if c in raw.columns:
            col = raw.get_column(c)
            ids += pl.concat([col, col.str.strip_chars()]).drop_nulls().unique().to_list()
    con = store.connect(db)
    try:
        known = store.known_settlements(con, month, sorted(set(ids)))  # only the rows this month's ids can match
    finally:
        con.close()
    clock.lap("ingest")
    accepted, rejects = validate_settlements(raw, month, regs, known, policies=load_policies())
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
    # Maternity events (POLICY §4.6, docs/MATERNITY_INPUT.md), optional: same accounting as settlements.
    mat_raws = [read_table(p, root) for p in files.get("maternity", [])]
    mat_raw = pl.concat(mat_raws, how="diagonal_relaxed") if mat_raws else pl.DataFrame()
    events = pl.DataFrame()
    if mat_raws:
        events, mat_rejects = validate_maternity_events(mat_raw, month, regs)
        rejects = pl.concat([rejects, mat_rejects], how="diagonal_relaxed")
    events.write_parquet(stage_p / "maternity_events.parquet")
    accepted.write_parquet(stage_p / "accepted.parquet")
    rejects.write_parquet(stage_p / "rejects.parquet")
    records["register_rejects"].write_parquet(stage_p / "register_rejects.parquet")
    # per file: rows read, accepted, rejected, top reasons (DATA.md §4 runs.input_files); registers (POLICY §1.14)
    # count their own rows and rejects, and the rows kept with a reading are the run's warnings
    read_frames = [f.select("source_file") for f in (raw, app_raw, mat_raw) if f.height]
    counts = file_counts(pl.concat(read_frames) if read_frames else raw.select("source_file"),
                         rejects.select("source_file", "reason_code", "reason"))
    reg_rows = records["register_rows"]
    reg_counts = file_counts(
        reg_rows.select(pl.col("source_file").repeat_by("rows")).explode("source_file").drop_nulls(),
        records["register_rejects"].select("source_file", "reason_code", "reason"))
    warn_by_file = dict(records["register_warnings"].group_by("source_file").len().iter_rows())
    for name, c in reg_counts.items():
        c["warnings"] = warn_by_file.get(name, 0)
    fingerprint = stage_p / "input_files.json"  # hashed by the run before it started (unchanged-rerun check)
    listed = json.loads(fingerprint.read_text()) if fingerprint.exists() else input_files(root, month)
    for f in listed:
        f.update(counts.get(f["name"]) or reg_counts.get(f["name"])
                 or ({"rows_read": 0, "rows_accepted": 0, "rows_rejected": 0, "top_reasons": []}
                     if not f["name"].startswith("reference/") else {}))
    warnings = records["register_warnings"]
    record = {
        "input_files": listed,
        "rows_in": raw.height + app_raw.height + mat_raw.height,
        "rows_accepted": accepted.height + apps.height + events.height,
        "rows_rejected": rejects.height,
        "register_rows_rejected": records["register_rejects"].height,
        "warnings": warnings.height,
        "warnings_detail": warnings.group_by("warning").len("rows").sort("rows", descending=True).to_dicts(),
    }
    if record["rows_in"] != record["rows_accepted"] + record["rows_rejected"]:
        raise RunError(f"{month}: rows_in {record['rows_in']} ≠ accepted {record['rows_accepted']}"
                       f" + rejected {rejects.height}")
    (stage_p / "ingest.json").write_text(json.dumps(record, ensure_ascii=False))
    why = refusal(month, [_relname(p, root) for p in files["settlements"]], counts)
    if why:
        raise RunRefused(why)
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
        rev = accepted.filter(pl.col("orig_setl_id").is_not_null())["orig_setl_id"].to_list()
        originals = store.original_results(con, month, rev)
        carried = store.carried_accumulators(con, month, accepted["psn_no"].unique().to_list(),
                                             earlier_years=reversal_years(originals, month))
        opening = opening_state(stage_p, con, month)
        if opening is not None:  # POLICY §1.13: the year-to-date state of the register, not the store's
            # stored with the month (persist), as the state at the end of the month before
            opening.with_columns(pl.lit(previous_month(month)).alias("month")).write_parquet(
                stage_p / "opening_accumulators.parquet")
            carried = pl.concat([carried.filter(pl.col("year") != int(month[:4])),
                                 opening.filter(pl.col("psn_no").is_in(accepted["psn_no"].implode()))
                                 .select(carried.columns)])
        balances = store.carried_balances(con, month)  # personal accounts: end of the previous month, any year
        original_ledger = store.original_ledger(con, month, rev)
        earlier_stays = store.stay_history(con, month, accepted)  # §1.12: emergency lines a stay line merges
    finally:
        con.close()
    return {"lines": accepted, "registers": _staged_registers(stage_p), "carried": carried,
            "originals": originals, "balances": balances,
            "original_ledger": original_ledger if original_ledger.height else None,
            "earlier_stays": earlier_stays if earlier_stays.height else None}


def _opening_as_of(register: pl.DataFrame | None, prev: str) -> pl.DataFrame | None:
    """The opening_accumulators register's rows as of the last day of `prev` (None when it has none)."""
    if register is None:
        return None
    rows = register.filter(pl.col("as_of") == _month_days(prev)[1])
    return rows if rows.height else None


def _opening_available(input_dir: str, work: str, prev: str) -> bool:
    """POLICY §1.13: a month whose previous month is not loaded may start from the opening_accumulators register
    as of the end of that month, or from an opening state an earlier run of the month stored."""
    ref = Path(input_dir) / "reference"
    if any(ref.glob("opening_accumulators.*")) and _opening_as_of(
            load_registers(Path(input_dir)).get("opening_accumulators"), prev) is not None:
        return True
    if not Path(work).exists():
        return False
    con = store.connect(work, read_only=True)
    try:
        return store.has_opening(con, prev)
    finally:
        con.close()


def opening_state(stage_p: Path, con, month: str) -> pl.DataFrame | None:
    """psn_no, year, name, value of the register's opening state, when the month starts from it: its previous
    month (same year) is not loaded and the register holds rows as of that month's last day (POLICY §1.13)."""
    prev = previous_month(month)
    if prev is None or prev in store.loaded_months(con):
        return None
    staged = stage_p / "reg_opening_accumulators.parquet"
    rows = _opening_as_of(pl.read_parquet(staged) if staged.exists() else None, prev)
    return None if rows is None else rows.select("psn_no", pl.col("year").cast(pl.Int32), "name", "value")


def reversal_years(originals: pl.DataFrame, month: str) -> pl.DataFrame | None:
    """(psn_no, year) of originals settled in a year before the month's: their reversals give back to that year's
    accumulators (POLICY §1.7), so its state is carried in too."""
    if originals.height == 0:
        return None
    return (originals.select("psn_no", pl.col("setl_time").dt.year().cast(pl.Int32).alias("year"))
            .filter(pl.col("year") < int(month[:4])).unique())


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


def _policies(overrides: str | None = None):
    """The loaded policies; with a what-if scenario's overrides file (flows/whatif.py) applied."""
    policies = load_policies()
    if overrides is not None:
        from flows.whatif import scenario_policies
        policies = scenario_policies(policies, overrides)
    return policies


@task(name="adjudicate", **IO_RETRIES)
def adjudicate_month(stage: str, db: str, month: str, overrides: str | None = None) -> str:
    """overrides: a what-if scenario's overrides file (flows/whatif.py), applied to the loaded policies."""
    clock = StageClock(month)
    stage_p = Path(stage)
    inp = _engine_inputs(stage_p, db, month)
    policies = _policies(overrides)
    result = adjudicate(inp.pop("lines"), inp.pop("registers"), policies, **inp, period=_month_days(month))
    result.accumulators = moved_accumulators(result.accumulators, inp["carried"])  # what the month changed
    _finish_adjudication(stage_p, db, month, result, policies)
    clock.lap("adjudication")
    return str(stage_p / "adjudicated.parquet")


@task(name="split-shards", **IO_RETRIES)
def split_shards(stage: str, db: str, month: str, shards: int) -> list[str]:
    """The month's lines and carried state split by family group (transforms/shards.py), one folder of
    Parquet files per shard: shards exchange files, never frames."""
    clock = StageClock(month)
    stage_p = Path(stage)
    inp = _engine_inputs(stage_p, db, month)
    persons = engine_persons(inp["lines"], inp["carried"], inp["balances"])
    assign = shard_of_persons(family_groups(inp["registers"], persons), shards)
    dirs = [stage_p / f"shard-{k:03d}" for k in range(shards)]
    for d in dirs:
        d.mkdir(exist_ok=True)
        inp["originals"].write_parquet(d / "originals.parquet")  # looked up by setl_id: shared whole
        if inp["earlier_stays"] is not None:  # looked up by psn_no and mdtrt_id: shared whole
            inp["earlier_stays"].write_parquet(d / "earlier_stays.parquet")
    for name, frame in [*[(n, inp[n]) for n in ("lines", "carried", "balances", "original_ledger")],
                        *[(f"reg_{n}", f) for n, f in inp["registers"].items()]]:
        if frame is not None:
            for d, part in zip(dirs, split_by_shard(frame, assign, shards), strict=True):
                part.write_parquet(d / f"{name}.parquet")
    dirs = [str(d) for d in dirs]
    clock.lap("adjudication")
    return dirs


@task(name="adjudicate-shard", **IO_RETRIES)
def adjudicate_shard(shard: str, month: str) -> str:
    """One shard through the engine, on whichever worker runs it; inputs and outputs are its folder's files."""
    clock = StageClock(month)
    d = Path(shard)
    read = {n: (pl.read_parquet(d / f"{n}.parquet") if (d / f"{n}.parquet").exists() else None)
            for n in ("lines", "carried", "originals", "balances", "original_ledger", "earlier_stays")}
    result = adjudicate(read.pop("lines"), _staged_registers(d), load_policies(), **read, period=_month_days(month))
    result.accumulators = moved_accumulators(result.accumulators, read["carried"])  # combined: only what moved
    _write_outputs(d, result)
    clock.lap("adjudication")
    return shard


@task(name="combine-shards", **IO_RETRIES)
def combine_shards(stage: str, db: str, month: str, shards: list[str]) -> str:
    clock = StageClock(month)
    stage_p = Path(stage)
    result = combine_adjudications([_read_outputs(Path(d)) for d in shards])  # each shard's moved accumulators
    _finish_adjudication(stage_p, db, month, result, load_policies())
    for d in shards:
        shutil.rmtree(d, ignore_errors=True)
    clock.lap("adjudication")
    return str(stage_p / "adjudicated.parquet")


def _finish_adjudication(stage_p: Path, db: str, month: str, result: Adjudication, policies) -> None:
    # Output models, eagerly (schema and data), before anything is written (schemas/outputs.py).
    Adjudicated.validate(result.adjudicated, lazy=True)
    Accumulators.validate(result.accumulators, lazy=True)
    regs = _staged_registers(stage_p)
    result.account_ledger = result.account_ledger.with_row_index("seq")
    _write_outputs(stage_p, result)
    _applications(stage_p, db, month, result.adjudicated, regs, policies)
    if not _contributions_unchanged(stage_p, db, month):  # §3.1, §4.1
        contributions(regs, policies, int(month[:4])).write_parquet(stage_p / "contributions.parquet")
    _maternity(stage_p, regs, policies)
    findings = _supervision(stage_p, db, month, result.adjudicated, regs, policies)
    (stage_p / "adjudicate.json").write_text(json.dumps({"assumptions": result.assumptions,
                                                         "lines": result.adjudicated.height,
                                                         "supervision_findings": findings}))


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


def _applications(stage_p: Path, db: str, month: str, adjudicated: pl.DataFrame, regs: dict, policies) -> None:
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
    out = apply_applications(apps, window, regs, policies, previous=previous)
    out.write_parquet(stage_p / "assistance_applications.parquet")


def institution_names(regs: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The institutions register as the run staged it (reg_institutions): code, name, type, level, county — the
    names and levels the clearing statement and the findings show (store table month_institutions). The one
    place that reads them: when the store gains its own `institutions` table, read it here."""
    cols = {"fixmedins_code": pl.String, "fixmedins_name": pl.String, "fixmedins_type": pl.String,
            "dedc_hosp_lv": pl.String, "admdvs": pl.String}
    inst = regs.get("institutions")
    if inst is None or inst.height == 0:
        return pl.DataFrame(schema=cols)
    return inst.select([(pl.col(c).cast(t) if c in inst.columns else pl.lit(None, t).alias(c)) for c, t in cols.items()])


def _supervision(stage_p: Path, db: str, month: str, adjudicated: pl.DataFrame, regs: dict, policies) -> dict:
    """Fund-supervision findings of the month (transforms/supervision.py, issue 17) over the month's lines and the
    earlier lines they look back at; returns the count of findings per rule (the run record)."""
    names = institution_names(regs)
    names.write_parquet(stage_p / "month_institutions.parquet")
    accepted = pl.read_parquet(stage_p / "accepted.parquet", columns=["setl_id", "begndate", "enddate", "dise_codg"])
    lines = adjudicated.join(accepted, on="setl_id", how="left").select(LINE_COLUMNS)
    _, last_day = _month_days(month)
    since = history_since(lines, policies, last_day)
    history = None
    if since is not None:
        con = store.connect(db)
        try:
            history = store.supervision_history(con, month, lines["psn_no"].unique().to_list(), since)
        finally:
            con.close()
    found = supervise(lines, history, policies, last_day).join(
        names.select("fixmedins_code", "fixmedins_name"), on="fixmedins_code", how="left")
    found.write_parquet(stage_p / "violations.parquet")
    return {k: n for k, n in found.group_by("rule_id").len().sort("rule_id").iter_rows()}


def _maternity(stage_p: Path, regs: dict, policies) -> None:
    """Maternity allowance days and flexible workers' subsidies of the month's events (POLICY §4.6)."""
    events = pl.read_parquet(stage_p / "maternity_events.parquet")
    if events.height == 0:
        out = pl.DataFrame(schema={"source_file": pl.String, "source_row": pl.Int64, **BENEFIT_SCHEMA})
    else:
        out = pl.concat([events.select("source_file", "source_row"), maternity_benefits(events, regs, policies)],
                        how="horizontal")
    MaternityBenefits.validate(out, lazy=True)
    out.write_parquet(stage_p / "maternity_benefits.parquet")


@task(name="persist", **IO_RETRIES)
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
        "maternity_benefits": pl.read_parquet(stage_p / "maternity_benefits.parquet"),
        "violations": pl.read_parquet(stage_p / "violations.parquet"),
        "month_institutions": pl.read_parquet(stage_p / "month_institutions.parquet"),
    }
    # Written only by some runs: register rejects by a month's ingest (not by a what-if scenario, which re-reads
    # stored lines), contributions when the stored year changed, the opening state by a month that starts from it
    # (POLICY §1.13).
    for name in ("register_rejects", "contributions", "opening_accumulators"):
        if (stage_p / f"{name}.parquet").exists():
            frames[name] = pl.read_parquet(stage_p / f"{name}.parquet")
    record = json.loads((stage_p / "ingest.json").read_text())
    adj = json.loads((stage_p / "adjudicate.json").read_text())
    record.update(assumptions=adj["assumptions"], lines_adjudicated=adj["lines"],
                  supervision_findings=adj.get("supervision_findings", {}))
    con = store.connect(db)
    try:
        store.write_month(con, run_id, month, frames, record)
    finally:
        con.close()
    clock.lap("write")
    return run_id


@dataclass
class Publication:
    """The database a flow writes (`db`) and the private copy it writes to (`work`, store.shadow): every month
    of the flow is committed into the copy, one transaction each, and the copy is published when the flow
    ends — or at a failure, with the months committed before it — so a year or a cascade copies the database
    once, not once a month. `done`: (month, run_id, stage folder) of the months committed and not yet
    published; their journals (run.json) stay until the copy is published."""
    db: str
    work: str
    done: list[tuple[str, str, Path, str]] = field(default_factory=list)  # month, run_id, stage, input_dir


@contextmanager
def publication(db: str, in_place: bool = False) -> Iterator[Publication]:
    """in_place: the flow writes `db` itself (store.shadow in_place): no copy, readers wait for the flow."""
    pub: Publication | None = None
    try:
        with store.shadow(db, publish_on_error=True, in_place=in_place) as work:
            pub = Publication(db=db, work=str(work))
            try:
                yield pub
            except BaseException:
                with suppress(Exception):  # the failure itself is what the user must see
                    _write_persons(pub)
                raise
            _write_persons(pub)
    finally:
        if pub is not None:
            _after_publication(pub)


def _write_persons(pub: Publication) -> None:
    """The masked person snapshot (flows/reports.py) as of the last day of the flow's latest committed month:
    written once per flow, not once per month (each month's replaced the one before; at 5 million persons
    that is seconds a month)."""
    if not pub.done:
        return
    month, run_id, _, input_dir = max(pub.done, key=lambda d: d[0])
    _, last_day = _month_days(month)
    registers = load_registers(Path(input_dir))
    snapshot = person_snapshot(registers, on=last_day)
    con = store.connect(pub.work)
    try:
        write_person_snapshot(con, snapshot)
        store.write_institutions(con, registers["institutions"], run_id)  # DATA.md §4: names for reports
    finally:
        con.close()


def _after_publication(pub: Publication) -> None:
    """Journals of published months are dropped; each month's Prefect artifacts (issue 5) are published —
    a failure there is logged, never turned into a failed run (the month is already in the database)."""
    published = Path(pub.db).exists() and (Path(pub.work) == Path(pub.db) or not Path(pub.work).exists())
    if not published:
        return
    from flows.artifacts import publish
    logger = get_run_logger()
    for month, run_id, stage, _ in pub.done:
        shutil.rmtree(stage, ignore_errors=True)
        try:
            publish(pub.db, month, run_id)
        except Exception as e:  # noqa: BLE001 - artifacts are a convenience; the month is committed
            logger.warning("%s: run %s succeeded; its Prefect artifacts were not published (%s: %s)",
                           month, run_id, type(e).__name__, e)
        logger.info("%s: run %s succeeded", month, run_id)


def _run_one_month(month: str, input_dir: str, pub: Publication, triggered_by: str, force: bool = False,
                   shards: int = 1, fan_out: bool = False) -> tuple[str, bool]:
    """One month, committed into the flow's copy of the database (Publication). Returns (run_id, changed):
    changed is False when the month's last succeeded run had the same input files, registers, code, policies
    and upstream month, in which case nothing is rewritten and the run is recorded as 'unchanged' (issue 6).
    shards/fan_out: adjudicate_step."""
    logger = get_run_logger()
    if not MONTH_RE.match(month):
        raise RunError(f"not a month: {month!r} (expected YYYY-MM)")
    db, work = pub.db, pub.work
    loaded, prev_run, last = _month_state(work, month)
    run_id = f"{month}-{dt.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    run = {"run_id": run_id, "month": month, "input_dir": str(Path(input_dir).resolve()),
           "code_version": code_version(), "policy_version": load_policies(POLICY_ROOT).digest,
           "triggered_by": triggered_by, "prev_run_id": prev_run, "started_at": dt.datetime.now()}
    stage = Path(db).resolve().parent / ".yibao_runs" / run_id
    stage.mkdir(parents=True, exist_ok=True)
    # journal: a run killed before its copy was published is recorded 'failed' by the next writer
    (stage / "run.json").write_text(json.dumps({**run, "db": str(Path(db).resolve())}, default=str))
    files = None
    try:
        prev = previous_month(month)
        if prev is not None and prev not in loaded and not _opening_available(input_dir, work, prev):
            raise RunRefused(f"{month} starts from the accumulators at the end of {prev}, which is not loaded: "
                             f"run `yibao run --month {prev}` first, or, to start mid-year, load the year-to-date "
                             f"state as of {_month_days(prev)[1]} as reference/opening_accumulators (POLICY §1.13)")
        files = input_files(Path(input_dir), month)
        (stage / "input_files.json").write_text(json.dumps(files, ensure_ascii=False))
        if not force and _same_run(last, run, files):
            store.record_runs(work, [{**run, "finished_at": dt.datetime.now(), "status": "unchanged",
                                      "input_files": json.dumps(files, ensure_ascii=False),
                                      "matches_run_id": last["run_id"],
                                      **{k: last[k] for k in ("rows_in", "rows_accepted", "rows_rejected",
                                                              "assumptions", "lines_adjudicated", "warnings")}}],
                              in_place=True)
            shutil.rmtree(stage, ignore_errors=True)
            logger.info("%s: unchanged since run %s (same input files, registers, code, policies and upstream "
                        "month); nothing rewritten", month, last["run_id"])
            return run_id, False
        _begin_run(work, run)
        t0 = time.monotonic()
        progress.report(month, "reading and validating", "registers and settlement files")
        ingest_and_validate(input_dir, month, work, str(stage))
        rec = json.loads((stage / "ingest.json").read_text())
        progress.report(month, "adjudicating", f"{rec['rows_accepted']:,} lines accepted of {rec['rows_in']:,} read")
        adjudicate_step(str(stage), work, month, shards, fan_out)
        if os.environ.get("YIBAO_FAULT") == "between_tasks":  # fault injection for the crash-safety test
            os._exit(71)
        progress.report(month, "writing", "results into the database")
        persist(str(stage), work, month, run_id)
        progress.month_done(month, rec["rows_accepted"], time.monotonic() - t0)
    except BaseException as e:
        if not _committed(work, run_id):  # a failure after the month's commit leaves the month as committed
            counted = {}
            if (stage / "ingest.json").exists():  # what ingest counted before the month was refused or failed
                counted = store.run_counts(json.loads((stage / "ingest.json").read_text()))
            elif files is not None:
                counted = {"input_files": json.dumps(files, ensure_ascii=False)}
            store.record_runs(work, [{**run, "finished_at": dt.datetime.now(),
                                      "status": "refused" if isinstance(e, RunRefused) else "failed",
                                      **counted, "error": error_line(e)[:2000]}], in_place=True)
        drop_locals(e)  # the flow run's state keeps the exception: not the DuckDB objects of its frames
        raise
    for p in stage.iterdir():  # the stage's files are no longer needed; the journal stays until published
        if p.name != "run.json":
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    pub.done.append((month, run_id, stage, input_dir))
    return run_id, True


# Connections live in these small functions, not in _run_one_month's frame: a failure's traceback keeps that frame
# (and a closed connection in it is still a DuckDB object alive at exit, issue 16.3).
def _month_state(work: str, month: str) -> tuple[list[str], str | None, dict | None]:
    """(loaded months, the upstream run, the month's last succeeded run) of the flow's copy of the database."""
    if not Path(work).exists():
        return [], None, None
    con = store.connect(work, read_only=True)
    try:
        return store.loaded_months(con), store.upstream_run(con, month), store.last_succeeded(con, month)
    finally:
        con.close()


def _begin_run(work: str, run: dict) -> None:
    con = store.connect(work)
    try:
        store.begin_run(con, run)
    finally:
        con.close()


def _committed(work: str, run_id: str) -> bool:
    if not Path(work).exists():
        return False
    con = store.connect(work, read_only=True)
    try:
        return con.execute("SELECT count(*) FROM runs WHERE run_id = ? AND status = 'succeeded'",
                           [run_id]).fetchall() == [(1,)]
    finally:
        con.close()


def _same_run(last: dict | None, run: dict, files: list[dict]) -> bool:
    """The month's last succeeded run read the same bytes (sha256 of every input and register file), with the
    same code and policies, on top of the same upstream run: rerunning it would write the same rows."""
    if last is None:
        return False
    def digests(items):
        return sorted((f["name"], f["sha256"]) for f in items)
    return (digests(json.loads(last["input_files"] or "[]")) == digests(files)
            and last["code_version"] == run["code_version"] and last["policy_version"] == run["policy_version"]
            and last.get("prev_run_id") == run["prev_run_id"])


def _later_loaded(db: str, month: str) -> list[tuple[str, str]]:
    if not Path(db).exists():
        return []
    con = store.connect(db, read_only=True)
    try:
        # every later month: accumulators restart each year, but personal-account balances carry into the next
        later = [m for m in store.loaded_months(con) if m > month]
        return [(m, store.last_succeeded(con, m)["input_dir"]) for m in later]
    finally:
        con.close()


INTERRUPTED = "interrupted: the process ended before the run finished; nothing of it was written"


def _close_interrupted_runs(db: str) -> None:
    """Runs that were running when their process died (we hold the writer lock, so none is running now): their
    writes never reached the database. Recorded 'failed' from the database's 'running' rows (an older in-place
    writer) and from the journals in the stage folders (run.json) of runs the database never heard of."""
    journals = _journals(db)
    running, known = [], set()
    if Path(db).exists():
        con = store.connect(db, read_only=True)
        try:
            cur = con.execute("SELECT * FROM runs WHERE status = 'running'")
            running = [dict(zip([d[0] for d in cur.description], r, strict=True)) for r in cur.fetchall()]
            ids = [j["run_id"] for j in journals]
            if ids:
                known = {r[0] for r in con.execute("SELECT run_id FROM runs WHERE list_contains(?::VARCHAR[], run_id)",
                                                   [ids]).fetchall()}
        finally:
            con.close()
    rows = running + [{**j, "started_at": dt.datetime.fromisoformat(j["started_at"])}
                      for j in journals if j["run_id"] not in known]
    if rows:
        store.record_runs(db, [{**r, "status": "failed", "finished_at": dt.datetime.now(), "error": INTERRUPTED}
                               for r in rows])


def _journals(db: str) -> list[dict]:
    """run.json of the runs of this database still in the stage folder (shared by the databases of a directory);
    one cut short by the kill itself names no run that could have written anything, and is skipped."""
    mine, out = str(Path(db).resolve()), []
    for p in (Path(db).resolve().parent / ".yibao_runs").glob("*/run.json"):
        try:
            j = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if j.pop("db", None) == mine:
            out.append(j)
    return out


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
def month_flow(month: str, input_dir: str, db: str, force: bool = False, shards: int = 1,
               fan_out: bool = False, in_place: bool = False) -> list[str]:
    """Run one month; then re-run the later months already loaded (DATA.md §5: those of that year; later years
    too, because personal-account balances carry across years, POLICY §4.5) — unless the month was unchanged,
    in which case nothing upstream of them changed either. force: recompute even an unchanged month;
    shards/fan_out: adjudicate_step."""
    with writer_lock(db):
        later = _later_loaded(db, month)
        progress.plan([month, *[m for m, _ in later]])
        with publication(db, in_place) as pub:  # the month and its cascade are published together
            run_id, changed = _run_one_month(month, input_dir, pub, "user", force, shards, fan_out)
            run_ids = [run_id]
            for m, their_input in later:
                if not changed:
                    break
                run_id, changed = _run_one_month(m, their_input, pub, f"rerun after {month}", False, shards,
                                                 fan_out)
                run_ids.append(run_id)
        return run_ids


@flow(name="yibao-year", log_prints=False)
def year_flow(year: int, input_dir: str, db: str, shards: int = 1, fan_out: bool = False,
              in_place: bool = False) -> list[str]:
    """Every month folder of the year, in order, in one flow run."""
    months = sorted(p.name for p in Path(input_dir).glob(f"{year}-[01][0-9]") if p.is_dir() and MONTH_RE.match(p.name))
    if not months:
        raise RunError(f"no month folders {year}-MM under {input_dir}")
    progress.plan(months)
    with writer_lock(db), publication(db, in_place) as pub:  # the year's months are published together
        return [_run_one_month(m, input_dir, pub, f"year {year}", False, shards, fan_out)[0] for m in months]


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
