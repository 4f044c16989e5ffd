"""Unmap the read-only file pages a process touched only while starting.

Loading and initialising the interpreter, its extensions and their libraries (OpenSSL's provider tables, SQLite,
libzmq, uvloop) reads far more of those files than an idle process runs again, and every page a process has
mapped counts in its memory (PSS splits it between the processes that map it, and on a host where the gateway is
the only Python its processes are the only ones). Dropping the mapping of a clean page frees nothing the process
needs: the page stays in the page cache, and the next access maps it back with a minor fault. So, once started,
each process keeps mapped only what it uses afterwards.

Only pages still identical to the file are dropped (private read-only mappings whose pagemap entry says
file page): a page the loader relocated (RELRO, then made read-only) is the process's own copy and stays.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys

MADV_DONTNEED = 4
PRESENT = 1 << 63
SWAPPED = 1 << 62
FILE_PAGE = 1 << 61


def _own_pages(entries: bytes) -> list[bool]:
    """Per page: whether it is the process's own (a private copy, resident or swapped), never to be dropped."""
    return [bool(e & SWAPPED or (e & PRESENT and not e & FILE_PAGE)) for (e,) in struct.iter_unpack("<Q", entries)]


def _read_only_file_ranges() -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) < 6 or not fields[5].startswith("/") or fields[1][1] != "-" or fields[1][3] != "p":
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def drop() -> int:
    """Unmap this process's clean pages of private read-only file mappings; returns the bytes unmapped (0 where
    Linux's pagemap or madvise is not available). Harmless at any time: a dropped page is mapped again on use."""
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    page = os.sysconf("SC_PAGE_SIZE")
    dropped = 0
    try:
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return 0
    try:
        for start, end in _read_only_file_ranges():
            try:
                own = _own_pages(os.pread(pagemap, (end - start) // page * 8, start // page * 8))
            except OSError:
                continue
            run = start
            for i, mine in enumerate([*own, True]):
                at = start + i * page
                if mine:
                    if at > run and libc.madvise(ctypes.c_void_p(run), ctypes.c_size_t(at - run), MADV_DONTNEED) == 0:
                        dropped += at - run
                    run = at + page
    finally:
        with contextlib.suppress(OSError):
            os.close(pagemap)
    return dropped
