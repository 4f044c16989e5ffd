"""A hostile peer for the gateway port, in a process of its own: it holds N connections that never become
useful, reconnecting each one the server closes, until its duration is up. Loopback only, bounded.

Kinds, in turn: `silent` (connect, say nothing), `half` (half a request line), `drip` (a request head one
byte a second, never finished), `ws` (a complete WebSocket upgrade, then never `connect`). Connections come
from `--addresses` loopback source addresses (127.77.x.y) so a per-address rule alone cannot stop them.
Every second it prints a JSON line of what it holds and how the server ended the others; the last line is
the total. Run by bench/hostile.py; usable alone:

    .venv/bin/python bench/attacker.py --port 18789 --connections 5000 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import sys
import time
from collections import Counter

KINDS = ("silent", "half", "drip", "ws")
UPGRADE = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n")


def source(i: int) -> str:
    return f"127.77.{i // 250}.{i % 250 + 1}"


def outcome(data: bytes) -> str:
    """How the server ended a connection, from what it sent before closing."""
    if not data:
        return "closed silently"
    if data.startswith(b"HTTP/1.1 101"):
        if b"\x88" in data:
            code = data[data.index(b"\x88") + 2:data.index(b"\x88") + 4]
            return f"ws close {int.from_bytes(code, 'big')}" if len(code) == 2 else "ws close"
        return "ws closed"
    return "http " + data.split(b" ", 2)[1].decode(errors="replace") if data.startswith(b"HTTP/") else "other"


class Attacker:
    def __init__(self, port: int, connections: int, addresses: int, duration: float) -> None:
        self.port = port
        self.n = connections
        self.addresses = addresses
        self.deadline = time.monotonic() + duration
        self.held = Counter[str]()
        self.ended = Counter[str]()
        self.opened = 0
        self.connect_errors = Counter[str]()

    async def slot(self, i: int) -> None:
        kind = KINDS[i % len(KINDS)]
        await asyncio.sleep(random.random() * 2)  # spread the first wave over two seconds
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(source(i % self.addresses), 0)), 10)
            except (OSError, TimeoutError) as exc:
                self.connect_errors[type(exc).__name__] += 1
                await asyncio.sleep(1 + random.random())
                continue
            self.opened += 1
            self.held[kind] += 1
            try:
                data = await self.hold(kind, reader, writer)
            finally:
                self.held[kind] -= 1
                writer.close()
            if time.monotonic() < self.deadline:
                self.ended[f"{kind}: {outcome(data)}"] += 1
                await asyncio.sleep(0.5 + random.random())

    async def hold(self, kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """Misbehave until the server closes (its bytes are returned) or the duration is up."""
        if kind == "half":
            writer.write(b"GET / HTTP/1.1\r\nHost: 127")
        elif kind == "ws":
            writer.write(UPGRADE.format(key=base64.b64encode(os.urandom(16)).decode()).encode())
        elif kind == "drip":
            writer.write(b"GET / HTTP/1.1\r\n")
        got = bytearray()
        while time.monotonic() < self.deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 1.0)
            except TimeoutError:
                if kind == "drip":
                    with contextlib.suppress(OSError):
                        writer.write(b"X")
                continue
            except OSError:
                return bytes(got)
            if not chunk:
                return bytes(got)
            got += chunk
        return bytes(got)

    async def report(self) -> None:
        while time.monotonic() < self.deadline:
            await asyncio.sleep(1.0)
            print(json.dumps(self.snapshot()), flush=True)

    def snapshot(self) -> dict[str, object]:
        return {"t": round(time.monotonic(), 3), "held": sum(self.held.values()), "heldByKind": dict(self.held),
                "opened": self.opened, "ended": dict(self.ended), "connectErrors": dict(self.connect_errors)}

    async def run(self) -> None:
        reporter = asyncio.create_task(self.report())
        await asyncio.gather(*(self.slot(i) for i in range(self.n)))
        reporter.cancel()
        print(json.dumps({**self.snapshot(), "final": True}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--addresses", type=int, default=200, help="loopback source addresses (1 = 127.77.0.1 only)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds; it stops by itself")
    args = p.parse_args()
    if not 1 <= args.addresses <= 250 * 250:
        p.error("--addresses must be 1..62500")
    want = args.connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except ValueError:
            sys.exit(f"attacker needs {want} descriptors; the hard limit is {hard}")
    try:
        import uvloop

        uvloop.run(Attacker(args.port, args.connections, args.addresses, args.duration).run())
    except ImportError:
        asyncio.run(Attacker(args.port, args.connections, args.addresses, args.duration).run())


if __name__ == "__main__":
    main()
