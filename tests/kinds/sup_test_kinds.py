"""Worker kinds the tests register through the supervisor settings (`kinds: ["sup_test_kinds"]`).

Each misbehaves in one specific, file-controlled way, so a test can turn a fault on and off while the
gateway runs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

from openclaw_sup.workers.forkserver import set_parent_death_signal
from openclaw_sup.workers.registry import register
from openclaw_sup.workers.runtime import WorkerContext


async def _idle(ctx: WorkerContext) -> None:
    await ctx.stopping.wait()


@register("sleeper")
async def sleeper(ctx: WorkerContext) -> None:
    """Says ready, answers `echo` requests, logs what it is told to, idles until stopped."""

    async def echo(params: dict) -> dict:
        return {"echo": params, "pid": os.getpid()}

    ctx.handle("echo", echo)
    ctx.ready()
    ctx.log.info("sleeper %s up", ctx.name)
    await _idle(ctx)
    ctx.log.info("sleeper %s stopping cleanly", ctx.name)


@register("crasher")
async def crasher(ctx: WorkerContext) -> None:
    """Crashes right after start while its fault file exists; behaves like a sleeper once it is gone."""
    fault = Path(ctx.options["faultFile"])
    if fault.exists():
        print(f"crasher: fatal: {fault.read_text().strip()}", file=sys.stderr, flush=True)
        os._exit(3)
    ctx.ready()
    await _idle(ctx)


@register("hanger")
async def hanger(ctx: WorkerContext) -> None:
    """Blocks its own event loop (so heartbeats stop) once its trigger file appears."""
    trigger = Path(ctx.options["triggerFile"])
    ctx.ready()
    while not ctx.stopping.is_set():
        if trigger.exists():
            time.sleep(3600)
        await asyncio.sleep(0.05)


@register("never_ready")
async def never_ready(ctx: WorkerContext) -> None:
    await _idle(ctx)


@register("slow_ready")
async def slow_ready(ctx: WorkerContext) -> None:
    """Says ready `options.ms` after its start (a worker with set-up to do before it serves)."""
    await asyncio.sleep(float(ctx.options.get("ms", 300)) / 1000)
    ctx.ready()
    await _idle(ctx)


@register("stubborn")
async def stubborn(ctx: WorkerContext) -> None:
    """Ignores `stop` on the bus and SIGTERM: only SIGKILL ends it."""
    import signal

    asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx.ready()
    while True:
        await asyncio.sleep(3600)


@register("flood")
async def flood(ctx: WorkerContext) -> None:
    """Sends `count` events as fast as the bus takes them, then reports how many went out."""
    ctx.ready()
    count = int(ctx.options.get("count", 100_000))
    kind = ctx.options.get("msgKind", "event")
    await asyncio.sleep(float(ctx.options.get("delay", 0.2)))
    sent = 0
    t0 = time.perf_counter()
    for i in range(count):
        if kind == "log" or (kind == "mixed" and i % 40 == 0):
            ctx.log.info("flood line %d", i)
            sent += 1
        elif ctx.send({"kind": "event", "event": "flood", "payload": i}):
            sent += 1
        if i % 1000 == 999:
            await asyncio.sleep(0)
    ctx.log.warning("%s flood done: %d of %d sent in %.3fs", ctx.name, sent, count, time.perf_counter() - t0)
    await _idle(ctx)


@register("garbage")
async def garbage(ctx: WorkerContext) -> None:
    """Sends non-JSON, wrong-kind, multi-frame and oversized messages on a raw socket with its identity."""
    ctx.ready()
    size = int(ctx.options.get("oversize", 4 << 20))
    sock = ctx.link.sock
    for payload in (b"not json", b"[1,2,3]", b'{"kind":"nope"}', b'{"no":"kind"}'):
        sock.send(payload)
    sock.send_multipart([b"a", b"b", b"c"])
    for _ in range(int(ctx.options.get("repeat", 1000))):
        sock.send(b"\xff\xfe garbage")
        await asyncio.sleep(0)
    sock.send(b"x" * size, zmq.NOBLOCK)
    await _idle(ctx)


@register("spawner")
async def spawner(ctx: WorkerContext) -> None:
    """Starts a grandchild (`sleep`) and reports its pid, to check nothing outlives the worker."""
    child = subprocess.Popen(["sleep", "3600"], preexec_fn=lambda: set_parent_death_signal(9))
    Path(ctx.options["pidFile"]).write_text(f"{child.pid}\n")
    ctx.ready()
    await _idle(ctx)


@register("asker")
async def asker(ctx: WorkerContext) -> None:
    """Asks another worker through the supervisor, and a worker that does not exist (`wait` seconds after ready)."""
    from openclaw_sup.workers.runtime import RequestError

    ctx.ready()
    await asyncio.sleep(float(ctx.options.get("wait", 0.3)))
    for target in (ctx.options["target"], "ghost"):
        ctx.log.info("asker asks %s", target)
        try:
            answer = await ctx.request(ctx.options.get("method", "echo"), {"hello": 1}, to=target,
                                       timeout=float(ctx.options.get("timeout", 5)))
            ctx.log.info("asker got %s", answer)
        except RequestError as exc:
            ctx.log.info("asker error: %s %s", exc.code, exc)
    await _idle(ctx)


@register("fake_owner")
async def fake_owner(ctx: WorkerContext) -> None:
    """Stands in for a worker that owns RPC methods: answers `cron.list`, `cron.slow` after `ms`, hangs on
    `cron.hang`, runs `agent`
    in two stages (a partial `accepted`, then the final), and counts calls."""
    calls = {"agent": 0}
    tasks: set[asyncio.Task[None]] = set()

    async def cron_list(params: dict) -> dict:
        return {"jobs": [], "total": 0, "servedBy": ctx.name, "params": params}

    async def hang(params: dict) -> dict:
        await asyncio.sleep(3600)
        return {}

    async def slow(params: dict) -> dict:
        await asyncio.sleep(float(params.get("ms", 500)) / 1000)
        return {"slept": params.get("ms", 500), "pid": os.getpid()}

    ctx.handle("cron.list", cron_list)
    ctx.handle("cron.hang", hang)
    ctx.handle("cron.slow", slow)
    ctx.ready()
    loop = asyncio.get_running_loop()

    def on_bus(raw: bytes) -> None:
        import orjson

        msg = orjson.loads(raw)
        if msg.get("kind") == "req" and msg.get("method") == "agent":
            calls["agent"] += 1
            tasks.add(loop.create_task(run_agent(msg)))
        else:
            original(raw)

    async def run_agent(msg: dict) -> None:
        run_id = f"run-{calls['agent']}"
        ctx.send({"kind": "res", "id": msg["id"], "ok": True, "partial": True,
                  "payload": {"runId": run_id, "status": "accepted", "acceptedAt": int(time.time() * 1000)}})
        ctx.emit("agent", {"runId": run_id, "seq": 1, "stream": "lifecycle", "ts": 0, "data": {"phase": "start"}})
        await asyncio.sleep(0.2)
        ctx.send({"kind": "res", "id": msg["id"], "ok": True,
                  "payload": {"runId": run_id, "status": "ok", "summary": msg["params"].get("message"),
                              "calls": calls["agent"]}})

    original = ctx.link._on_message
    ctx.link._on_message = on_bus
    await _idle(ctx)


@register("session_counter")
async def session_counter(ctx: WorkerContext) -> None:
    """Stands in for the agent worker: answers `sessions.summary` with how many times it was asked (as the
    count of agent `main`), and logs each ask."""
    asks = 0

    async def summary(params: dict) -> dict:
        nonlocal asks
        asks += 1
        ctx.log.info(f"sessions.summary asked ({asks})")
        return {"byAgent": [{"agentId": "main", "path": "", "count": asks, "recent": []}]}

    ctx.handle("sessions.summary", summary)
    ctx.ready()
    await _idle(ctx)


@register("settler")
async def settler(ctx: WorkerContext) -> None:
    """Keeps itself busy right after `ready` (`settle.hold` requests to itself, through the supervisor, one per
    `holdsMs` entry, `gapMs` apart) and logs each time the runtime calls its `when_settled` callback: how many
    requests it had served, how many were running."""
    served = 0

    async def hold(params: dict) -> dict:
        nonlocal served
        await asyncio.sleep(float(params.get("ms", 1000)) / 1000)
        served += 1
        ctx.log.info("settler hold done")
        return {}

    def settled() -> None:
        ctx.log.info("settler settled: served %d, running %d", served, len(ctx._serving))

    ctx.handle("settle.hold", hold)
    ctx.when_settled(settled)
    ctx.ready()
    for ms in ctx.options.get("holdsMs", []):
        await ctx.request("settle.hold", {"ms": ms}, to=ctx.name)
        await asyncio.sleep(float(ctx.options.get("gapMs", 0)) / 1000)
    await _idle(ctx)


def resident_pages(obj: object) -> tuple[int, int]:
    """(resident, all) whole pages inside `obj` (CPython: its address and basic size), by mincore(2)."""
    import ctypes

    page = os.sysconf("SC_PAGE_SIZE")
    first = -(-id(obj) // page) * page
    count = (id(obj) + type(obj).__basicsize__) // page - first // page
    vec = (ctypes.c_ubyte * count)()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mincore(ctypes.c_void_p(first), ctypes.c_size_t(count * page), vec):
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(v & 1 for v in vec), count


@register("loop_pages")
async def loop_pages(ctx: WorkerContext) -> None:
    """Logs how many pages of its running event loop's object are resident, then idles."""
    resident, count = resident_pages(asyncio.get_running_loop())
    ctx.log.info("loop pages resident %d of %d", resident, count)
    ctx.ready()
    await _idle(ctx)
