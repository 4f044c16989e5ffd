"""Anthropic Messages (`POST {baseUrl}/v1/messages`, streamed as SSE: message_start, content_block_delta,
message_delta, message_stop, error)."""

from __future__ import annotations

from typing import Any

from openclaw_sup.workers.agent.providers import ChatRequest, Completion, OnDelta, ProviderError, Target
from openclaw_sup.workers.agent.providers.http import drain, json_of, pooled_session, post_stream, sse_events

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
OAUTH_PREFIX = "sk-ant-oat"


def request_body(target: Target, request: ChatRequest) -> dict[str, Any]:
    """System messages go to `system`; consecutive turns of one role merge (the API wants them alternating)."""
    system = "\n\n".join(m.get("content") or "" for m in request.messages if m.get("role") == "system")
    turns: list[dict[str, str]] = []
    for m in request.messages:
        role = m.get("role")
        if role not in ("user", "assistant"):
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + (m.get("content") or "")
        else:
            turns.append({"role": str(role), "content": m.get("content") or ""})
    body: dict[str, Any] = {"model": target.model, "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
                            "messages": turns, "stream": True}
    if system:
        body["system"] = system
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
            elif kind == "content_block_delta":
                delta = msg.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    parts.append(delta["text"])
                    on_delta(delta["text"])
            elif kind == "message_delta":
                if (msg.get("delta") or {}).get("stop_reason") == "max_tokens":
                    finish = "length"
                tokens_out = int((msg.get("usage") or {}).get("output_tokens") or tokens_out)
            elif kind == "message_stop":
                await drain(resp)
                break
            elif kind == "error":
                err = msg.get("error") or {}
                raise ProviderError(f"model provider {target.where()} failed mid-stream: "
                                    f"{err.get('type', 'error')}: {err.get('message', '')}",
                                    kind="rate_limit" if err.get("type") == "rate_limit_error" else "unknown")
    return Completion("".join(parts), tokens_in, tokens_out, finish)
