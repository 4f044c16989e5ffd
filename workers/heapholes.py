"""Takes up the free chunks inside the fork server's C heap (glibc's main arena) just before it forks.

A worker inherits the fork server's heap page for page, shared until written. Its own mallocs (SQLite's schema
and pages, ZeroMQ, libuv, Python objects over 512 bytes) would first fill the holes the fork server's imports
left all over that heap, and every hole filled copies a whole page: a worker opening one SQLite database wrote
1.5 MB of pages that way. With the holes taken by allocations the fork server keeps and never touches again,
the worker's mallocs come from the top of the heap, packed into fresh pages of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

SIZES = (65536, 16384, 4096, *range(1032, 23, -16))
"""Largest first, so a big hole is taken in a few calls (the first large one also merges the fast bins), then every
size glibc keeps a per-thread cache of (chunks of 32 to 1040 bytes): a cached chunk only goes to its exact size."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


class HeapHoles:
    """Takes the holes with allocations that are never freed, nor kept anywhere: they are the fork server's for
    its whole life (a list of them would itself be reallocated, and leave holes of its own)."""

    def __init__(self) -> None:
        self.taken = 0
        self._libc: ctypes.CDLL | None = None
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None)
                libc.mallinfo2.restype = _MallInfo2  # glibc >= 2.33; musl and others have none: nothing to do
                libc.malloc.restype = ctypes.c_void_p
                libc.malloc.argtypes = [ctypes.c_size_t]
                libc.free.argtypes = [ctypes.c_void_p]
                libc.sbrk.restype = ctypes.c_void_p
                libc.sbrk.argtypes = [ctypes.c_ssize_t]
                self._libc = libc

    def free_inside(self) -> int:
        """Bytes free in the heap below its top chunk: what a worker's mallocs would scatter into."""
        if self._libc is None:
            return 0
        info = self._libc.mallinfo2()
        return int(info.fordblks - info.keepcost)

    def take(self) -> int:
        """Allocate every free chunk below the top of the heap; returns how many were taken."""
        libc = self._libc
        if libc is None:
            return 0
        info = libc.mallinfo2()
        top = (libc.sbrk(0) or 0) - info.keepcost  # the top chunk starts here; nothing below is fresh
        budget = (info.fordblks - info.keepcost) // SIZES[-1] + len(SIZES)  # a bound, should the heap be unusual
        taken = 0
        for size in SIZES:
            while taken < budget:
                ptr = libc.malloc(size)
                if not ptr:
                    break
                if ptr >= top:
                    libc.free(ptr)
                    break
                taken += 1
        self.taken += taken
        return taken
