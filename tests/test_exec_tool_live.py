"""The agent's `exec` tool end to end: a scripted OpenAI-compatible model asks for `exec`, our gateway's agent
worker runs it on a node (upstream's `openclaw node run`, or ours) or on the gateway host, under that host's
exec approvals, with approvals answered by the real `openclaw approvals resolve`; and the faults: a node host,
the agent worker or the gateway killed mid-invoke, a command that floods or never exits."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exec_harness import AgentRun, ScriptedAnthropic, ScriptedModel
from node_harness import RealNode, SupNode, operator, pending_request, wait_connected
from upstream_state import RealGateway, cli_env, json_out, ok, reads

from conftest import Gateway, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient

TOKEN = "exec-live-token-0123456789"


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    m = ScriptedModel()
    yield m
    m.close()


def make_gateway(gateway_factory: Any, model: ScriptedModel | ScriptedAnthropic, **extra: dict) -> Gateway:
    cfg = {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}}, **model.config(), **extra}
    return gateway_factory({}, config=cfg).start()


def cli(gw: Gateway, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    res = run_openclaw(gw, *args, token=TOKEN, timeout=120, stdin=stdin)
    assert res.returncode == 0, f"openclaw {' '.join(args)} exited {res.returncode}: {res.stdout}{res.stderr}"
    return res


def gone(pid: int) -> bool:
    """No such process, or only its zombie is left."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def pending_approvals(gw: Gateway) -> list[dict]:
    return json.loads(cli(gw, "approvals", "pending", "--json").stdout)["approvals"]


def pair(gw: Gateway, node_name: str, timeout: float = 120) -> str:
    request = pending_request(gw.port, TOKEN, node_name, timeout=timeout)
    cli(gw, "nodes", "approve", request["requestId"])
    return str(wait_connected(gw.port, TOKEN, node_name, approved=True, timeout=60)["nodeId"])


def test_real_node_host_exec_waits_for_the_operator(gateway_factory: Any, model: ScriptedModel, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, model)
    node = RealNode(tmp_path, "buildbox", gw.port, TOKEN).start()
    try:
        pair(gw, "buildbox")
        cli(gw, "approvals", "set", "--node", "buildbox", "--stdin",
            stdin='{version: 1, defaults: {security: "allowlist", ask: "on-miss", askFallback: "deny"}}')
        which = json.loads(cli(gw, "nodes", "invoke", "--node", "buildbox", "--command", "system.which",
                               "--params", '{"bins":["uname"]}', "--json").stdout)
        assert which["payload"]["bins"] == {"uname": "/usr/bin/uname"}

        # upstream's node host binds an approval to one executable (no shell chains), so: one command
        model.exec_args = {"command": "uname -s", "host": "node"}
        run = AgentRun(gw.port, TOKEN, "what kernel does the build box run?")
        approval = wait_for(lambda: next(iter(pending_approvals(gw)), None), 60, interval=0.5,
                            what="the exec approval listed by openclaw approvals pending")
        assert approval["kind"] == "exec" and approval["agentId"] == "main"
        assert "uname -s" in approval["summary"]
        denied = [i for i in run.items() if i.get("phase") == "update" and i.get("status") == "denied"]
        assert denied and denied[0]["error"] == "SYSTEM_RUN_DENIED: approval required"
        assert run.final is None  # the run waits for the operator
        cli(gw, "approvals", "resolve", approval["id"], "allow-once")
        text = run.text()
        assert "RESULT: Linux\n" in text, text
        ends = [i for i in run.items() if i.get("phase") == "end"]
        assert ends and ends[-1]["status"] == "completed"
        assert pending_approvals(gw) == []

        cli(gw, "approvals", "set", "--node", "buildbox", "--stdin",
            stdin='{version: 1, defaults: {security: "allowlist", ask: "off"}}')
        model.exec_args = {"command": "id -un", "host": "node"}
        miss = AgentRun(gw.port, TOKEN, "who are you on the build box?")
        text = miss.text()
        assert "SYSTEM_RUN_DENIED: allowlist miss" in text, text
        assert pending_approvals(gw) == []
    finally:
        node.stop()


def test_node_faults_mid_invoke(gateway_factory: Any, model: ScriptedModel, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, model)
    node = SupNode(tmp_path, "nas", gw.port, TOKEN).start()
    try:
        node_id = pair(gw, "nas", timeout=30)
        # 1. the node host dies mid-command: the invoke fails at once, the node comes back usable
        pidfile = tmp_path / "node-child.pid"
        model.exec_args = {"command": f"sleep 30 & echo $! > {pidfile}; wait; echo never", "host": "node"}
        run = AgentRun(gw.port, TOKEN, "sleep on the nas")
        child = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, what="the child pid"))
        killed_at = time.monotonic()
        os.kill(node.worker_pid() or 0, signal.SIGKILL)
        text = run.text()
        assert "DISCONNECTED: node disconnected (system.run)" in text, text
        assert time.monotonic() - killed_at < 10
        wait_connected(gw.port, TOKEN, "nas", approved=True, timeout=30)
        wait_for(lambda: gone(child), 10, what="the command's child swept by the restarted node host")
        model.exec_args = {"command": "echo back", "host": "node"}
        assert "RESULT: back" in AgentRun(gw.port, TOKEN, "again").text()

        # 2. the agent worker dies mid-invoke: the node stays connected, the next run works
        model.exec_args = {"command": "sleep 30", "host": "node"}
        run = AgentRun(gw.port, TOKEN, "sleep again")
        wait_for(lambda: any(i.get("phase") == "start" for i in run.items()), 30, what="the exec started")
        before = gw.worker("agent")["pid"]
        os.kill(before, signal.SIGKILL)
        wait_for(lambda: (w := gw.worker("agent"))["state"] == "running" and w["pid"] != before, 30,
                 what="the agent worker restarted")
        op = operator(gw.port, TOKEN)
        entry = op.call("node.describe", {"nodeId": node_id})
        assert entry["connected"] is True
        model.exec_args = {"command": "echo still-here", "host": "node"}
        assert "RESULT: still-here" in AgentRun(gw.port, TOKEN, "still there?").text()
        op.close()

        # 3. the process that holds node routing (the gateway supervisor) dies: the node reconnects to the new one
        model.exec_args = {"command": "sleep 30", "host": "node"}
        run = AgentRun(gw.port, TOKEN, "sleep once more")
        wait_for(lambda: any(i.get("phase") == "start" for i in run.items()), 30, what="the exec started")
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(10)
        run.thread.join(10)
        assert run.final is None and run.error is not None  # its connection went with the gateway
        gw.start()
        wait_connected(gw.port, TOKEN, "nas", approved=True, timeout=60)
        model.exec_args = {"command": "echo after-restart", "host": "node"}
        assert "RESULT: after-restart" in AgentRun(gw.port, TOKEN, "and now?").text()
    finally:
        node.stop()


def test_gateway_host_exec_approval_and_bounds(gateway_factory: Any, model: ScriptedModel, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, model)
    cli(gw, "approvals", "set", "--gateway", "--stdin",
        stdin='{version: 1, defaults: {security: "allowlist", ask: "on-miss", askFallback: "deny"}}')
    model.exec_args = {"command": "echo gateway-side", "host": "gateway"}
    run = AgentRun(gw.port, TOKEN, "say it on the gateway")
    approval = wait_for(lambda: next(iter(pending_approvals(gw)), None), 30, interval=0.5,
                        what="the gateway-host approval listed")
    cli(gw, "approvals", "resolve", approval["id"], "allow-always")
    assert "RESULT: gateway-side" in run.text()
    doc = json.loads(cli(gw, "approvals", "get", "--gateway", "--json").stdout)["file"]
    granted = doc["agents"]["main"]["allowlist"]
    assert granted[0]["source"] == "allow-always" and granted[0]["pattern"].endswith("/echo")
    again = AgentRun(gw.port, TOKEN, "once more")  # the same command in the same place runs without asking
    assert "RESULT: gateway-side" in again.text()

    cli(gw, "approvals", "set", "--gateway", "--stdin", stdin='{version: 1, defaults: {security: "full"}}')
    agent_pid = gw.worker("agent")["pid"]
    model.exec_args = {"command": "yes 0123456789abcdef | head -c 1073741824", "host": "gateway"}
    t0 = time.monotonic()
    flood = AgentRun(gw.port, TOKEN, "flood").text()
    assert "command output exceeded" in flood and "process group was killed" in flood, flood[-500:]
    assert len(flood) < 100_000
    model.exec_args = {"command": "sleep 600", "host": "gateway", "timeoutSeconds": 2}
    hang = AgentRun(gw.port, TOKEN, "hang").text()
    assert "command timed out after 2s; its process group was killed" in hang, hang
    assert time.monotonic() - t0 < 90
    worker = gw.worker("agent")
    assert worker["pid"] == agent_pid and worker["state"] == "running"
    assert worker["rss"] < 400 * 1024 * 1024

    # the agent worker dies while a command's child runs: the next agent worker sweeps the group
    pidfile = tmp_path / "orphan.pid"
    model.exec_args = {"command": f"sleep 300 & echo $! > {pidfile}; wait", "host": "gateway"}
    AgentRun(gw.port, TOKEN, "leave something running")
    child = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, what="the child pid"))
    os.kill(agent_pid, signal.SIGKILL)
    wait_for(lambda: (w := gw.worker("agent"))["state"] == "running" and w["pid"] != agent_pid, 30,
             what="the agent worker restarted")
    wait_for(lambda: gone(child), 10, what="the command's child killed by the new agent worker's sweep")
    # the count may include the group's dead leader not yet reaped by the supervisor
    assert re.search(r"killed [12] process\(es\) that exec commands of a previous agent worker left", gw.log_text())


def test_anthropic_tool_use_runs_exec(gateway_factory: Any) -> None:
    model = ScriptedAnthropic()
    try:
        gw = make_gateway(gateway_factory, model)
        model.exec_args = {"command": "printf 'claude-%s' ran", "host": "gateway"}
        run = AgentRun(gw.port, TOKEN, "run it")
        assert "RESULT: claude-ran" in run.text()
        second = model.requests[1]
        assert second["messages"][-1]["content"][0]["type"] == "tool_result"
        assert second["messages"][-2]["content"][0]["type"] == "tool_use"
        assert [t["name"] for t in second["tools"]] == ["exec"]
    finally:
        model.close()


def test_tool_rounds_are_kept_in_upstreams_transcript(gateway_factory: Any, model: ScriptedModel) -> None:
    """A tool round is stored as upstream stores it (an assistant message with a `toolCall` part, then its
    `toolResult`), is given back to the model on the next turn, stays out of `chat.history`'s text turns, and the
    real `openclaw sessions` reads the session."""
    gw = make_gateway(gateway_factory, model)
    model.exec_args = {"command": "printf 'tool-%s' out", "host": "gateway"}
    assert "RESULT: tool-out" in AgentRun(gw.port, TOKEN, "run it").text()
    asked = len(model.requests)
    assert "RESULT: tool-out" in AgentRun(gw.port, TOKEN, "again").text()

    replayed = model.requests[asked]["messages"]  # the second turn's first model call
    assert [m["role"] for m in replayed if m["role"] != "system"] == ["user", "assistant", "tool", "assistant", "user"]
    call = next(m for m in replayed if m.get("tool_calls"))["tool_calls"][0]
    assert call["function"]["name"] == "exec" and json.loads(call["function"]["arguments"]) == model.exec_args
    result = next(m for m in replayed if m["role"] == "tool")
    assert result["tool_call_id"] == call["id"] and result["content"] == "tool-out"

    agent_db = gw.state_dir / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
    with contextlib.closing(sqlite3.connect(f"file:{agent_db}?mode=ro", uri=True)) as db:
        (session_id,) = db.execute("SELECT current_session_id FROM session_nodes WHERE session_key = "
                                   "'agent:main:main'").fetchone()
        events = [json.loads(r[0]) for r in db.execute("SELECT event_json FROM transcript_events WHERE session_id = "
                                                       "? ORDER BY seq", (session_id,))]
        state = db.execute("SELECT needs_rebuild, active_message_count, leaf_event_id FROM "
                           "session_transcript_index_state WHERE session_id = ?", (session_id,)).fetchone()
    messages = [e["message"] for e in events[1:]]
    assert [m["role"] for m in messages] == ["user", "assistant", "toolResult", "assistant"] * 2
    assert all(e["parentId"] == p["id"] for p, e in itertools.pairwise(events))
    assert state == (0, 8, events[-1]["id"])
    calls, result, answer = messages[1], messages[2], messages[3]
    part = calls["content"][0]
    assert part["type"] == "toolCall" and part["name"] == "exec" and part["arguments"] == model.exec_args
    assert calls["stopReason"] == "toolUse" and calls["__openclaw"]["runId"]
    assert result["toolCallId"] == part["id"] and result["toolName"] == "exec" and result["isError"] is False
    assert result["content"] == [{"type": "text", "text": "tool-out"}]
    assert answer["content"] == [{"type": "text", "text": "RESULT: tool-out"}] and answer["stopReason"] == "stop"

    op = operator(gw.port, TOKEN)
    history = op.call("chat.history", {"sessionKey": "agent:main:main"})["messages"]
    op.close()
    assert [(m["role"], m["content"][0]["text"]) for m in history] == [
        ("user", "run it"), ("assistant", "RESULT: tool-out"), ("user", "again"), ("assistant", "RESULT: tool-out")]

    env = cli_env(gw.home)  # the real CLI on the gateway's own state dir, as a user on that host runs it
    listed, table = reads(env, ("sessions", "--json"), ("sessions",))
    listed = json_out(listed)
    assert [(s["key"], s["modelProvider"]) for s in listed["sessions"]] == [("agent:main:main", "scripted")], listed
    assert "agent:main:main" in ok(table)


def test_the_real_gateway_reads_our_tool_rounds(gateway_factory: Any, model: ScriptedModel) -> None:
    """The real gateway, started on the state dir ours wrote, shows our tool round in `chat.history`: the call,
    its result paired with it, and the exec it reports as completed."""
    gw = make_gateway(gateway_factory, model)
    model.exec_args = {"command": "printf 'tool-%s' out", "host": "gateway"}
    assert "RESULT: tool-out" in AgentRun(gw.port, TOKEN, "run it").text()
    assert gw.stop() == 0
    real = RealGateway(cli_env(gw.home), gw.port, gw.root / "real-gateway.log").start()
    try:
        c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, timeout=60)
        c.connect()
        history = c.request("chat.history", {"sessionKey": "agent:main:main"})
        c.close()
    finally:
        real.stop()
    messages = history["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "toolResult", "assistant"]
    assert history["totalMessages"] == 4
    call = messages[1]["content"][0]
    assert (call["type"], call["name"], call["arguments"]) == ("toolCall", "exec", model.exec_args)
    assert (messages[2]["toolCallId"], messages[2]["content"]) == (call["id"], [{"type": "text", "text": "tool-out"}])
    assert messages[3]["content"] == [{"type": "text", "text": "RESULT: tool-out"}]
    done = [i for a in history["activity"] for i in a["items"] if i.get("status") == "completed"]
    assert [(i["toolCallId"], i["name"]) for i in done] == [(call["id"], "exec")], history["activity"]
