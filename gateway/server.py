"""The one listener of the gateway port, run inside the supervisor's event loop (uvloop).

`GET /` with an Upgrade is the WebSocket protocol and the spec's unauthenticated health probes are answered,
both on the raw transport (`gateway/port.py`, `gateway/probes.py`); every other request goes to aiohttp
(`gateway/http_app.py`): the HTTP API, the Control UI (`gateway/controlui.py`), and 404 for the rest. aiohttp
is imported (on a thread, while the loop keeps serving) when the first such request arrives, so a gateway
that only WebSocket clients and probes talk to never loads it. Binding retries briefly on EADDRINUSE (a
previous instance may still be closing), as upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import importlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from openclaw_sup.config.settings import PortLimits
from openclaw_sup.gateway import probes
from openclaw_sup.gateway.admission import Admission, per_address_from_env
from openclaw_sup.gateway.authn import is_direct_loopback, normalize_ip
from openclaw_sup.gateway.port import PortProtocol, WireSocket
from openclaw_sup.gateway.tls_accept import TlsAcceptor

if TYPE_CHECKING:
    from aiohttp import web

    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore

BIND_RETRIES = 4
BIND_RETRY_S = 0.5
CLOSE_GRACE_S = 1.0
HTTP_RETRY_FIRST_S = 0.5
HTTP_RETRY_MAX_S = 10.0
BACKLOG = 1024


class BindError(RuntimeError):
    pass


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for `host` (an address literal, v4 or v6), made here rather than by the
    loop's server: the host goes to the resolver as bytes, so neither a resolver thread pool nor the IDNA codec
    is started for it. Accepted sockets inherit its SO_KEEPALIVE."""
    family, kind, proto, _name, addr = socket.getaddrinfo(host.encode("ascii", "replace"), port,
                                                          type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


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
                 core: GatewayCore | None = None, *, ssl_context: ssl.SSLContext | None = None,
                 limits: PortLimits | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.core = core
        self.readiness = readiness
        self.version = version
        self.started = time.monotonic()
        self.draining = False
        self.answers: dict[str, probes.Made] = {}
        self.sockets: set[PortProtocol] = set()
        self._parked: list[PortProtocol] = []
        self._runner: web.AppRunner | None = None
        self._http_setup: asyncio.Task[None] | None = None
        self._bound: socket.socket | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._tls: TlsAcceptor | None = None
        limits = limits or PortLimits()
        self.head_timeout_s = limits.head_timeout_ms / 1000
        self.admission = Admission(per_address=limits.preauth_per_address or per_address_from_env(),
                                   others=self.http_connections)

    # -- PortOwner -----------------------------------------------------------------------------------

    @functools.cached_property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def http_connections(self) -> int:
        """Connections aiohttp holds (they count against the admission capacity too)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    def http_protocol(self, sock: PortProtocol) -> asyncio.Protocol | None:
        """aiohttp's protocol for a new HTTP connection, or None (the socket is parked until it is up; the
        first one brings it up)."""
        if self._runner is None or self._runner.server is None:
            self._parked.append(sock)
            if self._http_setup is None and not self.draining:
                self._http_setup = asyncio.get_running_loop().create_task(self._start_http())
            return None
        return self._runner.server()

    def probe(self, plan: probes.Plan, peer_ip: str) -> bytes | None:
        loopback = not plan.forwarded and normalize_ip(peer_ip)[1]
        if plan.authorized and not loopback:
            return None  # a remote caller's credentials are checked by the HTTP API's route
        return probes.answer(self, plan, loopback)

    def open_socket(self, sock: WireSocket, peer_ip: str, headers: Mapping[str, str]) -> Connection:
        from openclaw_sup.gateway.connection import Connection

        assert self.core is not None
        return Connection(sock, self.core, peer_ip, is_direct_loopback(peer_ip, headers))

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bind()
        await self.serve()

    async def bind(self) -> None:
        """Take the port (BindError when it cannot be had). Connections the kernel accepts from now on wait in
        the backlog until `serve`: the supervisor starts its workers in between, while it builds the core."""
        url = f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}"
        for attempt in range(BIND_RETRIES + 1):
            try:
                self._bound = listening_socket(self.host, self.port)
                return
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and attempt < BIND_RETRIES:
                    await asyncio.sleep(BIND_RETRY_S)
                    continue
                if exc.errno == errno.EADDRINUSE:
                    raise BindError(f"another gateway instance is already listening on {url}") from None
                raise BindError(f"failed to bind gateway socket on {url}: {exc.strerror}") from None

    async def serve(self) -> None:
        """Serve the socket `bind` took: from here on the loop accepts and answers clients."""
        sock, self._bound = self._bound, None
        assert sock is not None, "serve() before bind()"
        try:
            if self.ssl_context is not None:
                self._tls = TlsAcceptor(sock, self.ssl_context, self.admission,
                                        lambda pending: PortProtocol(self, pending))
            else:
                self._listener = await asyncio.get_running_loop().create_server(lambda: PortProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise

    async def _start_http(self) -> None:
        """Bring up aiohttp; if that fails (e.g. out of descriptors while importing), WebSocket clients keep
        working, HTTP callers are told by a closed socket, and it is tried again with backoff."""
        delay = HTTP_RETRY_FIRST_S
        while not self.draining:
            try:
                http_app = await import_in_thread("openclaw_sup.gateway.http_app")
                self._runner = await http_app.start_runner(self)
            except Exception as exc:
                if self.core is not None:
                    self.core.log("error", f"HTTP on the gateway port is unavailable: {type(exc).__name__}: {exc}; "
                                           f"next try in {delay:g}s")
            parked, self._parked = self._parked, []
            for sock in parked:
                if self._runner is not None:
                    sock.hand_over()
                elif sock.transport is not None:
                    sock.transport.close()
            if self._runner is not None:
                return
            await asyncio.sleep(delay)
            delay = min(HTTP_RETRY_MAX_S, delay * 2)

    async def stop(self) -> None:
        """Stop listening, close what is still open (WebSocket peers get 1012 and a moment to answer it),
        then let aiohttp finish its HTTP connections."""
        self.draining = True
        if self._bound is not None:
            self._bound.close()
            self._bound = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._tls is not None:
            self._tls.close()
            self._tls = None
        if self._http_setup is not None:
            if self._runner is None:  # still importing, or waiting to try again
                self._http_setup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
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
