"""The one listener of the gateway port, run inside the supervisor's event loop (uvloop).

`GET /` with an Upgrade is the WebSocket protocol, served on the raw transport (`gateway/port.py`); every
other request goes to aiohttp: the unauthenticated health probes of the spec (`/health(z)`, `/ready(z)`,
`/startup(z)`), the HTTP API, and 404 for the rest. Binding retries briefly on EADDRINUSE (a previous
instance may still be closing), as upstream.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from openclaw_sup.gateway.port import PortProtocol, WireSocket
from openclaw_sup.gateway.protocol import MAX_PAYLOAD
from openclaw_sup.gateway.wsframe import upgrade_problem

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore

BIND_RETRIES = 4
BIND_RETRY_S = 0.5
CLOSE_GRACE_S = 1.0
FORWARD_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


class BindError(RuntimeError):
    pass


class GatewayServer:
    def __init__(self, host: str, port: int, readiness: Callable[[], dict[str, Any]], version: str,
                 core: GatewayCore | None = None) -> None:
        self.host, self.port = host, port
        self.core = core
        self.readiness = readiness
        self.version = version
        self.started = time.monotonic()
        self.draining = False
        self.sockets: set[PortProtocol] = set()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        for path in ("/health", "/healthz"):
            app.router.add_route("GET", path, self._live)
        for path in ("/ready", "/readyz"):
            app.router.add_route("GET", path, self._ready)
        for path in ("/startup", "/startupz"):
            app.router.add_route("GET", path, self._startup)
        app.router.add_route("GET", "/", self._root)
        if self.core is not None:
            from openclaw_sup.gateway.http_api import add_http_api

            add_http_api(app, self.core)
        return app

    async def _root(self, request: web.Request) -> web.StreamResponse:
        """An upgrade that reached aiohttp: one on a kept-alive HTTP connection (served through aiohttp's
        WebSocket, see `FrameworkSocket`) or one `gateway/port.py` doubted (refused here with the reason)."""
        if request.headers.get("Upgrade", "").lower() != "websocket" or self.core is None:
            raise web.HTTPNotFound(text="Not Found")
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = upgrade_problem(request.method, request.path_qs, headers)
        if problem:
            raise web.HTTPBadRequest(text=f"invalid WebSocket upgrade: {problem}")
        ws = web.WebSocketResponse(max_msg_size=MAX_PAYLOAD, compress=False, autoping=True)
        await ws.prepare(request)
        sock = FrameworkSocket(ws)
        await sock.serve(self.open_socket(sock, request.remote or "", headers))
        return ws

    # -- PortOwner -----------------------------------------------------------------------------------

    def http_protocol(self) -> asyncio.Protocol:
        assert self._runner is not None and self._runner.server is not None
        return self._runner.server()

    def open_socket(self, sock: WireSocket, peer_ip: str, headers: Mapping[str, str]) -> Connection:
        from openclaw_sup.gateway.connection import Connection

        assert self.core is not None
        return Connection(sock, self.core, peer_ip, any(h in headers for h in FORWARD_HEADERS))

    def _local(self, request: web.Request) -> bool:
        peer = request.remote or ""
        forwarded = any(h in request.headers for h in ("Forwarded", "X-Forwarded-For", "X-Real-IP"))
        return not forwarded and (peer.startswith("127.") or peer == "::1")

    def _body(self, request: web.Request, ok: bool, status: str, **detail: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": ok, "status": status}
        if self._local(request):
            body.update(version=self.version, uptimeMs=int((time.monotonic() - self.started) * 1000), **detail)
        return body

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response(self._body(request, True, "live"))

    async def _startup(self, request: web.Request) -> web.Response:
        r = self.readiness()
        if self.draining:
            return web.json_response(self._body(request, False, "draining"), status=503)
        if not r["started"]:
            return web.json_response(self._body(request, False, "starting", pendingReason=r.get("pending")),
                                     status=503)
        return web.json_response(self._body(request, True, "started"))

    async def _ready(self, request: web.Request) -> web.Response:
        r = self.readiness()
        ok = r["ready"] and not self.draining
        status = "ready" if ok else ("draining" if self.draining else "not-ready")
        return web.json_response(self._body(request, ok, status, workers=r.get("workers")),
                                 status=200 if ok else 503)

    async def start(self) -> None:
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        loop = asyncio.get_running_loop()
        url = f"ws://{self.host}:{self.port}"
        for attempt in range(BIND_RETRIES + 1):
            try:
                self._listener = await loop.create_server(lambda: PortProtocol(self), self.host, self.port,
                                                          reuse_address=True, backlog=1024)
                return
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and attempt < BIND_RETRIES:
                    await asyncio.sleep(BIND_RETRY_S)
                    continue
                self._runner = None
                await runner.cleanup()
                if exc.errno == errno.EADDRINUSE:
                    raise BindError(f"another gateway instance is already listening on {url}") from None
                raise BindError(f"failed to bind gateway socket on {url}: {exc.strerror}") from None

    async def stop(self) -> None:
        """Stop listening, close what is still open (WebSocket peers get 1012 and a moment to answer it),
        then let aiohttp finish its HTTP connections."""
        self.draining = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
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


class FrameworkSocket:
    """The `WireSocket` interface over aiohttp's WebSocketResponse.

    Used only for an upgrade that arrives after other requests on one kept-alive HTTP connection, which
    aiohttp already owns; a fresh connection never comes here. Writes go through a queue drained by a
    task that exists while there is something to write.
    """

    QUEUE_HIGH = 64

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.closed = False
        self.max_size = MAX_PAYLOAD
        self._label = "message"
        self._out: deque[bytes | tuple[int, str]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._handler: Any = None

    @property
    def writable(self) -> bool:
        return not self.closed and len(self._out) < self.QUEUE_HIGH

    def send_text(self, data: bytes) -> bool:
        if self.closed:
            return False
        self._queue(data)
        return True

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._queue((code, reason))

    def set_limit(self, max_size: int, label: str) -> None:
        self.max_size, self._label = max_size, label

    def hold_reading(self, busy: bool) -> None:
        if busy:
            self._reading.clear()
        else:
            self._reading.set()

    def _queue(self, item: bytes | tuple[int, str]) -> None:
        self._out.append(item)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._out:
                item = self._out.popleft()
                if isinstance(item, tuple):
                    await self.ws.close(code=item[0], message=item[1].encode()[:123])
                    self._out.clear()
                else:
                    await self.ws.send_frame(item, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            self._out.clear()
        finally:
            self._writer = None
        if self._handler is not None and not self.closed:
            self._handler.writable()

    async def serve(self, handler: Any) -> None:
        self._handler = handler
        handler.opened()
        try:
            while not self.closed:
                await self._reading.wait()
                msg = await self.ws.receive()
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                if len(data) > self.max_size:
                    self.close(1009, f"{self._label} exceeds {self.max_size} bytes")
                    break
                handler.received(data)
            if self._writer is not None:
                await asyncio.shield(self._writer)
        finally:
            self.closed = True
            self._handler = None
            handler.lost()
