"""A test `agent` kind whose `agent.complete` streams slowly: the stand-in for a slow model provider, so a test can
disconnect an HTTP client mid-stream and see the gateway cancel the run (the real agent's echo provider answers
too fast for that). Each word of the last user message (with the whitespace after it) is one `{delta}`
partial, `delayS` apart (option, default 0.2 s). It writes `started` / `finished` lines to option `logFile`, so a
test sees whether a run went on; a run cancelled by its requester logs `slow agent: run cancelled after N words`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from openclaw_sup.workers.registry import register
from openclaw_sup.workers.runtime import WorkerContext


@register("agent")
async def slow_agent(ctx: WorkerContext) -> None:
    delay = float(ctx.options.get("delayS", 0.2))
    log = ctx.options.get("logFile")

    def note(line: str) -> None:
        if log:
            with open(log, "a") as f:
                f.write(line + "\n")

    async def complete(params: dict[str, Any], partial: Any) -> dict[str, Any]:
        users = [m["content"] for m in params.get("messages", []) if m.get("role") == "user"]
        text = users[-1] if users else ""
        note("started")
        sent = 0
        try:
            for chunk in re.findall(r"\S+\s*", text):
                await asyncio.sleep(delay)
                if params.get("stream"):
                    partial({"delta": chunk})
                sent += 1
        except asyncio.CancelledError:
            ctx.log.info("slow agent: run cancelled after %d words", sent)
            raise
        note("finished")
        return {"text": text, "model": "slow/slow", "usage": {"inputTokens": 1, "outputTokens": 1},
                "finishReason": "stop"}

    ctx.handle_stream("agent.complete", complete)
    ctx.ready()
    await ctx.stopping.wait()
