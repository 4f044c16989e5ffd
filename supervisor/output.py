"""A worker's raw stdout or stderr, read line by line from a pipe the supervisor owns.

The pipe outlives the worker: it is read to EOF after the exit (and drained at shutdown), so the last lines
before a crash are never lost and become the worker's last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

READ_CHUNK = 65536
LINE_LIMIT = 8192


class OutputPipe:
    def __init__(self, fd: int, on_line: Callable[[str], None]) -> None:
        self.fd = fd
        self.on_line = on_line
        self._partial = bytearray()
        self.open = True
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._feed(data)
        else:
            self.close()

    def _feed(self, data: bytes) -> None:
        self._partial.extend(data)
        *lines, rest = self._partial.split(b"\n")
        self._partial[:] = rest[-LINE_LIMIT:]
        for line in lines:
            self._emit(line)

    def _emit(self, raw: bytes) -> None:
        text = raw[:LINE_LIMIT].decode("utf-8", "replace").rstrip()
        if text:
            self.on_line(text)

    def drain(self) -> None:
        """Read whatever is left now (at shutdown), then close."""
        if not self.open:
            return
        with contextlib.suppress(OSError):
            while data := os.read(self.fd, READ_CHUNK):
                self._feed(data)
        self.close()

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        if self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
