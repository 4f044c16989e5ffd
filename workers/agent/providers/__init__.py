"""Model providers: one coroutine per wire API that turns a chat request into a streamed completion.

`call(target, request, on_delta)` picks the implementation from `target.api` (`echo`, `openai-completions`,
`anthropic-messages`), enforces the request's timeout and answers a `Completion`, or raises `ProviderError`
whose message names the provider, its URL and what to do.

Messages are provider-neutral: `{role: system|user, content}`, `{role: assistant, content, toolCalls?:
[{id, name, arguments}]}` and `{role: tool, toolCallId, name, content, isError}`; each provider maps them to
its wire format (OpenAI `tool_calls` / `role: tool`, Anthropic `tool_use` / `tool_result` blocks). Tools offered
to the model are `{name, description, parameters}` (a JSON schema); a completion that asks for tools carries
them in `tool_calls` with `finish_reason == "tool_calls"`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import field
from typing import Any

from openclaw_sup.config.models import Target
from openclaw_sup.config.record import record

OnDelta = Callable[[str], None]

__all__ = ["APIS", "ChatRequest", "Completion", "OnDelta", "ProviderError", "Target", "ToolCall", "call",
           "count_words", "parse_arguments", "text_of"]

APIS = ("echo", "openai-completions", "anthropic-messages")


class ProviderError(Exception):
    """A model call that failed; `code` is the RequestError code, `kind` upstream's chat `errorKind`."""

    def __init__(self, message: str, *, code: str = "UNAVAILABLE", kind: str = "unknown") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


@record
class ChatRequest:
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    timeout_s: float = 600.0
    tools: list[dict[str, Any]] | None = None


@record(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""
    """The arguments as the model sent them, when they were not a JSON object (the tool then refuses)."""


@record
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] = field(default_factory=list)

    def usage(self) -> dict[str, int]:
        return {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens}


def count_words(text: str) -> int:
    return len(text.split())


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def parse_arguments(call_id: str, name: str, raw: Any) -> ToolCall:
    """A tool call from the arguments a model sent (a JSON text or an object); bad JSON is kept raw."""
    if isinstance(raw, dict):
        return ToolCall(call_id, name, raw)
    text = raw if isinstance(raw, str) else ""
    if not text.strip():
        return ToolCall(call_id, name, {})
    try:
        import orjson

        value = orjson.loads(text)
    except ValueError:
        return ToolCall(call_id, name, {}, text)
    return ToolCall(call_id, name, value) if isinstance(value, dict) else ToolCall(call_id, name, {}, text)


async def call(target: Target, request: ChatRequest, on_delta: OnDelta | None = None) -> Completion:
    """One completion from `target`, streamed chunk by chunk into `on_delta`, bounded by the request timeout."""
    sink: OnDelta = on_delta or (lambda _text: None)
    impl: Any
    if target.api == "echo":
        from openclaw_sup.workers.agent.providers.echo import complete as impl
    elif target.api == "openai-completions":
        from openclaw_sup.workers.agent.providers.openai import complete as impl
    elif target.api == "anthropic-messages":
        from openclaw_sup.workers.agent.providers.anthropic import complete as impl
    else:
        raise ProviderError(f"model provider {target.provider}: api {target.api!r} is not supported (set "
                            f"models.providers.{target.provider}.api to one of {', '.join(APIS[1:])})",
                            code="INVALID_REQUEST")
    try:
        async with asyncio.timeout(request.timeout_s):  # in this task: wait_for would wrap the call in one more
            return await impl(target, request, sink)
    except TimeoutError:
        raise ProviderError(f"model provider {target.where()} did not answer within {request.timeout_s:g}s "
                            f"(model {target.ref})", kind="timeout") from None
