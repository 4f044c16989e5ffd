"""TLS on the gateway port, with every connection admitted before its handshake.

uvloop's own TLS server shows a connection to its protocol only once the handshake is done, so a flood of
handshakes that never finish would hold descriptors no admission rule sees. Here the port's listening socket
is accepted from directly: each new socket is admitted first (counted, capped per address, evictable while
unauthenticated, see `gateway/admission.py`), then handed to the loop for the handshake, bounded by
`HANDSHAKE_TIMEOUT_S`, and from then on served by a `PortProtocol` like a plain connection. Out of
descriptors, accepting pauses briefly instead of spinning. Plain connections keep the loop's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections.abc import Callable

from openclaw_sup.gateway.admission import Admission

HANDSHAKE_TIMEOUT_S = 10.0
ACCEPT_BATCH = 64
EXHAUSTED_PAUSE_S = 0.5


class Handshake:
    """An admitted socket whose TLS handshake is under way: evicting it ends the handshake."""

    __slots__ = ("address", "conn")

    def __init__(self, conn: socket.socket, address: str) -> None:
        self.conn = conn
        self.address = address

    def evict(self) -> None:
        with contextlib.suppress(OSError):  # already handed to the loop and closed: nothing to do
            self.conn.shutdown(socket.SHUT_RDWR)


class TlsAcceptor:
    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, admission: Admission,
                 protocol: Callable[[Handshake], asyncio.Protocol]) -> None:
        self.sock = sock
        self.ctx = ctx
        self.admission = admission
        self.protocol = protocol
        self._tasks: set[asyncio.Task[None]] = set()
        self._resume: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._loop.remove_reader(self.sock.fileno())
                    self._resume = self._loop.call_later(EXHAUSTED_PAUSE_S, self._resumed)
                    return
                continue  # ECONNABORTED and the like: that one peer is gone
            pending = Handshake(conn, addr[0] if isinstance(addr, tuple) else "")
            if self.admission.admit(pending, pending.address) is not None:
                conn.close()  # no plain answer can reach a TLS client
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._handshake(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resumed(self) -> None:
        self._resume = None
        self._loop.add_reader(self.sock.fileno(), self._accept)
        self._accept()

    async def _handshake(self, pending: Handshake) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: self.protocol(pending), pending.conn, ssl=self.ctx,
                                                     ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        except (Exception, asyncio.CancelledError):  # a failed handshake of any kind costs that socket only
            self.admission.release(pending)
            pending.conn.close()

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for task in list(self._tasks):
            task.cancel()
