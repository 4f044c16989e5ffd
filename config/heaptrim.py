"""Freed C heap pages back to the system: glibc keeps what was freed mapped (and counted in the process's memory)
until asked. Apart from `sqlitedb`, so a process that never opens a database need not import sqlite3; ctypes is
loaded on the first trim, so importing this costs a command-line tool nothing."""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any


@functools.cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None


def trim() -> None:
    """glibc's malloc_trim(0); nothing where there is none."""
    malloc_trim = _malloc_trim()
    if malloc_trim is not None:
        with contextlib.suppress(OSError):
            malloc_trim(0)
