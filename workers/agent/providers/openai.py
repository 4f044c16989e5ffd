"""OpenAI-compatible chat completions (`POST {baseUrl}/chat/completions`, streamed as SSE): OpenAI, Ollama,
vLLM, llama.cpp's server and anything else that speaks that wire format."""

from __future__ import annotations

from typing import Any

import orjson

from openclaw_sup.workers.agent.providers import (
    ChatRequest,
    Completion,
    OnDelta,
    ProviderError,
    Target,
    count_words,
    parse_arguments,
    text_of,
)
from openclaw_sup.workers.agent.providers.http import drain, json_of, pooled_session, post_stream, sse_events


def wire_message(m: dict[str, Any]) -> dict[str, Any]:
    """A neutral message in the chat-completions shape (`tool_calls` on the assistant, `role: tool` results)."""
    if m.get("role") == "tool":
        return {"role": "tool", "tool_call_id": m.get("toolCallId"), "content": text_of(m)}
    if m.get("role") == "assistant" and m.get("toolCalls"):
        return {"role": "assistant", "content": text_of(m) or None, "tool_calls": [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": orjson.dumps(c.get("arguments") or {}).decode()}}
            for c in m["toolCalls"]]}
    return {"role": m["role"], "content": text_of(m)}


def request_body(target: Target, request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [wire_message(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                           "parameters": t["parameters"]}} for t in request.tools]
        body["tool_choice"] = "auto"
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return body


async def complete(target: Target, request: ChatRequest, on_delta: OnDelta) -> Completion:
    headers = dict(target.headers)
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    url = target.base_url.rstrip("/") + "/chat/completions"
    parts: list[str] = []
    calls: dict[int, dict[str, str]] = {}  # index -> id, name, arguments (streamed in fragments)
    finish = "stop"
    usage: dict[str, Any] = {}
    session = pooled_session()
    resp = await post_stream(session, target, url, headers, request_body(target, request))
    async with resp:
        async for _event, data in sse_events(resp):
            if data.strip() == "[DONE]":
                await drain(resp)
                break
            chunk = json_of(target, data)
            if isinstance(chunk.get("error"), dict):
                raise ProviderError(f"model provider {target.where()} failed mid-stream: "
                                    f"{chunk['error'].get('message', chunk['error'])}")
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                delta = (choice or {}).get("delta") or {}
                text = delta.get("content")
                if isinstance(text, str) and text:
                    parts.append(text)
                    on_delta(text)
                for i, frag in enumerate(delta.get("tool_calls") or ()):
                    slot = calls.setdefault(int(frag.get("index", i)), {"id": "", "name": "", "arguments": ""})
                    fn = frag.get("function") or {}
                    slot["id"] = frag.get("id") or slot["id"]
                    slot["name"] = fn.get("name") or slot["name"]
                    args = fn.get("arguments")
                    slot["arguments"] += args if isinstance(args, str) else orjson.dumps(args).decode() if args else ""
                if choice.get("finish_reason"):
                    finish = {"length": "length", "tool_calls": "tool_calls"}.get(choice["finish_reason"], "stop")
    text = "".join(parts)
    tool_calls = [parse_arguments(c["id"] or f"call_{i}", c["name"], c["arguments"])
                  for i, c in sorted(calls.items()) if c["name"]]
    if tool_calls:
        finish = "tool_calls"
    words_in = sum(count_words(text_of(m)) for m in request.messages)
    return Completion(text, int(usage.get("prompt_tokens") or words_in),
                      int(usage.get("completion_tokens") or count_words(text)), finish, tool_calls)
