"""Connected clients, and what is pushed to them: events with per-socket `seq`, ticks, presence and health.

Events go through a bounded queue per socket; a slow consumer loses events (best effort, as the docs say)
instead of growing the supervisor's memory, and one that stays behind is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from openclaw_sup.gateway.protocol import (
    CLOSE_POLICY,
    EVENTS_SCOPE,
    NO_PRESENCE_MODES,
    TICK_INTERVAL_MS,
    UPSTREAM_VERSION,
)

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.port import WireSocket

EVENT_QUEUE = 1024
SLOW_CLOSE_DROPS = 4096
SPREAD_BATCH = 500
"""Sockets a spread broadcast writes to between two turns of the loop (~5 ms of writes)."""
PRESENCE_TTL_MS = 5 * 60 * 1000
PRESENCE_MAX = 200


def now_ms() -> int:
    return int(time.time() * 1000)


def primary_ipv4() -> str | None:
    """The address this host's default route leaves from (a UDP connect sends nothing), as upstream shows."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        return str(s.getsockname()[0])
    return None


def self_presence(instance_id: str) -> dict[str, Any]:
    """The gateway's own presence entry, in upstream's shape and with upstream's version."""
    host, ip, uname = socket.gethostname(), primary_ipv4(), os.uname()
    where = f"{host} ({ip})" if ip else host
    entry: dict[str, Any] = {"host": host, "version": UPSTREAM_VERSION, "platform": f"{sys.platform} {uname.release}",
                             "deviceFamily": uname.sysname, "mode": "gateway", "reason": "self",
                             "instanceId": instance_id,
                             "text": f"Gateway: {where} · app {UPSTREAM_VERSION} · mode gateway · reason self",
                             "ts": now_ms()}
    if ip:
        entry["ip"] = ip
    return entry


class Hub:
    def __init__(self, tick_interval_ms: int = TICK_INTERVAL_MS) -> None:
        self.connections: set[Connection] = set()
        self.tick_interval_ms = tick_interval_ms
        self.state_version = {"presence": 1, "health": 1}
        self.instance_id = str(uuid.uuid4())
        self.self_presence = self_presence(self.instance_id)
        self.presence: dict[str, dict[str, Any]] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self.health_provider: Callable[[], dict[str, Any]] | None = None
        self.closing = False
        self.readers = 0  # sockets allowed to see worker events (`operator.read`)
        self.on_readers: Callable[[bool], None] | None = None  # told when the first comes and the last goes

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._tick_task = asyncio.get_running_loop().create_task(self._ticks())

    def reopen(self) -> None:
        """After `shutdown` for a listener move: broadcasting and ticks resume for the clients that connect next."""
        self.closing = False
        self.start()

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_ms / 1000)
            await self.broadcast_spread("tick", {"ts": now_ms()})

    async def shutdown(self, reason: str, restart_expected_ms: int | None = None) -> None:
        """`shutdown` to everyone, then close 1012, as upstream does on stop and restart."""
        self.closing = True
        if self._tick_task is not None:
            self._tick_task.cancel()
        payload: dict[str, Any] = {"reason": reason}
        if restart_expected_ms is not None:
            payload["restartExpectedMs"] = restart_expected_ms
        conns = list(self.connections)
        await asyncio.gather(*(c.close_with_shutdown(payload) for c in conns), return_exceptions=True)

    def retire(self) -> list[Connection]:
        """Mark every current client as leaving (an in-place restart): what it sends from now on is refused as
        retryable; what it already sent is answered. Returns them for `close_retired`."""
        conns = list(self.connections)
        for conn in conns:
            conn.retiring = True
        return conns

    async def close_retired(self, conns: list[Connection], reason: str, restart_expected_ms: int) -> None:
        """`shutdown` then 1012 to retired clients; broadcasting and ticks go on for everyone else."""
        payload = {"reason": reason, "restartExpectedMs": restart_expected_ms}
        await asyncio.gather(*(c.close_with_shutdown(payload) for c in conns), return_exceptions=True)

    # -- connections ---------------------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        if conn not in self.connections and conn.has_scope(EVENTS_SCOPE):
            self._count_reader(1)
        self.connections.add(conn)
        if conn.client_mode not in NO_PRESENCE_MODES:
            self.presence[conn.presence_key] = conn.presence_entry("connect")
            self._presence_changed()

    def remove(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            if conn.has_scope(EVENTS_SCOPE):
                self._count_reader(-1)
        if self.presence.pop(conn.presence_key, None) is not None:
            self._presence_changed()

    def _count_reader(self, step: int) -> None:
        """The workers send their events only while a socket receives them: told at the first and the last."""
        self.readers += step
        if self.on_readers is not None and self.readers == (1 if step > 0 else 0):
            self.on_readers(self.readers > 0)

    def beacon(self, text: str, params: dict[str, Any]) -> None:
        """`system-event`: a client's presence line, keyed like upstream's (device, instance, host, else text)."""
        entry: dict[str, Any] = {"text": text, "ts": now_ms()}
        for key in ("deviceId", "instanceId", "host", "ip", "mode", "version", "platform", "deviceFamily",
                    "modelIdentifier", "reason"):
            if isinstance(params.get(key), str) and params[key]:
                entry[key] = params[key]
        for key in ("roles", "scopes", "tags"):
            if isinstance(params.get(key), list) and all(isinstance(v, str) for v in params[key]):
                entry[key] = params[key]
        if isinstance(params.get("lastInputSeconds"), (int, float)) and not isinstance(params["lastInputSeconds"],
                                                                                       bool):
            entry["lastInputSeconds"] = params["lastInputSeconds"]
        key = entry.get("deviceId") or entry.get("instanceId") or entry.get("host") or f"text:{text}"
        self.presence[key] = {**self.presence.get(key, {}), **entry}
        self._presence_changed()

    def presence_list(self) -> list[dict[str, Any]]:
        cutoff = now_ms() - PRESENCE_TTL_MS
        for key in [k for k, v in self.presence.items() if v["ts"] < cutoff]:
            del self.presence[key]
        entries = sorted(self.presence.values(), key=lambda e: e["ts"], reverse=True)[:PRESENCE_MAX - 1]
        return [self.self_presence, *entries]

    def _presence_changed(self) -> None:
        self.state_version["presence"] += 1
        self.broadcast("presence", {"presence": self.presence_list()}, with_state=True)

    def health_changed(self, snapshot: dict[str, Any]) -> None:
        self.state_version["health"] += 1
        self.broadcast("health", snapshot, with_state=True)

    # -- events --------------------------------------------------------------------------------------

    def broadcast(self, event: str, payload: Any, *, scope: str | None = None, with_state: bool = False,
                  only: Callable[[Connection], bool] | None = None) -> int:
        """Queue an event for every socket allowed to see it; returns how many got it."""
        if (self.closing and event != "shutdown") or not self.connections:  # no socket: nothing to encode
            return 0
        head, tail = encode_event(event, payload, dict(self.state_version) if with_state else None)
        return _push(list(self.connections), head, tail, scope, only)

    async def broadcast_spread(self, event: str, payload: Any) -> int:
        """`broadcast` to every socket in slices of `SPREAD_BATCH`, yielding to the loop between them: a `tick`
        to tens of thousands of idle clients is a write each, and must not hold up requests meanwhile."""
        head, tail = encode_event(event, payload, None)
        conns = list(self.connections)
        n = 0
        for at in range(0, len(conns), SPREAD_BATCH):
            if at:
                await asyncio.sleep(0)
                if self.closing:
                    break
            n += _push(conns[at:at + SPREAD_BATCH], head, tail, None, None)
        return n


def _push(conns: list[Connection], head: bytes, tail: bytes, scope: str | None,
          only: Callable[[Connection], bool] | None) -> int:
    n = 0
    for conn in conns:
        if scope is not None and not conn.has_scope(scope):
            continue
        if only is not None and not only(conn):
            continue
        if conn.push_encoded(head, tail):
            n += 1
    return n


def encode_event(event: str, payload: Any, state: dict[str, int] | None) -> tuple[bytes, bytes]:
    """An event frame as the bytes before and after its per-socket `seq`: a broadcast (a `tick` to every
    client) is encoded once, not once per socket. The bytes are those of the frame
    `{"type", "event", "payload", "seq"[, "stateVersion"]}` encoded whole."""
    head = orjson.dumps({"type": "event", "event": event, "payload": payload})[:-1] + b',"seq":'
    tail = b',"stateVersion":' + orjson.dumps(state) + b"}" if state is not None else b"}"
    return head, tail


class EventQueue:
    """A socket's outgoing events: written at once while the peer keeps up, queued (bounded) while it does
    not, so ten thousand idle sockets cost no task and no queue."""

    __slots__ = ("dropped", "frames", "sock")

    def __init__(self, sock: WireSocket) -> None:
        self.sock = sock
        self.frames: deque[bytes] | None = None
        self.dropped = 0

    def put(self, data: bytes) -> bool:
        if self.frames is None and self.sock.writable:
            return self.sock.send_text(data)
        if self.frames is None:
            self.frames = deque()
        if len(self.frames) >= EVENT_QUEUE:
            self.dropped += 1
            if self.dropped == SLOW_CLOSE_DROPS:
                self.sock.close(CLOSE_POLICY, "slow consumer")
            return False
        self.frames.append(data)
        return True

    def flush_now(self) -> None:
        """Write queued events while the peer reads them (called when the transport drains)."""
        frames = self.frames
        while frames and self.sock.writable:
            self.sock.send_text(frames.popleft())
        if not frames:
            self.frames = None

    async def flush(self, timeout: float) -> None:
        """Give a backlog up to `timeout` to drain (before a shutdown close)."""
        deadline = time.monotonic() + timeout
        while self.frames and not self.sock.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def clear(self) -> None:
        self.frames = None
