"""The supervisor's event-loop health and memory, in upstream's shapes (`eventLoop`, `processMemory`).

A timer fires every RESOLUTION_S; how late it fires is the loop's delay. Each window of at least WINDOW_S
gives the delay p99 and max, the loop thread's CPU share (`utilization`: the loop thread does nothing but run
the loop, so its CPU time is its busy time), the process's CPU share (`cpuCoreRatio`) and the host's. The
thresholds that make it `degraded` are upstream's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import resource
import time
from typing import Any

RESOLUTION_S = 0.05
WINDOW_S = 1.0
DELAY_WARN_MS = 1000.0
UTILIZATION_WARN = 0.95
CPU_WARN = 0.9
LOAD_COEVIDENCE_MS = 25.0


def _host_cpu() -> tuple[int, int] | None:
    """(busy, total) jiffies of the host from /proc/stat."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat", "rb") as f:
            fields = [int(x) for x in f.readline().split()[1:8]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)
    return None


def _reasons(delay_p99: float, delay_max: float, interval_ms: float, utilization: float, cpu: float) -> list[str]:
    reasons = []
    if delay_p99 >= DELAY_WARN_MS or delay_max >= DELAY_WARN_MS:
        reasons.append("event_loop_delay")
    if interval_ms >= WINDOW_S * 1000 and max(delay_p99, delay_max) >= LOAD_COEVIDENCE_MS:
        if utilization >= UTILIZATION_WARN:
            reasons.append("event_loop_utilization")
        if cpu >= CPU_WARN:
            reasons.append("cpu")
    return reasons


class LoopHealth:
    def __init__(self) -> None:
        self._delays: list[float] = []
        self._snapshot: dict[str, Any] | None = None
        self._degraded_since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self._mark()

    def _mark(self) -> None:
        self._window_start = time.monotonic()
        self._thread_cpu = time.thread_time()
        t = os.times()
        self._proc_cpu = t.user + t.system
        self._host = _host_cpu()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._expected = loop.time() + RESOLUTION_S
        self._handle = loop.call_at(self._expected, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._delays.append(max(0.0, (now - self._expected) * 1000))
        if time.monotonic() - self._window_start >= WINDOW_S:
            self._close_window()
        self._expected = now + RESOLUTION_S
        self._handle = loop.call_at(self._expected, self._tick)

    def _close_window(self) -> None:
        now = time.monotonic()
        interval_ms = (now - self._window_start) * 1000
        delays = sorted(self._delays)
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else 0.0
        dmax = delays[-1] if delays else 0.0
        seconds = interval_ms / 1000
        utilization = (time.thread_time() - self._thread_cpu) / seconds
        t = os.times()
        cpu = (t.user + t.system - self._proc_cpu) / seconds
        breakdown: dict[str, Any] = {"mainThreadCoreRatio": round(utilization, 3),
                                     "otherThreadsCoreRatio": round(max(0.0, cpu - utilization), 3)}
        host = _host_cpu()
        if host is not None and self._host is not None and host[1] > self._host[1]:
            breakdown["hostUtilization"] = round((host[0] - self._host[0]) / (host[1] - self._host[1]), 3)
        breakdown["hostCpuCount"] = os.cpu_count() or 1
        reasons = _reasons(p99, dmax, interval_ms, utilization, cpu)
        if reasons and self._degraded_since is None:
            self._degraded_since = now
        elif not reasons:
            self._degraded_since = None
        self._snapshot = {
            "degraded": bool(reasons),
            "degradedSinceMs": None if self._degraded_since is None else round((now - self._degraded_since) * 1000),
            "reasons": reasons, "intervalMs": round(interval_ms, 3), "delayP99Ms": round(p99, 1),
            "delayMaxMs": round(dmax, 1), "utilization": round(min(1.0, utilization), 3), "cpuCoreRatio": round(cpu, 3),
            "cpuBreakdown": breakdown,
        }
        self._delays = []
        self._mark()

    def snapshot(self) -> dict[str, Any] | None:
        """The last complete window, or None during the first second."""
        return self._snapshot


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _mallinfo2() -> Any:
    """glibc's mallinfo2 from the process's own symbols (no library search: that would run ldconfig)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        fn = ctypes.CDLL(None).mallinfo2
        fn.restype = _MallInfo2
        return fn
    return None


def process_memory() -> dict[str, int]:
    """RSS, and the C heap in use and reserved (glibc mallinfo2; Python's objects live there)."""
    rss = 0
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm", "rb") as f:
        rss = int(f.read().split()[1]) * resource.getpagesize()
    used = total = 0
    mallinfo = _mallinfo2()
    if mallinfo is not None:
        info = mallinfo()
        used, total = info.uordblks + info.hblkhd, info.arena + info.hblkhd
    return {"rssBytes": rss, "heapUsedBytes": int(used), "heapTotalBytes": int(total)}
