"""One table for every benchmark: metric, value, baseline, ratio, target.

Each benchmark module's ``measure()`` returns ``Row``s; ``python -m bench`` prints them all
in one table, a module's own ``main()`` only its rows. A baseline is measured in the same run
(a bare PTY, direct TLS, plain mitmdump, …); the ratio is value / baseline.
``LAP_BENCH_QUICK=1`` runs every benchmark with far fewer iterations (a smoke run: the
numbers are noisy, the code paths are the same).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

QUICK = os.environ.get("LAP_BENCH_QUICK") == "1"


def scaled(full: int, quick: int) -> int:
    """``quick`` under ``LAP_BENCH_QUICK=1``, else ``full``."""
    return quick if QUICK else full


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Row:
    metric: str
    value: float
    unit: str  # "ms", "s", "MB/s", "req/s", "MiB", …
    baseline: float | None = None
    baseline_label: str = ""  # what the baseline is, e.g. "bare PTY"
    target: str = ""  # e.g. "≤ 0.5 ms"

    @property
    def ratio(self) -> float | None:
        """value / baseline; none for a baseline at or below zero (an added latency that
        noise made negative has no meaningful ratio)."""
        return self.value / self.baseline if self.baseline and self.baseline > 0 else None


def latency_rows(
    name: str,
    samples: Sequence[float],
    baseline: Sequence[float] | None = None,
    baseline_label: str = "",
    targets: dict[str, str] | None = None,
) -> list[Row]:
    """p50 and p99 rows in ms of ``samples`` (seconds), against ``baseline``'s if given;
    ``targets`` by "p50"/"p99"."""
    rows = []
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        base = percentile(baseline, q) * 1e3 if baseline else None
        target = (targets or {}).get(label, "")
        rows.append(
            Row(f"{name} {label}", percentile(samples, q) * 1e3, "ms", base, baseline_label, target)
        )
    return rows


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {unit}".strip()


def table(rows: Iterable[Row]) -> str:
    lines = [("metric", "value", "baseline", "ratio", "target")]
    for row in rows:
        base = _number(row.baseline, row.unit)
        if row.baseline is not None and row.baseline_label:
            base = f"{base} ({row.baseline_label})"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append((row.metric, _number(row.value, row.unit), base, ratio, row.target or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = []
    for index, line in enumerate(lines):
        cells = [
            line[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)),
        ]
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> str:
    """The machine and its load, for the report's heading."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mode = "quick (LAP_BENCH_QUICK=1)" if QUICK else "full"
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average {load}; {mode} run"
    )


def print_rows(title: str, rows: Iterable[Row]) -> None:
    print(f"\n{title}\n{machine()}\n")
    print(table(rows))
