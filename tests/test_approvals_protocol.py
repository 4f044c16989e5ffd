"""Approval requests on our gateway, frame by frame: two-phase request, the events, list/get, the unified
`approval.get|resolve` the real CLI uses, repeated and conflicting decisions, expiry, a gateway restart, and the
rows of `operator_approvals` in upstream's format."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from typing import Any

import pytest
from node_harness import operator

from conftest import Gateway
from openclaw_sup.gateway.client import ConnectionClosed, GatewayClient, GatewayError

TOKEN = "approvals-protocol-token-0123456789"


@pytest.fixture
def gw(gateway_factory: Any) -> Gateway:
    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}}}
    return gateway_factory({}, config=cfg).start()


def rows(gw: Gateway) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(gw.state_dir / "state" / "openclaw.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return {r["approval_id"]: dict(r) for r in db.execute("SELECT * FROM operator_approvals")}
    finally:
        db.close()


def request(client: GatewayClient, **extra: Any) -> tuple[str, threading.Thread, dict[str, Any]]:
    """A two-phase request on its own connection's thread: (id, thread, box with `accepted` and `final`)."""
    approval_id = str(uuid.uuid4())
    box: dict[str, Any] = {}
    rid = f"r:{approval_id}"
    client.send({"type": "req", "id": rid, "method": "exec.approval.request", "params": {
        "id": approval_id, "command": "uname -s", "commandArgv": ["uname", "-s"], "host": "gateway", "cwd": "/tmp",
        "security": "allowlist", "ask": "on-miss", "agentId": "main", "sessionKey": "agent:main:main",
        "twoPhase": True, **extra}})

    def read() -> None:
        try:
            while "final" not in box:
                msg = json.loads(client.ws.recv(60))
                if msg.get("type") == "res" and msg.get("id") == rid:
                    box["final" if "accepted" in box else "accepted"] = msg
        except ConnectionClosed as exc:  # the gateway stopped: the test reads it
            box["closed"] = exc

    th = threading.Thread(target=read, daemon=True)
    th.start()
    return approval_id, th, box


def test_request_list_resolve_and_records(gw: Gateway) -> None:
    watcher = operator(gw.port, TOKEN, caps=["exec-approvals"])
    requester = operator(gw.port, TOKEN)
    approval_id, th, box = request(requester)
    requested = watcher.next_event("exec.approval.requested", 5)["payload"]
    assert requested["id"] == approval_id and requested["approvalKind"] == "exec"
    assert requested["request"]["command"] == "uname -s"
    assert requested["request"]["allowedDecisions"] == ["allow-once", "allow-always", "deny"]
    time.sleep(0.2)
    assert box["accepted"]["payload"]["status"] == "accepted"

    op = operator(gw.port, TOKEN)
    listed = op.call("exec.approval.list", {})
    assert [a["id"] for a in listed] == [approval_id] and listed[0]["approvalKind"] == "exec"
    assert op.call("plugin.approval.list", {}) == [] and op.call("openclaw.approval.list", {}) == []
    got = op.call("approval.get", {"id": approval_id})["approval"]
    assert got["status"] == "pending" and got["presentation"]["commandText"] == "uname -s"
    assert got["urlPath"] == f"/approve/{approval_id}"
    row = rows(gw)[approval_id]
    assert (row["kind"], row["status"], row["source_agent_id"], row["decision"]) == ("exec", "pending", "main", None)
    assert len(row["resolution_ref"]) == 43

    resolved = op.call("approval.resolve", {"id": approval_id, "kind": "exec", "decision": "deny"})
    assert resolved["applied"] is True and resolved["approval"]["status"] == "denied"
    assert resolved["approval"]["resolver"] == {"kind": "runtime", "id": "cli"}
    th.join(5)
    assert box["final"]["payload"]["decision"] == "deny"
    event = watcher.next_event("exec.approval.resolved", 5)["payload"]
    assert (event["id"], event["decision"], event["resolvedBy"]) == (approval_id, "deny", "cli")
    again = op.call("approval.resolve", {"id": approval_id, "kind": "exec", "decision": "deny"})
    assert again["applied"] is False
    with pytest.raises(GatewayError, match="approval already resolved"):
        op.call("approval.resolve", {"id": approval_id, "kind": "exec", "decision": "allow-once"})
    with pytest.raises(GatewayError) as unknown:
        op.call("approval.get", {"id": "no-such-approval"})
    assert unknown.value.error["code"] == "APPROVAL_NOT_FOUND"
    assert op.call("exec.approval.list", {}) == []
    row = rows(gw)[approval_id]
    assert (row["status"], row["decision"], row["terminal_reason"], row["resolver_kind"]) == \
        ("denied", "deny", "user", "runtime")


def test_expiry_and_restart(gw: Gateway) -> None:
    requester = operator(gw.port, TOKEN)
    approval_id, th, box = request(requester, timeoutMs=400)
    th.join(5)
    final = box["final"]["payload"]
    assert final["decision"] is None and final["terminalReason"] == "timeout"
    assert (rows(gw)[approval_id]["status"], rows(gw)[approval_id]["terminal_reason"]) == ("expired", "timeout")

    waiting = operator(gw.port, TOKEN)
    stale_id, stale_th, stale_box = request(waiting, timeoutMs=600_000)
    time.sleep(0.3)
    assert rows(gw)[stale_id]["status"] == "pending"
    gw.stop()
    stale_th.join(5)
    assert stale_box["closed"].code == 1012
    gw.start()
    assert (rows(gw)[stale_id]["status"], rows(gw)[stale_id]["terminal_reason"]) == ("cancelled", "gateway-restart")
    assert operator(gw.port, TOKEN).call("exec.approval.list", {}) == []


def test_scopes_and_host_document(gw: Gateway) -> None:
    reader = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, scopes=["operator.read"])
    reader.connect()
    with pytest.raises(GatewayError) as scope:
        reader.call("exec.approval.list", {})
    assert scope.value.error["details"]["missingScope"] == "operator.approvals"
    with pytest.raises(GatewayError) as admin:
        reader.call("exec.approvals.get", {})
    assert admin.value.error["details"]["missingScope"] == "operator.admin"
    op = operator(gw.port, TOKEN)
    snap = op.call("exec.approvals.get", {})
    assert snap["exists"] and "token" not in snap["file"]["socket"]
    assert snap["resolvedDefaults"] == {"security": "full", "ask": "off", "askFallback": "deny",
                                        "autoAllowSkills": False}
    with pytest.raises(GatewayError, match="base hash required"):
        op.call("exec.approvals.set", {"file": {"version": 1}})
    with pytest.raises(GatewayError, match="exec approvals file is required"):
        op.call("exec.approvals.set", {"baseHash": snap["hash"]})
    new = op.call("exec.approvals.set", {"file": {"version": 1, "defaults": {"ask": "always"}},
                                         "baseHash": snap["hash"]})
    assert new["file"]["defaults"] == {"ask": "always"} and new["hash"] != snap["hash"]
    with pytest.raises(GatewayError, match="changed since last load"):
        op.call("exec.approvals.set", {"file": {"version": 1}, "baseHash": snap["hash"]})
    with pytest.raises(GatewayError, match="unknown nodeId"):
        op.call("exec.approvals.node.get", {"nodeId": "no-such-node"})
