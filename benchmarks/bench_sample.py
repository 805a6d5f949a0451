"""Benchmark of the synthetic bureau generator (`yibao sample`).

Generates N persons x M months in chunks into a temporary folder (deleted afterwards unless --keep)
and prints settlement lines per second and the peak resident memory of this process.

    .venv/bin/python benchmarks/bench_sample.py                      # 1,000,000 persons x 12 months
    .venv/bin/python benchmarks/bench_sample.py --persons 100000 --fmt mixed
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.sample import FORMATS, write_sample  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--year", type=int, default=2025)
    ap.add_argument("--seed", type=int, default=20250101)
    ap.add_argument("--chunk-persons", type=int, default=200_000)
    ap.add_argument("--fmt", choices=FORMATS, default="parquet")
    ap.add_argument("--invalid-rate", type=float, default=0.001)
    ap.add_argument("--keep", type=Path, help="write here and keep the files (default: a temporary folder)")
    args = ap.parse_args(argv)

    tmp = None if args.keep else tempfile.mkdtemp(prefix="yibao-bench-sample-")
    out = args.keep or Path(tmp)
    try:
        t0 = time.perf_counter()
        s = write_sample(out, persons=args.persons, year=args.year, months=args.months, seed=args.seed,
                         fmt=args.fmt, invalid_rate=args.invalid_rate, chunk_persons=args.chunk_persons)
        seconds = time.perf_counter() - t0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    result = {
        "persons": args.persons,
        "months": args.months,
        "chunk_persons": args.chunk_persons,
        "chunks": s["chunks"],
        "fmt": args.fmt,
        "settlement_rows": s["settlement_rows"],
        "files": len(s["files"]),
        "bytes": s["bytes"],
        "seconds": round(seconds, 2),
        "lines_per_second": round(s["settlement_rows"] / seconds),
        "persons_per_second": round(args.persons / seconds),
        "peak_rss_mib": round(peak_mib),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
