"""The one listener of the gateway port, run inside the supervisor's event loop (aiohttp on uvloop).

`GET /` with an Upgrade is the WebSocket protocol; the unauthenticated health probes of the spec
(`/health(z)`, `/ready(z)`, `/startup(z)`) answer on the same port; other paths answer 404 until their
routes exist. Binding retries briefly on EADDRINUSE (a previous instance may still be closing), as upstream.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from openclaw_sup.gateway.protocol import MAX_PAYLOAD

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

BIND_RETRIES = 4
BIND_RETRY_S = 0.5


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
        self._runner: web.AppRunner | None = None

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
        if request.headers.get("Upgrade", "").lower() != "websocket" or self.core is None:
            raise web.HTTPNotFound(text="Not Found")
        from openclaw_sup.gateway.connection import Connection

        ws = web.WebSocketResponse(max_msg_size=MAX_PAYLOAD, compress=False, autoping=True)
        await ws.prepare(request)
        await Connection(ws, request, self.core).run()
        return ws

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
        url = f"ws://{self.host}:{self.port}"
        for attempt in range(BIND_RETRIES + 1):
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True, backlog=1024)
            try:
                await site.start()
                break
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and attempt < BIND_RETRIES:
                    await asyncio.sleep(BIND_RETRY_S)
                    continue
                await runner.cleanup()
                if exc.errno == errno.EADDRINUSE:
                    raise BindError(f"another gateway instance is already listening on {url}") from None
                raise BindError(f"failed to bind gateway socket on {url}: {exc.strerror}") from None
        self._runner = runner

    async def stop(self) -> None:
        self.draining = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
