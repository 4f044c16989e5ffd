"""The supervisor's control socket: AF_UNIX, one JSON line per request, owner-only (socket 0600 in a 0700 dir).

It must answer `status` even when the process is out of descriptors: accepting is done here rather than by
the event loop's server (which would accept and drop a client it has no descriptor for), and on EMFILE a
spare descriptor (`supervisor/fdlimit.py`) is given back for the one accept, taken again once the client
is served. Without a spare left, accepting backs off instead of spinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.supervisor.fdlimit import EXHAUSTED, Spares

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024
READ_TIMEOUT_S = 5.0
ACCEPT_BATCH = 16
BACKOFF_S = 0.5


class ControlServer:
    def __init__(self, path: Path, handler: Handler, spares: Spares | None = None) -> None:
        self.path = path
        self.handler = handler
        self.spares = spares
        self.sock: socket.socket | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._retry: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(64)
        sock.setblocking(False)
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in EXHAUSTED and self.spares is not None and self.spares.free_one():
                    continue
                if exc.errno in EXHAUSTED:
                    loop.remove_reader(self.sock.fileno())
                    self._retry = loop.call_later(BACKOFF_S, self._resume)
                return
            conn.setblocking(False)
            task = loop.create_task(self._client(conn))
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)

    def _resume(self) -> None:
        self._retry = None
        if self.sock is not None:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._accept)
            self._accept()

    async def _client(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(_read_line(loop, conn), READ_TIMEOUT_S)
            if line is None:
                return
            try:
                req = orjson.loads(line)
                if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                    raise ValueError("expected a JSON object with an 'op' string")
                reply = await self.handler(req)
            except (ValueError, orjson.JSONDecodeError) as exc:
                reply = {"ok": False, "error": f"bad control request: {exc}"}
            except Exception as exc:  # a bug answering one request must not stay silent
                reply = {"ok": False, "error": f"control request failed: {type(exc).__name__}: {exc}"}
            await loop.sock_sendall(conn, orjson.dumps(reply) + b"\n")
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            conn.close()
            if self.spares is not None:
                self.spares.refill()

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _read_line(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes | None:
    """One request line (without the newline), or None if the peer closed first or sent too much."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = await loop.sock_recv(conn, 65536)
        if not chunk or len(buf) + len(chunk) > MAX_REQUEST:
            return None
        buf += chunk
    return bytes(buf[:buf.index(b"\n")])
