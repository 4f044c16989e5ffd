"""Nodes on our gateway's port, frame by frame: surface approval, the invoke relay, its deadline, a node that
disconnects mid-invoke, idempotency, role gating and removal (a scripted node speaks the node protocol)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from node_harness import ScriptedNode, operator

from conftest import Gateway
from openclaw_sup.gateway.client import ConnectionClosed, GatewayClient, GatewayError

TOKEN = "nodes-protocol-token-0123456789"


@pytest.fixture
def gw(gateway_factory) -> Gateway:
    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}}}
    return gateway_factory({}, config=cfg).start()


def approve_all(gw: Gateway, node: ScriptedNode) -> dict:
    op = operator(gw.port, TOKEN)
    try:
        pending = next(p for p in op.call("node.pair.list", {})["pending"] if p["nodeId"] == node.identity.device_id)
        return op.call("node.pair.approve", {"requestId": pending["requestId"]})
    finally:
        op.close()


def invoke_async(client: GatewayClient, params: dict) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            box["result"] = client.call("node.invoke", params, timeout=60)
        except GatewayError as exc:
            box["error"] = exc.error
        box["seconds"] = time.monotonic() - t0

    th = threading.Thread(target=run)
    th.start()
    return th, box


def approved_node(gw: Gateway, root: Path, name: str) -> ScriptedNode:
    """A scripted node connected and approved for every surface it asked for."""
    node = ScriptedNode(gw.port, TOKEN, root, name=name)
    node.connect()
    approve_all(gw, node)
    return node


def test_surface_approval_then_relay(gw: Gateway, tmp_path: Path) -> None:
    watcher = operator(gw.port, TOKEN)
    node = ScriptedNode(gw.port, TOKEN, tmp_path / "n1", name="alpha")
    hello = node.connect()
    assert hello["auth"]["role"] == "node" and hello["auth"]["deviceToken"]
    requested = watcher.next_event("node.pair.requested", 5)["payload"]
    assert requested["nodeId"] == node.identity.device_id
    assert requested["commands"] == ["system.run", "system.which"]
    assert requested["requiredApproveScopes"] == ["operator.pairing", "operator.admin"]

    op = operator(gw.port, TOKEN)
    listed = op.call("node.list", {})["nodes"][0]
    assert (listed["approvalState"], listed["commands"], listed["connected"], listed["paired"]) == \
        ("pending-approval", [], True, True)
    with pytest.raises(GatewayError) as before:
        op.call("node.invoke", {"nodeId": node.identity.device_id, "command": "system.which", "params": {},
                                "idempotencyKey": "k0"})
    assert "pending approval" in str(before.value)

    pairing_only = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, scopes=["operator.pairing"])
    pairing_only.connect()
    with pytest.raises(GatewayError) as scope:
        pairing_only.call("node.pair.approve", {"requestId": requested["requestId"]})
    assert scope.value.error["details"]["missingScope"] == "operator.admin"

    approved = op.call("node.pair.approve", {"requestId": requested["requestId"]})
    assert approved["node"]["commands"] == ["system.run", "system.which"]
    assert watcher.next_event("node.pair.resolved", 5)["payload"]["decision"] == "approved"
    assert node.client.next_event("node.pair.resolved", 5)["payload"]["requestId"] == requested["requestId"]

    th, box = invoke_async(op, {"nodeId": "alpha", "command": "system.which", "params": {"bins": ["sh"]},
                                "idempotencyKey": "k1", "timeoutMs": 5000})
    req = node.next_invoke()
    assert (req["command"], json.loads(req["paramsJSON"]), req["idempotencyKey"]) == \
        ("system.which", {"bins": ["sh"]}, "k1")
    assert node.answer(req, {"bins": {"sh": "/bin/sh"}}) == {"ok": True}
    th.join(10)
    assert box["result"] == {"ok": True, "nodeId": node.identity.device_id, "command": "system.which",
                             "payload": {"bins": {"sh": "/bin/sh"}}, "payloadJSON": '{"bins": {"sh": "/bin/sh"}}'}

    # the same idempotency key answers from the cache: the node sees no second request
    again = op.call("node.invoke", {"nodeId": "alpha", "command": "system.which", "params": {"bins": ["sh"]},
                                    "idempotencyKey": "k1"})
    assert again == box["result"]
    with pytest.raises(TimeoutError):
        node.client.next_event("node.invoke.request", 0.5)

    th, box = invoke_async(op, {"nodeId": "alpha", "command": "system.which", "params": {}, "idempotencyKey": "k2"})
    node.answer(node.next_invoke(), error={"code": "WHICH_FAILED", "message": "no PATH"})
    th.join(10)
    assert box["error"]["code"] == "UNAVAILABLE" and box["error"]["message"] == "WHICH_FAILED: no PATH"
    assert box["error"]["details"]["nodeError"] == {"code": "WHICH_FAILED", "message": "no PATH"}
    node.close()


def test_disconnect_mid_invoke_fails_at_once_and_deadline_holds(gw: Gateway, tmp_path: Path) -> None:
    node = approved_node(gw, tmp_path / "n2", "beta")
    op = operator(gw.port, TOKEN)

    th, box = invoke_async(op, {"nodeId": "beta", "command": "system.which", "params": {}, "idempotencyKey": "t1",
                                "timeoutMs": 700})
    node.next_invoke()
    th.join(10)
    assert box["error"]["message"] == "TIMEOUT: node invoke timed out" and 0.6 < box["seconds"] < 3

    th, box = invoke_async(op, {"nodeId": "beta", "command": "system.which", "params": {}, "idempotencyKey": "d1",
                                "timeoutMs": 30_000})
    node.next_invoke()
    node.client.ws.sock.close()  # the node vanishes without a close frame
    th.join(10)
    assert box["error"]["message"] == "DISCONNECTED: node disconnected (system.which)"
    assert box["error"]["details"]["nodeCommandDispatched"] is True
    assert box["seconds"] < 3, box
    with pytest.raises(GatewayError) as gone:
        op.call("node.invoke", {"nodeId": "beta", "command": "system.which", "params": {}, "idempotencyKey": "d2"})
    assert gone.value.error["message"] == "node not connected"
    assert op.call("node.describe", {"nodeId": node.identity.device_id})["connected"] is False

    back = ScriptedNode(gw.port, TOKEN, tmp_path / "n2", name="beta")  # same identity: no new approval
    back.connect()
    th, box = invoke_async(op, {"nodeId": "beta", "command": "system.which", "params": {}, "idempotencyKey": "d3"})
    back.answer(back.next_invoke(), {"bins": {}})
    th.join(10)
    assert box["result"]["ok"] is True
    back.close()


def test_shell_commands_and_roles_are_gated(gw: Gateway, tmp_path: Path) -> None:
    node = approved_node(gw, tmp_path / "n3", "gamma")
    op = operator(gw.port, TOKEN)
    with pytest.raises(GatewayError) as run:
        op.call("node.invoke", {"nodeId": "gamma", "command": "system.run", "params": {"command": ["id"]},
                                "idempotencyKey": "s1"})
    assert run.value.error["message"] == ('command "system.run" is reserved for shell execution; use the exec '
                                          "tool with host=node instead")
    with pytest.raises(GatewayError) as private:
        op.call("node.invoke", {"nodeId": "gamma", "command": "system.execApprovals.get", "params": {},
                                "idempotencyKey": "s2"})
    assert "use exec.approvals.node.*" in str(private.value)
    with pytest.raises(GatewayError) as undeclared:
        op.call("node.invoke", {"nodeId": "gamma", "command": "camera.snap", "params": {}, "idempotencyKey": "s3"})
    assert "requires explicit gateway.nodes.commands.allow opt-in" in str(undeclared.value)
    with pytest.raises(GatewayError) as as_operator:
        op.call("node.invoke.result", {"id": "x", "nodeId": "y", "ok": True})
    assert as_operator.value.error["message"] == "unauthorized role: operator"
    with pytest.raises(GatewayError) as as_node:
        node.client.call("node.list", {})
    assert as_node.value.error["message"] == "unauthorized role: node"
    assert node.client.call("node.invoke.result", {"id": "late", "nodeId": node.identity.device_id, "ok": True}) == \
        {"ok": True, "ignored": True}
    anonymous = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, client_id="node-host", mode="node",
                              scopes=[])
    with pytest.raises(GatewayError) as no_device:
        anonymous.connect(role="node")
    assert no_device.value.error == {"code": "NOT_PAIRED", "message": "device identity required",
                                     "details": {"code": "DEVICE_IDENTITY_REQUIRED"}}
    reader = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, scopes=["operator.read"])
    reader.connect()
    with pytest.raises(GatewayError) as write:
        reader.call("node.invoke", {"nodeId": "gamma", "command": "system.which", "idempotencyKey": "s4"})
    assert write.value.error["details"]["missingScope"] == "operator.write"
    node.close()


def test_wider_surface_waits_while_approved_commands_stay(gw: Gateway, tmp_path: Path) -> None:
    node = ScriptedNode(gw.port, TOKEN, tmp_path / "n4", name="delta", commands=["system.which"])
    node.connect()
    approve_all(gw, node)
    node.close()
    wider = ScriptedNode(gw.port, TOKEN, tmp_path / "n4", name="delta", commands=["system.which", "system.run"])
    wider.connect()
    op = operator(gw.port, TOKEN)
    entry = op.call("node.describe", {"nodeId": wider.identity.device_id})
    assert entry["approvalState"] == "pending-approval" and entry["commands"] == ["system.which"]
    pending = op.call("node.pair.list", {})["pending"][0]
    assert pending["commands"] == ["system.run", "system.which"]
    rejected = op.call("node.pair.reject", {"requestId": pending["requestId"]})
    assert rejected["nodeId"] == wider.identity.device_id
    renamed = op.call("node.rename", {"nodeId": "delta", "displayName": "delta-renamed"})
    assert renamed["displayName"] == "delta-renamed"
    assert op.call("node.describe", {"nodeId": wider.identity.device_id})["displayName"] == "delta-renamed"
    removed = op.call("node.pair.remove", {"nodeId": "delta-renamed"})
    assert removed["removed"] is True
    with pytest.raises(ConnectionClosed) as closed:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            wider.client.next_event(None, max(0.05, deadline - time.monotonic()))
    assert (closed.value.code, closed.value.reason) == (1008, "node pairing removed")
    assert op.call("node.list", {})["nodes"] == []
    with pytest.raises(GatewayError, match="unknown nodeId"):
        op.call("node.describe", {"nodeId": wider.identity.device_id})
