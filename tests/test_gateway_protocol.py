"""The gateway port, frame by frame, with a real WebSocket client against a real supervisor."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request

import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import Gateway, wait_for
from openclaw_sup.gateway.client import ConnectionClosed, GatewayClient, GatewayError, WebSocket

TOKEN = "test-token-0123456789abcdef"


def gw_config(**gateway: object) -> dict:
    return {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}, **gateway}}


def start_gw(gateway_factory) -> Gateway:
    """A supervisor with token auth, two stand-in owner workers and a 300 ms tick."""
    g = gateway_factory({"workers": {"scheduler": {"kind": "fake_owner"}, "agent": {"kind": "fake_owner"}}},
                        config=gw_config(), extra_env={"OPENCLAW_SUP_TICK_INTERVAL_MS": "300"})
    g.config_extra = None
    return g.start()


@pytest.fixture
def gw(gateway_factory) -> Gateway:
    return start_gw(gateway_factory)


def url(g: Gateway) -> str:
    return f"ws://127.0.0.1:{g.port}"


def client(g: Gateway, **kw: object) -> GatewayClient:
    kw.setdefault("token", TOKEN)
    return GatewayClient(url(g), **kw)  # type: ignore[arg-type]


def expect_close(c: GatewayClient, code: int) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(50):
            c.ws.recv(5)
    assert info.value.code == code, info.value
    return info.value


def http(g: Gateway, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{g.port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}


# -- handshake ------------------------------------------------------------------------------------------


def test_challenge_first_then_hello_ok_with_required_keys(gw: Gateway) -> None:
    c = client(gw)
    ch = c.read_challenge()
    assert len(ch["nonce"]) == 36 and isinstance(ch["ts"], int) and ch["ts"] > 1_700_000_000_000
    hello = c.request("connect", c.connect_params())
    assert hello["type"] == "hello-ok" and hello["protocol"] == 4
    for key in ("server", "features", "snapshot", "auth", "policy"):
        assert key in hello
    snap = hello["snapshot"]
    for key in ("presence", "health", "stateVersion", "uptimeMs"):
        assert key in snap
    assert set(snap["stateVersion"]) == {"presence", "health"}
    assert hello["server"]["connId"] and hello["server"]["version"]
    assert "health" in hello["features"]["methods"] and "tick" in hello["features"]["events"]
    assert hello["policy"]["tickIntervalMs"] == 300 and hello["policy"]["maxPayload"] == 26214400
    assert hello["auth"]["role"] == "operator"
    assert set(hello["auth"]["scopes"]) == {"operator.admin", "operator.read", "operator.write"}
    c.close()


def test_first_request_must_be_connect(gw: Gateway) -> None:
    c = client(gw)
    c.read_challenge()
    with pytest.raises(GatewayError) as info:
        c.request("health")
    assert info.value.code == "INVALID_REQUEST"
    assert info.value.error["message"] == "invalid handshake: first request must be connect"
    expect_close(c, 1008)


@pytest.mark.parametrize("frame", [b"not json at all", b'{"type":"event","event":"x"}', b"[1,2]"])
def test_bad_first_frame_closes_1008(gw: Gateway, frame: bytes) -> None:
    ws = WebSocket(url(gw))
    ws.recv(5)
    ws.send_frame(1, frame)
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(5)
    assert info.value.code == 1008


def test_protocol_window(gw: Gateway) -> None:
    c = client(gw)
    c.read_challenge()
    with pytest.raises(GatewayError) as info:
        c.request("connect", c.connect_params(minProtocol=5, maxProtocol=6))
    assert info.value.details == {"code": "PROTOCOL_MISMATCH", "expectedProtocol": 4}
    assert info.value.error["message"] == "protocol mismatch"
    assert expect_close(c, 1002).reason == "protocol mismatch"
    probe = client(gw, client_id="cli", mode="probe")
    hello = probe.connect(minProtocol=3, maxProtocol=4)
    assert hello["protocol"] == 4
    old = client(gw)
    old.read_challenge()
    with pytest.raises(GatewayError):
        old.request("connect", old.connect_params(minProtocol=3, maxProtocol=3))


def test_invalid_connect_params_named(gw: Gateway) -> None:
    c = client(gw)
    c.read_challenge()
    with pytest.raises(GatewayError) as info:
        c.request("connect", {**c.connect_params(), "bogus": 1})
    assert info.value.error["message"] == "invalid connect params: unknown field 'bogus'"
    expect_close(c, 1008)


@pytest.mark.parametrize(("auth", "code"), [({"token": "wrong"}, "AUTH_TOKEN_MISMATCH"), ({}, "AUTH_TOKEN_MISSING")])
def test_auth_failures(gw: Gateway, auth: dict, code: str) -> None:
    c = GatewayClient(url(gw), token=auth.get("token"))
    c.read_challenge()
    with pytest.raises(GatewayError) as info:
        c.request("connect", c.connect_params())
    assert info.value.code == "INVALID_REQUEST"
    assert info.value.error["message"].startswith("unauthorized")
    assert info.value.details["code"] == code
    expect_close(c, 1008)


def test_token_accepted_in_password_field(gw: Gateway) -> None:
    c = GatewayClient(url(gw), password=TOKEN)
    assert c.connect()["type"] == "hello-ok"


def test_failed_auth_lockout(gateway_factory) -> None:
    cfg = gw_config()
    cfg["gateway"]["auth"]["rateLimit"] = {"exemptLoopback": False, "maxAttempts": 3, "lockoutMs": 60_000}
    g = gateway_factory({"workers": {}}, config=cfg).start()
    for _ in range(3):
        c = GatewayClient(url(g), token="bad")
        with pytest.raises(GatewayError) as info:
            c.connect()
        assert info.value.details["code"] == "AUTH_TOKEN_MISMATCH"
    c = GatewayClient(url(g), token=TOKEN)
    with pytest.raises(GatewayError) as info:
        c.connect()
    assert info.value.details["code"] == "AUTH_RATE_LIMITED"
    assert info.value.error["retryable"] is True and 0 < info.value.error["retryAfterMs"] <= 60_000
    assert info.value.error["message"] == "unauthorized: too many failed authentication attempts (retry later)"


def test_loopback_is_exempt_from_lockout_by_default(gw: Gateway) -> None:
    for _ in range(12):
        with pytest.raises(GatewayError) as info:
            GatewayClient(url(gw), token="bad").connect()
        assert info.value.details["code"] == "AUTH_TOKEN_MISMATCH"
    assert client(gw).connect()["type"] == "hello-ok"


def test_pre_auth_frame_limit(gw: Gateway) -> None:
    c = client(gw)
    c.read_challenge()
    params = c.connect_params()
    params["client"]["displayName"] = "x" * (70 * 1024)
    c.send({"type": "req", "id": "1", "method": "connect", "params": params})
    expect_close(c, 1009)


def test_device_less_scope_rule(gw: Gateway) -> None:
    probe = client(gw, client_id="cli", mode="probe", scopes=["operator.read"])
    assert probe.connect(minProtocol=3)["auth"]["scopes"] == []
    with pytest.raises(GatewayError) as info:
        probe.request("system-presence")
    assert info.value.code == "FORBIDDEN"
    assert info.value.error["message"] == "missing scope: operator.read"
    assert info.value.details == {"code": "MISSING_SCOPE", "missingScope": "operator.read",
                                  "requiredScopes": ["operator.read"]}
    backend = client(gw, client_id="gateway-client", mode="backend", scopes=["operator.read"])
    assert backend.connect()["auth"]["scopes"] == ["operator.read"]
    assert backend.request("health")["ok"] is True
    with pytest.raises(GatewayError) as info:
        backend.request("gateway.restart.request", {})
    assert info.value.error["message"] == "missing scope: operator.admin"
    ui = client(gw, client_id="webchat", mode="webchat", scopes=["operator.read"])
    assert ui.connect()["auth"]["scopes"] == []


# -- devices --------------------------------------------------------------------------------------------


def _b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def signed_device(key: Ed25519PrivateKey, c: GatewayClient, params: dict, *, signed_at: int | None = None,
                  nonce: str | None = None, version: str = "v3", tamper: bool = False) -> dict:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    dev_id = hashlib.sha256(raw).hexdigest()
    signed_at = signed_at if signed_at is not None else c.challenge["ts"]
    nonce = nonce or c.challenge["nonce"]
    cl = params["client"]
    fields = [version, dev_id, cl["id"], cl["mode"], params["role"], ",".join(params["scopes"]), str(signed_at),
              (params.get("auth") or {}).get("token", ""), nonce]
    if version == "v3":
        fields += [cl.get("platform", "").strip().lower(), cl.get("deviceFamily", "").strip().lower()]
    sig = key.sign("|".join(fields).encode() + (b"x" if tamper else b""))
    return {"id": dev_id, "publicKey": _b64u(raw), "signature": _b64u(sig), "signedAt": signed_at, "nonce": nonce}


def test_device_identity_good_then_device_token_reconnect(gw: Gateway) -> None:
    key = Ed25519PrivateKey.generate()
    c = client(gw, scopes=["operator.read", "operator.write"])
    c.read_challenge()
    params = c.connect_params()
    params["device"] = signed_device(key, c, params)
    hello = c.request("connect", params)
    assert hello["auth"]["scopes"] == ["operator.read", "operator.write"]
    device_token = hello["auth"]["deviceToken"]
    assert device_token and hello["auth"]["issuedAtMs"] > 0
    c.close()
    again = GatewayClient(url(gw), token=device_token, scopes=["operator.read"])
    again.read_challenge()
    p2 = again.connect_params()
    p2["device"] = signed_device(key, again, p2)
    assert again.request("connect", p2)["auth"]["scopes"] == ["operator.read"]
    assert again.request("health")["ok"]


@pytest.mark.parametrize(("mutate", "code"), [
    ({"tamper": True}, "DEVICE_AUTH_SIGNATURE_INVALID"),
    ({"signed_at": 1_000_000_000_000}, "DEVICE_AUTH_SIGNATURE_EXPIRED"),
    ({"nonce": "00000000-0000-0000-0000-000000000000"}, "DEVICE_AUTH_NONCE_MISMATCH"),
])
def test_device_proof_failures(gw: Gateway, mutate: dict, code: str) -> None:
    c = client(gw)
    c.read_challenge()
    params = c.connect_params()
    params["device"] = signed_device(Ed25519PrivateKey.generate(), c, params, **mutate)
    with pytest.raises(GatewayError) as info:
        c.request("connect", params)
    assert info.value.details["code"] == code
    expect_close(c, 1008)


def test_v2_payload_and_replayed_nonce(gw: Gateway) -> None:
    key = Ed25519PrivateKey.generate()
    first = client(gw)
    first.read_challenge()
    params = first.connect_params()
    params["device"] = signed_device(key, first, params, version="v2")
    assert first.request("connect", params)["type"] == "hello-ok"
    replay = client(gw)
    replay.read_challenge()
    with pytest.raises(GatewayError) as info:
        replay.request("connect", params)  # the first connection's nonce and signature, replayed
    assert info.value.details["code"] == "DEVICE_AUTH_NONCE_MISMATCH"


# -- after hello ----------------------------------------------------------------------------------------


def test_ticks_with_per_socket_monotonic_seq(gw: Gateway) -> None:
    a = client(gw)
    a.connect()
    b = client(gw)
    b.connect()
    seqs = [a.next_event("tick", 5)["seq"] for _ in range(4)]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    t0 = time.monotonic()
    a.next_event("tick", 5)
    assert time.monotonic() - t0 < 2
    b_seq = b.next_event("tick", 5)["seq"]
    assert b_seq >= 1


def test_presence_broadcast_with_state_version(gw: Gateway) -> None:
    watcher = client(gw)
    watcher.connect()
    before = watcher.hello["snapshot"]["stateVersion"]["presence"]
    ui = client(gw, client_id="openclaw-control-ui", mode="ui")
    ui.connect()
    ev = watcher.next_event("presence", 5)
    assert ev["stateVersion"]["presence"] > before
    assert any(e.get("mode") == "ui" for e in ev["payload"]["presence"])
    assert ev["payload"]["presence"][0]["reason"] == "self"


def test_routed_methods_reach_their_worker_and_fail_cleanly(gateway_factory) -> None:
    g = gateway_factory({"workers": {"scheduler": {"kind": "fake_owner"}}},
                        config={**gw_config(), "browser": {"enabled": False}}).start()
    c = client(g)
    c.connect()
    res = c.request("cron.list", {"limit": 5})
    assert res["servedBy"] == "scheduler" and res["params"] == {"limit": 5}
    with pytest.raises(GatewayError) as info:
        c.request("browser.status")
    assert info.value.code == "UNAVAILABLE"
    assert "browser worker is not part of this gateway's configuration" in info.value.error["message"]
    # The owner dies mid-request: the client gets an error, not a hang.
    c.send({"type": "req", "id": "hang-1", "method": "cron.hang", "params": {}})
    time.sleep(0.3)
    os.kill(g.worker("scheduler")["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = json.loads(c.ws.recv(10))
        if msg.get("id") == "hang-1":
            break
    assert msg["ok"] is False and msg["error"]["code"] == "UNAVAILABLE"
    assert "exited" in msg["error"]["message"]


def test_agent_answers_twice_under_one_id_and_is_idempotent(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    c.send({"type": "req", "id": "run-a", "method": "agent", "params": {"message": "hi", "idempotencyKey": "k1"}})
    frames = []
    while len([f for f in frames if f.get("id") == "run-a"]) < 2:
        frames.append(json.loads(c.ws.recv(10)))
    answers = [f["payload"] for f in frames if f.get("id") == "run-a"]
    assert answers[0]["status"] == "accepted" and answers[1]["status"] == "ok"
    assert answers[0]["runId"] == answers[1]["runId"]
    assert any(f.get("event") == "agent" for f in frames)
    again = c.request("agent", {"message": "hi", "idempotencyKey": "k1"}, expect_final=True)
    assert again == answers[1] and again["calls"] == 1
    with pytest.raises(GatewayError) as info:
        c.request("agent", {"message": "no key"})
    assert info.value.error["message"] == "agent requires idempotencyKey"


def test_unavailable_1013_while_workers_start(gateway_factory) -> None:
    g = gateway_factory({"workers": {"slow": {"kind": "never_ready", "liveness": {"startTimeoutMs": 60_000}}}},
                        config=gw_config())
    g.start(wait_running=False)
    c = client(g)
    with pytest.raises(GatewayError) as info:
        c.connect()
    assert info.value.code == "UNAVAILABLE"
    assert info.value.error["retryable"] is True and info.value.details["reason"] == "startup-sidecars"
    assert expect_close(c, 1013).reason == "gateway starting"
    status, body = http(g, "/startupz")
    assert status == 503 and body["status"] == "starting"


def test_a_connect_while_workers_start_is_answered_once_they_are_ready(gateway_factory) -> None:
    """Held, not refused: the client that came during the workers' first starts gets `hello-ok` as the last one
    says ready, and only then."""
    g = gateway_factory({"workers": {"slow": {"kind": "slow_ready", "options": {"ms": 800}}}}, config=gw_config())
    g.start(wait_running=False)
    assert g.worker("slow")["state"] == "starting"
    c = client(g)
    c.connect()
    assert g.worker("slow")["state"] == "running"
    assert g.status()["supervisor"]["started"] is True
    assert c.request("health")["ok"] is True


def test_shutdown_event_then_1012(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    gw.signal(signal.SIGTERM)
    ev = c.next_event("shutdown", 10)
    assert ev["payload"] == {"reason": "gateway stopping"}
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            c.ws.recv(10)
    assert info.value.code == 1012 and info.value.reason == "service restart"
    assert gw.proc.wait(20) == 0


def test_restart_request_notifies_and_replaces_workers(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    before = gw.pids()
    assert c.request("gateway.restart.request", {"reason": "test"})["scheduled"] is True
    ev = c.next_event("shutdown", 10)
    assert ev["payload"]["reason"] == "gateway restarting" and ev["payload"]["restartExpectedMs"] == 1000
    wait_for(lambda: all(p and p != before[n] for n, p in gw.pids().items()), 15, what="workers replaced")
    gw.wait_all_running()
    assert client(gw).connect()["type"] == "hello-ok"


def test_health_status_presence_config_and_logs(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    h = c.request("health")
    assert h["ok"] is True and h["defaultAgentId"] == "main" and h["heartbeatSeconds"] == 1800
    assert {w["name"] for w in h["workers"]} == {"scheduler", "agent", "browser"}
    assert h["configReload"]["hotReloadStatus"] == "active"
    st = c.request("status", {})
    assert st["runtimeVersion"] and st["supervisor"]["pid"] == gw.status()["supervisor"]["pid"]
    assert c.request("system-presence")[0]["reason"] == "self"
    cfg = c.request("config.get")
    assert cfg["config"]["gateway"]["auth"]["token"] != TOKEN
    assert TOKEN not in json.dumps(cfg)
    assert cfg["hash"].startswith("sha256:")
    first = c.request("logs.tail", {"limit": 5})
    assert 0 < len(first["lines"]) <= 5 and first["cursor"] == first["size"]
    assert json.loads(first["lines"][-1])["message"]
    os.kill(gw.worker("agent")["pid"], signal.SIGKILL)
    wait_for(lambda: gw.worker("agent")["restarts"] == 1, 10)
    nxt = wait_for(lambda: (t := c.request("logs.tail", {"cursor": first["cursor"], "limit": 100}))
                   and any("worker agent exited" in json.loads(x)["message"] for x in t["lines"]) and t, 10,
                   what="the exit line in logs.tail")
    assert nxt["cursor"] > first["cursor"]
    reset = c.request("logs.tail", {"cursor": 10**12})
    assert reset["reset"] is True
    assert c.request("last-heartbeat") is None
    with pytest.raises(GatewayError) as info:
        c.request("no.such.method")
    assert info.value.error["message"] == "unknown method: no.such.method"


def test_http_probes(gw: Gateway) -> None:
    for path in ("/health", "/healthz"):
        status, body = http(gw, path)
        assert status == 200 and body["ok"] is True and body["status"] == "live"
        assert body["version"] and body["uptimeMs"] >= 0  # loopback callers get the details
    assert http(gw, "/readyz")[0] == 200 and http(gw, "/startup")[1]["status"] == "started"
    ready = wait_for(lambda: (b := http(gw, "/readyz")[1]) and "eventLoop" in b and b, 10,
                     what="/readyz with a first event-loop window")
    assert ready["ready"] is True and ready["failing"] == [] and ready["uptimeMs"] >= 0  # upstream's shape
    assert http(gw, "/api/nope")[0] == 404  # other unclaimed GETs get the Control UI's shell (test_control_ui_*)


def test_slow_consumer_does_not_grow_the_supervisor(gateway_factory) -> None:
    g = gateway_factory({"workers": {"flood": {"kind": "flood", "options": {"count": 200_000, "delay": 1.5}}}},
                        config=gw_config()).start()
    lazy = client(g)
    lazy.connect()
    lazy.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    pid = g.status()["supervisor"]["pid"]
    rss0 = psutil.Process(pid).memory_info().rss
    wait_for(lambda: "flood flood done" in g.log_text(), 60, interval=0.2, what="the flood")
    time.sleep(1)
    grew = psutil.Process(pid).memory_info().rss - rss0
    assert grew < 60 * 1024 * 1024, f"supervisor grew {grew >> 20} MB behind a client that never reads"
    healthy = client(g)
    assert healthy.connect()["type"] == "hello-ok"
