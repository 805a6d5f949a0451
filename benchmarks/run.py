"""`make bench`: a whole year re-adjudicated through the real flow, timed stage by stage (issue 7).

For each size (settlement lines per year: 1M and 5M by default; 25M with --full or BENCH_FULL=1):

1. the synthetic bureau (`yibao sample`, Parquet) is generated once and cached outside the repository
   ($BENCH_DATA, default $TMPDIR/yibao-bench-data/p<persons>-s<seed>);
2. a child process (so peak RSS is the size's own) starts Prefect (its temporary server: timed on its own,
   kept out of the ratios), runs the whole year as ONE flow run (`year_flow`, as `yibao run --year`), with
   each task writing its stage times (ingest, validation, adjudication, write) through $YIBAO_STAGE_TIMES;
3. then re-runs December on top of the carried-in accumulators (`month_flow`, as `yibao run --month`);
4. measures the I/O floor of both: the same input files read with the same reader (flows/ingest.py), and the
   rows the flow wrote (every table) inserted into a fresh DuckDB file, one transaction per month, nothing else;
5. times the plain-Python reference adjudicator and the engine on the same ~100k-line slice (whole persons).

Writes benchmarks/results/year-<size>.json and the table in benchmarks/README.md.

    .venv/bin/python benchmarks/run.py                 # 1M and 5M
    .venv/bin/python benchmarks/run.py --sizes 1M      # one size
    .venv/bin/python benchmarks/run.py --full          # 1M, 5M and 25M (about 45 min on 2 cores)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

YEAR = 2025
SEED = 1
LINES_PER_PERSON = 5.13  # measured on the generator: 195,000 persons → 996,076 lines a year
SIZES = {"1M": 1_000_000, "5M": 5_000_000, "25M": 25_000_000}
# Shards by family group (`yibao run --shards N`) per size: a 2-million-line month in four pieces keeps the
# engine's working set near a 5M-size month's (issue 7: under 8 GiB); override with --shards / BENCH_SHARDS.
SHARDS = {"1M": 1, "5M": 1, "25M": 4}
REFERENCE_SLICE = 100_000
STAGES = ("ingest", "validation", "adjudication", "write")


def persons_for(lines: int) -> int:
    return int(round(lines / LINES_PER_PERSON, -3))


def generator_digest() -> str:
    """The generator's code: a cached bureau made by another version of it is not reused (it may hold lines the
    engine now refuses, e.g. Xiangyang resident stays whose parameters are missing)."""
    import hashlib
    h = hashlib.sha256()
    for f in ("transforms/synthetic.py", "flows/sample.py"):
        h.update((ROOT / f).read_bytes())
    return h.hexdigest()[:10]


def data_dir(persons: int) -> Path:
    base = Path(os.environ.get("BENCH_DATA") or Path(tempfile.gettempdir()) / "yibao-bench-data")
    return base / f"p{persons}-s{SEED}-g{generator_digest()}"


def ensure_data(persons: int) -> tuple[Path, float | None]:
    """The cached bureau for `persons` (generated into a side folder, renamed when complete)."""
    from flows.sample import write_sample
    out = data_dir(persons)
    if (out / "reference").is_dir():
        return out, None
    side = out.with_name(out.name + "-partial")
    shutil.rmtree(side, ignore_errors=True)
    t = time.perf_counter()
    write_sample(side, persons=persons, year=YEAR, months=12, seed=SEED, fmt="parquet")
    side.rename(out)
    return out, time.perf_counter() - t


def machine() -> dict:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cores": os.cpu_count(), "memory_gb": round(mem / 2**30, 1), "platform": platform.platform(),
            "python": platform.python_version(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def cpu_s() -> float:
    """CPU seconds of this process (all threads): much less sensitive than wall time to a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------- the I/O floor


def output_tables(db: Path) -> list[str]:
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_type='BASE TABLE' AND table_name <> 'runs'").fetchall()]
    finally:
        con.close()


def month_outputs(db: Path, tables: list[str], month: str, whole: bool = True) -> dict:
    """The rows the flow wrote for `month`, per table, as Arrow; tables without a month column (the persons
    snapshot, written once per flow run) whole when `whole`."""
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for t in tables:
            cols = {r[0] for r in con.execute(f"DESCRIBE {t}").fetchall()}
            if "month" not in cols and not whole:
                continue
            sql = f"FROM {t} WHERE month = ?" if "month" in cols else f"FROM {t}"
            out[t] = con.sql(sql, params=[month] if "month" in cols else None).to_arrow_table()
        return out
    finally:
        con.close()


def adjudicated_lines(db: Path, month: str | None = None) -> int:
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM adjudicated WHERE month LIKE ?", [month or "%"]).fetchone()[0]
    finally:
        con.close()


def io_floor(input_dir: Path, db: Path, months: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds to read each month's input files (settlements, applications, registers: what a
    month's run reads) with flows/ingest.py and insert the very rows the flow wrote for that month into a fresh
    DuckDB file, one transaction a month. Fetching those rows from the bench database is not timed."""
    import duckdb

    from flows.ingest import load_registers, month_files, read_table
    tables = output_tables(db)
    work = Path(tempfile.mkdtemp(prefix="yibao-floor-"))
    wall = cpu = 0.0
    try:
        con = duckdb.connect(str(work / "floor.duckdb"))
        for month in months:
            rows = month_outputs(db, tables, month, whole=month == months[-1])  # as the flow: persons once
            t, c = time.perf_counter(), cpu_s()
            files = month_files(input_dir, month)
            load_registers(input_dir)
            for p in [*files["settlements"], *files.get("applications", [])]:
                read_table(p, input_dir)
            con.execute("BEGIN TRANSACTION")
            for table, arrow in rows.items():
                con.register("__src", arrow)
                con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS FROM __src LIMIT 0")
                con.execute(f"INSERT INTO {table} FROM __src")
                con.unregister("__src")
            con.execute("COMMIT")
            wall, cpu = wall + time.perf_counter() - t, cpu + cpu_s() - c
            del rows
        t, c = time.perf_counter(), cpu_s()
        con.close()  # the checkpoint belongs to the floor too
        return wall + time.perf_counter() - t, cpu + cpu_s() - c
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- reference vs engine on a slice


def reference_slice(input_dir: Path) -> dict:
    """The reference adjudicator and the engine on the same ~100k lines: whole years of the first persons."""
    import polars as pl

    from flows.ingest import load_registers, month_files, read_table
    from flows.policies import load_policies
    from transforms.engine import adjudicate
    from transforms.reference.adjudicate import adjudicate_reference
    from transforms.validate import validate_settlements
    regs = load_registers(input_dir)
    months = [f"{YEAR}-{m:02d}" for m in range(1, 13)]
    raws = [pl.concat([read_table(p, input_dir) for p in month_files(input_dir, m)["settlements"]],
                      how="diagonal_relaxed") for m in months]
    per_person = pl.concat([r.select("psn_no") for r in raws]).group_by("psn_no").len().sort("psn_no")
    take = per_person.filter(pl.col("len").cum_sum() <= REFERENCE_SLICE)["psn_no"]
    regs = {k: (v.filter(pl.col("psn_no").is_in(take.implode())) if "psn_no" in v.columns else v)
            for k, v in regs.items()}
    known = None
    accepted = []
    for m, raw in zip(months, raws, strict=True):
        acc, _ = validate_settlements(raw.filter(pl.col("psn_no").is_in(take.implode())), m, regs, known)
        accepted.append(acc)
        known = pl.concat([x for x in (known, acc.select("setl_id", "psn_no", "orig_setl_id", "medfee_sumamt",
                                                          "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt",
                                                          "cls_b_amt")) if x is not None])
    lines = pl.concat(accepted, how="diagonal_relaxed")
    policies = load_policies()
    rows, reg_dicts = lines.to_dicts(), {k: v.to_dicts() for k, v in regs.items()}
    t = time.perf_counter()
    adjudicate_reference(rows, reg_dicts, policies)
    ref_s = time.perf_counter() - t
    t = time.perf_counter()
    adjudicate(lines, regs, policies)
    eng_s = time.perf_counter() - t
    return {"slice_lines": lines.height, "slice_persons": take.len(), "reference_s": round(ref_s, 2),
            "engine_slice_s": round(eng_s, 2)}


# ---------------------------------------------------------------- one size, in its own process


def read_stage_times(path: Path) -> dict[str, float]:
    got = {s: 0.0 for s in STAGES}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            got[rec["stage"]] = got.get(rec["stage"], 0.0) + rec["s"]
    return {k: round(v, 2) for k, v in got.items()}


def measure(size: str, shards: int | None = None) -> dict:
    from flows.settings import prefect_offline_defaults
    prefect_offline_defaults()  # before Prefect is imported: its settings are read at import
    from prefect import flow

    from flows.monthly import month_flow, year_flow

    persons = persons_for(SIZES[size])
    shards = shards or int(os.environ.get("BENCH_SHARDS") or SHARDS[size])
    input_dir, generate_s = ensure_data(persons)
    work = Path(tempfile.mkdtemp(prefix=f"yibao-bench-{size}-"))
    db = work / "bench.duckdb"
    res: dict = {"name": f"year-{size}", "size": size, "persons": persons, "machine": machine(),
                 "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "input": str(input_dir),
                 "generate_s": None if generate_s is None else round(generate_s, 1), "shards": shards}
    try:
        @flow(name="bench-startup")
        def startup() -> None:
            return None

        t = time.perf_counter()
        startup()
        res["prefect_startup_s"] = round(time.perf_counter() - t, 2)

        os.environ["YIBAO_STAGE_TIMES"] = str(work / "year.jsonl")
        print(f"[{size}] year {YEAR}: {persons:,} persons, one flow run …", flush=True)
        t, c = time.perf_counter(), cpu_s()
        year_flow(YEAR, str(input_dir), str(db), shards=shards)
        res["wall_s"] = round(time.perf_counter() - t, 2)
        res["cpu_s"] = round(cpu_s() - c, 2)
        res["peak_rss_mb"] = rss_mb()
        res["stage_s"] = read_stage_times(work / "year.jsonl")
        res["stage_s"]["other"] = round(res["wall_s"] - sum(res["stage_s"].values()), 2)
        months = sorted(p.name for p in input_dir.glob(f"{YEAR}-[01][0-9]"))
        res["lines"] = adjudicated_lines(db)
        res["db_mb"] = round(db.stat().st_size / 2**20, 1)
        print(f"[{size}] year: {res['lines']:,} lines in {res['wall_s']} s {res['stage_s']}", flush=True)

        last = months[-1]
        # December again on its carried-in state (forced: an identical rerun is only recorded unchanged), through
        # the private copy of the database (the default) and --in-place (no copy of the whole file)
        for key, in_place in (("month", False), ("month_in_place", True)):
            os.environ["YIBAO_STAGE_TIMES"] = str(work / f"{key}.jsonl")
            t, c = time.perf_counter(), cpu_s()
            month_flow(last, str(input_dir), str(db), force=True, shards=shards, in_place=in_place)
            res[key] = {"month": last, "lines": adjudicated_lines(db, last), "wall_s": round(time.perf_counter() - t, 2),
                        "cpu_s": round(cpu_s() - c, 2), "stage_s": read_stage_times(work / f"{key}.jsonl"),
                        "in_place": in_place}
            print(f"[{size}] rerun of {last}{' in place' if in_place else ''}: {res[key]['wall_s']} s", flush=True)

        print(f"[{size}] I/O floor …", flush=True)
        for rec, which in ((res, months), (res["month"], [last])):
            wall, cpu = io_floor(input_dir, db, which)
            rec["io_floor_s"], rec["io_floor_cpu_s"] = round(wall, 2), round(cpu, 2)
            rec["ratio_to_io_floor"] = round(rec["wall_s"] / wall, 2)
            rec["cpu_ratio_to_io_floor"] = round(rec["cpu_s"] / cpu, 2)
        m, mi = res["month"], res["month_in_place"]
        mi["io_floor_s"], mi["io_floor_cpu_s"] = m["io_floor_s"], m["io_floor_cpu_s"]
        mi["ratio_to_io_floor"] = round(mi["wall_s"] / m["io_floor_s"], 2)
        mi["cpu_ratio_to_io_floor"] = round(mi["cpu_s"] / m["io_floor_cpu_s"], 2)

        print(f"[{size}] reference adjudicator on a {REFERENCE_SLICE:,}-line slice …", flush=True)
        sl = reference_slice(input_dir)
        res["reference"] = sl
        res["engine_lines_per_s"] = round(res["lines"] / res["stage_s"]["adjudication"])
        res["reference_lines_per_s"] = round(sl["slice_lines"] / sl["reference_s"])
        res["engine_slice_lines_per_s"] = round(sl["slice_lines"] / sl["engine_slice_s"])
        res["engine_vs_reference"] = round(res["engine_lines_per_s"] / res["reference_lines_per_s"], 1)
        res["peak_rss_mb_incl_bench"] = rss_mb()
        res["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


# ---------------------------------------------------------------- the table


def write_readme() -> None:
    rows = []
    for p in sorted(RESULTS.glob("year-*.json"), key=lambda p: json.loads(p.read_text()).get("lines", 0)):
        r = json.loads(p.read_text())
        s = r["stage_s"]
        rows.append(
            f"| {r['lines']:,} | {r['persons']:,} | {r.get('shards', 1)} | {r['wall_s']} | {s['ingest']} / {s['validation']} / "
            f"{s['adjudication']} / {s['write']} / {s['other']} | {r['peak_rss_mb']:,.0f} | {r['io_floor_s']} | "
            f"**{r['ratio_to_io_floor']}** (CPU {r.get('cpu_ratio_to_io_floor', '–')}) | {r['month']['lines']:,} in "
            f"{r['month']['wall_s']} s, **{r['month']['ratio_to_io_floor']}×** (CPU {r['month'].get('cpu_ratio_to_io_floor', '–')})"
            + (f"; in place {r['month_in_place']['wall_s']} s, **{r['month_in_place']['ratio_to_io_floor']}×**"
               if "month_in_place" in r else "") + f" | {r['engine_lines_per_s']:,} | {r['reference_lines_per_s']:,} | "
            f"**{r['engine_vs_reference']}×** ({r['engine_slice_lines_per_s']:,} on the slice) | {r['db_mb']:,.0f} | "
            f"{r['prefect_startup_s']} | {r['started'][:10]}, load "
            f"{r['machine']['load_avg_at_start'][0]}–{r.get('load_avg_at_end', ['?'])[0]} |")
    by = {json.loads(p.read_text())["size"]: json.loads(p.read_text()) for p in RESULTS.glob("year-*.json")}
    growth = ""
    if "5M" in by and "25M" in by:
        growth = (f"\n5M → 25M lines: {by['25M']['wall_s'] / by['5M']['wall_s']:.2f}× the wall time "
                  f"({by['25M']['cpu_s'] / by['5M']['cpu_s']:.2f}× CPU) for "
                  f"{by['25M']['lines'] / by['5M']['lines']:.2f}× the lines (target ≤ 5.5×).\n")
    elif "1M" in by and "5M" in by:
        growth = (f"\n1M → 5M lines: {by['5M']['wall_s'] / by['1M']['wall_s']:.2f}× the wall time and "
                  f"{by['5M']['cpu_s'] / by['1M']['cpu_s']:.2f}× the CPU time for "
                  f"{by['5M']['lines'] / by['1M']['lines']:.2f}× the lines (25M not measured in this table).\n")
    m = next(iter(by.values()))["machine"] if by else machine()
    text = f"""# Benchmarks

`make bench` (never part of `make test`) runs `benchmarks/run.py`: a synthetic year through the real flow
(`year_flow`, one flow run), then December again on top of the carried-in accumulators — through the private copy
of the database (the default) and `--in-place` —, the I/O floor of both, and the reference adjudicator on a
{REFERENCE_SLICE:,}-line slice. 25M runs with `--full` (or `BENCH_FULL=1`), in 4 shards. Details per size in
`results/year-<size>.json`; sizing for a province in `docs/scale.md`; where each target stands in `NOTES.md`.

Latest figures ({m['cores']} cores, {m['memory_gb']} GiB; seconds; Prefect's start-up is on its own column and
outside every ratio; stages = ingest / validation / adjudication / write / other (run records, artifacts)):

| lines | persons | shards | year s | stages s | peak RSS MB | I/O floor s | × floor (wall, CPU) | one month (December), × its floor | engine lines/s | reference lines/s | engine ÷ reference | DuckDB MB | Prefect start s | date, load average |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{growth}
Engine lines/s = the year's lines over its adjudication stage (database reads of carried state, output models
and staging included); on the slice = the engine alone on the reference's 100k lines.

Where each target stands, the profile and what was tried: `NOTES.md`. Targets (issue 7): year ≤ 3× the I/O floor and < 8 GiB; a month ≤ 3× its floor; engine ≥ 200× the reference;
5M → 25M ≤ 5.5× the time. The I/O floor reads the same files with the same reader and inserts the very rows the flow
wrote (every output table, the persons snapshot included) into a fresh DuckDB file, one transaction per month. The machine is
shared: the load average at the start and end of each run is shown; with a load above the core count,
wall times stretch and the CPU-time ratio (process CPU seconds, all threads) is the steadier figure.
"""
    (ROOT / "benchmarks" / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1M,5M", help="comma-separated of 1M, 5M, 25M")
    ap.add_argument("--full", action="store_true", help="add 25M (also BENCH_FULL=1)")
    ap.add_argument("--shards", type=int, help="shards by family group (default per size: " +
                    ", ".join(f"{k} {v}" for k, v in SHARDS.items()) + ")")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one size in this process
    args = ap.parse_args(argv)
    if args.measure:
        res = measure(args.measure, args.shards)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{res['name']}.json").write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k not in ("machine", "reference")}, ensure_ascii=False))
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if (args.full or os.environ.get("BENCH_FULL") == "1") and "25M" not in sizes:
        sizes.append("25M")
    for s in sizes:
        if s not in SIZES:
            raise SystemExit(f"unknown size {s!r}: one of {', '.join(SIZES)}")
        subprocess.run([sys.executable, __file__, "--measure", s,
                        *(["--shards", str(args.shards)] if args.shards else [])], check=True)
    write_readme()
    print(f"written {RESULTS} and benchmarks/README.md")


if __name__ == "__main__":
    main()
