"""The synchronous gateway client: the connect handshake and RPCs over `websockets`' sync client, ws:// or wss://.

The CLI uses it so that `gateway status`, `health` and `gateway call` start without asyncio or aiohttp (the
library is imported on first connect, never by `status`, which uses the control socket). TLS follows
upstream's remote rules: system trust by default, or a pinned SHA-256 fingerprint (`gateway.remote.
tlsFingerprint`, or the local gateway's own certificate) that is checked before the upgrade is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import socket
import ssl
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

OP_TEXT, OP_BINARY = 1, 2
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PLAINTEXT_OK_SUFFIXES = (".local", ".ts.net", ".localhost")


class GatewayError(Exception):
    """A failed RPC: the protocol error object is in `error`."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error
        self.code = error.get("code")
        self.details = error.get("details") or {}


class ConnectionClosed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"gateway closed ({code}): {reason}")
        self.code, self.reason = code, reason


class TlsPinMismatch(ConnectionError):
    """The server's certificate is not the pinned one: nothing was sent to it."""


def normalize_fingerprint(text: str) -> str:
    """`sha256:AA:BB:...`, `AA:BB...` or `aabb...` -> 64 lowercase hex digits; ValueError otherwise."""
    hexed = text.strip().lower().removeprefix("sha256:").removeprefix("sha-256:").replace(":", "").replace(" ", "")
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ValueError(f"invalid TLS fingerprint {text!r}: expected the certificate's SHA-256 as 64 hex digits "
                         "(colons allowed), e.g. from `openssl x509 -noout -fingerprint -sha256 -in cert.pem`")
    return hexed


def fingerprint_of(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as `AA:BB:...` (the form openssl prints)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


def plaintext_allowed(host: str) -> bool:
    """Upstream's rule: plaintext ws:// only to loopback, private/LAN, link-local, CGNAT, .local and .ts.net."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(PLAINTEXT_OK_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    cgnat = ipaddress.ip_network("100.64.0.0/10")
    return ip.is_loopback or ip.is_private or ip.is_link_local or (ip.version == 4 and ip in cgnat)


def tls_context(fingerprint: str | None = None, ca_path: str | None = None) -> ssl.SSLContext:
    """System trust (plus `ca_path`) by default; with a pinned fingerprint the pin is the trust, so a
    self-signed gateway works and any other certificate is refused after the TLS handshake, before the
    WebSocket upgrade carries anything."""
    if fingerprint:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
    return ctx


def open_socket(url: str, timeout: float, *, fingerprint: str | None = None,
                ca_path: str | None = None) -> tuple[socket.socket, str]:
    """TCP (and TLS for wss://) to the URL's host, with the pin checked before anything is sent; returns the
    socket and the URL to run the WebSocket upgrade over it (always `ws://`: TLS is already on the socket).
    Plaintext to a public host is refused as upstream refuses it."""
    u = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(u.scheme, u.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"unsupported gateway URL {url!r}: use ws://host:port or wss://host:port")
    host = u.hostname or "127.0.0.1"
    port = u.port or (443 if scheme == "wss" else 18789)
    if scheme == "ws" and not plaintext_allowed(host):
        raise ValueError(f"refusing plaintext ws:// to public host {host}: use wss:// (plaintext is only for "
                         "loopback, private/LAN, link-local, CGNAT, .local and .ts.net hosts)")
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if scheme == "wss":
        pin = normalize_fingerprint(fingerprint) if fingerprint else None
        try:
            sock = tls_context(pin, ca_path).wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise ConnectionError(f"TLS certificate of {host}:{port} not trusted ({exc.verify_message}): pin it "
                                  "with gateway.remote.tlsFingerprint or add its CA") from None
        if pin:
            der = sock.getpeercert(binary_form=True) or b""
            if hashlib.sha256(der).hexdigest() != pin:
                sock.close()
                raise TlsPinMismatch(f"TLS certificate fingerprint mismatch for {host}:{port}: expected "
                                     f"{_colons(pin)}, got "
                                     f"{fingerprint_of(der)}; if the gateway's certificate was renewed, update "
                                     "gateway.remote.tlsFingerprint")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return sock, urlunsplit(("ws", netloc, u.path or "/", u.query, ""))


def _colons(hexed: str) -> str:
    return ":".join(hexed[i:i + 2] for i in range(0, len(hexed), 2)).upper()


class WebSocket:
    """A WebSocket connection for the CLI and tests (the `websockets` sync client): text messages, close codes
    as `ConnectionClosed(code, reason)`, TLS with an optional pinned fingerprint."""

    def __init__(self, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None, *,
                 tls_fingerprint: str | None = None, ca_path: str | None = None) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        sock, ws_url = open_socket(url, timeout, fingerprint=tls_fingerprint, ca_path=ca_path)
        try:
            self.conn = connect(ws_url, sock=sock, open_timeout=timeout, additional_headers=headers,
                                compression=None, ping_interval=None, max_size=MAX_MESSAGE_BYTES,
                                close_timeout=2, legacy=True)
        except InvalidStatus as exc:
            sock.close()
            raise ConnectionError(f"WebSocket upgrade refused: HTTP {exc.response.status_code} "
                                  f"{exc.response.reason_phrase}") from None
        except (InvalidHandshake, TimeoutError) as exc:
            sock.close()
            raise ConnectionError(f"WebSocket upgrade failed: {exc}") from None
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def sock(self) -> socket.socket:
        return self.conn.socket

    def _closed(self, exc: Exception) -> ConnectionClosed:
        rcvd = getattr(exc, "rcvd", None)
        self.close_code = rcvd.code if rcvd is not None else 1006
        self.close_reason = rcvd.reason if rcvd is not None else "connection lost"
        return ConnectionClosed(self.close_code, self.close_reason)

    def recv(self, timeout: float | None = None) -> str:
        """Next message as text; raises ConnectionClosed when the server closes, TimeoutError on timeout."""
        from websockets.exceptions import ConnectionClosed as WsClosed

        try:
            msg = self.conn.recv(timeout)
        except WsClosed as exc:
            raise self._closed(exc) from None
        return msg if isinstance(msg, str) else msg.decode()

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """A whole data message (frame-level tests write raw frames on a socket, as tests/test_gateway_wire.py)."""
        from websockets.exceptions import ConnectionClosed as WsClosed

        try:
            self.conn.send(payload.decode() if opcode == OP_TEXT else payload)
        except WsClosed as exc:
            raise self._closed(exc) from None

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode())

    def close(self, code: int = 1000) -> None:
        with contextlib.suppress(Exception):
            self.conn.close(code)


class GatewayClient:
    """Connect, answer the challenge, then `call` methods; events seen meanwhile land in `events`."""

    def __init__(self, url: str, *, token: str | None = None, password: str | None = None, client_id: str = "cli",
                 mode: str = "cli", scopes: list[str] | None = None, timeout: float = 10.0,
                 headers: dict[str, str] | None = None, tls_fingerprint: str | None = None,
                 ca_path: str | None = None) -> None:
        self.url, self.timeout = url, timeout
        self.token, self.password = token, password
        self.client_id, self.mode = client_id, mode
        self.scopes = scopes if scopes is not None else ["operator.admin", "operator.read", "operator.write"]
        self.ws = WebSocket(url, timeout, headers, tls_fingerprint=tls_fingerprint, ca_path=ca_path)
        self.events: list[dict[str, Any]] = []
        self.hello: dict[str, Any] = {}
        self.challenge: dict[str, Any] = {}
        self._n = 0

    def connect_params(self, **overrides: Any) -> dict[str, Any]:
        auth = {k: v for k, v in (("token", self.token), ("password", self.password)) if v}
        params: dict[str, Any] = {
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": self.client_id, "version": "openclaw-sup", "platform": "linux", "mode": self.mode,
                       "instanceId": str(uuid.uuid4())},
            "role": "operator", "scopes": self.scopes, "caps": [],
        }
        if auth:
            params["auth"] = auth
        params.update(overrides)
        return params

    def read_challenge(self) -> dict[str, Any]:
        frame = json.loads(self.ws.recv(self.timeout))
        if frame.get("event") != "connect.challenge":
            raise ConnectionError(f"expected connect.challenge first, got {frame!r}")
        self.challenge = frame["payload"]
        return self.challenge

    def connect(self, **overrides: Any) -> dict[str, Any]:
        self.read_challenge()
        self.hello = self.request("connect", self.connect_params(**overrides))
        return self.hello

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send_text(json.dumps(frame))

    def request(self, method: str, params: Any = None, *, expect_final: bool = False,
                timeout: float | None = None) -> Any:
        self._n += 1
        rid = f"{self._n}:{uuid.uuid4()}"
        frame: dict[str, Any] = {"type": "req", "id": rid, "method": method}
        if params is not None:
            frame["params"] = params
        self.send(frame)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = max(0.01, deadline - time.monotonic())
            msg = json.loads(self.ws.recv(left))
            if msg.get("type") == "event":
                self.events.append(msg)
                continue
            if msg.get("type") == "res" and msg.get("id") == rid:
                if not msg.get("ok"):
                    raise GatewayError(msg.get("error") or {})
                payload = msg.get("payload")
                if expect_final and isinstance(payload, dict) and payload.get("status") == "accepted":
                    continue
                return payload

    call = request

    def next_event(self, name: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if name is None or ev.get("event") == name:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(max(0.01, deadline - time.monotonic())))
            if msg.get("type") == "event" and (name is None or msg.get("event") == name):
                return msg
            if msg.get("type") == "event":
                self.events.append(msg)

    def close(self) -> None:
        self.ws.close()
