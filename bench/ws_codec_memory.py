"""Per-connection memory of a server-side WebSocket codec: ours (gateway/port.py's PortProtocol with
gateway/wsframe.py) beside the sans-I/O state machines of `websockets` (ServerProtocol) and `wsproto`
(WSConnection), measured the same way in one run.

Each connection is driven through the same bytes: the client's upgrade request, the 101 answer, then one
masked text frame of `--message` bytes, read back as a message. What stays allocated per open connection,
idle after that exchange, is measured with tracemalloc over `--conns` connections, `--reps` times (median and
spread). The transport (the kernel socket and asyncio's transport object) is the same for every codec and
not counted; the gateway's own `Connection` (auth, seq, subscriptions) sits above any codec and is not
counted either, but the stub handler ours hands each message to and its entry in the gateway's socket set
are (a few dozen bytes against ours). The libraries would still need an asyncio Protocol around them to run;
ours is that Protocol already. A library that is not installed is reported as skipped, with how to install it.

    .venv/bin/python bench/ws_codec_memory.py                 # 2000 connections, 5 repetitions
    .venv/bin/python bench/ws_codec_memory.py --conns 500 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import summarize

from openclaw_sup.gateway.port import PortProtocol


def upgrade_request() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:18789\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:18789\r\n"
            f"\r\n").encode()


def client_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + mask + masked


# -- ours ------------------------------------------------------------------------------------------------


class NullTransport:
    """Stands for asyncio's transport, which every codec would share: writes go nowhere."""

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Handler:
    __slots__ = ("got",)

    def __init__(self) -> None:
        self.got: bytes | None = None

    def opened(self) -> None:
        pass

    def received(self, data: bytes) -> None:
        self.got = data

    def writable(self) -> None:
        pass

    def lost(self) -> None:
        pass


class Admits:
    def admit(self, sock: object, ip: str) -> None:
        return None

    def release(self, sock: object) -> None:
        pass

    def authenticated(self, sock: object) -> None:
        pass


class Owner:
    """The least a PortProtocol needs from the gateway to upgrade a socket."""

    def __init__(self) -> None:
        self.sockets: set[PortProtocol] = set()
        self.admission = Admits()
        self.head_timeout_s = 10.0
        self.loop = asyncio.get_running_loop()
        self.handlers: list[Handler] = []

    def http_protocol(self, sock: PortProtocol) -> None:
        raise AssertionError("the bench only sends upgrades")

    def open_socket(self, sock: object, peer_ip: str, headers: Mapping[str, str]) -> Handler:
        handler = Handler()
        self.handlers.append(handler)
        return handler


def ours(request: bytes, frame: bytes, message: bytes, owner: Owner) -> object:
    proto = PortProtocol(owner)  # type: ignore[arg-type]
    proto.connection_made(NullTransport())  # type: ignore[arg-type]
    proto.data_received(request)
    proto.data_received(frame)
    assert owner.handlers[-1].got == message
    return proto


# -- websockets --------------------------------------------------------------------------------------------


def websockets_codec() -> Callable[[bytes, bytes, bytes, Owner], object] | None:
    try:
        from websockets.frames import Frame
        from websockets.http11 import Request
        from websockets.server import ServerProtocol
    except ImportError:
        return None

    def run(request: bytes, frame: bytes, message: bytes, owner: Owner) -> object:
        proto = ServerProtocol()
        proto.receive_data(request)
        [req] = proto.events_received()
        assert isinstance(req, Request)
        proto.send_response(proto.accept(req))
        proto.data_to_send()
        proto.receive_data(frame)
        [got] = proto.events_received()
        assert isinstance(got, Frame) and got.data == message
        proto.data_to_send()
        return proto

    return run


# -- wsproto -----------------------------------------------------------------------------------------------


def wsproto_codec() -> Callable[[bytes, bytes, bytes, Owner], object] | None:
    try:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, Request, TextMessage
    except ImportError:
        return None

    def run(request: bytes, frame: bytes, message: bytes, owner: Owner) -> object:
        conn = WSConnection(ConnectionType.SERVER)
        conn.receive_data(request)
        [req] = list(conn.events())
        assert isinstance(req, Request)
        conn.send(AcceptConnection())
        conn.receive_data(frame)
        [got] = list(conn.events())
        assert isinstance(got, TextMessage) and got.data == message.decode()
        return conn

    return run


# -- measuring ---------------------------------------------------------------------------------------------


def per_connection(run: Callable[[bytes, bytes, bytes, Owner], object], conns: int, message: bytes) -> float:
    """Bytes still allocated per open connection after the exchange (inputs prepared before measuring)."""
    inputs = [(upgrade_request(), client_text_frame(message)) for _ in range(conns)]
    owner = Owner()
    owner.handlers = []
    run(*inputs[0], message, owner)  # first-use caches (compiled regexes, tables) are not per connection
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [run(req, frame, message, owner) for req, frame in inputs]
    for h in owner.handlers:
        h.got = None  # the message itself belongs to the application, not the codec
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = after - before - sys.getsizeof(kept)
    del kept
    return held / conns


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    message = b'{"type":"req","id":"1","method":"health"}'[:args.message].ljust(args.message, b" ")
    codecs: dict[str, Callable[[bytes, bytes, bytes, Owner], object] | None] = {
        "ours (PortProtocol + wsframe)": ours, "websockets ServerProtocol": websockets_codec(),
        "wsproto WSConnection": wsproto_codec()}
    out: dict[str, Any] = {}
    for name, run in codecs.items():
        if run is None:
            out[name] = None
            continue
        out[name] = summarize([per_connection(run, args.conns, message) for _ in range(args.reps)])
    return out


def version(module: str) -> str:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return "not installed"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=2000, help="connections per repetition (default 2000)")
    p.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    p.add_argument("--message", type=int, default=40, help="bytes of the one text message (default 40)")
    args = p.parse_args()
    started = time.monotonic()
    results = asyncio.run(measure(args))
    print(f"per-connection codec memory, {args.conns} open connections x {args.reps} repetitions, after an upgrade "
          f"and one {args.message}-byte text message (tracemalloc; Python {sys.version.split()[0]}; websockets "
          f"{version('websockets')}, wsproto {version('wsproto')})")
    print(f"{'codec':34} {'median':>10} {'min':>10} {'max':>10}")
    for name, s in results.items():
        if s is None:
            print(f"{name:34} {'skipped: not installed (pip install -e .[test] brings it)':>32}")
            continue
        print(f"{name:34} {s['p50']:>8.0f} B {s['min']:>8.0f} B {s['max']:>8.0f} B")
    ours_b = results["ours (PortProtocol + wsframe)"]["p50"]
    for name, s in results.items():
        if s is not None and not name.startswith("ours"):
            print(f"{name}: {s['p50'] / ours_b:.1f}x ours")
    print(f"({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
