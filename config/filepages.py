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
from collections.abc import Iterator

from openclaw_sup.config import heaptrim

PRESENT = 1 << 63
SWAPPED = 1 << 62
FILE_PAGE = 1 << 61
CHUNK = 512
"""Pagemap entries read at a time (4 kB): a whole mapping's entries at once (a 200 MB locale archive: 400 kB) would grow
the heap the walk is to leave alone."""


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


def _runs(pagemap: int, start: int, end: int, page: int) -> Iterator[tuple[int, int]]:
    """The runs of pages in [start, end) that may be dropped: all but the process's own copies (resident or
    swapped), which a private mapping holds once written."""
    run = start
    for chunk in range(start, end, CHUNK * page):
        count = min(CHUNK, (end - chunk) // page)
        for i, (entry,) in enumerate(struct.iter_unpack("<Q", os.pread(pagemap, count * 8, chunk // page * 8))):
            if entry & SWAPPED or (entry & PRESENT and not entry & FILE_PAGE):
                at = chunk + i * page
                if at > run:
                    yield run, at
                run = at + page
    if end > run:
        yield run, end


def drop() -> int:
    """Unmap this process's clean pages of private read-only file mappings; returns the bytes of the ranges
    unmapped (0 where Linux's pagemap or madvise is not available). Harmless at any time: a dropped page is mapped
    again on use."""
    madvise = heaptrim.libc_function("madvise")
    if madvise is None:
        return 0
    import ctypes

    page = os.sysconf("SC_PAGE_SIZE")
    dropped = 0
    try:
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return 0
    try:
        for start, end in _read_only_file_ranges():
            with contextlib.suppress(OSError):
                for run, stop in _runs(pagemap, start, end, page):
                    if madvise(ctypes.c_void_p(run), ctypes.c_size_t(stop - run), heaptrim.MADV_DONTNEED) == 0:
                        dropped += stop - run
    finally:
        os.close(pagemap)
    return dropped


def settle() -> None:
    """What a started process gives back when it goes quiet: the file pages only its start read, then the C heap's
    free pages (in that order, so the walk's own garbage is trimmed too)."""
    drop()
    heaptrim.trim()
