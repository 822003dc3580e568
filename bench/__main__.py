"""Run every benchmark module in this package and print one table of all their rows.

Each module defines ``measure()`` (returning ``bench.report.Row``s) and ``main()`` (its own
rows only); ``LAP_BENCH_QUICK=1`` makes every one a short smoke run.
"""

from __future__ import annotations

import importlib
import time

from bench.report import machine, table

# In the order of the report: terminal, session start, vault, API, footprint.
MODULES = ("terminal_runner", "terminal_chain", "warm_pool", "vault_sidecar", "api", "footprint")


def main() -> None:
    rows = []
    started = time.monotonic()
    heading = machine()
    for name in MODULES:
        print(f"running bench.{name} …", flush=True)
        rows += importlib.import_module(f"bench.{name}").measure()
    minutes = (time.monotonic() - started) / 60
    print(f"\nLAP benchmarks ({minutes:.1f} min)\nat start: {heading}\nat end:   {machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
