"""The ZeroMQ bus: a ROUTER in the supervisor, one DEALER per worker (identity = worker name).

Both ends plug a plain (non-asyncio) zmq socket into the running event loop through its FD, so neither side
pays for zmq.asyncio. The FD is edge-triggered: every wake-up drains until EAGAIN, a bounded batch at a
time so one flooding peer cannot starve the loop, and every send re-checks for input it may have masked.
Queues are bounded by high-water marks; a send that would block is dropped and counted, never buffered.
"""

from __future__ import annotations

import asyncio
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
    ) -> None:
        self.ctx = zmq.Context(io_threads=1)
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.setsockopt(zmq.SNDHWM, snd_hwm)
        sock.setsockopt(zmq.LINGER, linger_ms)
        sock.setsockopt(zmq.IMMEDIATE, 0)
        sock.connect(endpoint)
        self.sock = sock
        self.dropped = 0
        self.sent = 0
        self._on_message = on_message
        self._pump: _Pump | None = None

    def attach(self) -> None:
        """Start receiving; needs the running loop."""
        self._pump = _Pump(self.sock, self._frames)

    def _frames(self, frames: list[bytes]) -> None:
        self._on_message(frames[-1])

    def send(self, msg: dict[str, Any]) -> bool:
        try:
            self.sock.send(encode(msg), zmq.NOBLOCK)
            self.sent += 1
            ok = True
        except zmq.Again:
            self.dropped += 1
            ok = False
        if self._pump is not None:
            self._pump.recheck()
        return ok

    def close(self) -> None:
        """Close with linger, so what was queued (log records above all) still reaches the supervisor."""
        if self._pump is not None:
            self._pump.close()
        self.sock.close()
        self.ctx.term()
