"""Shared by the gateway and reload benches: spread rows, plain-text tables, and waiting for a quiet machine."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import psutil
from bench_common import summarize

STATS = ("p50", "p90", "p99", "min", "max")


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 10_000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def spread(values: Sequence[float], digits: int = 1) -> list[str]:
    """p50 p90 p99 min max n: the spread matters as much as the median."""
    s = summarize(values)
    return [*(fmt(s[c], digits) for c in STATS), str(s["n"])]


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Columns aligned on the full rows; a short row (a skipped gateway) is printed as it is."""
    full = [r for r in [header, *rows] if len(r) == len(header)]
    widths = [max(len(str(r[i])) for r in full) for i in range(len(header))]
    print(f"\n== {title}")
    for j, r in enumerate([header, *rows]):
        if len(r) != len(header):
            print(str(r[0]).ljust(widths[0]) + "  " + "  ".join(str(c) for c in r[1:]))
            continue
        cells = [str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        print("  ".join(cells).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def skipped_row(title: str, reason: str) -> list[str]:
    """A row whose gateway could not be measured: printed whole, outside the columns."""
    return [title, f"skipped ({reason[:200]})"]


def wait_quiet(max_s: float = 60.0, busy_pct: float = 25.0) -> float:
    """Wait (up to max_s) until the machine's CPU is below busy_pct over a second: no gateway starts loaded."""
    deadline = time.monotonic() + max_s
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < busy_pct or time.monotonic() > deadline:
            return busy
