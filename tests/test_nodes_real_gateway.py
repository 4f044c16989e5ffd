"""Our node host (`openclaw-sup node run`) against upstream's gateway: it pairs, the real CLI approves its
surface and invokes it, and an exec approval resolved with the real CLI lets an approved `system.run` through."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import RealGateway, SupNode, operator, pending_request, wait_connected

from conftest import free_port, run_openclaw, wait_for

pytestmark = pytest.mark.live  # the real gateway and our node host
TOKEN = "real-gateway-token-0123456789"


@pytest.fixture
def real_gw(tmp_path: Path) -> Iterator[RealGateway]:
    gw = RealGateway(tmp_path, free_port(), TOKEN).start()
    yield gw
    gw.stop()


def cli(gw: RealGateway, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    res = run_openclaw(gw, *args, token=TOKEN, timeout=120, stdin=stdin)  # type: ignore[arg-type]
    assert res.returncode == 0, f"openclaw {' '.join(args)} exited {res.returncode}: {res.stdout}{res.stderr}"
    return res


def test_our_node_host_against_the_real_gateway(real_gw: RealGateway, tmp_path: Path) -> None:
    node = SupNode(tmp_path, "supnode", real_gw.port, TOKEN).start()
    try:
        request = pending_request(real_gw.port, TOKEN, "supnode", timeout=60)
        assert sorted(request["commands"]) == ["system.execApprovals.get", "system.execApprovals.set", "system.run",
                                               "system.run.prepare", "system.which"]
        cli(real_gw, "nodes", "approve", request["requestId"])
        entry = wait_connected(real_gw.port, TOKEN, "supnode", approved=True, timeout=60)
        out = cli(real_gw, "nodes", "invoke", "--node", "supnode", "--command", "system.which", "--params",
                  '{"bins":["sh"]}', "--json").stdout
        assert json.loads(out[out.index("{"):])["payload"]["bins"]["sh"].endswith("/sh")
        cli(real_gw, "approvals", "set", "--node", "supnode", "--stdin",
            stdin='{version: 1, defaults: {security: "allowlist", ask: "on-miss", askFallback: "deny"}}')
        got = json.loads(cli(real_gw, "approvals", "get", "--node", "supnode", "--json").stdout)
        assert got["file"]["defaults"]["security"] == "allowlist" and "token" not in got["file"]["socket"]

        # an exec the node's policy does not allow is refused by the node itself
        op = operator(real_gw.port, TOKEN)
        plan = op.call("node.invoke", {"nodeId": entry["nodeId"], "command": "system.run.prepare",
                                       "params": {"command": ["/bin/sh", "-lc", "uname -s"], "agentId": "main",
                                                  "sessionKey": "agent:main:main"},
                                       "idempotencyKey": str(uuid.uuid4())})["payload"]["plan"]
        assert plan["policySnapshot"]["security"] == "allowlist"
        with pytest.raises(Exception, match="SYSTEM_RUN_DENIED: approval required"):
            op.call("node.invoke", {"nodeId": entry["nodeId"], "command": "system.run",
                                    "params": {"command": plan["argv"], "cwd": plan["cwd"], "agentId": "main",
                                               "sessionKey": "agent:main:main"},
                                    "idempotencyKey": str(uuid.uuid4())})

        # the real gateway's approval flow, resolved with the real CLI, lets the approved run through our node
        approver = operator(real_gw.port, TOKEN, caps=["exec-approvals"])
        approval_id = str(uuid.uuid4())
        box: dict = {}

        def request_approval() -> None:
            box["decision"] = op.call("exec.approval.request", {
                "id": approval_id, "command": "uname -s", "commandArgv": plan["argv"], "systemRunPlan": plan,
                "cwd": plan["cwd"], "nodeId": entry["nodeId"], "host": "node", "security": "allowlist",
                "ask": "on-miss", "agentId": "main", "sessionKey": "agent:main:main", "timeoutMs": 60_000},
                timeout=70)

        th = threading.Thread(target=request_approval)
        th.start()
        wait_for(lambda: any(a["id"] == approval_id for a in json.loads(
            cli(real_gw, "approvals", "pending", "--json").stdout)["approvals"]), 30, interval=0.5,
            what="the approval listed by the real CLI")
        cli(real_gw, "approvals", "resolve", approval_id, "allow-once")
        th.join(30)
        assert box["decision"]["decision"] == "allow-once"
        ran = op.call("node.invoke", {"nodeId": entry["nodeId"], "command": "system.run", "params": {
            "command": plan["argv"], "rawCommand": "uname -s", "cwd": plan["cwd"], "agentId": "main",
            "sessionKey": "agent:main:main", "approved": True, "approvalDecision": "allow-once", "runId": approval_id,
            "systemRunPlan": plan}, "idempotencyKey": str(uuid.uuid4()), "timeoutMs": 15_000})
        assert ran["payload"]["stdout"] == "Linux\n" and ran["payload"]["exitCode"] == 0
        approver.close()
        op.close()
    finally:
        node.stop()
