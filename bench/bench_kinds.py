"""Worker kinds for the recovery bench, loaded by the gateway's fork server through `kinds: ["bench_kinds"]`.

`tiny` mirrors bench/worker.py (the peers' worker) so the managers supervise equivalent processes: it stamps
the time as the kind starts and reports it over TCP to the bench's listener. `flood` pushes events onto the
bus as fast as it will take them, to measure what the supervisor side can receive.
"""

from __future__ import annotations

import asyncio
import os
import time

from openclaw_sup.workers.registry import register
from openclaw_sup.workers.runtime import WorkerContext


async def _report(port: int, line: str) -> None:
    """One line to the bench listener on a fresh connection: the listener stamps its arrival."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line.encode())
    await writer.drain()
    writer.close()


@register("tiny")
async def tiny(ctx: WorkerContext) -> None:
    """Report `name pid t0 ppid`, say ready, idle until stopped: the smallest worker that can be timed."""
    t0 = time.monotonic()
    await _report(int(ctx.options["port"]), f"{ctx.name} {os.getpid()} {t0} {os.getppid()}\n")
    ctx.ready()
    await ctx.stopping.wait()


@register("flood")
async def flood(ctx: WorkerContext) -> None:
    """Send `count` bus events back to back; report start, end, sent and dropped to the bench listener.

    `ctx.send` never blocks: False means the worker's bounded bus queue was full and the event was dropped.
    """
    port = int(ctx.options["port"])
    count = int(ctx.options.get("count", 500_000))
    ctx.ready()
    await asyncio.sleep(float(ctx.options.get("delayS", 1.0)))
    pid, ppid = os.getpid(), os.getppid()
    t_start = time.monotonic()
    await _report(port, f"{ctx.name} {pid} {t_start} {ppid} start\n")
    t_start = time.monotonic()
    sent = dropped = 0
    for i in range(count):
        if ctx.send({"kind": "event", "event": "flood", "payload": i}):
            sent += 1
        else:
            dropped += 1
        if i % 1000 == 999:
            await asyncio.sleep(0)
    t_end = time.monotonic()
    await _report(port, f"{ctx.name} {pid} {t_end} {ppid} end {t_start} {sent} {dropped}\n")
    await ctx.stopping.wait()
