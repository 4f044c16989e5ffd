"""Anthropic Messages (`POST {baseUrl}/v1/messages`, streamed as SSE: message_start, content_block_delta,
message_delta, message_stop, error)."""

from __future__ import annotations

from typing import Any

import orjson

from openclaw_sup.workers.agent.providers import (
    ChatRequest,
    Completion,
    OnDelta,
    ProviderError,
    Target,
    parse_arguments,
    text_of,
)
from openclaw_sup.workers.agent.providers.http import drain, json_of, pooled_session, post_stream, sse_events

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
OAUTH_PREFIX = "sk-ant-oat"


def _blocks(m: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A neutral message as (role, content blocks): tool calls are `tool_use` blocks of the assistant, tool
    results `tool_result` blocks of the user turn that follows."""
    if m.get("role") == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": m.get("toolCallId"), "content": text_of(m),
                         "is_error": bool(m.get("isError"))}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text_of(m)}] if text_of(m) else []
    for c in m.get("toolCalls") or ():
        blocks.append({"type": "tool_use", "id": c["id"], "name": c["name"], "input": c.get("arguments") or {}})
    return str(m.get("role")), blocks


def request_body(target: Target, request: ChatRequest) -> dict[str, Any]:
    """System messages go to `system`; consecutive turns of one role merge (the API wants them alternating)."""
    system = "\n\n".join(text_of(m) for m in request.messages if m.get("role") == "system")
    turns: list[dict[str, Any]] = []
    for m in request.messages:
        if m.get("role") not in ("user", "assistant", "tool"):
            continue
        role, blocks = _blocks(m)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # plain text turns keep the simple string form
        if all(b["type"] == "text" for b in turn["content"]):
            turn["content"] = "\n\n".join(b["text"] for b in turn["content"])
    body: dict[str, Any] = {"model": target.model, "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
                            "messages": turns, "stream": True}
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                         for t in request.tools]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return body


def auth_headers(target: Target) -> dict[str, str]:
    if not target.api_key:
        return {}
    if target.api_key.startswith(OAUTH_PREFIX):
        return {"authorization": f"Bearer {target.api_key}", "anthropic-beta": "oauth-2025-04-20"}
    return {"x-api-key": target.api_key}


def messages_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


async def complete(target: Target, request: ChatRequest, on_delta: OnDelta) -> Completion:
    headers = {"anthropic-version": API_VERSION, **target.headers, **auth_headers(target)}
    parts: list[str] = []
    uses: dict[int, dict[str, str]] = {}  # block index -> id, name, partial JSON input
    finish = "stop"
    tokens_in = tokens_out = 0
    session = pooled_session()
    resp = await post_stream(session, target, messages_url(target.base_url), headers,
                             request_body(target, request))
    async with resp:
        async for event, data in sse_events(resp):
            msg = json_of(target, data)
            kind = msg.get("type", event)
            if kind == "message_start":
                usage = (msg.get("message") or {}).get("usage") or {}
                tokens_in = int(usage.get("input_tokens") or 0)
                tokens_out = int(usage.get("output_tokens") or 0)
            elif kind == "content_block_start":
                block = msg.get("content_block") or {}
                if block.get("type") == "tool_use":
                    start = block.get("input")
                    uses[int(msg.get("index", len(uses)))] = {
                        "id": str(block.get("id") or ""), "name": str(block.get("name") or ""),
                        "json": "" if not start else orjson.dumps(start).decode()}
            elif kind == "content_block_delta":
                delta = msg.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    parts.append(delta["text"])
                    on_delta(delta["text"])
                elif delta.get("type") == "input_json_delta" and int(msg.get("index", -1)) in uses:
                    use = uses[int(msg["index"])]
                    use["json"] = ("" if use["json"] == "{}" else use["json"]) + str(delta.get("partial_json") or "")
            elif kind == "message_delta":
                stop = (msg.get("delta") or {}).get("stop_reason")
                if stop == "max_tokens":
                    finish = "length"
                elif stop == "tool_use":
                    finish = "tool_calls"
                tokens_out = int((msg.get("usage") or {}).get("output_tokens") or tokens_out)
            elif kind == "message_stop":
                await drain(resp)
                break
            elif kind == "error":
                err = msg.get("error") or {}
                raise ProviderError(f"model provider {target.where()} failed mid-stream: "
                                    f"{err.get('type', 'error')}: {err.get('message', '')}",
                                    kind="rate_limit" if err.get("type") == "rate_limit_error" else "unknown")
    calls = [parse_arguments(u["id"], u["name"], u["json"]) for _i, u in sorted(uses.items()) if u["name"]]
    return Completion("".join(parts), tokens_in, tokens_out, "tool_calls" if calls else finish, calls)
