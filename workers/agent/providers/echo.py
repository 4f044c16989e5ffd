"""The offline `echo` provider (`echo/echo`): replies with the last user message, one streamed chunk per word."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from openclaw_sup.workers.agent.providers import ChatRequest, Completion, OnDelta, Target, count_words, text_of

_WORDS = re.compile(r"\S+\s*")


def last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")


async def complete(target: Target, request: ChatRequest, on_delta: OnDelta) -> Completion:
    text = last_user_text(request.messages)
    lead = text[: len(text) - len(text.lstrip())]
    chunks = _WORDS.findall(text)
    if lead and chunks:
        chunks[0] = lead + chunks[0]
    elif lead:
        chunks = [lead]
    for chunk in chunks:
        on_delta(chunk)
        await asyncio.sleep(0)
    words_in = count_words(" ".join(map(text_of, request.messages)))
    return Completion(text, words_in, count_words(text))
