"""The one listener of the gateway port, run inside the supervisor's event loop (aiohttp on uvloop).

Serves the unauthenticated health probes of the spec (`/health(z)`, `/ready(z)`, `/startup(z)`); other
paths answer 404 until their routes exist.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web


class BindError(RuntimeError):
    pass


class GatewayServer:
    def __init__(self, host: str, port: int, readiness: Callable[[], dict[str, Any]], version: str) -> None:
        self.host, self.port = host, port
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
        return app

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
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            url = f"ws://{self.host}:{self.port}"
            if exc.errno == errno.EADDRINUSE:
                raise BindError(f"another gateway instance is already listening on {url}") from None
            raise BindError(f"failed to bind gateway socket on {url}: {exc.strerror}") from None
        self._runner = runner

    async def stop(self) -> None:
        self.draining = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
