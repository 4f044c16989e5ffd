"""Moving one state dir between the real gateway (`openclaw gateway run` 2026.9.6) and ours, both ways, and
counting what each side finds of the other's: every cron job and run, session and message, DM pairing request
and allowed sender, device pairing (its device token still works) and exec approval.

Skipped with the reason when the real CLI cannot be installed or its gateway does not start.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from upstream_state import EchoModel, RealGateway, cli_env, json_out, ok, rows, run_real

from conftest import Gateway, run_side_by_side, wait_for
from openclaw_sup.config.pairing_store import PairingStore
from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.gateway.device import b64url_encode, build_payload

TOKEN = "migration-token-0123456789abcdef"
CLIENT = {"id": "openclaw-tui", "version": "1.0", "platform": "linux", "mode": "ui", "deviceFamily": "desktop"}
SCOPES = ["operator.read", "operator.write"]


@pytest.fixture
def model() -> Any:
    m = EchoModel()
    yield m
    m.close()


def make_gateway(factory: Any, model: EchoModel) -> Gateway:
    """One state dir and config both gateways run on (a loopback model both can call)."""
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
              "models": {"providers": {"loop": model.provider()}},
              "agents": {"defaults": {"model": "loop/m1"}}}
    return factory({"kinds": []}, config=config, extra_env={"OPENCLAW_SKIP_CRON": ""})


def client(gw: Gateway) -> GatewayClient:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, timeout=60)
    c.connect()
    return c


def device_connect(port: int, key: Ed25519PrivateKey, *, token: str | None = None,
                   device_token: str | None = None) -> dict[str, Any]:
    """Connect as a signed device (the gateway token, or the device token alone); returns hello-ok."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    device_id = hashlib.sha256(raw).hexdigest()
    c = GatewayClient(f"ws://127.0.0.1:{port}", client_id=CLIENT["id"], mode=CLIENT["mode"], scopes=SCOPES)
    try:
        nonce = c.read_challenge()["nonce"]
        signed_at = int(time.time() * 1000)
        payload = build_payload("v3", device_id=device_id, client=CLIENT, role="operator", scopes=SCOPES,
                                signed_at_ms=signed_at, token=token or device_token, nonce=nonce)
        device = {"id": device_id, "publicKey": b64url_encode(raw), "nonce": nonce, "signedAt": signed_at,
                  "signature": b64url_encode(key.sign(payload.encode()))}
        auth = {"token": token} if token else {"deviceToken": device_token}
        return c.request("connect", c.connect_params(client=CLIENT, device=device, auth=auth))
    finally:
        c.close()


def agent_turn(c: GatewayClient, session_key: str, message: str) -> dict[str, Any]:
    res = c.request("agent", {"message": message, "sessionKey": session_key, "idempotencyKey": str(uuid.uuid4())},
                    expect_final=True, timeout=120)
    assert res["status"] == "ok", res
    return res


def chat_messages(c: GatewayClient, session_key: str) -> list[tuple[str, str]]:
    """(role, text) of a session's user and assistant messages, as a gateway's chat.history returns them."""
    out = []
    for m in c.request("chat.history", {"sessionKey": session_key, "limit": 200})["messages"]:
        if m.get("role") not in ("user", "assistant"):
            continue
        content = m.get("content")
        text = content if isinstance(content, str) else "".join(
            p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")
        out.append((m["role"], text))
    return out


def counts(state: Path, store_key: str) -> dict[str, Any]:
    """What one state dir holds, read straight from the files."""
    db = state / "state" / "openclaw.sqlite"
    agent = state / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
    return {
        "jobs": sorted(r[0] for r in rows(db, "SELECT job_id FROM cron_jobs WHERE store_key = ?", store_key)),
        "runs": sorted(r[0] for r in rows(db, "SELECT task_id FROM task_runs WHERE runtime = 'cron' AND status != "
                                              "'running' AND json_extract(detail_json, '$.kind') = 'cron-run'")),
        "sessions": sorted(r[0] for r in rows(agent, "SELECT session_key FROM session_nodes")),
        "messages": rows(agent, "SELECT count(*) FROM transcript_event_identities WHERE event_type = 'message'")[0][0],
        "pairingRequests": sorted(rows(db, "SELECT channel_key, account_id, request_id, code FROM "
                                           "channel_pairing_requests")),
        "allowed": sorted(rows(db, "SELECT channel_key, account_id, entry FROM channel_pairing_allow_entries")),
        "devices": sorted(r[0] for r in rows(db, "SELECT device_id FROM device_pairing_paired")),
        "execApprovals": rows(db, "SELECT config_key, raw_json FROM exec_approvals_config"),
        "operatorApprovals": rows(db, "SELECT approval_id, status FROM operator_approvals"),
    }


def legacy_pairing(state: Path) -> None:
    """Two pending telegram requests and an allowed sender in the JSON files an older release kept, for the real
    doctor to import (so the rows are upstream's own writing)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    (state / "credentials").mkdir(parents=True, exist_ok=True)
    (state / "credentials" / "telegram-pairing.json").write_text(json.dumps({"version": 1, "requests": [
        {"id": "101", "code": "REALAAAA", "createdAt": now, "lastSeenAt": now, "meta": {"accountId": "default"}},
        {"id": "102", "code": "REALBBBB", "createdAt": now, "lastSeenAt": now, "meta": {"accountId": "default"}}]}))
    (state / "credentials" / "telegram-allowFrom.json").write_text(json.dumps({"version": 1, "allowFrom": ["100"]}))


def test_from_the_real_gateway_to_ours(gateway_factory, model: EchoModel) -> None:
    gw = make_gateway(gateway_factory, model)
    state, env = gw.state_dir, cli_env(gw.home)
    store_key = str(state / "cron" / "jobs.json")
    legacy_pairing(state)
    ok(run_real(env, "doctor", "--non-interactive", "--fix"))
    # after the doctor's import: the approval (config and database) and the allowlist entry (database alone)
    # write different rows, side by side as two users' shells would
    for done in run_side_by_side([lambda: run_real(env, "pairing", "approve", "telegram", "REALAAAA"),
                                  lambda: run_real(env, "approvals", "allowlist", "add", "/usr/bin/uptime",
                                                   "--agent", "main")]):
        ok(done)

    def turns() -> dict[str, list[tuple[str, str]]]:
        c = client(gw)
        agent_turn(c, "agent:main:main", "first real message")
        agent_turn(c, "agent:main:main", "second real message")
        agent_turn(c, "agent:main:side", "side real message")
        agent_turn(c, "agent:main:side", "a long one " * 150)  # over 1 KiB: upstream stores it zstd-packed
        history = {k: chat_messages(c, k) for k in ("agent:main:main", "agent:main:side")}
        c.close()
        return history

    def cron_job() -> str:
        job = json_out(run_real(env, "cron", "add", "--name", "realjob", "--every", "1h", "--no-deliver",
                                "--command", "echo from-real", "--json"))
        job_id = job.get("id") or job["job"]["id"]
        ok(run_real(env, "cron", "run", job_id))
        wait_for(lambda: any(e.get("status") == "ok" for e in json_out(run_real(env, "cron", "runs", "--id", job_id))
                             ["entries"]), 90, interval=1, what="the real gateway's cron run")
        return job_id

    real = RealGateway(env, gw.port, gw.root / "real-gateway.log").start()
    try:  # the agent turns (over RPC) and the cron job (through the real CLI) are independent: side by side
        real_history, job_id = run_side_by_side([turns, cron_job])
        key = Ed25519PrivateKey.generate()
        device_token = device_connect(gw.port, key, token=TOKEN)["auth"]["deviceToken"]
    finally:
        real.stop()
    before = counts(state, store_key)
    assert len(before["jobs"]) >= 2 and before["runs"] and len(before["sessions"]) == 2 and before["messages"] == 8
    agent_db = state / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
    assert rows(agent_db, "SELECT count(*) FROM transcript_events WHERE event_zstd IS NOT NULL")[0][0] >= 1
    assert [r[3] for r in before["pairingRequests"]] == ["REALBBBB"] and len(before["allowed"]) == 2
    assert len(before["devices"]) == 1 and len(before["execApprovals"]) == 1

    gw.start()
    c = client(gw)
    listed = c.request("cron.list", {"includeDisabled": True, "limit": 200})
    assert set(before["jobs"]) <= {j["id"] for j in listed["jobs"]}
    runs = c.request("cron.runs", {"id": job_id, "limit": 50})["entries"]
    assert [(e["status"], e["summary"]) for e in runs] == [("ok", "from-real")]
    declared = rows(state / "state" / "openclaw.sqlite", "SELECT job_id FROM cron_jobs WHERE declaration_key LIKE "
                                                         "'memory-core:%' OR declaration_key LIKE 'skill-collection-%'")
    ours_log = "\n".join(str(r.get("message", "")) for r in gw.log_lines())  # the real gateway logs there too
    for (declared_id,) in declared:  # upstream's own maintenance jobs: kept, listed, not run by ours
        assert f"cron: job {declared_id} (" in ours_log and "not scheduled" in ours_log
    assert {k: chat_messages(c, k) for k in real_history} == real_history
    assert ("user", "first real message") in real_history["agent:main:main"]
    agent_turn(c, "agent:main:main", "third message, on ours")
    assert chat_messages(c, "agent:main:main")[-2:] == [("user", "third message, on ours"),
                                                        ("assistant", "echo: third message, on ours")]
    c.close()
    listed = gw.run_cli("pairing", "list", "telegram", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["code"], r["senderId"]) for r in json.loads(listed.stdout)["requests"]] == [("REALBBBB", "102")]
    store = PairingStore(state / "state" / "openclaw.sqlite")
    assert store.is_allowed("telegram", "default", "100") and store.is_allowed("telegram", "default", "101")
    store.close()
    hello = device_connect(gw.port, key, device_token=device_token)  # the real gateway's device token, on ours
    assert hello["auth"]["role"] == "operator"
    after = counts(state, store_key)
    assert after["sessions"] == before["sessions"] and after["messages"] == before["messages"] + 2
    for kept in ("jobs", "runs", "pairingRequests", "allowed", "devices", "execApprovals", "operatorApprovals"):
        assert set(before[kept]) <= set(after[kept]), kept
    assert gw.stop() == 0


def test_from_ours_to_the_real_gateway(gateway_factory, model: EchoModel) -> None:
    gw = make_gateway(gateway_factory, model).start()
    state, env = gw.state_dir, cli_env(gw.home)
    store_key = str(state / "cron" / "jobs.json")
    c = client(gw)
    agent_turn(c, "agent:main:main", "first message on ours")
    agent_turn(c, "agent:main:main", "second message on ours")
    agent_turn(c, "agent:main:side", "side message on ours")
    ours_history = {k: chat_messages(c, k) for k in ("agent:main:main", "agent:main:side")}
    job_ids = []
    for name, payload in (("cmdjob", {"kind": "command", "argv": ["sh", "-c", "echo from-ours"]}),
                          ("eventjob", {"kind": "systemEvent", "text": "ping from ours"})):
        job = c.request("cron.add", {"name": name, "schedule": {"kind": "every", "everyMs": 3_600_000},
                                     "sessionTarget": "main" if name == "eventjob" else "isolated",
                                     "wakeMode": "next-heartbeat", "payload": payload})
        job_ids.append(job["id"])
        c.request("cron.run", {"id": job["id"], "mode": "force"})
    wait_for(lambda: all(c.request("cron.runs", {"id": j})["entries"] for j in job_ids), 30,
             what="a finished run of each job")
    c.close()
    store = PairingStore(state / "state" / "openclaw.sqlite")
    requests = [store.request("telegram", "default", sender).request for sender in ("201", "202")]
    store.close()
    codes = [r.code for r in requests if r is not None]
    assert "Approved" in ok(gw.run_cli("pairing", "approve", "telegram", codes[0]))
    key = Ed25519PrivateKey.generate()
    device_token = device_connect(gw.port, key, token=TOKEN)["auth"]["deviceToken"]
    ok(run_real(env, "approvals", "allowlist", "add", "/usr/bin/uptime", "--agent", "main"))
    assert gw.stop() == 0
    before = counts(state, store_key)
    assert set(job_ids) <= set(before["jobs"]) and len(before["runs"]) >= 2  # a heartbeat may have run too
    assert before["sessions"] == ["agent:main:main", "agent:main:side"] and before["messages"] == 6
    assert [r[2] for r in before["pairingRequests"]] == ["202"] and before["allowed"] == [("telegram", "default",
                                                                                            "201")]
    assert len(before["devices"]) == 1 and len(before["execApprovals"]) == 1

    def chat_on_the_real_gateway() -> None:
        c = client(gw)
        assert {k: chat_messages(c, k) for k in ours_history} == ours_history
        agent_turn(c, "agent:main:main", "third message, on the real gateway")
        assert chat_messages(c, "agent:main:main")[-2:] == [("user", "third message, on the real gateway"),
                                                            ("assistant", "echo: third message, on the real gateway")]
        c.close()

    real = RealGateway(env, gw.port, gw.root / "real-gateway.log").start()
    try:  # the real CLI's reads and the chat over RPC, side by side; the two slowest reads first
        cli_reads = [("pairing", "list", "telegram", "--json"), ("approvals", "get", "--json"),
                     ("cron", "list", "--all", "--json"), *(("cron", "runs", "--id", job_id) for job_id in job_ids),
                     ("sessions", "--json"), ("devices", "list", "--json")]
        *outs, _ = run_side_by_side([*(lambda args=args: run_real(env, *args) for args in cli_reads),
                                     chat_on_the_real_gateway])
        pending, approvals, cron, *job_runs, sessions, devices = outs
        assert set(job_ids) <= {j["id"] for j in json_out(cron)["jobs"]}
        for runs in job_runs:
            entries = json_out(runs)["entries"]
            assert [e["status"] for e in entries] == ["ok"], entries
        assert {s["key"] for s in json_out(sessions)["sessions"]} >= set(ours_history)
        assert [(r["code"], r["id"]) for r in json_out(pending)["requests"]] == [(codes[1], "202")]
        assert [d["deviceId"] for d in json_out(devices)["paired"]] == before["devices"]
        hello = device_connect(gw.port, key, device_token=device_token)  # our device token, on the real gateway
        assert hello["auth"]["method"] == "device-token"
        assert "/usr/bin/uptime" in json.dumps(json_out(approvals))
    finally:
        real.stop()
    after = counts(state, store_key)
    assert after["sessions"] == before["sessions"] and after["messages"] == before["messages"] + 2
    for kept in ("jobs", "runs", "pairingRequests", "allowed", "devices", "execApprovals", "operatorApprovals"):
        assert set(before[kept]) <= set(after[kept]), kept
