"""Takes up the free chunks inside the fork server's C heap (glibc's main arena) and Python's small-object pools
just before it forks.

A worker inherits the fork server's heap page for page, shared until written. Its own mallocs (SQLite's schema
and pages, ZeroMQ, libuv, Python objects over 512 bytes) would first fill the holes the fork server's imports
left all over that heap, and every hole filled copies a whole page: a worker opening one SQLite database wrote
1.5 MB of pages that way. With the holes taken by allocations the fork server keeps and never touches again,
the worker's mallocs come from the top of the heap, packed into fresh pages of its own.

Python's small objects (pymalloc, up to 512 bytes) have the same trap one level up: a pool (a few pages) of a
size class that the fork server's garbage left part empty takes a worker's next objects of that size, and the
worker copies the pool's pages for a block or two. Those free blocks are taken too, with objects of each exact
block size, so a worker's small objects fill pools of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable

SIZES = (65536, 16384, 4096, *range(1032, 23, -16))
"""Largest first, so a big hole is taken in a few calls (the first large one also merges the fast bins), then every
size glibc keeps a per-thread cache of (chunks of 32 to 1040 bytes): a cached chunk only goes to its exact size."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def pool_free_blocks() -> dict[int, int]:
    """Free blocks in pymalloc's partly used pools, by block size, from `sys._debugmallocstats` (CPython only; it
    writes to the C stderr, read here through a pipe); {} when there is no such report or no descriptor for it."""
    report = getattr(sys, "_debugmallocstats", None)
    if report is None:
        return {}
    try:
        r, w = os.pipe()
    except OSError:
        return {}
    if min(r, w) <= 2:  # stderr itself was closed: the pipe took its number
        os.close(r)
        os.close(w)
        return {}
    chunks = []
    try:
        saved = os.dup(2)
        try:
            os.dup2(w, 2)
            report()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        os.close(w)
        w = -1
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    except OSError:
        return {}
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    free: dict[int, int] = {}
    for line in b"".join(chunks).splitlines():
        fields = line.split()  # "class size num-pools blocks-in-use avail-blocks"
        if len(fields) == 5 and all(f.isdigit() for f in fields):
            free[int(fields[1])] = int(fields[4])
    return free


def block_maker(size: int) -> Callable[[], object] | None:
    """A new object of exactly one pymalloc block of `size` bytes, none of them tracked by the garbage collector."""
    if size == 16:
        return object
    if size == 32:
        seed = float(size)
        return lambda: seed * 0.5  # a float: 24 bytes (a closure's value: not folded into one constant)
    if size > 32:
        fill = size - sys.getsizeof(b"")  # a bytes object is its header (with the final NUL) plus its length
        return lambda: b"\0" * fill  # no call: bytes(n) would allocate (and free) an argument tuple each time
    return None


class HeapHoles:
    """Takes the holes with allocations that are never freed, nor kept anywhere: they are the fork server's for
    its whole life (a list of them would itself be reallocated, and leave holes of its own)."""

    def __init__(self) -> None:
        self.taken = 0
        self.blocks: list[list[object]] = []
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
        """Fill the small-object pools' free blocks, then allocate every free chunk below the top of the heap;
        returns how many chunks and blocks were taken."""
        libc = self._libc
        if libc is None:
            return 0
        return self.take_blocks() + self.take_chunks(libc)

    def take_blocks(self) -> int:
        """Objects of each pool's block size, as many as its free blocks, kept for the fork server's life, in lists
        sized up front (a growing list would free its old arrays: new holes). Twice: the first pass's own garbage
        leaves holes of its own (what a pass still finds after that, ~1/5 of the first, is the report's own)."""
        taken = 0
        for _ in range(2):
            for size, count in pool_free_blocks().items():
                make = block_maker(size)
                if count and make is not None:
                    kept: list[object] = [None] * count
                    for i in range(count):
                        kept[i] = make()
                    self.blocks.append(kept)
                    taken += count
        return taken

    def take_chunks(self, libc: ctypes.CDLL) -> int:
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
