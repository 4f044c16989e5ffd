"""Node hosts against our gateway, driven by the real `openclaw` CLI: upstream's `openclaw node run` and our
`openclaw-sup node run` pair, show in `nodes status|describe`, answer `nodes invoke`, and keep their exec
approvals on their own host (`openclaw approvals get|set|allowlist --node`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from node_harness import RealNode, SupNode, operator, pending_request, wait_connected

from conftest import BIN, Gateway, openclaw_cli, run_openclaw, run_side_by_side, wait_for
from openclaw_sup.config import statedb
from openclaw_sup.gateway.client import GatewayError

TOKEN = "nodes-live-token-0123456789"


@pytest.fixture
def gw(gateway_factory) -> Gateway:
    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}}}
    return gateway_factory({}, config=cfg).start()


def cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    res = run_openclaw(gw, *args, token=TOKEN, timeout=120)
    assert res.returncode == 0, f"openclaw {' '.join(args)} exited {res.returncode}: {res.stdout}{res.stderr}"
    return res


def cli_json(gw: Gateway, *args: str) -> object:
    out = cli(gw, *args, "--json").stdout
    return json.loads(out[out.index(next(c for c in out if c in "[{")):])


def node_approvals(state_dir: Path) -> dict:
    db = sqlite3.connect(state_dir / "state" / "openclaw.sqlite")
    try:
        return json.loads(db.execute("SELECT raw_json FROM exec_approvals_config WHERE config_key = 'current'")
                          .fetchone()[0])
    finally:
        db.close()


def test_real_node_host_end_to_end(gw: Gateway, tmp_path: Path) -> None:
    node = RealNode(tmp_path, "buildbox", gw.port, TOKEN).start()
    try:
        request = pending_request(gw.port, TOKEN, "buildbox", timeout=120)
        pending, status = run_side_by_side([lambda: cli_json(gw, "nodes", "pending"),
                                            lambda: cli_json(gw, "nodes", "status")])
        assert [p["requestId"] for p in pending] == [request["requestId"]]
        assert pending[0]["requiredApproveScopes"] == ["operator.pairing", "operator.admin"]
        assert "system.run" in pending[0]["commands"] and "system.which" in pending[0]["commands"]
        before = next(n for n in status["nodes"] if n["displayName"] == "buildbox")
        assert (before["approvalState"], before["commands"]) == ("pending-approval", [])

        cli(gw, "nodes", "approve", request["requestId"])
        entry = wait_connected(gw.port, TOKEN, "buildbox", approved=True)
        nodes, described, invoked, shell, got = run_side_by_side([  # reads only: no order among them
            lambda: cli_json(gw, "nodes", "status"),
            lambda: cli(gw, "nodes", "describe", "--node", "buildbox").stdout,
            lambda: cli_json(gw, "nodes", "invoke", "--node", "buildbox", "--command", "system.which", "--params",
                             '{"bins":["uname","no-such-binary-xyz"]}'),
            lambda: run_openclaw(gw, "nodes", "invoke", "--node", "buildbox", "--command", "system.run", "--params",
                                 '{"command":["id"]}', token=TOKEN),
            lambda: cli_json(gw, "approvals", "get", "--node", "buildbox")])
        row = next(n for n in nodes["nodes"] if n["displayName"] == "buildbox")
        assert row["connected"] and row["paired"] and row["approvalState"] == "approved"
        assert row["clientId"] == "node-host" and row["version"] == "2026.9.6"
        assert "paired · connected" in described and "system.which" in described
        assert invoked["ok"] is True and invoked["payload"] == {"bins": {"uname": "/usr/bin/uname"}}
        assert invoked["nodeId"] == entry["nodeId"]
        assert shell.returncode != 0 and "use the exec tool with host=node" in shell.stdout + shell.stderr
        assert got["path"] == f"{node.state}/state/openclaw.sqlite#exec_approvals_config" and got["exists"]
        res = run_openclaw(gw, "approvals", "set", "--node", "buildbox", "--stdin", token=TOKEN,
                           stdin='{version: 1, defaults: {security: "allowlist", ask: "on-miss"}}')
        assert res.returncode == 0, res.stdout + res.stderr
        cli(gw, "approvals", "allowlist", "add", "--node", "buildbox", "/usr/bin/uname")
        stored = node_approvals(node.state)  # on the node's own host, in its own state dir
        assert stored["defaults"] == {"security": "allowlist", "ask": "on-miss"}
        assert [e["pattern"] for e in stored["agents"]["*"]["allowlist"]] == ["/usr/bin/uname"]
        assert cli_json(gw, "approvals", "pending") == {"approvals": []}
    finally:
        node.stop()
    wait_for(lambda: not (node_entry := operator_node(gw, "buildbox")) or not node_entry["connected"], 20,
             what="the node shown disconnected")


def operator_node(gw: Gateway, name: str) -> dict | None:
    op = operator(gw.port, TOKEN)
    try:
        return next((n for n in op.call("node.list", {})["nodes"] if n.get("displayName") == name), None)
    finally:
        op.close()


def test_our_node_host_pairs_and_survives_a_worker_kill(gw: Gateway, tmp_path: Path) -> None:
    node = SupNode(tmp_path, "nas", gw.port, TOKEN).start()
    try:
        request = pending_request(gw.port, TOKEN, "nas", timeout=30)
        assert request["commands"] == ["system.execApprovals.get", "system.execApprovals.set", "system.run",
                                       "system.run.prepare", "system.which"]
        cli(gw, "nodes", "approve", request["requestId"])
        entry = wait_connected(gw.port, TOKEN, "nas", approved=True, timeout=30)
        invoked = cli_json(gw, "nodes", "invoke", "--node", "nas", "--command", "system.which", "--params",
                           '{"bins":["sh"]}')
        assert invoked["payload"]["bins"]["sh"].endswith("/sh")
        ident = subprocess.run([*SupNode(tmp_path, "nas", gw.port, TOKEN).argv()[:2], "identity", "--json"],
                               env=node.env(), capture_output=True, text=True, timeout=30)
        assert json.loads(ident.stdout)["deviceId"] == entry["nodeId"]
        real = subprocess.run([str(openclaw_cli()), "node", "identity", "--json"], capture_output=True, text=True,
                              timeout=60, env={**RealNode(tmp_path, "nas", gw.port, TOKEN).env(),
                                               "HOME": str(node.root), "OPENCLAW_STATE_DIR": str(node.state)})
        assert real.returncode == 0, real.stderr
        assert json.loads(real.stdout) == json.loads(ident.stdout)  # upstream reads the identity we keep

        shown = subprocess.run([str(BIN), "node", "status"], env=node.env(), capture_output=True, text=True,
                               timeout=30)
        assert shown.returncode == 0 and "node-host" in shown.stdout and "node host -> ws://127.0.0.1" in shown.stdout
        first = node.worker_pid()
        assert first
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: (pid := node.worker_pid()) and pid != first and node.status()["workers"][0]["state"]
                 == "running", 20, what="the node-host worker restarted by its supervisor")
        again = wait_connected(gw.port, TOKEN, "nas", approved=True, timeout=30)
        assert again["nodeId"] == entry["nodeId"]  # same identity: no new pairing
        op = operator(gw.port, TOKEN)
        assert op.call("node.pair.list", {})["pending"] == []
        res = op.call("node.invoke", {"nodeId": "nas", "command": "system.which", "params": {"bins": ["sh"]},
                                      "idempotencyKey": "after-kill"})
        assert res["ok"] is True
        with pytest.raises(GatewayError, match="reserved for shell execution"):
            op.call("node.invoke", {"nodeId": "nas", "command": "system.run", "params": {"command": ["id"]},
                                    "idempotencyKey": "shell"})
        got = cli_json(gw, "approvals", "get", "--node", "nas")
        assert got["path"] == f"{node.state}/state/openclaw.sqlite#exec_approvals_config"
    finally:
        node.stop()


def test_our_node_host_over_tls_with_a_pinned_certificate(gateway_factory: Any, tmp_path: Path) -> None:
    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN},
                       "tls": {"enabled": True, "autoGenerate": True}}}
    gw = gateway_factory({}, config=cfg).start()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate((gw.state_dir / "gateway" / "tls" / "gateway-cert.pem").read_bytes())
    pin = cert.fingerprint(hashes.SHA256()).hex()
    wrong = SupNode(tmp_path, "wrongpin", gw.port, TOKEN, extra=("--tls", "--tls-fingerprint", "00" * 32)).start()
    node = SupNode(tmp_path, "tlsnode", gw.port, TOKEN, extra=("--tls", "--tls-fingerprint", f"sha256:{pin}"))
    node.start()
    try:
        request = pending_request(gw.port, TOKEN, "tlsnode", timeout=30, pin=pin)
        op = operator(gw.port, TOKEN, pin=pin)
        op.call("node.pair.approve", {"requestId": request["requestId"]})
        wait_connected(gw.port, TOKEN, "tlsnode", approved=True, timeout=30, pin=pin)
        res = op.call("node.invoke", {"nodeId": "tlsnode", "command": "system.which", "params": {"bins": ["sh"]},
                                      "idempotencyKey": "tls-1"})
        assert res["payload"]["bins"]["sh"].endswith("/sh")
        assert all(p["displayName"] != "wrongpin" for p in op.call("node.pair.list", {})["pending"])
        wait_for(lambda: "does not match tlsFingerprint" in str(wrong.status()["workers"][0]["lastError"]), 20,
                 what="the pin mismatch shown as the node host's last error")
        op.close()
    finally:
        node.stop()
        wrong.stop()


def test_cli_rename_reject_and_remove(gw: Gateway, tmp_path: Path) -> None:
    from node_harness import ScriptedNode

    node = ScriptedNode(gw.port, TOKEN, tmp_path / "scripted", name="lab-box")
    node.connect()
    first = pending_request(gw.port, TOKEN, "lab-box", timeout=10)
    cli(gw, "nodes", "reject", first["requestId"])
    op = operator(gw.port, TOKEN)
    assert op.call("node.pair.list", {})["pending"] == []
    node.close()
    again = ScriptedNode(gw.port, TOKEN, tmp_path / "scripted", name="lab-box")
    again.connect()
    cli(gw, "nodes", "approve", pending_request(gw.port, TOKEN, "lab-box", timeout=10)["requestId"])
    listed = cli(gw, "nodes", "list").stdout
    assert "Paired" in listed and "lab-box" in listed
    cli(gw, "nodes", "rename", "--node", "lab-box", "--name", "lab-box-2")
    assert op.call("node.describe", {"nodeId": again.identity.device_id})["displayName"] == "lab-box-2"
    cli(gw, "nodes", "remove", "--node", "lab-box-2")
    wait_for(lambda: op.call("node.list", {})["nodes"] == [], 10, what="the node gone from node.list")
    op.close()


@pytest.mark.live  # runs openclaw-sup
def test_node_identity_refuses_a_state_database_it_cannot_read(tmp_path: Path) -> None:
    """The node host keeps its identity in upstream's state database; one written by a newer release is refused
    with the file and the way out named, and left as it was."""
    node = SupNode(tmp_path, "newer", 1, TOKEN)
    db_file = node.state / "state" / "openclaw.sqlite"
    db_file.parent.mkdir(parents=True, exist_ok=True)
    statedb.open_state_db(db_file).close()
    with contextlib.closing(sqlite3.connect(db_file)) as db:
        db.execute("DROP TABLE device_identities")
        db.execute("PRAGMA user_version = 99")
    res = subprocess.run([*node.argv()[:2], "identity", "--json"], env=node.env(), capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 1 and res.stdout == ""
    assert f"{db_file} uses schema version 99, newer than 18" in res.stderr, res.stderr
    with contextlib.closing(sqlite3.connect(db_file)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 99
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'device_identities'").fetchone() is None
