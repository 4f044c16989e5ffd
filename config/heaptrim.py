"""Pages back to the system: the C heap's freed ones (glibc keeps what was freed mapped, and counted in the process's
memory, until asked), and an object's pages that hold nothing but zeros. Apart from `sqlitedb`, so a process that
never opens a database need not import sqlite3; ctypes is loaded on first use, so importing this costs a
command-line tool nothing."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any

MADV_DONTNEED = 4


@functools.cache
def libc_function(name: str) -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), name)  # malloc_trim: glibc's; musl has none
    except (OSError, AttributeError):
        return None


def drop_zero_pages(obj: object) -> int:
    """Give back the whole pages inside `obj` that hold only zeros; returns the bytes given back. A C type that
    embeds a large zeroed buffer (uvloop's loop: 256 kB) has every page of it written at allocation, private to the
    process from then on; a dropped page reads as zeros again and takes memory only once written. Only for an
    object no other thread is using: a write racing the check would be lost."""
    madvise = libc_function("madvise")
    if madvise is None:
        return 0
    import ctypes

    page = os.sysconf("SC_PAGE_SIZE")
    start = id(obj)  # CPython: the object's address
    first, end = -(-start // page) * page, (start + type(obj).__basicsize__) // page * page
    zero = bytes(page)
    dropped = 0
    run = first
    for at in range(first, end + page, page):
        if at < end and ctypes.string_at(at, page) == zero:
            continue
        if at > run and madvise(ctypes.c_void_p(run), ctypes.c_size_t(at - run), MADV_DONTNEED) == 0:
            dropped += at - run
        run = at + page
    return dropped


def trim() -> None:
    """glibc's malloc_trim(0); nothing where there is none."""
    malloc_trim = libc_function("malloc_trim")
    if malloc_trim is not None:
        with contextlib.suppress(OSError):
            malloc_trim(0)
