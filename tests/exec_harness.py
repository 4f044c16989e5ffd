"""A scripted OpenAI-compatible model for tool-loop tests, and an agent run driven from a WebSocket client.

The model follows the chat-completions streaming format: when the conversation does not end with a tool
result it answers with one `exec` tool call (the arguments the test set), else with the text
`RESULT: <the tool result>`, so the final answer shows what the tool returned.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from agent_servers import ThreadedServer
from aiohttp import web

from openclaw_sup.gateway.client import GatewayClient


class ScriptedModel:
    def __init__(self) -> None:
        self.exec_args: dict[str, Any] = {"command": "echo hi"}
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadedServer({"/v1/chat/completions": self.chat})
        self.port = self.server.port

    def config(self) -> dict[str, Any]:
        return {"models": {"providers": {"scripted": {"baseUrl": f"http://127.0.0.1:{self.port}/v1",
                                                      "api": "openai-completions", "apiKey": "sk-scripted",
                                                      "models": [{"id": "m1", "name": "m1"}]}}},
                "agents": {"defaults": {"model": "scripted/m1"}}}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        last = body["messages"][-1]
        base = {"id": "c", "object": "chat.completion.chunk", "created": int(time.time()), "model": "m1"}
        if last.get("role") == "tool":
            delta: dict[str, Any] = {"role": "assistant", "content": f"RESULT: {last.get('content')}"}
            finish = "stop"
        else:
            call = {"index": 0, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                    "function": {"name": "exec", "arguments": json.dumps(self.exec_args)}}
            delta = {"role": "assistant", "tool_calls": [call]}
            finish = "tool_calls"
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in ({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                      {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}):
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    def close(self) -> None:
        self.server.close()


class AgentRun:
    """One `agent` request on its own connection, read on a thread: its two answers and every event."""

    def __init__(self, port: int, token: str, message: str, key: str | None = None, timeout: float = 300) -> None:
        self.client = GatewayClient(f"ws://127.0.0.1:{port}", token=token, timeout=20,
                                    scopes=["operator.admin", "operator.read", "operator.write"])
        self.client.connect()
        self.key = key or f"run-{uuid.uuid4().hex[:8]}"
        self.events: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self.error: Exception | None = None
        self.rid = f"t:{uuid.uuid4()}"
        self.client.send({"type": "req", "id": self.rid, "method": "agent",
                          "params": {"message": message, "idempotencyKey": self.key, "sessionKey": "agent:main:main",
                                     "timeout": timeout}})
        self.thread = threading.Thread(target=self._read, args=(timeout + 30,), daemon=True)
        self.thread.start()

    def _read(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            while True:
                msg = json.loads(self.client.ws.recv(max(0.05, deadline - time.monotonic())))
                if msg.get("type") == "event":
                    self.events.append(msg)
                elif msg.get("type") == "res" and msg.get("id") == self.rid:
                    payload = msg.get("payload") or {}
                    if msg.get("ok") and payload.get("status") == "accepted":
                        continue
                    self.final = msg
                    return
        except Exception as exc:  # the test reads it
            self.error = exc

    def wait(self, timeout: float = 120) -> dict[str, Any]:
        self.thread.join(timeout)
        if self.final is None:
            raise AssertionError(f"no final answer for {self.key}: {self.error!r}; events: {self.items()[-5:]}")
        self.client.close()
        return self.final

    def items(self) -> list[dict[str, Any]]:
        """The tool `item` events of this run, in order."""
        return [e["payload"]["data"] for e in list(self.events) if e.get("event") == "agent"
                and e["payload"].get("runId") == self.key and e["payload"].get("stream") == "item"]

    def text(self) -> str:
        final = self.wait()
        payloads = (((final.get("payload") or {}).get("result") or {}).get("payloads")) or []
        return "".join(p.get("text", "") for p in payloads) or str((final.get("payload") or {}).get("summary"))


class ScriptedAnthropic:
    """The same script on the Anthropic Messages stream: a `tool_use` block, then text quoting the `tool_result`."""

    def __init__(self) -> None:
        self.exec_args: dict[str, Any] = {"command": "echo hi"}
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadedServer({"/v1/messages": self.messages})
        self.port = self.server.port

    def config(self) -> dict[str, Any]:
        return {"models": {"providers": {"claude": {"baseUrl": f"http://127.0.0.1:{self.port}",
                                                    "api": "anthropic-messages", "apiKey": "sk-ant-test",
                                                    "models": [{"id": "m1", "name": "m1"}]}}},
                "agents": {"defaults": {"model": "claude/m1"}}}

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        last = body["messages"][-1]
        results = [b for b in last.get("content") or [] if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            blocks = [("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}),
                      ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                          "type": "text_delta", "text": f"RESULT: {results[-1]['content']}"}}),
                      ("content_block_stop", {"type": "content_block_stop", "index": 0})]
            stop = "end_turn"
        else:
            blocks = [("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                          "type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:8]}", "name": "exec", "input": {}}}),
                      ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                          "type": "input_json_delta", "partial_json": json.dumps(self.exec_args)}}),
                      ("content_block_stop", {"type": "content_block_stop", "index": 0})]
            stop = "tool_use"
        events = [("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 5,
                                                                                     "output_tokens": 1}}}),
                  *blocks,
                  ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop},
                                     "usage": {"output_tokens": 4}}),
                  ("message_stop", {"type": "message_stop"})]
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for name, data in events:
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        return resp

    def close(self) -> None:
        self.server.close()
