"""Everything libraries say in the supervisor goes through the sink: redacted, throttled, folded, one line.

Left alone, aiohttp logs a traceback to stderr for every malformed request (the journal, under systemd),
with the offending header line verbatim, token included. So the root logger, `warnings`, and exceptions
of threads and finalisers are routed here: each record becomes one line (an exception shows as its type,
message and innermost frame, not a traceback), credential headers are masked even when the value is not a
secret the gateway knows, and the sink's per-source limits apply (source `lib:<logger name>`).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any

Write = Callable[..., Any]

_CREDENTIAL = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-openclaw-token|x-api-key|api-key|cookie|set-cookie)"
    r"(\s*[:=]\s*)(?:(bearer|basic)\s+)?[^\s'\"\\]+")
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
           logging.CRITICAL: "fatal"}


_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+(?!\*\*\*)[^\s'\"\\]+")


def mask_credentials(text: str) -> str:
    """`Authorization: Bearer abc` -> `Authorization: Bearer ***`, the same for the other auth headers, and any
    bearer or basic credential wherever it appears (a malformed header name hides which header it was)."""
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) + ' ' if m.group(3) else ''}***", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)


def summarize(exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> str:
    """One line for an exception: `Type: message (at file:line in function)`."""
    if exc_type is None:
        return ""
    text = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
    frames = traceback.extract_tb(tb) if tb is not None else []
    if frames:
        last = frames[-1]
        text += f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    return " ".join(text.split())


class SinkHandler(logging.Handler):
    def __init__(self, write: Write) -> None:
        super().__init__(logging.WARNING)
        self.write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                text = f"{text}: {summarize(*record.exc_info)}"
            level = _LEVELS.get(record.levelno, "warn" if record.levelno < logging.ERROR else "error")
            self.write(level, mask_credentials(" ".join(text.split()))[:4096], subsystem=f"lib:{record.name}")
        except Exception:  # logging must never raise into the code that logged
            self.handleError(record)


def route_library_output(write: Write) -> SinkHandler:
    """Install the routes (once, in the supervisor, after the fork server was forked)."""
    handler = SinkHandler(write)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.raiseExceptions = False
    logging.captureWarnings(True)
    warnings.simplefilter("default")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        what = summarize(args.exc_type, args.exc_value, args.exc_traceback)
        write("error", mask_credentials(f"thread {name}: {what}"), subsystem="lib:thread")

    def unraisable_hook(args: Any) -> None:
        where = f" in {args.object!r}" if args.object is not None else ""
        what = summarize(args.exc_type, args.exc_value, args.exc_traceback)
        write("warn", mask_credentials(f"unraisable{where}: {what}"), subsystem="lib:unraisable")

    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
    return handler
