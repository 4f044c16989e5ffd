"""Model providers: one coroutine per wire API that turns a chat request into a streamed completion.

`call(target, request, on_delta)` picks the implementation from `target.api` (`echo`, `openai-completions`,
`anthropic-messages`), enforces the request's timeout and answers a `Completion`, or raises `ProviderError`
whose message names the provider, its URL and what to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openclaw_sup.config.models import Target

OnDelta = Callable[[str], None]

__all__ = ["APIS", "ChatRequest", "Completion", "OnDelta", "ProviderError", "Target", "call", "count_words"]

APIS = ("echo", "openai-completions", "anthropic-messages")


class ProviderError(Exception):
    """A model call that failed; `code` is the RequestError code, `kind` upstream's chat `errorKind`."""

    def __init__(self, message: str, *, code: str = "UNAVAILABLE", kind: str = "unknown") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int | None = None
    temperature: float | None = None
    timeout_s: float = 600.0


@dataclass
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"

    def usage(self) -> dict[str, int]:
        return {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens}


def count_words(text: str) -> int:
    return len(text.split())


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
        return await asyncio.wait_for(impl(target, request, sink), request.timeout_s)
    except TimeoutError:
        raise ProviderError(f"model provider {target.where()} did not answer within {request.timeout_s:g}s "
                            f"(model {target.ref})", kind="timeout") from None
