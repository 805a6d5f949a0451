"""Where the engine spends its time on one month: seconds per engine step and per policy stage.

Uses the bureau `make bench` cached (benchmarks/run.py: $BENCH_DATA or $TMPDIR/yibao-bench-data), reads and
validates one month, then adjudicates it once with every step timed. Asserts nothing.

    .venv/bin/python benchmarks/profile_engine.py                      # 1M-line year, January
    .venv/bin/python benchmarks/profile_engine.py --size 5M --month 2025-06
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402

from benchmarks.run import SIZES, ensure_data, persons_for  # noqa: E402
from flows.ingest import load_registers, month_files, read_table  # noqa: E402
from flows.policies import load_policies  # noqa: E402
from transforms import engine  # noqa: E402
from transforms.employee import stages as employee_stages  # noqa: E402
from transforms.resident import stages as resident_stages  # noqa: E402
from transforms.validate import validate_settlements  # noqa: E402

STEPS = ["enrich", "_join_carried", "_join_originals", "_suizhou_resident", "_xiangyang_employee", "_zero_missing",
         "_apply_reversals", "_totals", "apply_accounts", "_explain", "append_account_note", "_accumulators_after",
         "check_invariants", "family_groups", "combine_adjudications", "_without"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1M", choices=list(SIZES))
    ap.add_argument("--month", default="2025-01")
    args = ap.parse_args()
    root, _ = ensure_data(persons_for(SIZES[args.size]))
    regs = load_registers(root)
    raw = pl.concat([read_table(p, root) for p in month_files(root, args.month)["settlements"]], how="diagonal_relaxed")
    lines, _ = validate_settlements(raw, args.month, regs, None)
    spent: collections.Counter = collections.Counter()

    def timed(fn, label):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t
        return run

    for name in STEPS:
        setattr(engine, name, timed(getattr(engine, name), name))
    for stage in [*resident_stages.BASIC, *resident_stages.LATER, *employee_stages.BASIC, employee_stages.CAP,
                  *employee_stages.LATER]:
        object.__setattr__(stage, "run", timed(stage.run, f"  stage: {stage.name}"))
    t = time.perf_counter()
    engine.adjudicate(lines, regs, load_policies())
    total = time.perf_counter() - t
    print(f"{lines.height:,} lines of {args.month} ({args.size} bureau) in {total:.2f} s "
          f"({lines.height / total:,.0f} lines/s)")
    for label, s in spent.most_common():
        print(f"{s:8.2f} s  {label}")


if __name__ == "__main__":
    main()
