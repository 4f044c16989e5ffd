"""The port's per-socket deadline moves with each kept-alive probe instead of re-arming a timer per request.

In-process: the gateway's listener on a real loopback socket, a blocking client in a thread, the keep-alive
and head deadlines shortened through the module's constants. What is checked is behaviour (open or closed,
which answer), with bounds far wider than the deadlines.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvloop

from conftest import free_port
from openclaw_sup.config.settings import PortLimits
from openclaw_sup.gateway import port
from openclaw_sup.gateway.server import GatewayServer

PROBE = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
KEEPALIVE = 0.6
HEAD = 0.3


class Answers:
    """HTTP/1.1 answers read in order from one socket (pipelined ones may arrive in one read)."""

    def __init__(self, s: socket.socket) -> None:
        self.sock, self.buf = s, b""

    def next(self, head_only: bool = False) -> bytes:
        """The next answer's status line (its body, if any, read and dropped); b"" if the socket closed."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                return b""
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head_only:
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            while len(self.buf) < length:
                self.buf += self.sock.recv(4096)
            self.buf = self.buf[length:]
        return head.split(b"\r\n", 1)[0]


def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False


def with_server(client) -> object:  # type: ignore[no-untyped-def]
    async def main() -> object:
        srv = GatewayServer("127.0.0.1", free_port(), lambda: {"started": True, "workers": {}}, "test",
                            limits=PortLimits(head_timeout_ms=int(HEAD * 1000)))
        await srv.start()
        try:
            return await asyncio.to_thread(client, srv.port)
        finally:
            await srv.stop()

    return uvloop.run(main())


@pytest.fixture(autouse=True)
def short_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(port, "KEEPALIVE_S", KEEPALIVE)


def test_probes_spread_past_the_keepalive_keep_the_connection_then_idle_closes_it() -> None:
    """Probes 0.2 s apart for longer than the keep-alive: each one moves the idle deadline, so the connection
    stays; once idle, it is closed at the (moved) deadline."""
    def client(p: int) -> tuple[list[bytes], bool, bool]:
        s = socket.create_connection(("127.0.0.1", p), timeout=10)
        heads, answers = [], Answers(s)
        for _ in range(6):  # 1.2 s in all, twice the keep-alive
            s.sendall(PROBE)
            heads.append(answers.next())
            time.sleep(0.2)
        early = closed_within(s, 0.1)
        late = closed_within(s, 10)
        s.close()
        return heads, early, late

    heads, early, late = with_server(client)  # type: ignore[misc]
    assert heads == [b"HTTP/1.1 200 OK"] * 6
    assert not early, "the idle deadline must start from the last answer"
    assert late, "an idle kept-alive connection is closed"


def test_a_head_begun_after_probes_gets_the_head_deadline_not_the_idle_one() -> None:
    """After probes (idle deadline KEEPALIVE ahead), a begun head must still end within HEAD: the deadline
    moves earlier, and the 408 names it."""
    def client(p: int) -> bytes:
        s = socket.create_connection(("127.0.0.1", p), timeout=10)
        answers = Answers(s)
        for _ in range(3):
            s.sendall(PROBE)
            answers.next()
        s.sendall(b"GET /heal")
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        s.close()
        return out

    out = with_server(client)
    assert isinstance(out, bytes) and out.startswith(b"HTTP/1.1 408 ") and b"within 0.3s" in out


def test_a_remembered_probe_head_is_answered_as_the_first_was() -> None:
    """The same head answered again comes from the remembered judgement: pipelined answers still come in
    order, HEAD still gets no body, and the connection stays kept."""
    def client(p: int) -> list[bytes]:
        s = socket.create_connection(("127.0.0.1", p), timeout=10)
        lines, answers = [], Answers(s)
        for _ in range(2):
            s.sendall(PROBE * 3 + b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                      + b"GET /startupz HTTP/1.1\r\nHost: x\r\n\r\n")
            lines += [answers.next() for _ in range(3)]
            lines += [answers.next(head_only=True), answers.next()]
        s.close()
        return lines

    assert with_server(client) == [b"HTTP/1.1 200 OK"] * 10
