"""JSON over HTTP for the channel adapters that speak a REST API (Matrix, Discord, Slack): one aiohttp session per
adapter, a timeout per call, and the answer as (status, headers, parsed body) so each adapter reads its own
network's error shape. The fork server imports aiohttp before forking the first worker of these kinds
(`SHARED_IMPORTS` in workers/channels/kinds.py), so every such worker shares its pages.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from openclaw_sup.workers.lazy import LazyModule

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = LazyModule("aiohttp")


class HttpJson:
    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base.rstrip("/")
        self.headers = headers or {}
        self.session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self.session

    async def call(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                   form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                   timeout: float = 30.0) -> tuple[int, dict[str, str], Any]:
        """One request; network errors (aiohttp.ClientError, TimeoutError) propagate to the caller."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base}{path}"
        hdrs = {**self.headers, **(headers or {})}
        data: Any = None
        if body is not None:
            data = orjson.dumps(body)
            hdrs["Content-Type"] = "application/json; charset=utf-8"
        elif form is not None:
            data = form
        async with self.client().request(method, url, data=data, params=params, headers=hdrs,
                                           timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            raw = await r.read()
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = {"_raw": raw[:200].decode("utf-8", "replace")}
            return r.status, {k.lower(): v for k, v in r.headers.items()}, parsed

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


def private_host(url: str) -> bool:
    """True when the URL's host is loopback, link-local or a private range (resolved names included)."""
    host = urlsplit(url).hostname or ""
    try:
        addrs = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addrs = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except OSError:
            return host in ("localhost",) or host.endswith((".local", ".internal", ".lan"))
    return any(a.is_private or a.is_loopback or a.is_link_local for a in addrs)
