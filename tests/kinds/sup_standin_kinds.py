"""Stand-ins for the kinds the config derives (scheduler, agent, browser, channel.*) until their real
modules exist: each idles and reports the digest of the options it was started with."""

from __future__ import annotations

import hashlib
import json

from openclaw_sup.workers.registry import register
from openclaw_sup.workers.runtime import WorkerContext


async def standin(ctx: WorkerContext) -> None:
    digest = hashlib.sha256(json.dumps(ctx.options, sort_keys=True).encode()).hexdigest()[:12]

    async def describe(params: dict) -> dict:
        return {"name": ctx.name, "kind": ctx.kind, "optionsDigest": digest}

    ctx.handle("describe", describe)
    ctx.ready()
    ctx.log.info("%s started with options %s", ctx.name, digest)
    await ctx.stopping.wait()


for _kind in ("scheduler", "agent", "browser", "channel.irc", "channel.telegram"):
    register(_kind)(standin)
