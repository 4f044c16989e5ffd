"""Test kinds for the scheduler's bus contracts (workers/scheduler/__init__.py): an `agent` that answers
`agent.turn`, and a `fake_channel` that answers `channel.describe` and `channel.send`.

Both append every request they get to a JSON-lines file (option `logFile`), so a test can see what the
scheduler asked. The agent's reply is the content of `replyFile` when it exists, else option `reply`, else
the message it was sent; `delayS` makes a turn last; `status`/`error`/`route` shape the answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from openclaw_sup.workers.registry import register
from openclaw_sup.workers.runtime import WorkerContext


def _record(ctx: WorkerContext, method: str, params: dict[str, Any]) -> None:
    log = ctx.options.get("logFile")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"worker": ctx.name, "method": method, "params": params, "ts": time.time()}) + "\n")


@register("agent")
async def agent(ctx: WorkerContext) -> None:
    opts = ctx.options

    async def turn(params: dict[str, Any]) -> dict[str, Any]:
        _record(ctx, "agent.turn", params)
        await asyncio.sleep(float(opts.get("delayS", 0)))
        reply_file = Path(opts["replyFile"]) if opts.get("replyFile") else None
        if reply_file is not None and reply_file.exists():
            reply = reply_file.read_text()
        else:
            reply = opts.get("reply", params.get("message"))
        answer: dict[str, Any] = {"status": opts.get("status", "ok"), "summary": reply, "model": "fake/model"}
        if opts.get("error"):
            answer["error"] = opts["error"]
        if opts.get("route"):
            answer["route"] = opts["route"]
        return answer

    ctx.handle("agent.turn", turn)
    ctx.ready()
    await ctx.stopping.wait()


@register("fake_channel")
async def fake_channel(ctx: WorkerContext) -> None:
    opts = ctx.options

    async def describe(params: dict[str, Any]) -> dict[str, Any]:
        _record(ctx, "channel.describe", params)
        out: dict[str, Any] = {"channel": opts.get("channel"), "accountId": opts.get("accountId")}
        if isinstance(opts.get("heartbeatVisibility"), dict):
            out["heartbeatVisibility"] = opts["heartbeatVisibility"]
        return out

    async def send(params: dict[str, Any]) -> dict[str, Any]:
        _record(ctx, "channel.send", params)
        return {"ok": True, "messageId": f"m-{time.time_ns()}"}

    ctx.handle("channel.describe", describe)
    ctx.handle("channel.send", send)
    ctx.ready()
    await ctx.stopping.wait()
