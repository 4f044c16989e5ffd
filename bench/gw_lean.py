"""Lean clients for the gateway bench's two wire-speed measures, so the client is not what is measured.

- `LeanWs`: one authenticated WebSocket as a bare asyncio protocol (upgrade, `connect.challenge`, `connect`
  with the shared token, `hello-ok`), then idle: it drains events and answers pings. Tens of thousands fit
  in one bench process (an aiohttp client connection costs ten times the memory and CPU), opened from
  several loopback source addresses, since one address has only ~28 000 ephemeral ports.
- `probe_loop`: HTTP/1.1 probes back to back on one keep-alive socket from a blocking thread, timing each
  request; `probe_pipelined`: many requests in one write, the answers checked in order.

Both speak to either gateway the same way; nothing here is specific to ours.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time
from typing import Any

import orjson
from gw_client import connect_params

HEAD_END = b"\r\n\r\n"
RETRIES_503 = 100
"""Retries of an upgrade refused by a pre-auth budget (5 s in all): with 200 handshakes in flight from one
address against a budget of 32, a few of 19 000 were still refused after 20."""


def _masked(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked as RFC 6455 requires of clients."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return head + mask + body


def _frame(buf: bytearray) -> tuple[int, bytes] | None:
    """(opcode, payload) of the first complete server frame in `buf` (consumed), or None."""
    if len(buf) < 2:
        return None
    opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
    at = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = struct.unpack_from("!H", buf, 2)[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = struct.unpack_from("!Q", buf, 2)[0], 10
    if len(buf) < at + n:
        return None
    payload = bytes(buf[at:at + n])
    del buf[:at + n]
    return opcode, payload


class LeanWs(asyncio.Protocol):
    """An authenticated, idle WebSocket client; `ready` resolves at hello-ok (or fails with the reason)."""

    __slots__ = ("_buf", "_upgraded", "closed", "events", "ready", "transport")

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self.closed = False
        self.events = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        host = transport.get_extra_info("peername")
        transport.write(  # type: ignore[attr-defined]
            f"GET / HTTP/1.1\r\nHost: {host[0]}:{host[1]}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._upgraded:
            end = self._buf.find(HEAD_END)
            if end < 0:
                return
            status = bytes(self._buf[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                self._fail(f"upgrade refused: {status.decode('latin-1')[:60]}")
                return
            del self._buf[:end + 4]
            self._upgraded = True
        while (frame := _frame(self._buf)) is not None:
            self._on_frame(*frame)

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x9:
            self.transport.write(_masked(0xA, payload))
            return
        if opcode == 0x8:
            self._fail("closed by the server")
            return
        if opcode != 0x1:
            return
        if self.ready.done():
            self.events += 1
            return
        msg = orjson.loads(payload)
        if msg.get("type") == "event" and msg.get("event") == "connect.challenge":
            req = {"type": "req", "id": "1", "method": "connect", "params": connect_params()}
            self.transport.write(_masked(0x1, orjson.dumps(req)))
        elif msg.get("type") == "res" and msg.get("id") == "1":
            if msg.get("ok"):
                self.ready.set_result(None)
            else:
                self._fail(f"connect refused: {(msg.get('error') or {}).get('code')}")

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            with contextlib.suppress(Exception):
                self.transport.write(_masked(0x8, struct.pack("!H", 1000)))
            self.transport.close()


async def open_lean(host: str, port: int, source: str, timeout: float) -> LeanWs:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    _t, proto = await asyncio.wait_for(
        loop.create_connection(lambda: LeanWs(ready), host, port, local_addr=(source, 0)), timeout)
    try:
        await asyncio.wait_for(asyncio.shield(ready), timeout)
    except BaseException:
        proto.close()
        raise
    return proto


# ==================================================================================== HTTP probes


_heads: dict[bytes, tuple[int, dict[str, str], bool]] = {}
"""Response heads already parsed: a server answers a probe with the same head all second long, and the
client's own parsing should not be what a probe measure measures."""


def _parse_head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    head = raw.decode("latin-1").split("\r\n")
    fields = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(head[0].split(" ", 2)[1]), fields, fields.get("connection", "").lower() == "close"


def _read_response(sock: socket.socket, buf: bytearray, head_only: bool) -> tuple[int, bytes, bool]:
    """(status, body, server closes) of one HTTP/1.1 response; extra bytes stay in `buf`."""
    while (end := buf.find(HEAD_END)) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response head")
        buf += chunk
    raw = bytes(buf[:end])
    del buf[:end + 4]
    known = _heads.get(raw)
    if known is None:
        known = _parse_head(raw)
        if len(_heads) > 64:
            _heads.clear()
        _heads[raw] = known
    status, fields, closes = known
    if head_only or status in (204, 304):
        return status, b"", closes
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                buf += sock.recv(65536)
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            while len(buf) < eol + 2 + size + 2:
                buf += sock.recv(65536)
            body += buf[eol + 2:eol + 2 + size]
            del buf[:eol + 2 + size + 2]
            if size == 0:
                return status, bytes(body), closes
    length = int(fields.get("content-length", "0"))
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a response body")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, body, closes


def _request(method: str, path: str, port: int) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ocsb-probe\r\nAccept: */*\r\n\r\n"
            .encode())


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def probe_loop(port: int, path: str, seconds: float, method: str = "GET") -> dict[str, Any]:
    """`method path` back to back on one keep-alive connection for `seconds` (blocking: run it in a thread).

    A response that says `Connection: close` (or a closed socket) costs a reconnect, which is counted."""
    req = _request(method, path, port)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    reconnects = 0
    sock = _connect(port)
    buf = bytearray()
    try:
        for _ in range(50):  # warm-up
            sock.sendall(req)
            _read_response(sock, buf, method == "HEAD")
        t_all = time.perf_counter()
        t_end = t_all + seconds
        perf = time.perf_counter
        while True:
            t = perf()
            if t >= t_end:
                break
            sock.sendall(req)
            status, _body, closes = _read_response(sock, buf, method == "HEAD")
            lat.append((perf() - t) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if closes:
                reconnects += 1
                sock.close()
                sock, buf = _connect(port), bytearray()
        wall = perf() - t_all
    finally:
        sock.close()
    return {"latencyMs": lat, "wallS": wall, "perS": len(lat) / wall, "statuses": statuses, "reconnects": reconnects,
            "method": method, "path": path}


def probe_pipelined(port: int, paths: list[str], rounds: int) -> dict[str, Any]:
    """GET and HEAD of every path written at once, `rounds` times on one connection; every answer is read back
    in order and checked: the same status every round, a JSON body for GET, none for HEAD, HEAD answered
    as GET is, and the connection kept open."""
    reqs = [(m, p) for p in paths for m in ("GET", "HEAD")]
    batch = b"".join(_request(m, p, port) for m, p in reqs)
    sock = _connect(port)
    buf = bytearray()
    problems: list[str] = []
    answers = 0
    seen: dict[str, int] = {}
    t_all = time.perf_counter()
    try:
        for _ in range(rounds):
            sock.sendall(batch)
            for m, p in reqs:
                status, body, closes = _read_response(sock, buf, m == "HEAD")
                answers += 1
                if seen.setdefault(f"{m} {p}", status) != status:
                    problems.append(f"{m} {p}: status {status}, earlier {seen[f'{m} {p}']}")
                if m == "GET" and not body.startswith(b"{"):
                    problems.append(f"GET {p}: body {body[:40]!r}")
                if closes:
                    problems.append(f"{m} {p}: the server closed a pipelined connection")
                    raise ConnectionError("closed")
        wall = time.perf_counter() - t_all
    except (ConnectionError, OSError, ValueError) as exc:
        problems.append(f"after {answers} answers: {type(exc).__name__}: {exc}")
        wall = time.perf_counter() - t_all
    finally:
        sock.close()
    problems += [f"HEAD {p} answered {seen[f'HEAD {p}']} where GET answered {seen[f'GET {p}']}" for p in paths
                 if f"HEAD {p}" in seen and seen[f"HEAD {p}"] != seen.get(f"GET {p}")]
    return {"answers": answers, "asked": rounds * len(reqs), "perS": answers / wall if wall else 0.0,
            "statusByRequest": seen, "problems": problems[:10]}


# ==================================================================================== idle connections


def source_addresses(n: int, per_source: int = 20_000) -> list[str]:
    """Loopback source addresses enough for n connections (127.0.0.1 first, then 127.0.0.2, ...)."""
    return [f"127.0.0.{i}" for i in range(1, 2 + (n - 1) // per_source)]


async def hold_lean(port: int, n: int, hold_s: float, concurrency: int, sample: Any, cpu: Any) -> dict[str, Any]:
    """Open n authenticated idle connections with `LeanWs` (at most `concurrency` handshakes at once, spread
    over `source_addresses(n)`), hold them `hold_s`, close them.

    `sample()` gives the server tree's memory (before opening, at the end of the hold); `cpu()` gives CPU
    seconds {"tree": .., "supervisor": ..}, read around the opening and around the hold, so the table can say
    what opening costs and what holding costs the supervisor. An upgrade refused with 503 (a pre-auth admission
    limit) is retried, 50 ms apart, up to RETRIES_503 times, and counted.
    """
    sources = source_addresses(n)
    before = sample()
    conns: list[LeanWs] = []
    errors: dict[str, int] = {}
    retries = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal retries
        async with sem:
            for attempt in range(RETRIES_503 + 1):
                try:
                    conns.append(await open_lean("127.0.0.1", port, sources[i % len(sources)], 30))
                    return
                except (ConnectionError, OSError, TimeoutError) as exc:
                    text = str(exc)
                    if " 503 " in text and attempt < RETRIES_503:
                        retries += 1
                        await asyncio.sleep(0.05)
                        continue
                    key = f"{type(exc).__name__}: {text[:80]}"
                    errors[key] = errors.get(key, 0) + 1
                    return

    c_open, b_open, t = cpu(), time.process_time(), time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
        open_s = time.perf_counter() - t
        c_held, b_held = cpu(), time.process_time()
        open_cpu = {"serverCpuS": c_held["tree"] - c_open["tree"], "clientCpuS": b_held - b_open}
        events0 = sum(c.events for c in conns)
        t_hold = time.perf_counter()
        await asyncio.sleep(hold_s)
        hold_wall = time.perf_counter() - t_hold
        c_end = cpu()
        held = sum(1 for c in conns if not c.closed)
        after = sample()
    finally:
        t_close = time.perf_counter()
        for c in conns:
            c.close()
        await asyncio.sleep(0)
        close_s = time.perf_counter() - t_close
    return {
        "requested": n, "opened": len(conns), "held": held, "openS": open_s, "openCpu": open_cpu,
        "closeS": close_s, "errors": errors, "retried503": retries, "concurrency": concurrency,
        "sources": sources, "before": before, "after": after, "holdS": hold_wall,
        "holdCpuPct": {k: 100 * (c_end[k] - c_held[k]) / hold_wall for k in ("tree", "supervisor")},
        "eventsDuringHold": sum(c.events for c in conns) - events0,
    }
