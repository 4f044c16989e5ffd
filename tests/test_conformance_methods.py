"""The methods the real CLI calls, frame by frame: what is served, what is refused and how, in upstream's shapes."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_gateway_protocol import signed_device

from conftest import Gateway, wait_for
from openclaw_sup import __version__
from openclaw_sup.gateway.client import GatewayClient, GatewayError

TOKEN = "methods-token-0123456789abcdef"
UPSTREAM = "2026.9.6"
SIDE_EFFECTS = {"gateway.restart.request", "browser.start", "browser.open", "browser.navigate", "browser.screenshot",
                "browser.request"}
"""Left out of the call-everything sweep: they restart the gateway or launch Chromium (tested elsewhere)."""


@pytest.fixture
def gw(gateway_factory) -> Gateway:
    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}},
           "agents": {"defaults": {"model": "echo/echo", "heartbeat": {"every": "45m"}}},
           "models": {"providers": {"echo": {"models": [{"id": "echo", "name": "Echo", "cost": {"input": 1.0,
                                                                                                "output": 2.0}}]}}}}
    return gateway_factory({}, config=cfg, extra_env={"OPENCLAW_SKIP_CRON": ""}).start()


def client(gw: Gateway, **kw: Any) -> GatewayClient:
    kw.setdefault("token", TOKEN)
    return GatewayClient(f"ws://127.0.0.1:{gw.port}", **kw)


def error_of(c: GatewayClient, method: str, params: Any = None) -> dict[str, Any]:
    with pytest.raises(GatewayError) as info:
        c.request(method, params)
    return info.value.error


def test_unknown_before_scope_and_each_refusal_logged_once(gw: Gateway) -> None:
    reader = client(gw, client_id="gateway-client", mode="backend", scopes=["operator.read"])
    reader.connect()
    for _ in range(3):
        err = error_of(reader, "no.such.method")
        assert err["code"] == "INVALID_REQUEST" and err["message"] == "unknown method: no.such.method"
    assert reader.request("node.list")["nodes"] == []
    err = error_of(reader, "node.pair.list")
    assert err["message"] == "missing scope: operator.pairing"
    err = error_of(reader, "exec.approval.list")
    assert err["message"] == "missing scope: operator.approvals"
    err = error_of(reader, "cron.nosuch")
    assert err["message"] == "unknown method: cron.nosuch"
    wait_for(lambda: "refused cron.nosuch" in gw.log_text(), 5)
    log = gw.log_text()
    assert log.count("refused no.such.method from gateway-client/backend") == 1
    assert "refused node.pair.list from gateway-client/backend openclaw-sup at 127.0.0.1: missing scope: " \
           "operator.pairing" in log
    assert "refused exec.approval.list" in log and "missing scope: operator.approvals" in log


def test_health_on_the_scope_less_probe_connection(gw: Gateway) -> None:
    probe = client(gw, mode="probe", scopes=["operator.read"])
    assert probe.connect(minProtocol=3)["auth"]["scopes"] == []
    assert probe.request("health")["ok"] is True
    assert error_of(probe, "status")["message"] == "missing scope: operator.read"


def test_hello_ok_advertises_exactly_what_is_served(gw: Gateway) -> None:
    admin = client(gw)
    hello = admin.connect()
    methods = hello["features"]["methods"]
    assert "published-model-catalog" in hello["features"]["capabilities"]
    assert {"health", "status", "cron.list", "sessions.list", "models.list", "browser.status", "usage.cost",
            "device.pair.list", "exec.approval.list", "diagnostics.stability"} <= set(methods)
    assert {"node.list", "node.describe", "node.invoke", "node.pair.approve", "exec.approvals.get",
            "exec.approval.resolve", "approval.resolve"} <= set(methods)
    for method in methods:
        if method in SIDE_EFFECTS:
            continue
        try:
            admin.request(method, {})
        except GatewayError as exc:
            assert not exc.error["message"].startswith("unknown method"), (method, exc.error)
    assert not any(e["event"] == "shutdown" for e in admin.events)


def test_one_version_everywhere(gw: Gateway) -> None:
    c = client(gw)
    hello = c.connect()
    assert hello["server"]["version"] == UPSTREAM and hello["server"]["buildId"] == f"openclaw-sup-{__version__}"
    me = c.request("system-presence")[0]
    assert me["reason"] == "self" and me["version"] == UPSTREAM and f"app {UPSTREAM}" in me["text"]
    st = c.request("status", {})
    assert st["runtimeVersion"] == UPSTREAM and st["supervisorVersion"] == __version__
    info = c.request("system.info")
    assert info["port"] == gw.port and info["pid"] == st["pid"] and info["supervisorVersion"] == __version__
    assert info["disks"][0]["totalBytes"] > 0 and info["memoryTotalBytes"] > 0
    assert error_of(c, "gateway.identity.get")["message"] == "unknown method: gateway.identity.get"
    for path in ("/healthz", "/startupz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.port}{path}", timeout=5) as r:
            assert json.loads(r.read())["version"] == UPSTREAM


def test_health_status_and_config_get_carry_upstreams_fields(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    c.request("agent", {"message": "two words", "idempotencyKey": "k1"}, expect_final=True)
    h = wait_for(lambda: (x := c.request("health", {"probe": True}))["sessions"]["count"] == 1
                 and "eventLoop" in x and x, 10, what="the session counted and a first event-loop window")
    assert h["plugins"] == {"loaded": [], "errors": [], "unavailable": []}
    assert h["modelRuntime"] == {"degraded": False, "pendingAgents": []}
    assert set(h["eventLoop"]) >= {"degraded", "reasons", "intervalMs", "delayP99Ms", "delayMaxMs", "utilization",
                                   "cpuCoreRatio"}
    beat = h["agents"][0]["heartbeat"]
    assert beat["every"] == "45m" and beat["ackMaxChars"] == 300 and beat["prompt"].endswith("reply HEARTBEAT_OK.")
    st = c.request("status", {"includeCliProjection": True})
    assert st["sessions"]["count"] == 1 and st["sessions"]["byAgent"][0]["agentId"] == "main"
    assert st["sessions"]["byAgent"][0]["recent"][0]["key"] == "agent:main:main"
    assert st["pid"] == gw.status()["supervisor"]["pid"] and st["processMemory"]["rssBytes"] > 0
    assert st["tasks"]["total"] == 0 and st["cliProjection"]["agents"]["defaultId"] == "main"
    cfg = c.request("config.get")
    assert TOKEN not in json.dumps(cfg) and "__OPENCLAW_REDACTED__" in cfg["raw"]
    assert cfg["parsed"]["gateway"]["auth"]["token"] == "__OPENCLAW_REDACTED__" and cfg["valid"] is True
    assert cfg["resolved"]["agents"]["defaults"]["model"] == "echo/echo" and cfg["issues"] == []
    listed = c.request("sessions.list", {"limit": 5})
    assert listed["totalCount"] == 1 and listed["sessions"][0]["hasActiveRun"] is False
    assert listed["sessions"][0]["model"] == "echo" and listed["defaults"]["model"] == "echo"
    assert error_of(c, "sessions.list", {"limit": 0})["message"].startswith("invalid sessions.list params: limit")
    cost = c.request("usage.cost", {"days": 7})
    assert len(cost["daily"]) == 7 and cost["totals"]["input"] + cost["totals"]["output"] > 0
    assert cost["totals"]["totalCost"] > 0 and cost["totals"]["missingCostEntries"] == 0
    models = c.request("models.list", {"view": "default"})["models"]
    assert {"id": "echo", "name": "Echo", "provider": "echo", "available": True, "local": True} in models


def test_device_pairing_methods(gw: Gateway) -> None:
    key = Ed25519PrivateKey.generate()

    def device(scopes: list[str]) -> tuple[GatewayClient, dict[str, Any]]:
        d = client(gw, client_id="openclaw-linux", mode="ui", scopes=scopes)
        d.read_challenge()
        params = d.connect_params()
        params["device"] = signed_device(key, d, params)
        return d, params

    first, params = device(["operator.read"])
    assert first.request("connect", params)["auth"]["scopes"] == ["operator.read"]  # loopback: approved silently
    d, params = device(["operator.read", "operator.pairing"])
    with pytest.raises(GatewayError) as info:
        d.request("connect", params)  # a scope upgrade waits for an operator
    request_id = info.value.details["requestId"]
    admin = client(gw)
    admin.connect()
    listed = admin.request("device.pair.list")
    assert [p["requestId"] for p in listed["pending"]] == [request_id]
    assert listed["paired"][0]["deviceId"] == params["device"]["id"] and listed["paired"][0]["connected"] is True
    first.close()
    wait_for(lambda: admin.request("device.pair.list")["paired"][0]["connected"] is False, 5)
    assert error_of(admin, "device.pair.approve", {})["details"] == {"field": "requestId"}
    assert error_of(admin, "device.pair.approve", {"requestId": "nope"})["message"] == "unknown requestId"
    approved = admin.request("device.pair.approve", {"requestId": request_id})
    assert approved["device"]["scopes"] == ["operator.read", "operator.pairing"]
    assert admin.next_event("device.pair.resolved")["payload"]["decision"] == "approved"
    d, params = device(["operator.read", "operator.pairing"])
    assert d.request("connect", params)["auth"]["scopes"] == ["operator.read", "operator.pairing"]
    own = d.request("device.pair.list")
    assert [p["deviceId"] for p in own["paired"]] == [params["device"]["id"]] and own["paired"][0]["connected"]
    assert error_of(d, "device.pair.remove", {"deviceId": "someone-else"})["message"] == \
        "device pairing removal denied"
    assert admin.request("device.pair.remove", {"deviceId": params["device"]["id"]})["deviceId"] == \
        params["device"]["id"]
    assert admin.request("device.pair.list") == {"pending": [], "paired": []}
    wait_for(lambda: "device pairing removed" in gw.log_text(), 5)


def test_approvals_stability_schema_lookup_and_system_event(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    for method in ("exec.approval.list", "plugin.approval.list", "openclaw.approval.list"):
        assert c.request(method, {}) == []
    stab = c.request("diagnostics.stability", {"limit": 10})
    assert stab["capacity"] == 1000 and stab["events"][0]["type"] == "gateway.started"
    assert stab["summary"]["byType"]["gateway.started"] == 1
    assert error_of(c, "diagnostics.stability", {"limit": 0})["details"] == {"field": "limit"}
    port = c.request("config.schema.lookup", {"path": "gateway.port"})
    assert port["schema"] == {"type": "integer", "minimum": 1, "maximum": 65535,
                              "default": 18789} and port["reloadKind"] == "restart"
    auth = c.request("config.schema.lookup", {"path": "gateway.auth"})
    assert {ch["key"] for ch in auth["children"]} >= {"mode", "token", "password"}
    assert error_of(c, "config.schema.lookup", {"path": "nope.x"})["message"].startswith(
        "config schema path not found: nope.x")
    assert c.request("system-event", {"text": "maintenance at noon", "host": "ops-laptop"}) == {"ok": True}
    beacon = next(e for e in c.request("system-presence") if e.get("host") == "ops-laptop")
    assert beacon["text"] == "maintenance at noon"
    assert error_of(c, "system-event", {})["message"] == "text required"
