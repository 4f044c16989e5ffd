"""The one listener of the gateway port, run inside the supervisor's event loop (uvloop).

`GET /` with an Upgrade is the WebSocket protocol, served on the raw transport (`gateway/port.py`); every
other request goes to aiohttp (`gateway/http_app.py`): the unauthenticated health probes of the spec, the
HTTP API, the Control UI (`gateway/controlui.py`), and 404 for the rest. aiohttp is imported on a thread just
after the bind, while the supervisor attaches its fork server and starts workers, so it is off the start-up
path. Binding retries briefly on
EADDRINUSE (a previous instance may still be closing), as upstream.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from openclaw_sup.gateway.authn import is_direct_loopback
from openclaw_sup.gateway.port import PortProtocol, WireSocket

if TYPE_CHECKING:
    from aiohttp import web

    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore

BIND_RETRIES = 4
BIND_RETRY_S = 0.5
CLOSE_GRACE_S = 1.0
TLS_HANDSHAKE_TIMEOUT_S = 10.0


class BindError(RuntimeError):
    pass


async def import_in_thread(name: str) -> ModuleType:
    """Import a module on a short-lived thread: aiohttp takes a fifth of a second to import, and the loop
    must meanwhile attach the fork server and start workers (it gets the GIL whenever it has work)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[ModuleType] = loop.create_future()

    def settle(result: ModuleType | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert result is not None
            done.set_result(result)

    def run() -> None:
        try:
            loop.call_soon_threadsafe(settle, importlib.import_module(name), None)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)

    threading.Thread(target=run, name=f"import {name}", daemon=True).start()
    return await done


class GatewayServer:
    def __init__(self, host: str, port: int, readiness: Callable[[], dict[str, Any]], version: str,
                 core: GatewayCore | None = None, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.core = core
        self.readiness = readiness
        self.version = version
        self.started = time.monotonic()
        self.draining = False
        self.sockets: set[PortProtocol] = set()
        self._parked: list[PortProtocol] = []
        self._runner: web.AppRunner | None = None
        self._http_setup: asyncio.Task[None] | None = None
        self._listener: asyncio.AbstractServer | None = None

    # -- PortOwner -----------------------------------------------------------------------------------

    def http_protocol(self, sock: PortProtocol) -> asyncio.Protocol | None:
        """aiohttp's protocol for a new HTTP connection, or None (the socket is parked until it is up)."""
        if self._runner is None or self._runner.server is None:
            self._parked.append(sock)
            return None
        return self._runner.server()

    def open_socket(self, sock: WireSocket, peer_ip: str, headers: Mapping[str, str]) -> Connection:
        from openclaw_sup.gateway.connection import Connection

        assert self.core is not None
        return Connection(sock, self.core, peer_ip, is_direct_loopback(peer_ip, headers))

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        url = f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}"
        for attempt in range(BIND_RETRIES + 1):
            try:
                tls: dict[str, Any] = ({"ssl": self.ssl_context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT_S}
                                       if self.ssl_context else {})
                self._listener = await loop.create_server(lambda: PortProtocol(self), self.host, self.port,
                                                          reuse_address=True, backlog=1024, **tls)
                break
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and attempt < BIND_RETRIES:
                    await asyncio.sleep(BIND_RETRY_S)
                    continue
                if exc.errno == errno.EADDRINUSE:
                    raise BindError(f"another gateway instance is already listening on {url}") from None
                raise BindError(f"failed to bind gateway socket on {url}: {exc.strerror}") from None
        self._http_setup = loop.create_task(self._start_http())

    async def _start_http(self) -> None:
        try:
            http_app = await import_in_thread("openclaw_sup.gateway.http_app")
            self._runner = await http_app.start_runner(self)
        except Exception as exc:  # WebSocket clients keep working; HTTP callers are told by a closed socket
            if self.core is not None:
                self.core.log("error", f"HTTP on the gateway port is unavailable: {type(exc).__name__}: {exc}")
        parked, self._parked = self._parked, []
        for sock in parked:
            if self._runner is not None:
                sock.hand_over()
            elif sock.transport is not None:
                sock.transport.close()

    async def stop(self) -> None:
        """Stop listening, close what is still open (WebSocket peers get 1012 and a moment to answer it),
        then let aiohttp finish its HTTP connections."""
        self.draining = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._http_setup is not None:
            await self._http_setup
            self._http_setup = None
        for sock in list(self.sockets):
            sock.close(1012, "service restart")
        deadline = time.monotonic() + CLOSE_GRACE_S
        while self.sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for sock in list(self.sockets):
            if sock.transport is not None:
                sock.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
