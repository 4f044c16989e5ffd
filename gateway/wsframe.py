"""RFC 6455 on the server side: the upgrade check, the 101 answer, and framing in both directions.

The gateway speaks WebSocket on raw transports (see `gateway/port.py`) so an idle socket costs a transport
and a few small objects, not a framework request, response and handler task. Only what the protocol needs
is here: no extensions (clients that offer permessage-deflate get none, which RFC 6455 allows), masked
client frames, fragmentation, control frames between fragments, and size limits that fail early.

Why no library: the sans-I/O codecs keep far more state per connection than this module and
`gateway/port.py` together, and the gateway holds thousands of mostly idle sockets. bench/ws_codec_memory.py,
after an upgrade and one message (Python 3.11, 2000 connections, median of 5): ours 0.6 KB, `websockets`
17.4 `ServerProtocol` 4.3 KB (7x), `wsproto` 1.3.2 `WSConnection` 4.8 KB (8x), before either is wrapped in
the asyncio Protocol that ours already is. Nothing is imported from aiohttp here; unmasking uses the
standard library alone.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import struct
from collections.abc import Mapping

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPS = frozenset({OP_TEXT, OP_BINARY})
CONTROL_OPS = frozenset({OP_CLOSE, OP_PING, OP_PONG})

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_BAD_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_NO_STATUS = 1005
RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})


class FrameError(Exception):
    """The peer broke the framing rules; the connection fails with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def upgrade_problem(method: str, path: str, headers: Mapping[str, str]) -> str | None:
    """Why a request is not a WebSocket upgrade this server accepts, or None (header names lower-case)."""
    if method != "GET":
        return "a WebSocket upgrade must be a GET"
    if path.split("?", 1)[0] != "/":
        return f"no WebSocket endpoint at {path.split('?', 1)[0]}"
    if "websocket" not in headers.get("upgrade", "").lower():
        return "missing Upgrade: websocket"
    if "upgrade" not in {t.strip().lower() for t in headers.get("connection", "").split(",")}:
        return "missing Connection: upgrade"
    if headers.get("sec-websocket-version", "").strip() != "13":
        return "unsupported Sec-WebSocket-Version (13 is required)"
    key = headers.get("sec-websocket-key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return "Sec-WebSocket-Key must be 16 bytes in base64"
    except binascii.Error:
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def accept_response(key: str) -> bytes:
    accept = base64.b64encode(hashlib.sha1(key.strip().encode() + GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def encode(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def close_payload(code: int, reason: str) -> bytes:
    return struct.pack("!H", code) + reason.encode()[:123]


def parse_close(payload: bytes) -> tuple[int, str]:
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = struct.unpack_from("!H", payload)[0]
    if not valid_close_code(code):
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(CLOSE_BAD_DATA, "close reason is not UTF-8") from None


def valid_close_code(code: int) -> bool:
    """RFC 6455 7.4: 1000-1015 less the codes that must never be sent, and 3000-4999 for libraries and
    applications; anything else in a close frame is a protocol error."""
    return (1000 <= code < 1016 and code not in RESERVED_CLOSE_CODES) or 3000 <= code < 5000


SMALL_FRAME = 1024


@functools.cache
def _xor_table(key: int) -> bytes:
    return bytes(b ^ key for b in range(256))


def unmask(mask: bytes, payload: bytearray) -> bytes:
    """XOR with the client's key: as one big integer for the usual small frame; for larger ones, each of the
    four byte lanes through `bytes.translate` with that lane's XOR table (C speed, three times the big
    integer's, with the standard library alone)."""
    n = len(payload)
    if n <= SMALL_FRAME:
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")
    out = bytearray(n)
    for lane in range(4):
        out[lane::4] = payload[lane::4].translate(_xor_table(mask[lane]))
    return bytes(out)


def next_frame(buf: bytearray, max_size: int) -> tuple[bool, int, bytes, int] | None:
    """Parse one client frame from the start of `buf`: (fin, opcode, payload, bytes used), or None if
    incomplete. Raises FrameError for anything RFC 6455 forbids a client to send, or a payload over
    `max_size` (judged from the header, before the payload is buffered)."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b0 & 0x70:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
    fin, opcode = bool(b0 & 0x80), b0 & 0x0F
    if opcode not in DATA_OPS and opcode not in CONTROL_OPS and opcode != OP_CONT:
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
    if not b1 & 0x80:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
    n, pos = b1 & 0x7F, 2
    if opcode in CONTROL_OPS and (n > 125 or not fin):
        raise FrameError(CLOSE_PROTOCOL_ERROR, "control frames must be final and at most 125 bytes")
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = struct.unpack_from("!H", buf, 2)[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
    if n > max_size:
        raise FrameError(CLOSE_TOO_BIG, f"frame of {n} bytes exceeds {max_size}")
    end = pos + 4 + n
    if len(buf) < end:
        return None
    mask = bytes(buf[pos:pos + 4])
    payload = unmask(mask, buf[pos + 4:end]) if n else b""
    return fin, opcode, payload, end
