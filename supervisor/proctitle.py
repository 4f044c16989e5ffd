"""The supervisor's process title, in the form the real `openclaw` CLI recognises as a gateway.

`openclaw gateway restart|stop` signal or call only a listener whose argv starts with `openclaw-gateway`
(upstream's own process title) or looks like `openclaw ... gateway`. So the supervisor's argv is
`openclaw-gateway openclaw-sup [<profile>]`, three NUL-separated words: setproctitle writes the title into
the argv area, and the two separators are then turned into NULs in place (read back from
/proc/self/cmdline; where that is not possible the plain title stays and only the CLI's discovery is lost).
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

import setproctitle

WORDS = ("openclaw-gateway", "openclaw-sup")


def gateway_argv(label: str) -> list[str]:
    return [*WORDS, f"[{label}]"]


def _arg_start() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path("/proc/self/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[45])  # field 48: arg_start
    return None


def set_gateway_title(label: str) -> bool:
    """Set the title; True when /proc/self/cmdline now reads as upstream's gateway argv."""
    argv = gateway_argv(label)
    title = " ".join(argv)
    setproctitle.setproctitle(title)
    start = _arg_start()
    raw = title.encode()
    if start is None or ctypes.string_at(start, len(raw)) != raw:
        return False
    ctypes.memmove(start, b"\0".join(w.encode() for w in argv), len(raw))
    with contextlib.suppress(OSError):
        return Path("/proc/self/cmdline").read_bytes().split(b"\0")[:3] == [w.encode() for w in argv]
    return False
