"""`make bench`: every benchmark in one process run, one summary table.

Each bench module exposes ``main(quick: bool)`` returning a row or a list of rows
(``bench._common.Row`` or a dict with workload, plain_s, latentscape_s, ratio,
quality_held). ``--quick`` uses the smaller sizes each benchmark defines.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import Row, print_rows  # noqa: E402

BENCHMARKS = ["extract", "extract_scale", "map", "sweep", "layers", "layers_scale", "verdict", "catalog", "bigmap", "cold_start", "answers",
              "app_open", "sae", "finetune", "auth_overhead", "team_load"]


def _rows(result) -> list[Row]:
    items = result if isinstance(result, list) else [result]
    rows = []
    for item in items:
        if isinstance(item, Row):
            rows.append(item)
        else:
            rows.append(Row(workload=item["workload"], plain_s=float(item["plain_s"]),
                            latentscape_s=float(item["latentscape_s"]),
                            quality=str(item.get("quality", "")), quality_held=bool(item.get("quality_held", True))))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("names", nargs="*", default=BENCHMARKS)
    args = parser.parse_args()
    rows: list[Row] = []
    failed = []
    began = time.perf_counter()
    for name in args.names:
        if not (HERE / f"{name}.py").exists():
            continue
        started = time.perf_counter()
        print(f"== bench/{name}.py", file=sys.stderr, flush=True)
        try:
            rows += _rows(importlib.import_module(name).main(args.quick))
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"   {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print()
    print_rows(rows)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n{time.perf_counter() - began:.0f} s in all ({'quick' if args.quick else 'full'} sizes); "
          f"load average {load} on {os.cpu_count()} cores")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
