"""The real agent worker under a real supervisor: the two-stage `agent` response, `chat` events, transcripts that
survive a worker restart, idempotency across a crash, and SIGKILL mid-run ending the run with an error frame."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from agent_servers import ThreadedServer
from aiohttp import web

from conftest import Gateway, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient, GatewayError

TOKEN = "agent-test-token-0123456789"


def config(model: str = "echo/echo", **extra: Any) -> dict[str, Any]:
    return {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}},
            "agents": {"defaults": {"model": model}}, **extra}


def client(g: Gateway) -> GatewayClient:
    c = GatewayClient(f"ws://127.0.0.1:{g.port}", token=TOKEN, timeout=20)
    c.connect()
    return c


def raw_request(c: GatewayClient, method: str, params: dict[str, Any]) -> str:
    rid = f"t:{uuid.uuid4()}"
    c.send({"type": "req", "id": rid, "method": method, "params": params})
    return rid


def frames_until_final(c: GatewayClient, rid: str, timeout: float = 20) -> tuple[list[dict], list[dict]]:
    """Every `res` frame for `rid` (until one that is not `accepted`) and every event seen meanwhile."""
    res, events = [], []
    deadline = time.monotonic() + timeout
    while True:
        msg = json.loads(c.ws.recv(max(0.05, deadline - time.monotonic())))
        if msg.get("type") == "event":
            events.append(msg)
        elif msg.get("type") == "res" and msg.get("id") == rid:
            res.append(msg)
            if not (msg.get("ok") and (msg.get("payload") or {}).get("status") == "accepted"):
                return res, events


def restart_agent(g: Gateway) -> None:
    """SIGKILL the agent worker and wait for its replacement to be running."""
    old_pid = g.worker("agent")["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: (w := g.worker("agent"))["state"] == "running" and w["pid"] != old_pid, 20,
             what="the agent worker restarted")


def wait_event(c: GatewayClient, pred: Any, timeout: float = 15) -> dict[str, Any]:
    """The first event (already seen or still to come) that `pred` accepts."""
    deadline = time.monotonic() + timeout
    while True:
        for i, ev in enumerate(c.events):
            if pred(ev):
                return c.events.pop(i)
        msg = json.loads(c.ws.recv(max(0.05, deadline - time.monotonic())))
        if msg.get("type") == "event":
            c.events.append(msg)


class SlowModel:
    """An OpenAI-compatible server (documented chat-completions SSE) that streams one chunk then waits for
    `release`, so a test can act while a run is in flight. Records every request body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.server = ThreadedServer({"/v1/chat/completions": self._chat})
        self.port = self.server.port

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        first = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "thinking "}}]}
        await resp.write(f"data: {json.dumps(first)}\n\n".encode())
        while not self.release.is_set():
            await asyncio.sleep(0.05)
        last = {"choices": [{"index": 0, "delta": {"content": "done"}, "finish_reason": "stop"}]}
        with contextlib.suppress(ConnectionError):  # the client may have given up (timeout, SIGKILL)
            await resp.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        return resp

    def close(self) -> None:
        self.release.set()
        self.server.close()


@pytest.fixture
def slow_model() -> Iterator[SlowModel]:
    m = SlowModel()
    yield m
    m.close()


def slow_config(m: SlowModel) -> dict[str, Any]:
    return config("slow/m1", models={"providers": {"slow": {"baseUrl": f"http://127.0.0.1:{m.port}/v1",
                                                            "api": "openai-completions"}}})


# ---------------------------------------------------------------------------------------------------------

def test_agent_two_stage_response_and_chat_events_then_history_after_restart(gateway_factory) -> None:
    g = gateway_factory({}, config=config()).start()
    c = client(g)
    rid = raw_request(c, "agent", {"message": "hello there world", "idempotencyKey": "run-1",
                                   "sessionKey": "agent:main:main"})
    res, events = frames_until_final(c, rid)
    assert len(res) == 2, res
    accepted, final = res[0]["payload"], res[1]["payload"]
    assert accepted["runId"] == "run-1" and accepted["status"] == "accepted"
    assert isinstance(accepted["acceptedAt"], int)
    assert final["runId"] == "run-1" and final["status"] == "ok" and final["summary"] == "completed"
    assert final["result"]["payloads"] == [{"text": "hello there world"}]
    assert final["result"]["meta"]["agentMeta"]["provider"] == "echo"

    agent_events = [e["payload"] for e in events if e["event"] == "agent"]
    phases = [e["data"].get("phase") for e in agent_events if e["stream"] == "lifecycle"]
    assert phases == ["start", "end"]
    deltas = [e["data"]["delta"] for e in agent_events if e["stream"] == "assistant"]
    assert deltas == ["hello ", "there ", "world"]
    assert [e["seq"] for e in agent_events] == list(range(1, len(agent_events) + 1))
    chat = [e["payload"] for e in events if e["event"] == "chat"]
    assert [e["state"] for e in chat] == ["delta", "delta", "delta", "final"]
    assert "".join(e["deltaText"] for e in chat[:-1]) == "hello there world"
    assert chat[-1]["message"]["content"][0]["text"] == "hello there world"
    assert all(e["runId"] == "run-1" and e["sessionKey"] == "agent:main:main" for e in chat)

    ack = c.request("chat.send", {"sessionKey": "agent:main:main", "message": "second turn",
                                  "idempotencyKey": "chat-1"})
    assert ack == {"runId": "chat-1", "status": "started"}
    final_ev = wait_event(c, lambda e: e["event"] == "chat" and e["payload"]["state"] == "final"
                          and e["payload"]["runId"] == "chat-1")
    assert final_ev["payload"]["message"]["content"][0]["text"] == "second turn"
    c.close()

    restart_agent(g)
    c = client(g)
    hist = c.request("chat.history", {"sessionKey": "agent:main:main"})
    texts = [(m["role"], m["content"][0]["text"]) for m in hist["messages"]]
    assert texts == [("user", "hello there world"), ("assistant", "hello there world"),
                     ("user", "second turn"), ("assistant", "second turn")]
    assert hist["sessionInfo"]["hasActiveRun"] is False
    assert (g.state_dir / "agents" / "main" / "agent" / "openclaw-agent.sqlite").exists()
    c.close()


def test_sigkill_mid_run_ends_with_error_frame_and_resend_does_not_run_twice(gateway_factory,
                                                                             slow_model: SlowModel) -> None:
    g = gateway_factory({}, config=slow_config(slow_model)).start()
    c = client(g)
    rid = raw_request(c, "agent", {"message": "long job", "idempotencyKey": "kill-1"})
    wait_for(lambda: slow_model.requests, 15, what="the model request")
    killed = g.worker("agent")["pid"]
    os.kill(killed, signal.SIGKILL)
    res, _events = frames_until_final(c, rid, timeout=15)
    assert res[0]["payload"]["status"] == "accepted"
    assert res[-1]["ok"] is False and res[-1]["error"]["code"] == "UNAVAILABLE", res[-1]
    assert "agent" in res[-1]["error"]["message"]

    wait_for(lambda: (w := g.worker("agent"))["state"] == "running" and w["pid"] != killed, 20,
             what="the agent worker restarted")
    ended = wait_event(c, lambda e: e["event"] == "chat" and e["payload"]["runId"] == "kill-1"
                       and e["payload"]["state"] != "delta")
    assert ended["payload"]["state"] == "error" and "interrupted" in ended["payload"]["errorMessage"]
    slow_model.release.set()
    again = c.request("agent", {"message": "long job", "idempotencyKey": "kill-1"}, expect_final=True)
    assert again["status"] == "error" and "interrupted" in again["summary"], again
    assert len(slow_model.requests) == 1
    c.close()


def test_same_idempotency_key_runs_once(gateway_factory, slow_model: SlowModel) -> None:
    slow_model.release.set()
    g = gateway_factory({}, config=slow_config(slow_model)).start()
    c = client(g)
    first = c.request("agent", {"message": "once", "idempotencyKey": "dup-1"}, expect_final=True)
    assert first["status"] == "ok" and first["result"]["payloads"] == [{"text": "thinking done"}]
    second = c.request("agent", {"message": "once", "idempotencyKey": "dup-1"}, expect_final=True)
    assert second == first
    # after a worker restart the gateway's in-memory cache is not the one answering: the worker's store is
    restart_agent(g)
    c2 = client(g)
    third = c2.request("agent.wait", {"runId": "dup-1", "timeoutMs": 1000})
    assert third["status"] == "ok"
    assert len(slow_model.requests) == 1
    hist = c2.request("chat.history", {"sessionKey": "agent:main:main"})
    assert [m["role"] for m in hist["messages"]] == ["user", "assistant"]
    c.close()
    c2.close()


def test_chat_abort_ends_the_run(gateway_factory, slow_model: SlowModel) -> None:
    g = gateway_factory({}, config=slow_config(slow_model)).start()
    c = client(g)
    ack = c.request("chat.send", {"sessionKey": "agent:main:main", "message": "stop me", "idempotencyKey": "ab-1"})
    assert ack["status"] == "started"
    wait_for(lambda: slow_model.requests, 15, what="the model request")
    out = c.request("chat.abort", {"sessionKey": "agent:main:main"})
    assert out == {"ok": True, "aborted": True, "runIds": ["ab-1"]}
    ev = c.next_event("chat", timeout=10)
    while ev["payload"]["state"] == "delta":
        ev = c.next_event("chat", timeout=10)
    assert ev["payload"]["state"] == "aborted"
    waited = c.request("agent.wait", {"runId": "ab-1", "timeoutMs": 2000})
    assert waited["status"] == "error" and waited["error"] == "aborted"
    c.close()


def test_no_model_and_no_credentials_names_the_fix(gateway_factory) -> None:
    cfg = config()
    del cfg["agents"]
    g = gateway_factory({}, config=cfg, extra_env={"ANTHROPIC_API_KEY": ""}).start()
    c = client(g)
    final = c.request("agent", {"message": "hi", "idempotencyKey": "nomodel"}, expect_final=True)
    assert final["status"] == "error"
    assert "models auth paste-token --provider anthropic" in final["summary"]
    assert "agents.defaults.model" in final["summary"]
    with pytest.raises(GatewayError) as info:
        c.request("agent", {"message": "", "idempotencyKey": "empty"})
    assert info.value.error["code"] == "INVALID_REQUEST" and "message" in info.value.error["message"]
    c.close()


def test_hanging_provider_ends_the_run_with_an_error_naming_it(gateway_factory, slow_model: SlowModel) -> None:
    g = gateway_factory({}, config=slow_config(slow_model)).start()
    c = client(g)
    rid = raw_request(c, "agent", {"message": "hang", "idempotencyKey": "hang-1", "timeout": 1})
    res, events = frames_until_final(c, rid)
    final = res[-1]["payload"]
    assert final["status"] == "error"
    assert f"slow (http://127.0.0.1:{slow_model.port}/v1) did not answer within 1s" in final["summary"]
    chat = [e["payload"] for e in events if e["event"] == "chat"]
    assert chat[-1]["state"] == "error" and chat[-1]["errorKind"] == "timeout"
    lifecycle = [e["payload"]["data"]["phase"] for e in events
                 if e["event"] == "agent" and e["payload"]["stream"] == "lifecycle"]
    assert lifecycle == ["start", "error"]
    c.close()


def test_bus_contracts_agent_turn_and_agent_complete(gateway_factory) -> None:
    """The contracts other workers and the HTTP API use, reached here through an admin WebSocket client."""
    g = gateway_factory({}, config=config()).start()
    c = client(g)
    turn = c.request("agent.turn", {
        "agentId": "main", "sessionKey": "agent:main:telegram:direct:42", "message": "ping from chat",
        "timeoutSeconds": 30, "source": {"kind": "channel", "channel": "telegram", "accountId": "default",
                                         "from": "42", "chatType": "direct", "messageId": "m1"}})
    assert turn == {"status": "ok", "summary": "ping from chat", "model": "echo/echo",
                    "usage": {"inputTokens": 3, "outputTokens": 3},
                    "route": {"channel": "telegram", "accountId": "default", "to": "42"}}
    hb = c.request("agent.turn", {"agentId": "main", "sessionKey": "agent:main:main", "message": "",
                                  "timeoutSeconds": 30, "source": {"kind": "heartbeat"},
                                  "systemEvents": [{"text": "disk full", "ts": 1}]})
    assert hb["status"] == "ok" and hb["summary"] == "System: disk full"
    assert hb["route"]["to"] == "42"  # the agent's last conversation, for heartbeat target "last"
    done = c.request("agent.complete", {"model": "openclaw", "agentId": "main", "sessionKey": None, "stream": False,
                                        "messages": [{"role": "system", "content": "be nice"},
                                                     {"role": "user", "content": "two words"}]})
    assert done == {"text": "two words", "model": "echo/echo", "usage": {"inputTokens": 4, "outputTokens": 2},
                    "finishReason": "stop"}
    with pytest.raises(GatewayError) as info:
        c.request("agent.complete", {"model": "nope/x", "messages": [{"role": "user", "content": "x"}],
                                     "stream": False})
    assert info.value.error["code"] == "INVALID_REQUEST" and "models.providers.nope" in info.value.error["message"]
    with pytest.raises(GatewayError) as info:
        c.request("agent.complete", {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}],
                                     "stream": False})
    assert info.value.error["code"] == "UNAVAILABLE"
    assert "models auth paste-token --provider openai" in info.value.error["message"]
    c.close()


CLI_TOKEN = "agent-cli-token-0123456789"


def test_the_real_openclaw_cli_runs_an_agent_turn(gateway_factory) -> None:
    """Upstream's `openclaw agent` and `gateway call agent --expect-final` read our two-stage answer."""
    g = gateway_factory({}, config={"gateway": {"mode": "local", "auth": {"mode": "token", "token": CLI_TOKEN}},
                                    "agents": {"defaults": {"model": "echo/echo"}}}).start()
    res = run_openclaw(g, "agent", "--agent", "main", "--message", "bonjour le monde", token=CLI_TOKEN)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "bonjour le monde" in res.stdout
    res = run_openclaw(g, "gateway", "call", "agent", "--expect-final", "--json", "--params",
                       json.dumps({"message": "second", "idempotencyKey": "cli-2"}), token=CLI_TOKEN)
    assert res.returncode == 0, res.stdout + res.stderr
    final = json.loads(res.stdout)
    assert final["runId"] == "cli-2" and final["status"] == "ok"
    assert final["result"]["payloads"] == [{"text": "second"}]
