"""Child process groups a worker owns (a cron command, a Chromium): made to die with the worker, and swept
after a crash.

A child runs as its own session with PR_SET_PDEATHSIG=SIGKILL, so it dies with the worker; what its group
left behind is found again at the next start (pgid and leader start time, recorded by the owner) and killed,
provided the pgid still names the group that run started.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from openclaw_sup.workers.forkserver import set_parent_death_signal

KEEP_BYTES = 32 * 1024
_PROC_STAT = Path("/proc/stat")


class Tail:
    """The last `limit` bytes of a stream, and how many bytes it had in all."""

    def __init__(self, limit: int = KEEP_BYTES) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buf += chunk
        if len(self.buf) > self.limit:
            del self.buf[: len(self.buf) - self.limit]

    def text(self) -> str:
        return self.buf.decode("utf-8", "replace")

    @property
    def truncated(self) -> int:
        return self.total - len(self.buf)


def die_with_parent() -> None:
    set_parent_death_signal(signal.SIGKILL)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def process_started(pid: int) -> float | None:
    """psutil's `create_time()` of `pid` (seconds since the epoch), None when it is gone. Read from /proc where there
    is one: psutil's import (~10 ms) would sit between spawning a run and recording its group, a window in which a
    crash would leave the group unswept; the fork server preloads this module for every worker."""
    if not _PROC_STAT.exists():
        import psutil

        with contextlib.suppress(psutil.Error):
            return psutil.Process(pid).create_time()
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK") + _boot_time()
    except (OSError, ValueError, IndexError):
        return None


def _boot_time() -> float:
    for line in _PROC_STAT.read_bytes().splitlines():
        if line.startswith(b"btime"):
            return float(line.split()[1])
    raise OSError(f"no btime line in {_PROC_STAT}")


def sweep_group(pgid: int, leader_started: float | None) -> int:
    """SIGKILL what is left of a crashed run's process group; returns how many processes were signalled.

    The leader normally died with the scheduler (PDEATHSIG) while its children live on under the fork server.
    A live process whose pid is the pgid but that started at another time means the id was reused: left alone.
    """
    import psutil  # here: only a restart that finds an interrupted run's group pays for it

    with contextlib.suppress(psutil.NoSuchProcess):
        leader = psutil.Process(pgid)
        if leader_started is not None and abs(leader.create_time() - leader_started) > 0.01:
            return 0
    members = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    if members:
        kill_group(pgid)
    return len(members)
