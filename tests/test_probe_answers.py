"""Health probes answered from kept answers: what a kept answer says still follows the gateway (readiness, the
clock, the uptime), pipelined probes are answered in order whatever write carries them, and the head scanner
finds the end of a head where the regular expression it replaced did.

In-process: the gateway's listener on a real loopback socket, its readiness a dict the test changes, a blocking
client in a thread.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import uvloop

from conftest import free_port
from openclaw_sup.gateway import port
from openclaw_sup.gateway.server import GatewayServer

PROXIED = b"X-Forwarded-For: 203.0.113.7\r\n"
"""A proxy header: the caller is not direct loopback, so the body is the plain one (no uptime)."""


def ask(path: bytes, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


class Reader:
    """Whole HTTP/1.1 answers (head and body) read in order from one socket."""

    def __init__(self, s: socket.socket) -> None:
        self.sock, self.buf = s, b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def next(self, head_only: bool = False) -> bytes:
        """The next answer's bytes; b"" if the socket closed first."""
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                return b""
        end = self.buf.index(b"\r\n\r\n") + 4
        length = 0 if head_only else int(re.search(rb"Content-Length: (\d+)", self.buf[:end]).group(1))  # type: ignore[union-attr]
        while len(self.buf) < end + length:
            if not self._more():
                return b""
        answer, self.buf = self.buf[:end + length], self.buf[end + length:]
        return answer

    def closed(self) -> bool:
        return not self.buf and not self._more()


def body(answer: bytes) -> Any:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def undated(answer: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"", answer)


def serve(client: Callable[[int, dict[str, Any]], Any]) -> Any:
    """Run `client(port, state)` in a thread against a gateway whose readiness is `state`."""
    state: dict[str, Any] = {"started": True, "workers": {"scheduler": "running"}}

    async def main() -> Any:
        srv = GatewayServer("127.0.0.1", free_port(), lambda: dict(state), "test")
        await srv.start()
        try:
            return await asyncio.to_thread(client, srv.port, state)
        finally:
            await srv.stop()

    return uvloop.run(main())


def connect(p: int) -> tuple[socket.socket, Reader]:
    s = socket.create_connection(("127.0.0.1", p), timeout=10)
    return s, Reader(s)


def test_a_kept_answer_follows_readiness() -> None:
    """The same probe head on one connection, asked again after each change of readiness, says the change, plain
    and detailed alike."""
    def client(p: int, state: dict[str, Any]) -> list[tuple[bytes, Any]]:
        s, r = connect(p)
        seen = []

        def both() -> None:
            for req in (ask(b"/readyz", extra=PROXIED), ask(b"/startupz", extra=PROXIED), ask(b"/readyz"),
                        ask(b"/startupz")):
                for _ in range(3):  # the first one made, the next ones kept
                    s.sendall(req)
                    answer = r.next()
                seen.append((answer.split(b"\r\n", 1)[0], body(answer)))

        both()
        state["workers"] = {"scheduler": "backoff"}
        both()
        state["started"] = False
        state["pending"] = ["scheduler"]
        both()
        s.close()
        return seen

    seen = serve(client)
    ok, unavailable = b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Service Unavailable"
    assert [line for line, _ in seen] == [ok, ok, ok, ok, unavailable, ok, unavailable, ok,
                                          unavailable, unavailable, unavailable, unavailable]
    assert seen[4][1] == {"ready": False} and seen[5][1] == {"ok": True, "status": "started"}
    assert seen[6][1]["failing"] == ["scheduler"] and seen[6][1]["workers"] == {"scheduler": "backoff"}
    assert seen[9][1] == {"ok": False, "status": "starting"}
    assert seen[10][1]["failing"] == ["startup-sidecars"] and seen[11][1]["pendingReason"] == ["scheduler"]


def test_a_kept_answer_is_dated_by_the_clock() -> None:
    """Each answer's Date is the second it was asked in, across second boundaries, on one connection."""
    def client(p: int, _state: dict[str, Any]) -> list[tuple[int, bytes]]:
        s, r = connect(p)
        dated: list[tuple[int, bytes]] = []
        while len({second for second, _ in dated}) < 3:
            before = time.time()
            s.sendall(ask(b"/healthz", extra=PROXIED))
            answer = r.next()
            if int(before) == int(time.time()):
                dated.append((int(before), re.search(rb"Date: ([^\r]*)", answer).group(1)))  # type: ignore[union-attr]
            time.sleep(0.05)
        s.close()
        return dated

    for second, date in serve(client):
        assert date == email.utils.formatdate(second, usegmt=True).encode(), (second, date)


def test_a_detailed_live_answer_says_the_uptime_of_its_millisecond() -> None:
    """A loopback caller's live answer is kept no longer than its uptime's millisecond: asked again later, it
    says a later uptime, and its Content-Length still fits its body."""
    def client(p: int, _state: dict[str, Any]) -> list[bytes]:
        s, r = connect(p)
        answers = []
        for _ in range(3):
            s.sendall(ask(b"/healthz"))
            answers.append(r.next())
            time.sleep(0.01)
        s.close()
        return answers

    answers = serve(client)
    uptimes = [body(a)["uptimeMs"] for a in answers]
    assert uptimes == sorted(set(uptimes)), uptimes
    for a in answers:
        head, _, rest = a.partition(b"\r\n\r\n")
        assert f"Content-Length: {len(rest)}\r\n".encode() in head + b"\r\n"


def test_pipelined_probes_are_answered_in_order_as_one_by_one() -> None:
    """More pipelined probes than one write carries, every kind, GET and HEAD, with and without Connection:
    close: each answer is the one that probe gets alone, in order, and a close ends the connection there."""
    reqs = [(ask(path, method, PROXIED + extra), method == b"HEAD")
            for path in (b"/health", b"/healthz", b"/ready", b"/readyz", b"/startup", b"/startupz")
            for method in (b"GET", b"HEAD") for extra in (b"", b"User-Agent: kube-probe/1.31\r\n")]
    batch = [reqs[i % len(reqs)] for i in range(3 * port.ANSWERS_MAX + 5)]

    def client(p: int, _state: dict[str, Any]) -> tuple[list[bytes], list[bytes], list[bytes], bool]:
        s, r = connect(p)
        alone = []
        for req, head_only in reqs:
            s.sendall(req)
            alone.append(r.next(head_only))
        s.sendall(b"".join(req for req, _ in batch))
        piped = [r.next(head_only) for _, head_only in batch]
        s.sendall(ask(b"/readyz") + ask(b"/healthz", extra=b"Connection: close\r\n") + ask(b"/healthz"))
        last = [r.next(), r.next()]
        closed = r.closed()
        s.close()
        return alone, piped, last, closed

    alone, piped, last, closed = serve(client)
    by_request = {req: undated(a) for (req, _), a in zip(reqs, alone, strict=True)}
    assert [undated(a) for a in piped] == [by_request[req] for req, _ in batch]
    assert body(last[0])["ready"] is True and b"Connection: close\r\n" in last[1] and closed


def test_the_head_scanner_finds_what_the_expression_found() -> None:
    """`_head_end` against the expression it replaced, `\\r?\\n\\r?\\n` searched from `scan` - 3, on heads
    with every mix of CR and LF, from every scan offset."""
    rng = random.Random(7)
    expression = re.compile(rb"\r?\n\r?\n")
    cases = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\nHost: x\n\n", b"GET /\r\n\nX", b"\n\r\n",
             b"\r\n\r", b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n", b""]
    cases += [bytes(rng.choice(b"\r\nab") for _ in range(rng.randrange(1, 24))) for _ in range(3000)]
    for case in cases:
        for scan in range(len(case) + 2):
            m = expression.search(case, max(0, scan - 3))
            assert port._head_end(bytearray(case), scan) == ((m.end(), m.start()) if m else (-1, -1)), (case, scan)
