"""One accepted socket on the gateway port: WebSocket upgrades and health probes are served here, the rest by aiohttp.

Every socket is admitted first (`gateway/admission.py`). Then the first request head decides, once it is
complete: it must arrive within the head timeout (10 s, `limits.headTimeoutMs`), fit in 16 KiB and use CRLF
line ends, or it is answered 408, 431 or 400 here (aiohttp, which owns a connection once handed over, has
no deadline on a first head). A clean `GET /` upgrade is answered with 101 on the raw transport and the
socket becomes a `WireSocket` for a message handler (the gateway's `Connection`); a health probe (GET or HEAD
of `/health(z)`, `/ready(z)`, `/startup(z)`, `gateway/probes.py`) is answered here too and the connection
kept for the next request, pipelined or not, each head judged as the first; every other request, and any
upgrade this module doubts, is handed with its bytes to aiohttp's protocol, which owns that transport from
then on.

An idle WebSocket costs a transport and two small objects: no framework request, no reader queue, no
handler task. Reads pause while the peer is not reading what we write, so a client can never make the
supervisor buffer more than one transport's high-water mark of replies.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Protocol, cast

from openclaw_sup.gateway import probes
from openclaw_sup.gateway.admission import Admission, Member
from openclaw_sup.gateway.wsframe import (
    CLOSE_BAD_DATA,
    CLOSE_TOO_BIG,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    accept_response,
    close_payload,
    encode,
    next_frame,
    parse_close,
    upgrade_problem,
)

HEAD_LIMIT = 16 * 1024
"""Upstream's (Node's) limit on a request head, however it arrives."""
HEAD_MAX_LINES = 128
CLOSE_WAIT_S = 2.0
"""How long a closing socket waits for the peer: its WebSocket close frame, or the end of what it was still
sending when it was refused (the lingering close, see `_refuse`)."""
LINGER_LIMIT = 1 << 20
KEEPALIVE_S = 15.0
"""An idle kept-alive HTTP connection is closed after this, here (after a probe) as on aiohttp's side (whose
default is an hour); there it also bounds a request head dripped on a kept-alive connection, which aiohttp
only parses once complete."""

SNIFF, PARKED, OPEN, CLOSING, LINGER, CLOSED = range(6)
DUE_NONE, DUE_HEAD, DUE_IDLE, DUE_ABORT = range(4)
"""What the socket's one deadline does when it passes (see `_set_deadline`)."""
DUE_SLACK_S = 0.005
JUDGED_MAX, JUDGED_HEAD_MAX = 256, 512
ANSWERS_MAX = 64
"""Pipelined probes' answers written together, at most this many in one write."""
PARKED_LIMIT = 1 << 20
HOLD_WRITE, HOLD_BUSY = 1, 2

_BARE_LF = re.compile(rb"(?<!\r)\n")
_METHOD = re.compile(rb"[A-Z_-]{1,16}(?: |\Z)")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
"""Bytes no request head may hold (RFC 9110 field values allow HTAB only): such a request goes to aiohttp,
which refuses it."""

_judged: dict[bytes, tuple[tuple[str, str, dict[str, str]], probes.Plan]] = {}
"""Probe heads already judged (no problem, plain, parsed, planned), by their bytes: a prober sends the same head
every time, so its next one skips the checks, the parse and the plan. Small heads only, and cleared when full."""


class MessageHandler(Protocol):
    """What a WebSocket's owner is told; every call is synchronous and must not raise."""

    def opened(self) -> None: ...

    def received(self, data: bytes) -> None: ...

    def writable(self) -> None: ...

    def lost(self) -> None: ...


class WireSocket(Protocol):
    """What a handler may do with its socket (the raw `PortProtocol` or aiohttp's, see http_app.py)."""

    closed: bool

    @property
    def writable(self) -> bool: ...

    def send_text(self, data: bytes) -> bool: ...

    def close(self, code: int, reason: str) -> None: ...

    def set_limit(self, max_size: int, label: str) -> None: ...

    def hold_reading(self, busy: bool) -> None: ...

    def admitted(self) -> None:
        """The peer authenticated: the socket no longer counts against the unauthenticated budgets."""


class PortOwner(Protocol):
    sockets: set[PortProtocol]
    admission: Admission
    head_timeout_s: float
    loop: asyncio.AbstractEventLoop
    """The running loop, kept: asking asyncio for it costs a getpid() system call each time."""

    def http_protocol(self, sock: PortProtocol) -> asyncio.Protocol | None:
        """None parks `sock` until HTTP is up; the owner then calls `sock.hand_over()`."""

    def open_socket(self, sock: WireSocket, peer_ip: str, headers: Mapping[str, str]) -> MessageHandler: ...

    def probe(self, plan: probes.Plan, peer_ip: str) -> bytes | None:
        """The whole answer to a health probe from `peer_ip`, or None if it is not one to answer here."""


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]] | None:
    """(method, target, lower-cased headers) of an HTTP/1.1 request head, or None if it is not plain."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if version != "HTTP/1.1":
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return method, target, headers


def _head_end(buf: bytearray, scan: int) -> tuple[int, int]:
    """(end, start) of the first empty line (`\r?\n\r?\n`: bare LFs are found here, refused later) at or after
    `scan` - 3, or (-1, -1). Two plain searches, the second bounded by the first: a regular expression with
    optional characters costs tens of times more on a head."""
    pos = max(0, scan - 3)
    crlf = buf.find(b"\n\r\n", pos)
    lf = buf.find(b"\n\n", pos, crlf + 2 if crlf >= 0 else len(buf))
    if lf >= 0:
        nl, end = lf, lf + 2
    elif crlf >= 0:
        nl, end = crlf, crlf + 3
    else:
        return -1, -1
    return end, (nl - 1 if nl > pos and buf[nl - 1] == 13 else nl)


def _could_be_http(buf: bytearray) -> bool:
    """Whether the bytes so far can start a request line (a method token, then a space)."""
    return _METHOD.match(buf, 0, 17) is not None


def head_problem(buf: bytes | bytearray, end: int) -> tuple[int, str] | None:
    """(status, reason) when a complete head (its empty line included) ending at `end` must be refused
    before anyone parses it."""
    if end > HEAD_LIMIT:
        return 431, f"request head exceeds {HEAD_LIMIT} bytes"
    head = bytes(buf[:end])
    if _BARE_LF.search(head):
        return 400, "request lines must end with CRLF (bare LF found)"
    if head.count(b"\n") > HEAD_MAX_LINES:
        return 431, f"more than {HEAD_MAX_LINES} header lines"
    return None


def refusal(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection."""
    phrase = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
              503: "Service Unavailable"}[status]
    body = reason.encode() + b"\n"
    return (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class PortProtocol(asyncio.Protocol):
    __slots__ = ("_admitted", "_buf", "_dropped", "_due", "_due_what", "_frag", "_frag_text", "_handler", "_hold",
                 "_kept", "_label", "_owner", "_scan", "_state", "_timer", "_timer_at", "closed", "max_size",
                 "transport")

    def __init__(self, owner: PortOwner, admitted: Member | None = None) -> None:
        self._owner = owner
        self._admitted = admitted  # a TLS socket was admitted before its handshake (gateway/tls_accept.py)
        self._state = SNIFF
        self._buf = bytearray()
        self._scan = 0
        self._dropped = 0
        self._kept = False
        self._frag: bytearray | None = None
        self._frag_text = False
        self._handler: MessageHandler | None = None
        self._hold = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._due = 0.0
        self._due_what = DUE_NONE
        self._label = "message"
        self.closed = False
        self.max_size = HEAD_LIMIT
        self.transport: asyncio.Transport | None = None

    # -- transport callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername")  # SO_KEEPALIVE comes from the listening socket
        admission = self._owner.admission
        if self._admitted is not None:  # the place it held through the handshake passes to this socket
            admission.release(self._admitted)
            self._admitted = None
        refused = admission.admit(self, peer[0] if peer else "")
        if refused is not None:
            self._refuse(503, refused, linger=False)
            return
        self._owner.sockets.add(self)
        self._set_deadline(self._owner.head_timeout_s, DUE_HEAD)

    def data_received(self, data: bytes) -> None:
        if self._state == LINGER:
            self._dropped += len(data)
            if self._dropped > LINGER_LIMIT and self.transport is not None:
                self.transport.close()
            return
        if self._state == SNIFF:
            self._kept = False
            if not self._buf and not self._hold:
                judged = _judged.get(data)  # the usual probe: one whole head already judged, alone in its read
                if judged is not None and (answer := self._answer(judged[1])) is not None:
                    self._due_what = DUE_NONE
                    assert self.transport is not None
                    self.transport.write(answer)
                    self._answered(judged[1])
                    return
            self._buf += data
            self._sniff()
            if self._state == SNIFF and self._buf and self._due_what == DUE_IDLE:
                # the next request on a kept-alive connection is incomplete: its head gets the head timeout
                self._set_deadline(self._owner.head_timeout_s, DUE_HEAD)
        elif self._state == PARKED:
            self._buf += data
            if len(self._buf) > PARKED_LIMIT and self.transport is not None:
                self.transport.close()
        else:
            self._buf += data
            self._feed()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._set_hold(HOLD_WRITE, True)

    def resume_writing(self) -> None:
        self._set_hold(HOLD_WRITE, False)
        if self._handler is not None and self._state == OPEN:
            self._handler.writable()
        elif self._state == SNIFF and self._buf:
            self._sniff()

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = CLOSED
        self.closed = True
        self._owner.sockets.discard(self)
        self._owner.admission.release(self)
        self._cancel_timer()
        handler, self._handler = self._handler, None
        self._buf = bytearray()
        self._frag = None
        if handler is not None:
            handler.lost()

    # -- the first request ---------------------------------------------------------------------------

    def _sniff(self) -> None:
        """Judge each complete request head: answer a probe (pipelined ones in order, while the peer reads the
        answers, written together), take a clean upgrade, hand anything else over."""
        answers: list[bytes] = []
        while self._state == SNIFF and self._buf and not self._hold & HOLD_WRITE:
            buf = self._buf
            if not _could_be_http(buf):
                self._flush(answers)
                self.hand_over()  # not HTTP at all (TLS, a port scanner...): aiohttp answers 400
                return
            end, start = _head_end(buf, self._scan)
            if end < 0:
                self._scan = len(buf)
                self._flush(answers)
                if len(buf) > HEAD_LIMIT:
                    self._refuse(431, f"request head exceeds {HEAD_LIMIT} bytes")
                return
            self._due_what = DUE_NONE
            self._scan = 0
            head = bytes(buf[:end])
            judged = _judged.get(head)
            if judged is None:
                problem = head_problem(head, end)
                if problem is not None:
                    self._flush(answers)
                    self._refuse(*problem)
                    return
                parsed = parse_head(head[:start]) if head.startswith((b"GET ", b"HEAD ")) else None
                plan = probes.plan(*parsed) if parsed is not None and not _CONTROL.search(head) else None
            else:
                parsed, plan = judged
            answer = self._answer(plan) if plan is not None else None
            if answer is None:
                self._flush(answers)
                self._upgrade(parsed, end)
                return
            assert plan is not None and parsed is not None
            if judged is None and end <= JUDGED_HEAD_MAX:
                if len(_judged) >= JUDGED_MAX:
                    _judged.clear()
                _judged[head] = (parsed, plan)
            del buf[:end]
            answers.append(answer)
            if plan.close or len(answers) == ANSWERS_MAX:
                self._flush(answers)
            self._answered(plan)
        self._flush(answers)

    def _answer(self, plan: probes.Plan) -> bytes | None:
        """The answer to a probe, or None if it is not one to answer here."""
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername")
        return self._owner.probe(plan, peer[0] if peer else "")

    def _answered(self, plan: probes.Plan) -> None:
        """After a probe's answer: close if it asked, else keep the connection for the next request."""
        if plan.close:
            assert self.transport is not None
            self._state = CLOSED
            self.transport.close()
        elif self._buf:
            self._set_deadline(self._owner.head_timeout_s, DUE_HEAD)
        else:
            self._kept = True
            self._set_deadline(KEEPALIVE_S, DUE_IDLE)

    def _flush(self, answers: list[bytes]) -> None:
        if answers and self.transport is not None:
            self.transport.write(answers[0] if len(answers) == 1 else b"".join(answers))
            answers.clear()

    def _idle(self) -> None:
        if self._state == SNIFF and self._kept and self.transport is not None:
            self._state = CLOSED
            self.transport.close()

    def _upgrade(self, parsed: tuple[str, str, dict[str, str]] | None, used: int) -> None:
        if parsed is None or upgrade_problem(*parsed) is not None:
            self.hand_over()
            return
        _method, _target, headers = parsed
        buf = self._buf
        assert self.transport is not None
        self._cancel_timer()
        self.transport.write(accept_response(headers["sec-websocket-key"]))
        self._state = OPEN
        self._buf = buf[used:]
        peer = self.transport.get_extra_info("peername")
        self._handler = self._owner.open_socket(self, peer[0] if peer else "", headers)
        self._handler.opened()
        if self._buf:
            self._feed()

    def _head_timeout(self) -> None:
        if self._state == SNIFF:
            self._refuse(408, f"no complete request head within {self._owner.head_timeout_s:g}s")

    def _refuse(self, status: int, reason: str, linger: bool = True) -> None:
        """Answer a request this module will not pass on, and close.

        Closing with the peer's bytes unread makes the kernel send a reset, which can destroy the answer before
        the peer reads it; so the answer is followed by our FIN and what the peer still sends is read and
        dropped until it closes too (bounded: `CLOSE_WAIT_S`, `LINGER_LIMIT` bytes), as nginx's lingering close
        does. A socket refused at admission is closed at once: lingering would hold the room it was refused."""
        self._cancel_timer()
        transport = self.transport
        self._buf = bytearray()
        if transport is None or transport.is_closing():
            self._state = CLOSED
            return
        transport.write(refusal(status, reason))
        if linger and transport.can_write_eof():
            self._state = LINGER
            self._set_hold(self._hold, False)
            transport.write_eof()
            self._set_deadline(CLOSE_WAIT_S, DUE_ABORT)
        else:
            self._state = CLOSED
            transport.close()

    def evict(self) -> None:
        """Admission needs the room: an unauthenticated socket is closed at once (WebSockets get 1013)."""
        if self._state == OPEN:
            self._fail(1013, "gateway busy: too many unauthenticated connections")
        elif self._state in (SNIFF, PARKED):
            self._refuse(503, "gateway busy: too many unauthenticated connections", linger=False)
        elif self._state == LINGER and self.transport is not None:
            self._state = CLOSED
            self.transport.abort()

    def admitted(self) -> None:
        self._owner.admission.authenticated(self)

    def hand_over(self) -> None:
        """aiohttp owns this connection from here, starting with the bytes already read."""
        if self.transport is None or self.transport.is_closing():
            return
        self._cancel_timer()
        proto = self._owner.http_protocol(self)
        if proto is None:
            self._state = PARKED
            return
        transport, data = self.transport, bytes(self._buf)
        self._owner.sockets.discard(self)
        self._owner.admission.release(self)  # aiohttp's own count takes over
        self._state = CLOSED
        self._buf = bytearray()
        self.transport = None
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if data:
            proto.data_received(data)

    # -- frames in -----------------------------------------------------------------------------------

    def _feed(self) -> None:
        while self._state in (OPEN, CLOSING) and not self._hold and self._buf:
            budget = self.max_size - (len(self._frag) if self._frag is not None else 0)
            try:
                frame = next_frame(self._buf, budget)
            except FrameError as exc:
                reason = f"{self._label} exceeds {self.max_size} bytes" if exc.code == CLOSE_TOO_BIG else str(exc)
                self._fail(exc.code, reason)
                return
            if frame is None:
                return
            fin, opcode, payload, used = frame
            if used == len(self._buf):
                self._buf = bytearray()
            else:
                del self._buf[:used]
            try:
                self._frame(fin, opcode, payload)
            except FrameError as exc:
                self._fail(exc.code, str(exc))
                return

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._write(encode(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            code, _reason = parse_close(payload)
            if self._state == OPEN:
                self._write(encode(OP_CLOSE, payload[:2] if code != 1005 else b""))
            self._state = CLOSED
            assert self.transport is not None
            self.transport.close()
        elif opcode == OP_PONG or self._state != OPEN:
            return
        elif opcode == OP_CONT:
            if self._frag is None:
                raise FrameError(1002, "continuation frame without a message to continue")
            self._frag += payload
            if fin:
                data, self._frag = bytes(self._frag), None
                self._deliver(data, self._frag_text)
        elif self._frag is not None:
            raise FrameError(1002, "new message before the fragmented one ended")
        elif fin:
            self._deliver(payload, opcode == OP_TEXT)
        else:
            self._frag = bytearray(payload)
            self._frag_text = opcode == OP_TEXT

    def _deliver(self, data: bytes, text: bool) -> None:
        if text and not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError:
                raise FrameError(CLOSE_BAD_DATA, "text message is not valid UTF-8") from None
        if self._handler is not None:
            self._handler.received(data)

    # -- the handler's side (WireSocket) -------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._state == OPEN and not self._hold & HOLD_WRITE

    def send_text(self, data: bytes) -> bool:
        if self._state != OPEN:
            return False
        self._write(encode(OP_TEXT, data))
        return True

    def close(self, code: int, reason: str) -> None:
        """Send a close frame and wait (bounded) for the peer's before the TCP close, as RFC 6455 asks.
        A socket still before its first request is simply closed."""
        if self._state in (SNIFF, PARKED) and self.transport is not None:
            self._state = CLOSED
            self._cancel_timer()
            self.transport.close()
        if self._state != OPEN:
            return
        self._write(encode(OP_CLOSE, close_payload(code, reason)))
        self._state = CLOSING
        self._set_hold(HOLD_BUSY, False)
        if self.transport is not None:
            self._set_deadline(CLOSE_WAIT_S, DUE_ABORT)
            if self._buf:
                self._feed()

    def set_limit(self, max_size: int, label: str) -> None:
        self.max_size, self._label = max_size, label

    def hold_reading(self, busy: bool) -> None:
        self._set_hold(HOLD_BUSY, busy)

    # -- internals -----------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, code: int, reason: str) -> None:
        if self._state == OPEN:
            self._write(encode(OP_CLOSE, close_payload(code, reason)))
        self._state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def _set_deadline(self, delay: float, what: int) -> None:
        """The socket's one deadline: `what` happens `delay` seconds from now unless it is moved or cleared first.
        A deadline moved later (the next request on a kept-alive connection) costs no new timer: the armed one
        fires at its time, finds the deadline moved, and waits again."""
        loop = self._owner.loop
        due = loop.time() + delay
        self._due, self._due_what = due, what
        if self._timer is None or self._timer_at > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = loop.call_at(due, self._expire), due

    def _expire(self) -> None:
        self._timer = None
        what = self._due_what
        if what == DUE_NONE:
            return
        loop = self._owner.loop
        if loop.time() + DUE_SLACK_S < self._due:
            self._timer, self._timer_at = loop.call_at(self._due, self._expire), self._due
            return
        self._due_what = DUE_NONE
        if what == DUE_HEAD:
            self._head_timeout()
        elif what == DUE_IDLE:
            self._idle()
        elif self.transport is not None:
            self.transport.abort()

    def _cancel_timer(self) -> None:
        self._due, self._due_what, self._timer_at = 0.0, DUE_NONE, 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _set_hold(self, bit: int, on: bool) -> None:
        before = self._hold
        self._hold = before | bit if on else before & ~bit
        transport = self.transport
        if transport is None or transport.is_closing() or bool(before) == bool(self._hold):
            return
        if self._hold:
            transport.pause_reading()
        else:
            transport.resume_reading()
            if self._buf:
                self._owner.loop.call_soon(self._feed)

