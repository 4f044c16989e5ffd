"""The Chrome DevTools Protocol, as little of it as the worker needs: the HTTP endpoints (`/json/version`,
`/json/list`, `/json/new`) and one-shot websocket sessions that send commands and wait for their answers."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import orjson

from openclaw_sup.workers.lazy import LazyModule

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = LazyModule("aiohttp")  # imported on the first HTTP call


class CdpError(Exception):
    """A CDP endpoint did not answer, or answered with an error."""


def http_base(cdp_url: str) -> str:
    """`ws://host:port/devtools/browser/...` or `http://host:port` -> `http://host:port`."""
    u = urlsplit(cdp_url)
    scheme = {"ws": "http", "wss": "https"}.get(u.scheme, u.scheme)
    return urlunsplit((scheme, u.netloc, "", "", ""))


class CdpClient:
    """One aiohttp session for every CDP endpoint the worker talks to."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _json(self, method: str, url: str, timeout: float) -> Any:
        try:
            async with self.session.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status != 200:
                    raise CdpError(f"{method} {url}: HTTP {resp.status}")
                return orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, OSError) as exc:
            raise CdpError(f"{method} {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None

    async def version(self, cdp_url: str, timeout: float = 1.0) -> dict[str, Any]:
        """`/json/version`: Browser, Protocol-Version, webSocketDebuggerUrl."""
        if urlsplit(cdp_url).scheme in ("ws", "wss") and "/devtools/" in cdp_url:
            await self.command(cdp_url, "Browser.getVersion", timeout=timeout)
            return {"webSocketDebuggerUrl": cdp_url}
        data = await self._json("GET", f"{http_base(cdp_url)}/json/version", timeout)
        if not isinstance(data, dict) or not data.get("webSocketDebuggerUrl"):
            raise CdpError(f"{http_base(cdp_url)}/json/version has no webSocketDebuggerUrl")
        return data

    async def targets(self, cdp_url: str, timeout: float = 2.0) -> list[dict[str, Any]]:
        data = await self._json("GET", f"{http_base(cdp_url)}/json/list", timeout)
        return [t for t in data if isinstance(t, dict)] if isinstance(data, list) else []

    async def new_tab(self, cdp_url: str, url: str, timeout: float = 5.0) -> dict[str, Any]:
        data = await self._json("PUT", f"{http_base(cdp_url)}/json/new?{quote(url, safe='')}", timeout)
        if not isinstance(data, dict) or "id" not in data:
            raise CdpError("/json/new did not return a target")
        return data

    async def command(self, ws_url: str, method: str, params: dict[str, Any] | None = None, *,
                      timeout: float = 5.0, wait_event: str | None = None) -> dict[str, Any]:
        """Open a websocket, send one command, return its result (after `wait_event` too, when given)."""
        return (await self.commands(ws_url, [(method, params or {})], timeout=timeout, wait_event=wait_event))[-1]

    async def commands(self, ws_url: str, calls: list[tuple[str, dict[str, Any]]], *, timeout: float = 5.0,
                       wait_event: str | None = None) -> list[dict[str, Any]]:
        ids = itertools.count(1)
        results: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                async with self.session.ws_connect(ws_url, max_msg_size=64 << 20, autoping=True) as ws:
                    seen_event = wait_event is None
                    for method, params in calls:
                        cid = next(ids)
                        await ws.send_str(orjson.dumps({"id": cid, "method": method, "params": params}).decode())
                        while True:
                            msg = await ws.receive()
                            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                            aiohttp.WSMsgType.ERROR):
                                raise CdpError(f"websocket closed during {method}")
                            data = orjson.loads(msg.data)
                            if data.get("method") == wait_event:
                                seen_event = True
                            if data.get("id") == cid:
                                if "error" in data:
                                    err = data["error"]
                                    raise CdpError(f"{method}: {err.get('message', err)}")
                                results.append(data.get("result") or {})
                                break
                    while not seen_event:
                        msg = await ws.receive()
                        if msg.type != aiohttp.WSMsgType.TEXT and msg.type != aiohttp.WSMsgType.BINARY:
                            raise CdpError(f"websocket closed while waiting for {wait_event}")
                        seen_event = orjson.loads(msg.data).get("method") == wait_event
        except TimeoutError:
            raise CdpError(f"no answer from {ws_url} within {timeout:g}s") from None
        except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            raise CdpError(f"{ws_url}: {type(exc).__name__}: {exc}") from None
        return results
