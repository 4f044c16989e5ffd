"""One WebSocket client: challenge, the connect handshake, then requests and pushed events.

The handshake follows the real server's order (spec/protocol.md section 2): frame checks, connect params,
protocol window, role, failed-auth lockout, shared secret or device token, device proof and pairing,
start-up gate, scopes, then `hello-ok`. Every failure answers with the upstream error object and closes
with the upstream code; nothing a client sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from openclaw_sup.gateway import authn, device
from openclaw_sup.gateway.hub import EventQueue, encode_event, now_ms
from openclaw_sup.gateway.protocol import (
    AUTH_KEYS,
    CLIENT_IDS,
    CLIENT_KEYS,
    CLIENT_MODES,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_RESTART,
    CLOSE_TRY_LATER,
    CONNECT_KEYS,
    DEVICE_KEYS,
    HANDSHAKE_TIMEOUT_S,
    MAX_PAYLOAD,
    MIN_PROBE_PROTOCOL,
    PRE_AUTH_MAX_BYTES,
    PROTOCOL,
    ROLES,
    MethodError,
    res_err,
    res_ok,
)

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore
    from openclaw_sup.gateway.port import WireSocket

T = TypeVar("T")
NO_CAPS: list[str] = []
"""Shared by every client that declares no capability (read only, never appended to)."""
SHARED_STR_MAX = 64
MAX_INFLIGHT = 64
"""Requests routed to workers that may run at once per connection; more are refused as retryable."""
HOLD_AT = 2 * MAX_INFLIGHT
"""Requests of any kind at once per connection before reading stops (the peer then waits, nothing is lost)."""
STARTING_HOLD_S = 1.0
"""A connect that arrives while the workers' first starts are under way waits this long for them before it is
refused with 1013 `gateway starting` (a client then retries after upstream's 500 ms)."""
HELD_FRAMES_MAX = 16
RELEASED: list[bytes] = []
"""`_held` of a connection whose connect was held and then let through (never appended to)."""


class Reject(Exception):
    """Handshake failure: the error to answer with (if any) and the close code and reason."""

    def __init__(self, close_code: int, reason: str, error: dict[str, Any] | None = None, rid: Any = None) -> None:
        super().__init__(reason)
        self.close_code, self.reason, self.error, self.rid = close_code, reason, error, rid


class Connection:
    """A WebSocket client of the gateway, driven by its socket's callbacks.

    Nothing runs for an idle connection: a handshake timer until `connect`, then no task at all. A request
    gets a task for as long as it runs; reads pause while `MAX_INFLIGHT` are running.
    """

    __slots__ = ("_held", "_inflight", "_timer", "caps", "client", "client_mode", "connected_at", "core",
                 "device_id", "events", "id", "loopback_direct", "node_params", "nonce", "remote_ip", "retiring",
                 "role", "scopes", "seq", "sock")

    def __init__(self, sock: WireSocket, core: GatewayCore, remote_ip: str, loopback_direct: bool) -> None:
        self.sock = sock
        self.core = core
        self.id = str(uuid.uuid4())
        self.remote_ip = sys.intern(remote_ip)  # thousands of clients from a few addresses share the strings
        self.loopback_direct = loopback_direct
        self.nonce = str(uuid.uuid4())
        self.scopes: list[str] = []
        self.role = "operator"
        self.client: dict[str, Any] = {}
        self.client_mode = ""
        self.caps: list[str] = NO_CAPS
        self.device_id: str | None = None
        self.node_params: dict[str, Any] | None = None
        self.seq = 0
        self.connected_at = now_ms()
        self.events: EventQueue | None = None
        self._inflight: set[asyncio.Task[None]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._held: list[bytes] | None = None  # the connect (and what followed it) while the gateway was starting
        self.retiring = False  # an in-place restart is closing this client: new requests are refused

    # -- identity ------------------------------------------------------------------------------------

    @property
    def presence_key(self) -> str:
        return self.device_id or self.client.get("instanceId") or self.id

    def presence_entry(self, reason: str) -> dict[str, Any]:
        entry = {"ts": now_ms(), "reason": reason, "ip": self.remote_ip, "mode": self.client_mode,
                 "roles": [self.role], "scopes": list(self.scopes)}
        for key in ("version", "platform", "deviceFamily", "modelIdentifier", "instanceId"):
            if self.client.get(key):
                entry[key] = self.client[key]
        if self.device_id:
            entry["deviceId"] = self.device_id
        if self.client.get("displayName"):
            entry["host"] = self.client["displayName"]
        return entry

    def has_scope(self, scope: str) -> bool:
        return authn.has_scope(self.scopes, scope)

    @property
    def busy(self) -> bool:
        """Whether a request of this client is still being answered."""
        return bool(self._inflight)

    # -- sending -------------------------------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        self.sock.send_text(orjson.dumps(frame))

    def push_event(self, event: str, payload: Any, state: dict[str, int] | None = None) -> bool:
        if self.events is None or self.sock.closed:
            return False
        return self.push_encoded(*encode_event(event, payload, state))

    def push_encoded(self, head: bytes, tail: bytes) -> bool:
        """`push_event` of an event encoded once for many sockets (`hub.encode_event`): only `seq` is ours."""
        if self.events is None or self.sock.closed:
            return False
        self.seq += 1
        return self.events.put(b"%s%d%s" % (head, self.seq, tail))

    def close(self, code: int, reason: str) -> None:
        self.sock.close(code, reason)

    async def close_with_shutdown(self, payload: dict[str, Any]) -> None:
        if self.events is not None:
            self.push_event("shutdown", payload)
            await self.events.flush(1.0)
        self.close(CLOSE_RESTART, "service restart")

    # -- socket callbacks ----------------------------------------------------------------------------

    def opened(self) -> None:
        self.sock.set_limit(PRE_AUTH_MAX_BYTES, "pre-auth frame")
        self.send({"type": "event", "event": "connect.challenge",
                   "payload": {"nonce": self.nonce, "ts": now_ms()}})
        self._timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S, self.close, CLOSE_NORMAL,
                                                            "handshake timeout")

    def received(self, data: bytes) -> None:
        try:
            if self.events is None:
                self._connect(data)
            else:
                self._frame(data)
        except Exception as exc:  # a bug here must cost this one socket, never the supervisor
            self.core.log("error", f"connection {self.id}: {type(exc).__name__}: {exc}")
            self.close(CLOSE_POLICY, "internal error")

    def writable(self) -> None:
        if self.events is not None:
            self.events.flush_now()

    def lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            self.core.unhold(self)
            self._held = RELEASED
        if self.events is not None:
            if self.role == "node":
                self.core.nodes.detach(self)
            self.core.hub.remove(self)
            self.events.clear()
        for task in list(self._inflight or ()):
            task.cancel()

    # -- frames --------------------------------------------------------------------------------------

    def _connect(self, data: bytes) -> None:
        if self._timer is None:  # the handshake already failed; its close is on the way
            return
        if self._held:  # frames behind a held connect wait with it, in order
            if len(self._held) >= HELD_FRAMES_MAX:
                self.close(CLOSE_POLICY, "too many frames before hello-ok")
                return
            self._held.append(data)
            return
        if self._held is None and not self.core.host.readiness()["started"]:
            self._held = [data]
            self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(STARTING_HOLD_S, self.resume_connect)
            self.core.hold_until_started(self)
            return
        self._timer.cancel()
        self._timer = None
        try:
            hello = self._handshake(data)
        except Reject as rej:
            if rej.error is not None and rej.rid is not None:
                self.send(res_err(rej.rid, rej.error))
            self.close(rej.close_code, rej.reason)
            return
        self.send(hello)
        self.nonce = ""
        self.sock.admitted()
        self.sock.set_limit(MAX_PAYLOAD, "message")
        self.events = EventQueue(self.sock)
        self.core.hub.add(self)
        if self.role == "node":
            self.core.nodes.attach(self, self.node_params or {})
            self.node_params = None

    def resume_connect(self) -> None:
        """The gateway started, or the hold ran out: the held connect is answered (refused if still starting)."""
        held = self._held
        if not held:
            return
        self._held = RELEASED
        self.core.unhold(self)
        for data in held:
            self.received(data)

    def _frame(self, data: bytes) -> None:
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            frame = None
        if not isinstance(frame, dict) or frame.get("type") not in ("req", "cancel"):
            self.close(CLOSE_POLICY, "invalid request frame")
            return
        if frame["type"] == "cancel":
            return
        rid, method = frame.get("id"), frame.get("method")
        problem = frame_problem(frame)
        if problem is not None:  # answered, not closed, as upstream
            self.send(res_err(rid if isinstance(rid, str) and rid else "invalid",
                              {"code": "INVALID_REQUEST", "message": f"invalid request frame: {problem}"}))
            return
        if self.retiring:
            self.send(res_err(rid, MethodError(
                "UNAVAILABLE", f"{method} unavailable during gateway restart", retryable=True, retry_after_ms=1000,
                details={"method": method, "reason": "gateway-restart"}).to_error()))
            return
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = set()
        if len(inflight) >= MAX_INFLIGHT and not self.core.methods.is_local(method):
            self.send(res_err(rid, MethodError("UNAVAILABLE", "too many requests in flight on this connection",
                                               retryable=True).to_error()))
            return
        task = asyncio.get_running_loop().create_task(self._request(rid, method, frame.get("params")))
        inflight.add(task)
        task.add_done_callback(self._finished)
        if len(inflight) >= HOLD_AT:
            self.sock.hold_reading(True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        inflight = self._inflight
        if inflight is None:
            return
        inflight.discard(task)
        if len(inflight) < HOLD_AT:
            self.sock.hold_reading(False)
        if not inflight:
            self._inflight = None

    async def _request(self, rid: Any, method: str, params: Any) -> None:
        if params is None:
            params = {}
        try:
            if not isinstance(params, dict):
                raise MethodError("INVALID_REQUEST", f"invalid params for {method}: expected an object")

            async def partial(payload: Any) -> None:
                self.send(res_ok(rid, payload))

            payload = await self.core.methods.call(self, method, params, partial)
            self.send(res_ok(rid, payload))
        except MethodError as exc:
            self.send(res_err(rid, exc.to_error()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.core.log("error", f"method {method} failed: {type(exc).__name__}: {exc}")
            self.send(res_err(rid, {"code": "UNAVAILABLE", "message": f"{method} failed: internal error"}))

    # -- handshake -----------------------------------------------------------------------------------

    @staticmethod
    def _first_frame(data: bytes) -> dict[str, Any]:
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise Reject(CLOSE_POLICY, "invalid request frame", None) from None
        if not isinstance(frame, dict) or frame.get("type") != "req" or frame_problem(frame) is not None:
            raise Reject(CLOSE_POLICY, "invalid request frame", None)
        return frame

    def _handshake(self, data: bytes) -> dict[str, Any]:
        frame = self._first_frame(data)
        rid = frame.get("id")

        def reject(code: int, reason: str, error: dict[str, Any] | None) -> Reject:
            return Reject(code, reason, error, rid)

        if frame.get("method") != "connect":
            msg = "invalid handshake: first request must be connect"
            raise reject(CLOSE_POLICY, msg, {"code": "INVALID_REQUEST", "message": msg})
        params = frame.get("params")
        problem = check_connect_params(params)
        if problem:
            msg = f"invalid connect params: {problem}"
            raise reject(CLOSE_POLICY, msg, {"code": "INVALID_REQUEST", "message": msg})
        assert isinstance(params, dict)
        client = params["client"]
        for key, value in client.items():  # held as long as the client stays: its short strings are shared
            if isinstance(value, str) and len(value) <= SHARED_STR_MAX:
                client[key] = sys.intern(value)
        if all(isinstance(value, str) for value in client.values()):
            client = shared(("client", *client.items()), client)
        self.client = client
        self.client_mode = client["mode"]
        role = params.get("role", "operator")
        lo, hi = params["minProtocol"], params["maxProtocol"]
        floor = MIN_PROBE_PROTOCOL if client["mode"] in ("probe", "node") else PROTOCOL
        if hi < floor or lo > PROTOCOL:
            self.core.log("warn", f"protocol mismatch client={client['id']} v{client.get('version')} min={lo} "
                                  f"max={hi} expected={PROTOCOL}")
            raise reject(CLOSE_PROTOCOL, "protocol mismatch",
                         {"code": "INVALID_REQUEST", "message": "protocol mismatch",
                          "details": {"code": "PROTOCOL_MISMATCH", "expectedProtocol": PROTOCOL}})
        if role not in ROLES:
            raise reject(CLOSE_POLICY, "invalid role", {"code": "INVALID_REQUEST", "message": "invalid role"})
        self.role = sys.intern(role)

        core = self.core
        auth = params.get("auth") or {}
        now = now_ms()
        retry = core.limiter.check(self.remote_ip, authn.SHARED_SECRET_CLASS, now)
        if retry is not None:
            err = authn.rate_limited_error(retry)
            raise reject(CLOSE_POLICY, err["message"], err)
        dev = params.get("device")
        result = authn.check_shared_secret(core.auth, auth, device_present=dev is not None, client=client)
        token_record = None
        if not result.ok:
            presented = auth.get("token") or auth.get("deviceToken")
            if presented and dev is not None:
                token_record = core.devices.verify_token(presented, dev.get("id"))
            if token_record is None:
                if result.wrong_credential:
                    core.limiter.fail(self.remote_ip, authn.SHARED_SECRET_CLASS, now)
                assert result.error is not None
                raise reject(CLOSE_POLICY, result.error["message"], result.error)
        core.limiter.succeed(self.remote_ip, authn.SHARED_SECRET_CLASS)

        requested = list(params.get("scopes") or [])
        issued: dict[str, Any] | None = None
        self_paired = authn.skips_self_pairing(client["id"], client["mode"], loopback_direct=self.loopback_direct,
                                               shared_secret_ok=result.ok)
        if role == "node" and dev is None:  # a node is routed and paired by its device identity
            msg = "device identity required"
            raise reject(CLOSE_POLICY, msg, {"code": "NOT_PAIRED", "message": msg,
                                             "details": {"code": "DEVICE_IDENTITY_REQUIRED"}})
        if dev is not None and not self_paired:
            proof = device.verify_device(dev, nonce_issued=self.nonce, client=client, role=role, scopes=requested,
                                         auth_token=device.signature_token(auth), now_ms=now, nonces=core.nonces)
            if isinstance(proof, dict):
                raise reject(CLOSE_POLICY, proof["message"], proof)
            decision = device.decide_pairing(core.devices, proof, role, requested, client,
                                             loopback_direct=self.loopback_direct,
                                             auto_approve_local=core.auto_approve_local, now_ms=now)
            if not decision.approved:
                if decision.request_created:
                    core.hub.broadcast("device.pair.requested", decision.request_event, scope="operator.pairing")
                raise reject(CLOSE_POLICY, decision.close_reason, decision.error)
            self.device_id = proof.device_id
            self.scopes = list(decision.scopes)
            if token_record is None:
                token = core.devices.issue_token(proof.device_id, role, self.scopes, now)
                issued = {"deviceToken": token, "issuedAtMs": now}
        elif dev is not None:
            self.scopes = requested
        else:
            self.scopes = authn.granted_scopes(client["id"], client["mode"], requested, device=False,
                                               loopback_direct=self.loopback_direct, shared_secret_ok=result.ok)

        ready = core.host.readiness()
        if not ready["started"]:
            err = {"code": "UNAVAILABLE", "message": "gateway starting", "retryable": True, "retryAfterMs": 500,
                   "details": {"reason": "startup-sidecars"}}
            raise reject(CLOSE_TRY_LATER, "gateway starting", err)
        self.caps = [sys.intern(c) for c in params.get("caps") or [] if isinstance(c, str)] or NO_CAPS
        self.scopes = shared(("scopes", *self.scopes), self.scopes)
        if role == "node":
            self.node_params = params
        hello = core.hello_ok(self, method=result.method or ("device-token" if token_record else "none"))
        if issued:
            hello["auth"].update(issued)
        return res_ok(rid, hello)


_shared: dict[tuple[Any, ...], Any] = {}
SHARED_MAX = 512


def shared(key: tuple[Any, ...], value: T) -> T:
    """One object for equal values clients hold read only for as long as they stay (granted scopes, the `client`
    block): ten thousand operators of the same kind hold one, not ten thousand. Bounded: past SHARED_MAX kinds,
    a client keeps its own."""
    got = _shared.get(key)
    if got is None:
        if len(_shared) >= SHARED_MAX:
            return value
        got = _shared[key] = value
    return got


def frame_problem(frame: dict[str, Any]) -> str | None:
    """What makes a `req` frame invalid (upstream's RequestFrame: `id` and `method` non-empty strings)."""
    for key in ("id", "method"):
        value = frame.get(key)
        if not isinstance(value, str) or not value:
            return f"{key} must be a non-empty string"
    return None


def check_connect_params(params: Any) -> str | None:
    """Validate the closed ConnectParams object; return what is wrong, or None."""
    if not isinstance(params, dict):
        return "params must be an object"
    extra = set(params) - CONNECT_KEYS
    if extra:
        return f"unknown field {sorted(extra)[0]!r}"
    for key in ("minProtocol", "maxProtocol"):
        if not isinstance(params.get(key), int) or isinstance(params.get(key), bool):
            return f"{key} must be an integer"
    client = params.get("client")
    if not isinstance(client, dict):
        return "client must be an object"
    extra = set(client) - CLIENT_KEYS
    if extra:
        return f"unknown field client.{sorted(extra)[0]}"
    cid, mode = client.get("id"), client.get("mode")
    if not isinstance(cid, str) or cid.lower() not in CLIENT_IDS:
        return f"client.id {cid!r} is not a known client id"
    client["id"] = sys.intern(cid.lower())
    if mode not in CLIENT_MODES:
        return f"client.mode {mode!r} is not one of {', '.join(sorted(CLIENT_MODES))}"
    if not isinstance(client.get("version"), str) or not isinstance(client.get("platform"), str):
        return "client.version and client.platform must be strings"
    scopes = params.get("scopes")
    if scopes is not None and (not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)):
        return "scopes must be an array of strings"
    auth = params.get("auth")
    if auth is not None:
        if not isinstance(auth, dict) or set(auth) - AUTH_KEYS:
            return "auth has unknown fields"
        if not all(isinstance(v, str) for v in auth.values()):
            return "auth values must be strings"
    dev = params.get("device")
    if dev is not None:
        if not isinstance(dev, dict) or set(dev) != DEVICE_KEYS:
            return "device needs exactly id, publicKey, signature, signedAt and nonce"
        if not isinstance(dev.get("signedAt"), int):
            return "device.signedAt must be an integer"
    if "role" in params and not isinstance(params["role"], str):
        return "role must be a string"
    return None

