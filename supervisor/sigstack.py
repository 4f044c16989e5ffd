"""A roomy alternate signal stack for the supervisor's main thread.

`faulthandler.enable()` (a crash prints its Python traceback) installs a small alternate signal stack (2 x
SIGSTKSZ, 16 kB), and CPython installs every Python-level signal handler with SA_ONSTACK, so all handlers run on
it. Distinct signals arriving together nest, one kernel signal frame each (several kB with AVX-512 state): five
of the ignored signals at once ran past its end into the heap, and the supervisor crashed later in the garbage
collector. This stack is mapped once and never freed; only the pages a nested burst touches take memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import sys
from typing import Any

SIZE = 1 << 20
_kept: list[mmap.mmap] = []


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _sigaltstack() -> Any:
    return ctypes.CDLL(None, use_errno=True).sigaltstack


def install(size: int = SIZE) -> bool:
    """Make a `size`-byte mapping the calling thread's alternate signal stack (after `faulthandler.enable()`,
    which installs its own); False where that is not possible (the small one stays)."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        if _sigaltstack()(ctypes.byref(_StackT(base, 0, size)), None) == 0:
            _kept.append(region)
            return True
    return False


def current_size() -> int:
    """The calling thread's alternate signal stack size (0 when none)."""
    old = _StackT()
    if _sigaltstack()(None, ctypes.byref(old)) != 0:
        return 0
    return 0 if old.ss_flags & 2 else int(old.ss_size)  # SS_DISABLE
