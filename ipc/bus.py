"""The ZeroMQ bus: a ROUTER in the supervisor, one DEALER per worker (identity = worker name).

Both ends plug a plain (non-asyncio) zmq socket into the running event loop through its FD, so neither side
pays for zmq.asyncio. The FD is edge-triggered: every wake-up drains until EAGAIN, a bounded batch at a
time so one flooding peer cannot starve the loop, and every send re-checks for input it may have masked.
Queues are bounded by high-water marks; a send that would block is dropped and counted, never buffered.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from openclaw_sup.ipc.envelope import MAX_MESSAGE_BYTES, encode

DRAIN_BATCH = 512


class _Pump:
    """Drain a zmq socket from the event loop, in bounded batches."""

    def __init__(self, sock: zmq.Socket, on_frames: Callable[[list[bytes]], None]) -> None:
        self.sock = sock
        self._on_frames = on_frames
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._closed = False
        self._loop.add_reader(sock.getsockopt(zmq.FD), self._wake)
        self._wake()

    def _wake(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        sock = self.sock
        for _ in range(DRAIN_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                if self._closed:
                    return
                raise
            self._on_frames(frames)
            if self._closed:
                return
        self._wake()

    def recheck(self) -> None:
        """After a send the FD may have swallowed a POLLIN edge; look again."""
        if not self._closed and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._wake()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.sock.getsockopt(zmq.FD))


class RouterBus:
    """The supervisor's end. `on_message(identity, payload)` gets raw bytes; decoding is the caller's."""

    def __init__(
        self,
        endpoint: str,
        on_message: Callable[[bytes, bytes], None],
        on_bad_frames: Callable[[list[bytes]], None],
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        rcv_hwm: int = 10_000,
        snd_hwm: int = 1_000,
    ) -> None:
        self.endpoint = endpoint
        self.ctx = zmq.Context(io_threads=1)
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.RCVHWM, rcv_hwm)
        sock.setsockopt(zmq.SNDHWM, snd_hwm)
        # A peer that sends a larger frame is disconnected by libzmq before the frame is buffered.
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes + 1024)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://"):], 0o600)  # the owner only, as the control socket
        self.sock = sock
        self.dropped = 0
        self.received = 0
        self._on_message = on_message
        self._on_bad = on_bad_frames
        self._pump = _Pump(sock, self._frames)

    def _frames(self, frames: list[bytes]) -> None:
        self.received += 1
        if len(frames) == 2:
            self._on_message(frames[0], frames[1])
        else:
            self._on_bad(frames)

    def send(self, identity: bytes, msg: dict[str, Any]) -> bool:
        """Queue `msg` for a worker; False (and counted) when it is gone or its queue is full."""
        try:
            self.sock.send_multipart((identity, encode(msg)), zmq.NOBLOCK)
            ok = True
        except (zmq.Again, zmq.ZMQError):
            self.dropped += 1
            ok = False
        self._pump.recheck()
        return ok

    def close(self) -> None:
        self._pump.close()
        self.sock.close(0)
        self.ctx.term()


DROPPABLE = frozenset({"event", "hb"})
"""Kinds a worker may lose under back-pressure; logs, replies and readiness wait in a bounded backlog."""


class DealerLink:
    """A worker's end, opened after the fork in a fresh context."""

    def __init__(
        self,
        endpoint: str,
        identity: str,
        on_message: Callable[[bytes], None],
        *,
        snd_hwm: int = 10_000,
        linger_ms: int = 2_000,
        backlog: int = 20_000,
        opened: tuple[zmq.Context, zmq.Socket] | None = None,
    ) -> None:
        """`opened` is a context and DEALER socket made by `open_socket` ahead of time (identity not set yet)."""
        self.ctx, sock = opened or self.open_socket(snd_hwm, linger_ms)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.connect(endpoint)
        self.sock = sock
        self.linger_ms = linger_ms
        self.dropped = 0
        self.sent = 0
        self._on_message = on_message
        self._pump: _Pump | None = None
        self._backlog: deque[bytes] = deque()
        self._backlog_max = backlog
        self._flush_timer: asyncio.TimerHandle | None = None

    @staticmethod
    def open_socket(snd_hwm: int = 10_000, linger_ms: int = 2_000) -> tuple[zmq.Context, zmq.Socket]:
        """A fresh context and an unconnected DEALER: making the socket starts the context's I/O threads."""
        ctx = zmq.Context(io_threads=1)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, snd_hwm)
        sock.setsockopt(zmq.LINGER, linger_ms)
        return ctx, sock

    def attach(self) -> None:
        """Start receiving; needs the running loop."""
        self._pump = _Pump(self.sock, self._frames)

    def _frames(self, frames: list[bytes]) -> None:
        self._on_message(frames[-1])

    def send(self, msg: dict[str, Any]) -> bool:
        """Send now; under back-pressure drop an event or heartbeat, keep anything else for later."""
        data = encode(msg)
        if self._backlog:
            return self._keep(msg, data)
        try:
            self.sock.send(data, zmq.NOBLOCK)
            self.sent += 1
            ok = True
        except zmq.Again:
            ok = self._keep(msg, data)
        if self._pump is not None:
            self._pump.recheck()
        return ok

    def _keep(self, msg: dict[str, Any], data: bytes) -> bool:
        if msg.get("kind") in DROPPABLE or len(self._backlog) >= self._backlog_max:
            self.dropped += 1
            return False
        self._backlog.append(data)
        if self._flush_timer is None and self._pump is not None:
            self._flush_timer = asyncio.get_running_loop().call_later(0.005, self._flush)
        return True

    def _flush(self) -> None:
        self._flush_timer = None
        while self._backlog:
            try:
                self.sock.send(self._backlog[0], zmq.NOBLOCK)
            except zmq.Again:
                self._flush_timer = asyncio.get_running_loop().call_later(0.005, self._flush)
                return
            self._backlog.popleft()
            self.sent += 1

    def close(self) -> None:
        """Flush the backlog (bounded by the linger) and close, so a clean exit loses no log record."""
        if self._pump is not None:
            self._pump.close()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self.sock.setsockopt(zmq.SNDTIMEO, self.linger_ms)
        while self._backlog:
            try:
                self.sock.send(self._backlog.popleft())
            except zmq.ZMQError:
                self.dropped += len(self._backlog) + 1
                break
        self.sock.close()
        self.ctx.term()
