"""A loopback aiohttp server on its own thread, for tests that drive a real gateway (sync) against a fake
model provider that follows the provider's documented wire format."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from openclaw_sup.workers.agent.providers.http import close_pool

T = TypeVar("T")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ThreadedServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            for path, fn in routes.items():
                app.router.add_post(path, fn)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the loopback server did not start")

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def run_in_worker_loop(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` the way a worker ends its loop: the pooled provider session is closed before the loop."""
    async def main() -> T:
        try:
            return await coro
        finally:
            await close_pool()

    return asyncio.run(main())
