"""The gateway port against hostile peers: head deadline and limits, admission caps, protocol edges.

Real supervisor, real sockets on loopback (several 127.x source addresses where a per-address rule is
tested). Deadlines are shortened through the settings so the tests wait for them briefly; nothing here
asserts a duration.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time

import pytest
from test_gateway_protocol import TOKEN, client, gw_config
from test_gateway_wire import CONNECT, Raw, masked

from conftest import Gateway, wait_for
from openclaw_sup.gateway import wsframe
from openclaw_sup.gateway.admission import Admission
from openclaw_sup.gateway.client import GatewayClient, GatewayError

UPGRADE = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


def start(gateway_factory, **limits: int) -> Gateway:
    settings = {"workers": {"scheduler": {"kind": "fake_owner"}, "agent": {"kind": "fake_owner"}},
                "limits": {"headTimeoutMs": 400, **limits}}
    return gateway_factory(settings, config=gw_config()).start()


@pytest.fixture
def gw(gateway_factory) -> Gateway:
    return start(gateway_factory)


def sock_from(g: Gateway, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", g.port))
    return s


def answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def status_line(data: bytes) -> int:
    return int(data.split(b"\r\n", 1)[0].split()[1])


# -- the request head ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [17 * 1024, 64 * 1024])
def test_head_over_16_kib_is_refused_in_one_write(gw: Gateway, size: int) -> None:
    s = sock_from(gw)
    s.sendall(UPGRADE + b"X-Pad: " + b"a" * size + b"\r\n\r\n")
    data = answer(s)
    assert status_line(data) == 431 and b"exceeds 16384 bytes" in data


def test_refused_peer_still_sending_reads_the_answer(gw: Gateway) -> None:
    """The answer survives what the peer was still sending: a close with bytes unread would reset the
    connection and drop the answer before it left or before the peer read it."""
    s = sock_from(gw)

    def send() -> None:
        with contextlib.suppress(OSError):
            s.sendall(UPGRADE + b"X-Pad: " + b"a" * (768 << 10))

    threading.Thread(target=send, daemon=True).start()
    data = answer(s)
    assert status_line(data) == 431 and b"exceeds 16384 bytes" in data


def test_head_over_16_kib_is_refused_in_pieces(gw: Gateway) -> None:
    s = sock_from(gw)
    s.sendall(UPGRADE)
    for _ in range(20):
        try:
            s.sendall(b"X-Pad: " + b"b" * 1000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            break
    assert status_line(answer(s)) == 431


@pytest.mark.parametrize(("count", "reason"), [(2000, b"exceeds 16384 bytes"), (500, b"more than 128 header lines")])
def test_thousands_of_headers_in_one_write_are_refused(gw: Gateway, count: int, reason: bytes) -> None:
    s = sock_from(gw)
    s.sendall(UPGRADE + b"".join(b"a%d:b\r\n" % i for i in range(count)) + b"\r\n")
    data = answer(s)
    assert status_line(data) == 431 and reason in data


@pytest.mark.parametrize("request_", [b"GET / HTTP/1.1\nHost: x\n\n", b"GET /healthz HTTP/1.1\r\nHost: x\n\r\n"])
def test_bare_lf_heads_are_answered_not_hung(gw: Gateway, request_: bytes) -> None:
    s = sock_from(gw)
    s.sendall(request_)
    data = answer(s)
    assert status_line(data) == 400 and b"CRLF" in data


@pytest.mark.parametrize("sent", [b"", b"G", b"GET /", UPGRADE])
def test_an_incomplete_head_is_cut_at_the_deadline(gw: Gateway, sent: bytes) -> None:
    s = sock_from(gw)
    s.sendall(sent)
    data = answer(s)
    assert status_line(data) == 408 and b"no complete request head within 0.4s" in data


def test_a_dripped_head_is_cut_at_the_deadline(gw: Gateway) -> None:
    s = sock_from(gw)
    s.sendall(UPGRADE)
    closed = False
    for _ in range(200):
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.02)
        s.setblocking(False)
        try:
            if s.recv(65536, socket.MSG_PEEK):
                closed = True
                break
        except BlockingIOError:
            pass
        finally:
            s.setblocking(True)
    assert closed, "a head dripped a byte at a time was never cut off"
    assert status_line(answer(s)) == 408


def test_not_http_at_all_goes_to_aiohttp_at_once(gw: Gateway) -> None:
    s = sock_from(gw)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40)
    assert status_line(answer(s)) == 400


# -- admission ----------------------------------------------------------------------------------------

def test_unauthenticated_sockets_per_address_are_capped(gateway_factory) -> None:
    g = start(gateway_factory, preauthPerAddress=4, headTimeoutMs=30_000)
    held = [sock_from(g, "127.0.0.5") for _ in range(4)]
    wait_for(lambda: g.status()["supervisor"]["port"]["unauthenticated"] == 4, 10, what="4 sockets admitted")
    fifth = sock_from(g, "127.0.0.5")
    data = answer(fifth)
    assert status_line(data) == 503 and b"too many unauthenticated connections from this address" in data
    other = client(g)
    other.connect()  # another address (127.0.0.1) is not affected
    assert other.request("health")["ok"] is True
    held.pop().close()
    wait_for(lambda: g.status()["supervisor"]["port"]["unauthenticated"] == 3, 10, what="a slot freed")
    assert g.status()["supervisor"]["port"]["refusedPerAddress"] == 1


def test_authenticated_sockets_leave_the_per_address_budget(gateway_factory) -> None:
    g = start(gateway_factory, preauthPerAddress=2, headTimeoutMs=30_000)
    clients = []
    for _ in range(5):  # one after the other: each leaves the budget once `connect` succeeds
        clients.append(client(g))
        clients[-1].connect()
    assert all(c.request("health")["ok"] for c in clients)
    assert g.status()["supervisor"]["port"]["unauthenticated"] == 0


def test_a_full_port_evicts_the_oldest_unauthenticated_socket(gateway_factory) -> None:
    g = start(gateway_factory, maxConnections=16, headTimeoutMs=30_000)
    good = client(g)
    good.connect()
    wait_for(lambda: g.status()["supervisor"]["port"]["capacity"] == 16, 10, what="the capacity applied")
    silent = [sock_from(g, f"127.0.1.{i}") for i in range(1, 16)]
    wait_for(lambda: g.status()["supervisor"]["port"]["open"] >= 16, 10, what="the port full")
    newcomer = sock_from(g, "127.0.2.1")
    data = answer(silent[0])
    assert status_line(data) == 503 and b"gateway busy" in data
    newcomer.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_line(answer(newcomer)) == 200
    assert good.request("health")["ok"] is True, "an authenticated socket is never evicted"
    port = g.status()["supervisor"]["port"]
    assert port["evicted"] >= 1 and port["refusedFull"] == 0


def test_admission_rules() -> None:
    class Sock:
        def __init__(self) -> None:
            self.evicted = False

        def evict(self) -> None:
            self.evicted = True

    adm = Admission(capacity=16, per_address=2)
    a, b, c = Sock(), Sock(), Sock()
    assert adm.admit(a, "1.1.1.1") is None and adm.admit(b, "1.1.1.1") is None
    assert adm.admit(c, "1.1.1.1") == "too many unauthenticated connections from this address"
    adm.authenticated(a)
    assert adm.admit(c, "1.1.1.1") is None
    fill = [Sock() for _ in range(13)]
    for i, s in enumerate(fill):
        assert adm.admit(s, f"2.0.0.{i}") is None
    assert adm.in_use() == 16
    late = Sock()
    assert adm.admit(late, "3.0.0.1") is None
    assert b.evicted and not a.evicted, "the oldest unauthenticated socket goes, never an authenticated one"
    for s in (c, *fill, late):
        adm.authenticated(s)
    assert adm.admit(Sock(), "4.0.0.1") == "the gateway is at its connection limit"
    adm.release(a)
    adm.release(a)
    assert adm.in_use() == 15 and adm.admit(Sock(), "4.0.0.1") is None


# -- WebSocket protocol edges -------------------------------------------------------------------------

def connected(g: Gateway) -> Raw:
    r = Raw(g)
    r.upgrade()
    assert r.json()["event"] == "connect.challenge"
    r.send(masked(1, json.dumps({"type": "req", "id": "c", "method": "connect", "params": CONNECT}).encode()))
    assert r.json()["ok"] is True
    return r


def closed_with(r: Raw) -> tuple[int, str]:
    while True:
        op, payload = r.frame()
        if op == wsframe.OP_CLOSE:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def test_invalid_utf8_in_a_text_frame_closes_1007(gw: Gateway) -> None:
    r = connected(gw)
    r.send(masked(1, b'{"type":"req","id":"x","method":"health","params":{"a":"\xff\xfe"}}'))
    assert closed_with(r) == (1007, "text message is not valid UTF-8")


def test_invalid_utf8_across_fragments_closes_1007(gw: Gateway) -> None:
    r = connected(gw)
    r.send(masked(1, b'{"type":"req","id":"x","method":"h\xc3', fin=False) + masked(0, b'\x28"}'))
    assert closed_with(r)[0] == 1007


@pytest.mark.parametrize("code", [65535, 5000, 999, 1004, 1005, 1006, 1015, 1016, 2999])
def test_invalid_close_codes_are_a_protocol_error(gw: Gateway, code: int) -> None:
    r = connected(gw)
    r.send(masked(8, struct.pack("!H", code) + b"bye"))
    assert closed_with(r) == (1002, f"invalid close code {code}")


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1012, 1013, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed(gw: Gateway, code: int) -> None:
    r = connected(gw)
    r.send(masked(8, struct.pack("!H", code)))
    assert closed_with(r) == (code, "")


@pytest.mark.parametrize("rid", [True, 7, "", None, {"a": 1}])
def test_request_id_must_be_a_non_empty_string(gw: Gateway, rid: object) -> None:
    r = connected(gw)
    r.send(masked(1, json.dumps({"type": "req", "id": rid, "method": "health"}).encode()))
    while (msg := r.json()).get("type") != "res":
        pass
    assert msg["ok"] is False and msg["id"] == "invalid"
    assert msg["error"] == {"code": "INVALID_REQUEST",
                            "message": "invalid request frame: id must be a non-empty string"}
    r.send(r.req("after", "health"))
    while (msg := r.json()).get("type") != "res":
        pass
    assert msg["id"] == "after" and msg["ok"] is True, "the connection stays usable"


def test_connect_with_a_non_string_id_is_refused(gw: Gateway) -> None:
    r = Raw(gw)
    r.upgrade()
    r.json()
    r.send(masked(1, json.dumps({"type": "req", "id": True, "method": "connect", "params": CONNECT}).encode()))
    assert closed_with(r) == (1008, "invalid request frame")


def test_the_good_client_library_still_works_with_a_string_id(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    with pytest.raises(GatewayError) as info:
        c.request("no.such.method")
    assert info.value.code == "INVALID_REQUEST"
    assert TOKEN not in json.dumps(gw.status())
    c.close()


# -- TLS: admitted before the handshake ---------------------------------------------------------------

def test_tls_handshakes_are_admitted_capped_and_evicted(gateway_factory) -> None:
    """Sockets that never finish (or start) a TLS handshake count like any unauthenticated socket: capped per
    address, evicted oldest first when the port is full; a good wss:// client still gets in."""
    from openclaw_sup.gateway.tls import TlsSettings

    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}, "tls": {"enabled": True}}}
    g = gateway_factory({"kinds": [], "limits": {"maxConnections": 16, "preauthPerAddress": 4,
                                                "headTimeoutMs": 30_000}}, config=cfg).start()
    pin = TlsSettings.from_config({"tls": {"enabled": True}}, g.state_dir).fingerprint()  # type: ignore[union-attr]
    wait_for(lambda: g.status()["supervisor"]["port"]["capacity"] == 16, 10, what="the capacity applied")
    same = [sock_from(g, "127.0.4.1") for _ in range(5)]
    assert answer(same[4]) == b"", "the fifth handshake from one address is closed at once"
    assert g.status()["supervisor"]["port"]["refusedPerAddress"] == 1
    silent = [sock_from(g, f"127.0.5.{i}") for i in range(1, 20)]
    port = wait_for(lambda: (p := g.status()["supervisor"]["port"])["evicted"] > 0 and p, 10, what="evictions")
    assert port["open"] <= 16 and answer(same[0]) == b"", "the oldest handshake went first"
    c = GatewayClient(f"wss://127.0.0.1:{g.port}", token=TOKEN, tls_fingerprint=pin)
    assert c.connect()["type"] == "hello-ok" and c.request("health")["ok"] is True
    for s in same + silent:
        s.close()
    wait_for(lambda: g.status()["supervisor"]["port"]["unauthenticated"] == 0, 10, what="the handshakes gone")
    assert c.request("health")["ok"] is True


# -- heads after a probe on a kept-alive connection ---------------------------------------------------

PROBE = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_kept_alive_probe_connection_judges_each_head_as_the_first(gw: Gateway) -> None:
    """After a probe the connection is kept: a next request line that arrives in pieces is answered once whole;
    a pipelined head over 16 KiB is refused with the reason after the probes before it are answered."""
    r = Raw(gw)
    assert r.http(PROBE)[0] == 200
    for piece in (b"GET /sta", b"rtupz HTTP/1.1\r\nHo", b"st: x\r", b"\n\r\n"):
        r.send(piece)
        time.sleep(0.05)
    status, _headers, body = r.answer()
    assert status == 200 and json.loads(body)["status"] == "started"
    r.send(PROBE + UPGRADE + b"X-Pad: " + b"a" * (17 * 1024) + b"\r\n\r\n")
    assert r.answer()[0] == 200
    rest = r.buf + answer(r.sock)
    assert status_line(rest) == 431 and b"exceeds 16384 bytes" in rest


@pytest.mark.parametrize("sent", [b"", b"GET /heal", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"])
def test_a_head_started_after_a_probe_is_cut_at_the_deadline(gw: Gateway, sent: bytes) -> None:
    """An idle kept-alive connection waits for its next request (the keep-alive timeout), but a head once begun
    must be complete within the head deadline."""
    r = Raw(gw)
    assert r.http(PROBE)[0] == 200
    if not sent:
        r.sock.settimeout(0.8)
        with pytest.raises(TimeoutError):
            r.sock.recv(1)  # idle past the head deadline: still open
        r.sock.settimeout(10)
        assert r.http(PROBE)[0] == 200
        return
    r.send(sent)
    rest = answer(r.sock)
    assert status_line(rest) == 408 and b"no complete request head within 0.4s" in rest
