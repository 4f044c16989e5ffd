"""The aiohttp side of the gateway port: the HTTP API, the Control UI, late WebSocket upgrades, and the health
probes that arrive on a connection aiohttp already owns (the raw transport answers the others).

Imported when the first request for it arrives (aiohttp is the heaviest import of the supervisor): the
WebSocket protocol and the probes never wait for it, and that first request waits while it loads (see
`GatewayServer.http_protocol`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from openclaw_sup.gateway import probes
from openclaw_sup.gateway.authn import is_direct_loopback
from openclaw_sup.gateway.controlui import add_control_ui
from openclaw_sup.gateway.port import KEEPALIVE_S, MessageHandler
from openclaw_sup.gateway.protocol import MAX_PAYLOAD
from openclaw_sup.gateway.wsframe import upgrade_problem

if TYPE_CHECKING:
    from openclaw_sup.gateway.server import GatewayServer


async def start_runner(srv: GatewayServer) -> web.AppRunner:
    runner = web.AppRunner(build_app(srv), access_log=None, handle_signals=False, shutdown_timeout=1.0,
                           keepalive_timeout=KEEPALIVE_S)
    await runner.setup()
    return runner


def build_app(srv: GatewayServer) -> web.Application:
    app = web.Application()
    probe = probe_route(srv)
    for path in probes.KINDS:
        app.router.add_get(path, probe)  # HEAD too

    async def root(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await late_upgrade(srv, request)
        return await ui.handle(request)

    app.router.add_route("GET", "/", root)
    if srv.core is not None:
        from openclaw_sup.gateway.http_api import add_http_api

        add_http_api(app, srv.core)
    ui = add_control_ui(app, srv.core, srv.core.host.gateway_config if srv.core is not None else dict,
                        lambda request: late_upgrade(srv, request, endpoint=True))
    return app


def probe_route(srv: GatewayServer) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The probes' route, with the raw transport's answer (`gateway/probes.py`)."""
    async def probe(request: web.Request) -> web.Response:
        kind = probes.kind_of(request.path)
        assert kind is not None
        status, body = probes.verdict(srv, kind, is_direct_loopback(request.remote or "", request.headers))
        return web.Response(status=status, body=body, content_type="application/json", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    return probe


async def late_upgrade(srv: GatewayServer, request: web.Request, endpoint: bool = False) -> web.StreamResponse:
    """An upgrade that reached aiohttp: one on a kept-alive HTTP connection (served through aiohttp's
    WebSocket, see `FrameworkSocket`), one at the Control UI's base path (`endpoint`: the UI says it is a
    WebSocket endpoint, as upstream's gateway serves it there), or one `gateway/port.py` doubted (refused here
    with the reason)."""
    if request.headers.get("Upgrade", "").lower() != "websocket" or srv.core is None:
        raise web.HTTPNotFound(text="Not Found")
    headers = {k.lower(): v for k, v in request.headers.items()}
    problem = upgrade_problem(request.method, "/" if endpoint else request.path_qs, headers)
    if problem:
        raise web.HTTPBadRequest(text=f"invalid WebSocket upgrade: {problem}")
    ws = web.WebSocketResponse(max_msg_size=MAX_PAYLOAD, compress=False, autoping=True)
    await ws.prepare(request)
    sock = FrameworkSocket(ws)
    await sock.serve(srv.open_socket(sock, request.remote or "", headers))
    return ws


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
        self._handler: MessageHandler | None = None

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

    def admitted(self) -> None:
        """aiohttp already counts this connection; nothing to release."""

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

    async def serve(self, handler: MessageHandler) -> None:
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
