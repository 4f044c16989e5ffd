"""OpenAI-compatible chat completions (`POST {baseUrl}/chat/completions`, streamed as SSE): OpenAI, Ollama,
vLLM, llama.cpp's server and anything else that speaks that wire format."""

from __future__ import annotations

from typing import Any

from openclaw_sup.workers.agent.providers import ChatRequest, Completion, OnDelta, ProviderError, Target, count_words
from openclaw_sup.workers.agent.providers.http import drain, json_of, pooled_session, post_stream, sse_events


def request_body(target: Target, request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [{"role": m["role"], "content": m.get("content") or ""} for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
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
                if choice.get("finish_reason"):
                    finish = "length" if choice["finish_reason"] == "length" else "stop"
    text = "".join(parts)
    words_in = sum(count_words(m.get("content") or "") for m in request.messages)
    return Completion(text, int(usage.get("prompt_tokens") or words_in),
                      int(usage.get("completion_tokens") or count_words(text)), finish)
