"""A raw RFC 6455 client for frame-level tests: it sends what a well-behaved library would refuse to
(bad opcodes, odd fragments, frames before the upgrade completes) and reads without a background thread."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
from urllib.parse import urlsplit

from openclaw_sup.gateway.client import ConnectionClosed

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawWebSocket:
    """Just enough of a WebSocket client: text frames, ping/pong, close."""

    def __init__(self, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> None:
        u = urlsplit(url)
        if u.scheme not in ("ws", "http"):
            raise ValueError(f"unsupported gateway URL {url!r}: use ws://host:port")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 18789
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        path = u.path or "/"
        req = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
        self.sock.sendall(req.encode())
        self._buf = b""
        head = self._read_until(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"WebSocket upgrade refused: {status.decode(errors='replace')}")
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        if accept.encode() not in head:
            raise ConnectionError("WebSocket upgrade: bad Sec-WebSocket-Accept")
        self.close_code: int | None = None
        self.close_reason = ""

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed during the WebSocket upgrade")
            self._buf += chunk
        head, self._buf = self._buf.split(marker, 1)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionClosed(self.close_code or 1006, self.close_reason or "connection lost")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def send_frame(self, opcode: int, payload: bytes) -> None:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        if payload:
            ints = int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            payload = ints.to_bytes(n, "big")
        self.sock.sendall(head + mask + payload)

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode())

    def recv(self, timeout: float | None = None) -> str:
        """Next text message; raises ConnectionClosed when the server closes."""
        self.sock.settimeout(timeout)
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read_exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            payload = self._read_exact(n)
            if opcode == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            if opcode == OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode(errors="replace")
                with contextlib.suppress(OSError):
                    self.send_frame(OP_CLOSE, payload[:2])
                raise ConnectionClosed(self.close_code, self.close_reason)
            if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self, code: int = 1000) -> None:
        with contextlib.suppress(OSError):
            self.send_frame(OP_CLOSE, struct.pack("!H", code))
        self.sock.close()
