"""What-if scenarios (issue 8): re-adjudicate a loaded year under changed policy parameters.

`whatif_flow` re-adjudicates every stored line of the year, month by month in order, in one flow
run, with the monthly flow's own tasks (`adjudicate_month`, `persist`) under the loaded policies
with the scenario's overrides (flows/overrides.py):

- the lines are the baseline's accepted lines (`settlements`), the registers are the files its runs
  read (`runs.input_dir`/reference, checked against the sha256 the runs recorded), assistance
  applications are re-read and re-validated from the same month folders;
- the scenario's own months are written to a scratch database in its stage folder
  (`.yibao_runs/whatif-<name>-<time>/scenario.duckdb`), so each month starts from the scenario's
  accumulators and account balances at the end of the month before; January starts from the
  baseline's state before the year (account balances at the end of the December before, the
  originals of reversals and on-application windows reaching into the year before), copied in first;
- at the end, one transaction replaces the scenario in `whatif_scenarios`, `whatif_adjudicated`,
  `whatif_accumulators` and `whatif_assistance_applications` of the database. The baseline's
  tables are only read.

Contributions (POLICY §3.1, §4.1) are not lines and are not part of a scenario.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from prefect import flow, task

from flows import store
from flows.ingest import load_registers, month_files, read_table
from flows.monthly import RunError, adjudicate_month, code_version, persist, sha256_of, writer_lock
from flows.overrides import Override, apply_overrides, describe
from flows.policies import Policies, load_policies
from transforms.validate import validate_applications, validate_maternity_events

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SCENARIO_TABLES = ("adjudicated", "accumulators", "assistance_applications")  # whatif_<table>


class WhatIfError(RunError):
    """A scenario cannot be made, shown or dropped; the message is one line for the user."""


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise WhatIfError(f"scenario name {name!r}: use letters, digits, '_', '-' or '.', at most 64 characters")
    return name


def scenario_policies(policies: Policies, overrides_file: str | Path) -> Policies:
    """The policies of a scenario: its overrides file (written by `whatif_flow`) applied to `policies`."""
    doc = json.loads(Path(overrides_file).read_text(encoding="utf-8"))
    return apply_overrides(policies, doc["overrides"], doc["year"], note=f"what-if {doc['scenario']}")


# ---------------------------------------------------------------- the baseline of a year

@dataclass
class Baseline:
    year: int
    months: list[str]
    missing: list[str]
    runs: dict[str, dict] = field(default_factory=dict)  # month → run_id, input_dir, input_files

    def inputs(self) -> dict[str, list[str]]:
        """input folder → the months read from it."""
        out: dict[str, list[str]] = {}
        for m in self.months:
            out.setdefault(self.runs[m]["input_dir"], []).append(m)
        return out


def baseline_of(con, year: int) -> Baseline:
    """The loaded months of the year (latest succeeded run of each) and the months that are not loaded."""
    rows = con.execute(
        "SELECT month, run_id, input_dir, input_files FROM (SELECT *, row_number() OVER (PARTITION BY month "
        "ORDER BY started_at DESC) rn FROM runs WHERE status = 'succeeded' AND month LIKE ?) WHERE rn = 1 "
        "ORDER BY month", [f"{year:04d}-%"]).fetchall()
    if not rows:
        raise WhatIfError(f"no month of {year} is loaded: run `yibao run --year {year}` first")
    runs = {m: {"run_id": r, "input_dir": d, "input_files": json.loads(f or "[]")} for m, r, d, f in rows}
    every = [f"{year:04d}-{m:02d}" for m in range(1, 13)]
    return Baseline(year, sorted(runs), [m for m in every if m not in runs], runs)


def check_registers(baseline: Baseline, input_dir: str | None) -> tuple[dict[str, str], dict]:
    """(month → folder its registers and applications are read from, note for the record).

    The note says, per month, which reference and application files differ from the sha256 its baseline
    run recorded; `input_dir` replaces the recorded folders (a moved input folder)."""
    folders: dict[str, str] = {}
    changed: dict[str, list[str]] = {}
    hashes: dict[Path, str] = {}
    for recorded_dir, months in baseline.inputs().items():
        root = Path(input_dir or recorded_dir)
        if not (root / "reference").is_dir():
            raise WhatIfError(f"the registers of {', '.join(months)} were read from {recorded_dir}, which has no "
                              f"reference/ folder now: give the input folder with --input")
        for m in months:
            folders[m] = str(root)
            recorded = {f["name"]: f["sha256"] for f in baseline.runs[m]["input_files"]
                        if f["name"].startswith(("reference/", f"{m}/assistance_applications"))}
            now_files = [p for p in (root / "reference").glob("*") if p.is_file()]
            now_files += [root / n for n in recorded if n.startswith(m) and (root / n).is_file()]
            now = {}
            for p in now_files:
                if p not in hashes:
                    hashes[p] = sha256_of(p)
                now[p.relative_to(root).as_posix()] = hashes[p]
            diff = sorted(n for n in recorded.keys() | now.keys() if recorded.get(n) != now.get(n))
            if diff:
                changed[m] = diff
    note = {"folders": sorted(set(folders.values())), "checked": "sha256 of reference/* and application files "
            "against the baseline runs' input_files", "changed": changed}
    return folders, note


def registers_text(note: dict) -> str:
    if not note.get("changed"):
        return "unchanged since the baseline runs (sha256 of reference/ and application files checked)"
    months = sorted(note["changed"])
    files = sorted({f for fs in note["changed"].values() for f in fs})
    return (f"CHANGED since the baseline runs of {', '.join(months)} ({', '.join(files)}): the scenario used today's "
            f"files, so its differences include the register changes")


# ---------------------------------------------------------------- tasks

@task(name="whatif-stage-registers")
def stage_registers(input_dir: str, dest: str) -> str:
    """The typed registers of an input folder, once per folder (months link to them)."""
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    for name, frame in load_registers(Path(input_dir)).items():
        frame.write_parquet(d / f"reg_{name}.parquet")
    return str(d)


@task(name="whatif-stage-month")
def stage_baseline_month(db: str, month: str, input_dir: str, registers: str, stage: str) -> str:
    """The stage folder `adjudicate_month` reads, filled from the baseline: the month's stored accepted
    lines, its registers, and its assistance applications re-validated from the month folder."""
    stage_p = Path(stage)
    stage_p.mkdir(parents=True, exist_ok=True)
    for p in Path(registers).glob("reg_*.parquet"):
        (stage_p / p.name).hardlink_to(p)
    con = store.connect(db, read_only=True)
    try:
        accepted = store.fetch_fen(con, "SELECT * EXCLUDE (run_id) FROM settlements WHERE month = ? "
                                        "ORDER BY source_file, source_row", [month])
    finally:
        con.close()
    root = Path(input_dir)
    files = month_files(root, month) if (root / month).is_dir() else {}
    regs = {p.stem[4:]: pl.read_parquet(p) for p in stage_p.glob("reg_*.parquet")}

    def revalidated(kind: str, validate) -> pl.DataFrame:
        """The month's optional input files of this kind, validated as the monthly run did (rejects dropped)."""
        if not files.get(kind):
            return pl.DataFrame()
        raw = pl.concat([read_table(p, root) for p in files[kind]], how="diagonal_relaxed")
        return validate(raw, month, regs)[0]

    apps = revalidated("applications", validate_applications)
    # maternity benefits (POLICY §4.6) are recomputed under the scenario like everything else of the month
    revalidated("maternity", validate_maternity_events).write_parquet(stage_p / "maternity_events.parquet")
    accepted.write_parquet(stage_p / "accepted.parquet")
    apps.write_parquet(stage_p / "applications.parquet")
    pl.DataFrame(schema={"setl_id": pl.String}).write_parquet(stage_p / "rejects.parquet")
    n = accepted.height + apps.height
    (stage_p / "ingest.json").write_text(json.dumps({"input_files": [], "rows_in": n, "rows_accepted": n,
                                                     "rows_rejected": 0}))
    return str(stage_p)


def _attach(con, path: str | Path, alias: str, read_only: bool = False) -> None:
    quoted = str(Path(path).resolve()).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS {alias}" + (" (READ_ONLY)" if read_only else ""))


@task(name="whatif-seed-state")
def seed_state(db: str, scratch: str, year: int) -> str:
    """The scenario's scratch database with the baseline's state before the year: account balances at the end
    of the latest month before it, and the rows of earlier years that the year's reversals and assistance
    applications read (originals, their account movements, on-application windows and earlier applications), and
    the accumulators of earlier years of the persons whose originals those are (POLICY §1.7)."""
    first, this_year = f"{year:04d}-01", f"{year:04d}-%"
    con = store.connect(scratch)  # the schema; the baseline attached read-only (auditors may be reading it)
    try:
        _attach(con, db, "base", read_only=True)
        try:
            origs = ("SELECT orig_setl_id FROM base.settlements WHERE month LIKE ? AND orig_setl_id IS NOT NULL")
            con.execute("INSERT INTO account_month_end BY NAME SELECT * FROM base.account_month_end WHERE month < ? "
                        "QUALIFY row_number() OVER (PARTITION BY psn_no ORDER BY month DESC) = 1", [first])
            con.execute(f"INSERT INTO adjudicated BY NAME SELECT * FROM base.adjudicated WHERE month < ? AND "
                        f"(setl_id IN ({origs}) OR psn_no IN (SELECT psn_no FROM base.assistance_applications "
                        f"WHERE month LIKE ?))", [first, this_year, this_year])
            con.execute(f"INSERT INTO account_ledger BY NAME SELECT * FROM base.account_ledger WHERE month < ? AND "
                        f"setl_id IN ({origs})", [first, this_year])
            con.execute("INSERT INTO assistance_applications BY NAME SELECT * FROM base.assistance_applications "
                        "WHERE month < ?", [first])
            # a reversal gives back to its original's year (POLICY §1.7): that year's state of those persons
            con.execute(f"INSERT INTO accumulators BY NAME SELECT * FROM base.accumulators WHERE year < ? AND "
                        f"month < ? AND psn_no IN (SELECT psn_no FROM base.adjudicated WHERE setl_id IN ({origs}))",
                        [year, first, this_year])
        finally:
            con.execute("DETACH base")
    finally:
        con.close()
    return scratch


@task(name="whatif-publish")
def publish_scenario(db: str, scratch: str, record_file: str) -> dict:
    """Replace the scenario in the database's what-if tables — one transaction."""
    rec = json.loads(Path(record_file).read_text(encoding="utf-8"))
    name, this_year = rec["scenario"], f"{rec['year']:04d}-%"
    with store.shadow(db) as work:  # the writer's private copy, renamed over db on success (flows/store.py)
        lines, persons = _publish(str(work), scratch, rec, name, this_year)
    return {**rec, "lines": lines, "persons": persons}


def _publish(db: str, scratch: str, rec: dict, name: str, this_year: str) -> tuple[int, int]:
    con = store.connect(db)
    try:
        _attach(con, scratch, "sc", read_only=True)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                _delete_scenario(con, name)
                for t in SCENARIO_TABLES:
                    con.execute(f"INSERT INTO whatif_{t} BY NAME SELECT ? AS scenario, * EXCLUDE (run_id) "
                                f"FROM sc.{t} WHERE month LIKE ?", [name, this_year])
                lines, persons = con.execute("SELECT count(*), count(DISTINCT psn_no) FROM whatif_adjudicated "
                                             "WHERE scenario = ?", [name]).fetchone()
                con.execute(
                    "INSERT INTO whatif_scenarios (scenario, year, overrides, months, missing_months, baseline_runs, "
                    "registers, lines, persons, policy_version, scenario_policy_version, assumptions, code_version, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
                    [name, rec["year"], json.dumps(rec["overrides"], ensure_ascii=False), ",".join(rec["months"]),
                     ",".join(rec["missing_months"]), json.dumps(rec["baseline_runs"]), json.dumps(rec["registers"]),
                     lines, persons, rec["policy_version"], rec["scenario_policy_version"],
                     json.dumps(rec["assumptions"]), rec["code_version"]])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.execute("DETACH sc")
    finally:
        con.close()
    return lines, persons


def _delete_scenario(con, name: str) -> int:
    n = con.execute("SELECT count(*) FROM whatif_scenarios WHERE scenario = ?", [name]).fetchone()[0]
    for t in ("whatif_scenarios", *(f"whatif_{t}" for t in SCENARIO_TABLES)):
        con.execute(f"DELETE FROM {t} WHERE scenario = ?", [name])
    return n


# ---------------------------------------------------------------- the flow

def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@flow(name="yibao-whatif", log_prints=False)
def whatif_flow(name: str, year: int, overrides: list[dict], db: str, input_dir: str | None = None) -> dict:
    """Re-adjudicate the loaded months of `year` under the overrides and store the scenario as `name`."""
    check_name(name)
    if not Path(db).exists():
        raise WhatIfError(f"database not found: {db} (run `yibao run` or `yibao demo` first)")
    base_policies = load_policies()
    scenario_pol = apply_overrides(base_policies, overrides, year, note=f"what-if {name}")  # checks them again
    with writer_lock(db):
        con = store.connect(db, read_only=True)
        try:
            baseline = baseline_of(con, year)
        finally:
            con.close()
        if baseline.missing:
            from flows.whatif_report import months_text
            _progress(f"what-if {name}: {year} is missing {months_text(baseline.missing)} (not loaded); "
                      f"the scenario covers {months_text(baseline.months)} only")
        folders, reg_note = check_registers(baseline, input_dir)
        if reg_note["changed"]:
            _progress(f"what-if {name}: registers {registers_text(reg_note)}")
        root = Path(db).resolve().parent / ".yibao_runs" / f"whatif-{name}-{dt.datetime.now():%Y%m%dT%H%M%S}"
        root.mkdir(parents=True, exist_ok=True)
        overrides_file = root / "overrides.json"
        overrides_file.write_text(json.dumps({"scenario": name, "year": year, "overrides": [
            o.as_dict() if isinstance(o, Override) else o for o in overrides]}, ensure_ascii=False))
        scratch = str(root / "scenario.duckdb")
        seed_state(db, scratch, year)
        reg_dirs = {d: stage_registers(d, str(root / f"registers-{i}")) for i, d in enumerate(sorted(set(folders.values())))}
        assumptions: set[str] = set()
        for m in baseline.months:
            stage = stage_baseline_month(db, m, folders[m], reg_dirs[folders[m]], str(root / m))
            adjudicate_month(stage, scratch, m, str(overrides_file))
            persist(stage, scratch, m, f"whatif-{name}-{m}")
            adj = json.loads((Path(stage) / "adjudicate.json").read_text())
            assumptions.update(adj["assumptions"])
            _progress(f"what-if {name}: {m} re-adjudicated ({adj['lines']:,} lines)")
        record = {
            "scenario": name, "year": year, "overrides": json.loads(overrides_file.read_text())["overrides"],
            "months": baseline.months, "missing_months": baseline.missing,
            "baseline_runs": {m: baseline.runs[m]["run_id"] for m in baseline.months}, "registers": reg_note,
            "policy_version": base_policies.digest, "scenario_policy_version": scenario_pol.digest,
            "assumptions": sorted(assumptions, key=lambda a: int(a.split("-")[1])), "code_version": code_version(),
        }
        (root / "record.json").write_text(json.dumps(record, ensure_ascii=False))
        result = publish_scenario(db, scratch, str(root / "record.json"))
    shutil.rmtree(root, ignore_errors=True)
    return result


# ---------------------------------------------------------------- list, drop

def list_scenarios(con) -> pl.DataFrame:
    """One row per scenario: name, year, months covered and missing, overrides (path: before → after)."""
    from flows.whatif_report import months_text
    if not _has_tables(con):
        return pl.DataFrame()
    rows = con.execute("SELECT scenario, year, months, missing_months, overrides, lines, persons, created_at "
                       "FROM whatif_scenarios ORDER BY created_at, scenario").fetchall()
    return pl.DataFrame([{
        "scenario": name, "year": str(year), "months": months_text(months.split(",")),
        "missing_months": months_text(missing.split(",")) if missing else "",
        "overrides": "; ".join(describe(o) for o in json.loads(ov)),
        "lines": lines, "persons": persons, "created_at": created,
    } for name, year, months, missing, ov, lines, persons, created in rows])


def drop_scenario(db: str, name: str) -> None:
    with writer_lock(db), store.shadow(db) as work:
        con = store.connect(work)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                n = _delete_scenario(con, name)
                if n == 0:
                    raise WhatIfError(f"no scenario named {name!r} (see `yibao whatif list`)")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()


def _has_tables(con) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'whatif_scenarios'"
                            ).fetchall()[0][0])
