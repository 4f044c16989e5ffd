"""The gateway benches' asyncio client (aiohttp): one code path drives both gateways, so any difference is theirs.

It speaks just what the benches need of the protocol: wait for `connect.challenge`, send `connect` as a
device-less `gateway-client`/`backend` operator with the shared token (the identity the real CLI's `health`
uses, which keeps its scopes on loopback), then `req`/`res` by id. Event frames (`tick`, `health`,
`presence`...) are counted and skipped. Frames are (de)serialised with orjson so the client's own cost stays
small beside the servers'; every figure still includes it, the same for both gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

TOKEN = "benchtoken"


def connect_params(token: str = TOKEN) -> dict[str, Any]:
    """The `connect` params of the brief: protocol 4, backend gateway-client, operator.read, shared token."""
    return {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "gateway-client", "version": "bench", "platform": "linux", "mode": "backend"},
        "role": "operator",
        "scopes": ["operator.read"],
        "auth": {"token": token},
    }


class RpcFailed(Exception):
    """The gateway answered `res ok:false`, closed, or sent something unexpected; `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class Conn:
    """One authenticated WebSocket: `call` sends a request and waits for the `res` with its id."""

    ws: aiohttp.ClientWebSocketResponse
    hello: dict[str, Any] = field(default_factory=dict)
    events: int = 0
    next_id: int = 1

    async def _frame(self, timeout: float | None) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            frame: dict[str, Any] = orjson.loads(msg.data)
            return frame
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            code = self.ws.close_code
            raise RpcFailed(f"close {code}", str(msg.extra or "closed"))
        raise RpcFailed("ws", f"unexpected message type {msg.type!r}")

    async def _result(self, rid: str, timeout: float | None) -> dict[str, Any]:
        while True:
            frame = await self._frame(timeout)
            if frame.get("type") == "res" and frame.get("id") == rid:
                if not frame.get("ok"):
                    err = frame.get("error") or {}
                    raise RpcFailed(str(err.get("code", "error")), str(err.get("message", "")))
                payload: dict[str, Any] = frame.get("payload") or {}
                return payload
            self.events += 1

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = 10.0) -> Any:
        self.next_id += 1
        rid = str(self.next_id)
        req: dict[str, Any] = {"type": "req", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        await self.ws.send_str(orjson.dumps(req).decode())
        return await self._result(rid, timeout)

    async def drain(self) -> None:
        """Read (and drop) events until the socket closes, answering pings: what an idle client does."""
        with contextlib.suppress(Exception):
            while not self.ws.closed:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    return
                self.events += 1

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


async def open_conn(session: aiohttp.ClientSession, url: str, timeout: float = 10.0,
                    params: dict[str, Any] | None = None) -> Conn:
    """TCP + WebSocket upgrade + challenge + connect -> hello-ok, or RpcFailed/OSError saying why not
    (`params`: other connect params than the brief's read-only backend client)."""
    ws = await session.ws_connect(
        url, autoping=True, compress=0, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
    )
    conn = Conn(ws)
    try:
        first = await conn._frame(timeout)
        if first.get("type") != "event" or first.get("event") != "connect.challenge":
            raise RpcFailed("protocol", f"first frame was not connect.challenge: {str(first)[:120]}")
        req = {"type": "req", "id": "1", "method": "connect", "params": params or connect_params()}
        await ws.send_str(orjson.dumps(req).decode())
        hello = await conn._result("1", timeout)
        if hello.get("type") != "hello-ok":
            raise RpcFailed("protocol", f"connect answered {str(hello)[:120]}")
        conn.hello = hello
        return conn
    except BaseException:
        await conn.close()
        raise


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    """A session without a connection cap (0) unless asked: the benches decide concurrency themselves."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False))


# ============================================================================ measures (all times in ms)


async def handshakes(url: str, n: int) -> tuple[list[float], list[str]]:
    """n sequential connects, each timed from before the TCP connect to hello-ok; closed untimed."""
    times: list[float] = []
    errors: list[str] = []
    async with new_session() as session:
        for _ in range(n):
            t = time.perf_counter()
            try:
                conn = await open_conn(session, url)
            except (RpcFailed, OSError, aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            times.append((time.perf_counter() - t) * 1000)
            await conn.close()
    return times, errors


async def sequential(url: str, n: int, method: str = "health") -> dict[str, Any]:
    """n requests back to back on one connection: per-request latency and the overall rate."""
    async with new_session() as session:
        conn = await open_conn(session, url)
        try:
            for _ in range(min(20, n)):  # warm-up, not counted
                await conn.call(method)
            lat: list[float] = []
            t_all = time.perf_counter()
            for _ in range(n):
                t = time.perf_counter()
                await conn.call(method)
                lat.append((time.perf_counter() - t) * 1000)
            wall = time.perf_counter() - t_all
        finally:
            await conn.close()
    return {"latencyMs": lat, "wallS": wall, "perS": n / wall, "events": conn.events}


async def parallel(url: str, conns: int, per_conn: int, method: str = "health") -> dict[str, Any]:
    """`conns` connections, opened first (untimed), then each sends `per_conn` requests in turn, all at once."""
    async with new_session() as session:
        opened = [await open_conn(session, url) for _ in range(conns)]
        lat: list[float] = []

        async def one(conn: Conn, k: int) -> None:
            for _ in range(k):
                t = time.perf_counter()
                await conn.call(method)
                lat.append((time.perf_counter() - t) * 1000)

        try:
            await asyncio.gather(*(one(c, 5) for c in opened))  # warm-up, not counted
            lat.clear()
            t_all = time.perf_counter()
            await asyncio.gather(*(one(c, per_conn) for c in opened))
            wall = time.perf_counter() - t_all
        finally:
            await asyncio.gather(*(c.close() for c in opened))
    total = conns * per_conn
    return {"latencyMs": lat, "wallS": wall, "perS": total / wall, "requests": total}


async def hold_idle(
    url: str,
    n: int,
    hold_s: float,
    concurrency: int,
    sample: Callable[[], Awaitable[dict[str, Any]] | dict[str, Any]],
    server_cpu: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Open n authenticated connections (at most `concurrency` handshakes at once), hold them, close them.

    `sample()` is called before opening and at the end of the hold (the server tree's memory); each open
    connection runs a reader that drains events, as a live client would. Held = still open after the hold.
    An upgrade refused with 503 (a server's pre-auth admission limit) is retried up to 20 times, 50 ms
    apart, and counted: the hold measures what the server keeps, not how it paces admissions.
    """
    before = await _maybe(sample())
    errors: dict[str, int] = {}
    conns: list[Conn] = []
    readers: list[asyncio.Task[None]] = []
    sem = asyncio.Semaphore(concurrency)
    session = new_session()

    retries = 0

    async def one() -> None:
        nonlocal retries
        async with sem:
            for attempt in range(21):
                try:
                    conn = await open_conn(session, url, timeout=30)
                    break
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status == 503 and attempt < 20:
                        retries += 1
                        await asyncio.sleep(0.05)
                        continue
                    key = f"{type(exc).__name__}: {exc.status}"
                except (RpcFailed, OSError, aiohttp.ClientError, TimeoutError) as exc:
                    key = f"{type(exc).__name__}: {str(exc)[:80]}"
                errors[key] = errors.get(key, 0) + 1
                return
            conns.append(conn)
            readers.append(asyncio.get_running_loop().create_task(conn.drain()))

    s0 = server_cpu() if server_cpu else 0.0
    c0 = time.process_time()
    t = time.perf_counter()
    try:
        await asyncio.gather(*(one() for _ in range(n)))
        open_s = time.perf_counter() - t
        open_cpu = {
            "serverCpuS": (server_cpu() - s0) if server_cpu else None,
            "clientCpuS": time.process_time() - c0,
        }
        await asyncio.sleep(hold_s)
        held = sum(1 for c in conns if not c.ws.closed)
        probe_ok = 0
        probe = conns[-1] if conns else None
        if probe is not None and not probe.ws.closed:
            # The drain task owns that socket's reads; a fresh connection proves the server still answers.
            with contextlib.suppress(Exception):
                c = await open_conn(session, url)
                await c.call("health")
                await c.close()
                probe_ok = 1
        after = await _maybe(sample())
    finally:
        t_close = time.perf_counter()
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        close_s = time.perf_counter() - t_close
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await session.close()
    return {
        "requested": n,
        "opened": len(conns),
        "held": held,
        "openS": open_s,
        "openCpu": open_cpu,
        "closeS": close_s,
        "errors": errors,
        "retried503": retries,
        "concurrency": concurrency,
        "before": before,
        "after": after,
        "healthAfterHold": bool(probe_ok),
        "eventsReceived": sum(c.events for c in conns),
    }


async def _maybe(v: Awaitable[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(v, dict):
        return v
    return await v


async def healthz(base_url: str, seconds: float) -> dict[str, Any]:
    """GET /healthz back to back on one keep-alive connection for `seconds`."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        async with session.get(base_url + "/healthz") as r:  # warm-up, opens the connection
            await r.read()
        t_end = time.perf_counter() + seconds
        t_all = time.perf_counter()
        while True:
            t = time.perf_counter()
            if t >= t_end:
                break
            async with session.get(base_url + "/healthz") as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            lat.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - t_all
    return {"latencyMs": lat, "wallS": wall, "perS": len(lat) / wall, "statuses": statuses}
