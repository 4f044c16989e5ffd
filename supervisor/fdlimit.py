"""The supervisor's file descriptors: the limit raised at start, spares kept back, the port's share.

Client sockets must never take the descriptors the supervisor needs for its own work (the bus, the control
socket, the log, worker pipes at each spawn, a fork server restart). So the gateway port may hold only what
is left of the soft limit once everything else in use and a reserve are set aside, recomputed each second;
and a few spare descriptors are held open so the control socket can still answer `status` when the
process is at its limit anyway (an operator lowered it, a leak).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource

NOFILE_CEILING = 1 << 20
RESERVE_BASE = 64
RESERVE_PER_WORKER = 4
"""A respawn opens two pipes (four descriptors, two kept while the worker runs)."""
SPARES = 4
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})


def raise_soft_limit(wanted: int = 0) -> tuple[int, int]:
    """Set the soft RLIMIT_NOFILE to `wanted`, or (0) to the hard limit, as Go's runtime does: a service unit
    that sets `LimitNOFILE=` sets both, so an operator's choice is kept. Returns (soft, hard) in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = NOFILE_CEILING if hard == resource.RLIM_INFINITY else min(hard, NOFILE_CEILING)
    target = min(wanted, ceiling) if wanted else ceiling
    if target != soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def soft_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return NOFILE_CEILING if soft == resource.RLIM_INFINITY else soft


def open_fds() -> int:
    """Descriptors open in this process now (Linux /proc, else /dev/fd); -1 if neither can be listed."""
    for where in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(where)) - 1  # less the one listdir itself held
    return -1


def connection_capacity(limit: int, in_use: int, sockets: int, workers: int, ceiling: int = 0) -> int:
    """How many client sockets the port may hold: the limit less every other descriptor in use (`in_use`
    counts the `sockets` too) less the reserve; `ceiling` (if set) caps it."""
    others = max(0, in_use - sockets)
    room = limit - others - RESERVE_BASE - RESERVE_PER_WORKER * workers
    return min(room, ceiling) if ceiling else room


class Spares:
    """Descriptors held open to be given back for one essential operation when the process is at its limit."""

    def __init__(self, count: int = SPARES) -> None:
        self._fds: list[int] = []
        self.count = count
        self.lent = 0
        self.refill()

    def refill(self) -> None:
        while len(self._fds) < self.count:
            try:
                self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return

    @property
    def held(self) -> int:
        return len(self._fds)

    def free_one(self) -> bool:
        """Give one spare back to the process (False if none is left); `refill` takes it again later."""
        if not self._fds:
            return False
        os.close(self._fds.pop())
        self.lent += 1
        return True

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
