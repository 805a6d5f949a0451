"""`make bench`: a city-sized year through the real pipeline, timed stage by stage.

Generates a synthetic bureau (default 200,000 persons × 12 months, Parquet, in chunks), runs the
year month by month through the same functions the Prefect tasks call (ingest+validate,
adjudicate, persist), and writes the timings to benchmarks/results/<timestamp>.json.
Sizes: BENCH_PERSONS, BENCH_MONTHS environment variables.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from flows import monthly, store
    from flows.sample import write_sample

    persons = int(os.environ.get("BENCH_PERSONS", "200000"))
    months = int(os.environ.get("BENCH_MONTHS", "12"))
    work = Path(tempfile.mkdtemp(prefix="yibao-bench-"))
    results: dict = {"persons": persons, "months": months, "machine": platform.platform(),
                     "cpus": os.cpu_count(), "started": dt.datetime.now().isoformat(timespec="seconds"), "months_detail": []}
    try:
        t = time.perf_counter()
        summary = write_sample(work / "in", persons=persons, year=2025, months=months, seed=1, fmt="parquet")
        results["generate_s"] = round(time.perf_counter() - t, 2)
        results["lines"] = summary.get("settlement_rows")
        db = work / "bench.duckdb"
        total = {"ingest_validate_s": 0.0, "adjudicate_s": 0.0, "persist_s": 0.0}
        for m in range(1, months + 1):
            month = f"2025-{m:02d}"
            stage = work / "stage" / month
            stage.mkdir(parents=True)
            run_id = f"bench-{month}"
            con = store.connect(db)
            store.begin_run(con, {"run_id": run_id, "month": month, "input_dir": str(work / "in"),
                                  "code_version": "bench", "policy_version": "bench"})
            con.close()
            row = {"month": month}
            for key, fn, args in (
                ("ingest_validate_s", monthly.ingest_and_validate.fn, (str(work / "in"), month, str(db), str(stage))),
                ("adjudicate_s", monthly.adjudicate_month.fn, (str(stage), str(db), month)),
                ("persist_s", monthly.persist.fn, (str(stage), str(db), month, run_id)),
            ):
                t = time.perf_counter()
                fn(*args)
                row[key] = round(time.perf_counter() - t, 2)
                total[key] += row[key]
            row["lines"] = json.loads((stage / "adjudicate.json").read_text())["lines"]
            results["months_detail"].append(row)
            print(row, flush=True)
        results.update({k: round(v, 2) for k, v in total.items()})
        results["pipeline_s"] = round(sum(total.values()), 2)
        results["lines_per_s"] = round(sum(r["lines"] for r in results["months_detail"]) / results["pipeline_s"])
        results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        results["db_mb"] = round(db.stat().st_size / 2**20, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / f"pipeline-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "months_detail"}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
