"""RFC 6455 on the gateway port, byte by byte, against a real supervisor: framing rules, close handshake,
back-pressure, health probes answered on the raw transport (keep-alive, pipelining), and the hand-over of
other HTTP (and of a late upgrade) to aiohttp on the same port."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct

import pytest
from test_gateway_protocol import TOKEN, client, gw_config, start_gw

from conftest import Gateway, wait_for
from openclaw_sup.gateway import wsframe
from openclaw_sup.gateway.client import ConnectionClosed, GatewayClient

CONNECT = {"minProtocol": 4, "maxProtocol": 4, "auth": {"token": TOKEN}, "scopes": ["operator.admin"],
           "client": {"id": "cli", "version": "test", "platform": "linux", "mode": "cli"}}


@pytest.fixture
def gw(gateway_factory) -> Gateway:
    return start_gw(gateway_factory)


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Raw:
    """A socket that speaks just enough HTTP and WebSocket to break the rules on purpose."""

    def __init__(self, g: Gateway) -> None:
        self.sock = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        self.buf = b""

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def http(self, request: bytes, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(request)
        return self.answer(head)

    def answer(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The next HTTP answer; a HEAD answer has a Content-Length and no body."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before a response")
            self.buf += chunk
        top, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = top.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        body = b"" if head else self.read(int(headers.get("content-length", 0)))
        return int(lines[0].split()[1]), headers, body

    def upgrade(self, extra: bytes = b"") -> None:
        key = base64.b64encode(os.urandom(16))
        status, headers, _ = self.http(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                       b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n" + extra)
        assert status == 101
        assert headers["sec-websocket-accept"] == base64.b64encode(hashlib.sha1(key + wsframe.GUID).digest()).decode()

    def frame(self) -> tuple[int, bytes]:
        b0, b1 = self.read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read(8))[0]
        return b0 & 0x0F, self.read(n)

    def json(self) -> dict:
        op, payload = self.frame()
        assert op == wsframe.OP_TEXT, (op, payload)
        return json.loads(payload)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def req(self, rid: str, method: str, params: dict | None = None) -> bytes:
        return masked(1, json.dumps({"type": "req", "id": rid, "method": method, "params": params or {}}).encode())

    def connected(self) -> Raw:
        self.upgrade()
        assert self.json()["event"] == "connect.challenge"
        self.send(self.req("c", "connect", CONNECT))
        assert self.json()["ok"] is True
        return self

    def closed_with(self) -> tuple[int, str]:
        """Skip to the close frame; (code, reason)."""
        while True:
            op, payload = self.frame()
            if op == wsframe.OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


# -- framing --------------------------------------------------------------------------------------------


def test_fragments_with_a_ping_between_them(gw: Gateway) -> None:
    r = Raw(gw).connected()
    body = json.dumps({"type": "req", "id": "h", "method": "health", "params": {}}).encode()
    r.send(masked(1, body[:10], fin=False) + masked(9, b"are-you-there") + masked(0, body[10:20], fin=False)
           + masked(0, body[20:]))
    while (frame := r.frame())[0] == wsframe.OP_TEXT:  # ticks (every 300 ms here) may come first
        assert json.loads(frame[1])["type"] == "event"
    assert frame == (wsframe.OP_PONG, b"are-you-there")
    while True:
        msg = r.json()
        if msg.get("type") == "res":
            break
    assert msg["id"] == "h" and msg["ok"] is True and msg["payload"]["ok"] is True


@pytest.mark.parametrize("bad,reason", [
    (masked(1, b"{}", mask=False), "client frames must be masked"),
    (masked(1, b"{}", rsv=0x40), "reserved bits set without an extension"),
    (masked(3, b"{}"), "unknown opcode 0x3"),
    (masked(0, b"{}"), "continuation frame without a message to continue"),
    (masked(9, b"x" * 126), "control frames must be final and at most 125 bytes"),
    (masked(1, b"{", fin=False) + masked(1, b"}"), "new message before the fragmented one ended"),
])
def test_framing_violations_close_1002_with_the_reason(gw: Gateway, bad: bytes, reason: str) -> None:
    r = Raw(gw).connected()
    r.send(bad)
    assert r.closed_with() == (1002, reason)
    assert client(gw).connect()["type"] == "hello-ok"


def test_message_limits_are_judged_from_the_header(gw: Gateway) -> None:
    pre = Raw(gw)
    pre.upgrade()
    pre.json()
    pre.send(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 70_000) + os.urandom(4))
    assert pre.closed_with() == (1009, "pre-auth frame exceeds 65536 bytes")
    post = Raw(gw).connected()
    post.send(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 26_214_401) + os.urandom(4))
    assert post.closed_with() == (1009, "message exceeds 26214400 bytes")


def test_close_handshake_is_answered_and_the_socket_ends(gw: Gateway) -> None:
    r = Raw(gw).connected()
    r.send(masked(8, struct.pack("!H", 1001) + b"going away"))
    assert r.closed_with() == (1001, "")  # a tick may come first: the fixture ticks every 300 ms
    assert r.buf == b"" and r.sock.recv(10) == b""


def test_first_frame_may_ride_with_the_upgrade(gw: Gateway) -> None:
    r = Raw(gw)
    r.upgrade(extra=r.req("c", "connect", CONNECT))
    assert r.json()["event"] == "connect.challenge"
    assert r.json()["payload"]["type"] == "hello-ok"


def test_a_client_that_never_reads_replies_is_paced_not_buffered(gw: Gateway) -> None:
    """2000 pipelined requests: reads pause while 128 run or the peer lags; every one is answered once."""
    r = Raw(gw).connected()
    r.send(b"".join(r.req(str(i), "health") for i in range(2000)))
    seen: dict[str, int] = {}
    while len(seen) < 2000:
        msg = r.json()
        if msg.get("type") == "res":
            assert msg["ok"] is True, msg
            seen[msg["id"]] = seen.get(msg["id"], 0) + 1
    assert set(seen) == {str(i) for i in range(2000)} and set(seen.values()) == {1}


# -- what is not a fresh upgrade goes to aiohttp ----------------------------------------------------------


def test_http_split_across_packets_and_other_methods_are_served_by_aiohttp(gw: Gateway) -> None:
    """A probe split across packets is answered once its head is whole; another method goes to aiohttp."""
    r = Raw(gw)
    r.send(b"GE")
    r.send(b"T /hea")
    status, _, body = r.http(b"lthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "live"
    status, _, _ = r.http(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status in (404, 405)


def test_http_from_the_first_moment_the_port_accepts(gateway_factory) -> None:
    """Probes are answered from the first moment the port accepts; a request for aiohttp that arrives before
    aiohttp is loaded (the first one brings it up) waits and is answered."""
    g = gateway_factory({"workers": {}}, config=gw_config())
    g.start(wait_running=False)
    probe = wait_for(lambda: _connect(g.port), 20, interval=0.002, what="the port accepting")
    other = _connect(g.port)
    assert other is not None
    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    other.sendall(b"GET /overview HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # the Control UI
    for sock, status, needle in ((probe, b"200", b'"status":"live"'), (other, b"200", b"<html")):
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 " + status + b" ") and needle in reply, reply[:200]


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return None


def test_a_doubtful_upgrade_is_refused_with_the_reason(gw: Gateway) -> None:
    r = Raw(gw)
    status, _, body = r.http(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n")
    assert status == 400 and b"Sec-WebSocket-Version (13 is required)" in body


def test_upgrade_after_http_on_one_kept_alive_connection(gw: Gateway) -> None:
    """aiohttp owns a connection once it served a request; a later upgrade there still speaks the protocol."""
    r = Raw(gw)
    assert r.http(b"GET /overview HTTP/1.1\r\nHost: x\r\n\r\n")[1]["content-type"].startswith("text/html")
    r.connected()
    r.send(r.req("h", "health"))
    while (msg := r.json()).get("type") != "res":
        pass
    assert msg["id"] == "h" and msg["payload"]["ok"] is True
    r.send(masked(1, b"not json"))
    assert r.closed_with() == (1008, "invalid request frame")


def test_shutdown_reaches_sockets_still_in_the_handshake(gw: Gateway) -> None:
    pending = Raw(gw)
    pending.upgrade()
    pending.json()
    done = client(gw)
    done.connect()
    gw.stop()
    assert pending.closed_with() == (1012, "service restart")
    with pytest.raises(ConnectionClosed):
        for _ in range(100):
            done.ws.recv(5)


def test_a_proxied_loopback_caller_is_not_treated_as_local(gw: Gateway) -> None:
    """A proxy header on a loopback socket means someone else is behind it: no local trust on either path."""
    kw = {"client_id": "gateway-client", "mode": "backend", "scopes": ["operator.read"]}
    assert client(gw, **kw).connect()["auth"]["scopes"] == ["operator.read"]
    for header in ("X-Forwarded-For", "x-real-ip", "Forwarded"):
        proxied = client(gw, headers={header: "for=203.0.113.9"}, **kw)
        assert proxied.connect()["auth"]["scopes"] == [], header
    r = Raw(gw)
    _, _, direct = r.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    _, _, proxied_body = r.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
    assert "version" in json.loads(direct) and json.loads(proxied_body) == {"ok": True, "status": "live"}


# -- health probes on the raw transport ------------------------------------------------------------------


def _mapped(pid: int, needle: str) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return needle in f.read()


def test_probes_are_answered_without_aiohttp(gateway_factory) -> None:
    """GET and HEAD of every probe path on one kept-alive connection, answered on the raw transport: aiohttp is
    not loaded for them; the first other request loads it."""
    g = gateway_factory({"workers": {}}, config=gw_config()).start()
    sup = g.status()["supervisor"]["pid"]
    r = Raw(g)
    for path in (b"/health", b"/healthz", b"/ready", b"/readyz", b"/startup", b"/startupz"):
        status, headers, body = r.http(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
        assert headers["cache-control"] == "no-store" and json.loads(body)["ok"] is True
        h_status, h_headers, h_body = r.http(b"HEAD " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n", head=True)
        assert (h_status, h_headers["content-length"], h_body) == (200, str(len(body)), b"")
    assert json.loads(r.http(b"GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n")[2])["status"] == "ready"
    assert not _mapped(sup, "/aiohttp/"), "aiohttp was loaded for a probe"
    assert r.http(b"GET /overview HTTP/1.1\r\nHost: x\r\n\r\n")[1]["content-type"].startswith("text/html")
    assert _mapped(sup, "/aiohttp/")


def test_pipelined_probes_are_answered_in_order_then_handed_over(gw: Gateway) -> None:
    """Requests written at once are answered in order: the probes here, then the connection goes to aiohttp
    with the bytes that follow, and keeps answering."""
    r = Raw(gw)
    r.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /startupz HTTP/1.1\r\nHost: x\r\n\r\nGET /overview HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    live, ready, started, ui, again = (r.answer(), r.answer(head=True), r.answer(), r.answer(), r.answer())
    assert json.loads(live[2])["status"] == "live" and ready[0] == 200 and ready[2] == b""
    assert json.loads(started[2])["status"] == "started" and ui[1]["content-type"].startswith("text/html")
    assert again[0] == 200 and json.loads(again[2])["status"] == "live"  # aiohttp's route: the same answer
    assert json.loads(again[2]).keys() == json.loads(live[2]).keys()


def test_probe_connection_close_http10_and_upgrade_after_probes(gw: Gateway) -> None:
    """`Connection: close` is honoured; an HTTP/1.0 probe is answered (by aiohttp); an upgrade after probes on
    one connection is taken on the raw transport."""
    r = Raw(gw)
    status, headers, _ = r.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"
    assert r.sock.recv(1) == b""
    old = Raw(gw)
    old.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    reply = b""
    while chunk := old.sock.recv(65536):
        reply += chunk
    assert reply.split(b" ", 2)[1] == b"200" and b'"live"' in reply
    r = Raw(gw)
    assert r.http(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", head=True)[0] == 200
    r.connected()
    r.send(r.req("h", "health"))
    while (msg := r.json()).get("type") != "res":
        pass
    assert msg["id"] == "h" and msg["payload"]["ok"] is True


def test_a_probe_with_control_bytes_in_its_head_is_refused(gw: Gateway) -> None:
    """Control bytes are not allowed in a request head: such a probe is not answered here but refused (by
    aiohttp, 400), as any other request would be."""
    for head in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\x01\r\n\r\n",
                 b"GET /healthz HTTP/1.1\r\nHo\x7fst: x\r\n\r\n"):
        r = Raw(gw)
        assert r.http(head)[0] == 400
        assert r.sock.recv(1) == b""


# -- the codec on its own -------------------------------------------------------------------------------


def test_frame_codec_round_trip() -> None:
    for n in (0, 5, 125, 126, 65535, 65536, 200_000):
        payload = os.urandom(n)
        buf = bytearray(masked(2, payload))
        fin, op, got, used = wsframe.next_frame(buf, 1 << 20)
        assert (fin, op, got, used) == (True, 2, payload, len(buf))
        assert wsframe.next_frame(buf[:-1], 1 << 20) is None
        out = wsframe.encode(1, payload)
        assert out[0] == 0x81 and out.endswith(payload)
    with pytest.raises(wsframe.FrameError) as info:
        wsframe.parse_close(struct.pack("!H", 1005))
    assert info.value.code == 1002
    assert wsframe.parse_close(b"") == (1005, "")


def test_upgrade_problems_are_named() -> None:
    good = {"upgrade": "websocket", "connection": "keep-alive, Upgrade", "sec-websocket-version": "13",
            "sec-websocket-key": base64.b64encode(b"k" * 16).decode()}
    assert wsframe.upgrade_problem("GET", "/?x=1", good) is None
    assert wsframe.upgrade_problem("POST", "/", good) == "a WebSocket upgrade must be a GET"
    assert wsframe.upgrade_problem("GET", "/ws", good) == "no WebSocket endpoint at /ws"
    assert wsframe.upgrade_problem("GET", "/", {**good, "connection": "close"}) == "missing Connection: upgrade"
    assert "16 bytes" in (wsframe.upgrade_problem("GET", "/", {**good, "sec-websocket-key": "abc"}) or "")


def test_client_library_still_connects(gw: Gateway) -> None:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    assert c.connect()["type"] == "hello-ok"
    assert c.request("health")["ok"] is True
