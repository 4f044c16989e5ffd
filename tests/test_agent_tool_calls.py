"""Tool calls on the wire, against loopback servers following each provider's documented streaming format:
OpenAI chat completions (`tools`, streamed `delta.tool_calls` fragments, `finish_reason: tool_calls`, results as
`role: tool`) and Anthropic Messages (`tools` with `input_schema`, `tool_use` blocks with `input_json_delta`,
`stop_reason: tool_use`, results as `tool_result` blocks)."""

from __future__ import annotations

from typing import Any

from agent_servers import run_in_worker_loop
from aiohttp import web
from test_agent_providers import openai_chunks, serve, sse, target

from openclaw_sup.workers.agent.exec_tool import SPEC
from openclaw_sup.workers.agent.providers import ChatRequest, call

HISTORY = [
    {"role": "system", "content": "use tools"},
    {"role": "user", "content": "what kernel?"},
    {"role": "assistant", "content": "", "toolCalls": [{"id": "call_1", "name": "exec",
                                                        "arguments": {"command": "uname -s"}}]},
    {"role": "tool", "toolCallId": "call_1", "name": "exec", "content": "Linux\n", "isError": False},
    {"role": "user", "content": "and the machine?"},
]


async def openai_call(chat: Any) -> Any:
    """One tool-enabled chat call against `chat` serving the OpenAI completions path."""
    runner, port = await serve({"/v1/chat/completions": chat})
    try:
        return await call(target(port), ChatRequest(HISTORY, timeout_s=10, tools=[SPEC]))
    finally:
        await runner.cleanup()


def test_openai_tool_calls_streamed_in_fragments() -> None:
    bodies: list[dict[str, Any]] = []
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        return None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    async def chat(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        return await sse(request, [
            chunk({"role": "assistant", "content": None}),
            chunk({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                                   "function": {"name": "exec", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"command": "un'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ame -m", "host": "node"}'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "call_10", "type": "function",
                                   "function": {"name": "exec", "arguments": "not json"}}]}),
            chunk({}, "tool_calls"), (None, "[DONE]")])

    result = run_in_worker_loop(openai_call(chat))
    assert result.finish_reason == "tool_calls" and result.text == ""
    first, second = result.tool_calls
    assert (first.id, first.name, first.arguments) == ("call_9", "exec", {"command": "uname -m", "host": "node"})
    assert (second.id, second.arguments, second.raw_arguments) == ("call_10", {}, "not json")
    body = bodies[0]
    assert body["tools"] == [{"type": "function", "function": {"name": "exec", "description": SPEC["description"],
                                                               "parameters": SPEC["parameters"]}}]
    assert body["tool_choice"] == "auto"
    assert body["messages"][2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "exec", "arguments": '{"command":"uname -s"}'}}]}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "Linux\n"}


def test_openai_plain_answer_has_no_tool_calls() -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        return await sse(request, openai_chunks(["done"]))

    result = run_in_worker_loop(openai_call(chat))
    assert (result.text, result.finish_reason, result.tool_calls) == ("done", "stop", [])


def test_anthropic_tool_use_blocks() -> None:
    bodies: list[dict[str, Any]] = []

    async def messages(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        return await sse(request, [
            ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 12,
                                                                                          "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "Let me check."}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                "type": "tool_use", "id": "toolu_1", "name": "exec", "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                     "delta": {"type": "input_json_delta", "partial_json": '{"command":'}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                     "delta": {"type": "input_json_delta", "partial_json": ' "hostname"}'}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 1}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                               "usage": {"output_tokens": 9}}),
            ("message_stop", {"type": "message_stop"})])

    async def go() -> Any:
        runner, port = await serve({"/v1/messages": messages})
        try:
            return await call(target(port, api="anthropic-messages"), ChatRequest(HISTORY, timeout_s=10,
                                                                                   tools=[SPEC]))
        finally:
            await runner.cleanup()

    result = run_in_worker_loop(go())
    assert (result.text, result.finish_reason, result.input_tokens, result.output_tokens) == \
        ("Let me check.", "tool_calls", 12, 9)
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("toolu_1", "exec",
                                                                          {"command": "hostname"})]
    body = bodies[0]
    assert body["tools"] == [{"name": "exec", "description": SPEC["description"],
                              "input_schema": SPEC["parameters"]}]
    assert body["system"] == "use tools"
    assert body["messages"] == [
        {"role": "user", "content": "what kernel?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "exec",
                                           "input": {"command": "uname -s"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "Linux\n",
                                      "is_error": False},
                                     {"type": "text", "text": "and the machine?"}]},
    ]
