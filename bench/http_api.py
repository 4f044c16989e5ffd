"""HTTP API bench: what our gateway adds over the model provider, with the offline echo provider, one run.

Run: .venv/bin/python bench/http_api.py [--requests 300] [--reps 3] [--conns 8] [--per-conn 40] [--words 8]
     [--builds ours|tree,base] [--baseline main]

The echo provider costs next to nothing, so what is measured is the path a request takes: client -> aiohttp
on the gateway port -> the supervisor -> ZeroMQ -> the agent worker -> the provider -> back. Rows, all with
the same aiohttp client on loopback:
- `echo provider, in-process`: the provider coroutine alone (what the model costs here);
- `floor: echo behind a bare aiohttp server` (bench/http_floor.py, one process, no auth/bus/worker):
  the cheapest OpenAI-shaped HTTP server around the same provider;
- ours: `/v1/chat/completions` non-stream and stream (to `[DONE]`; first content chunk in its own column),
  `/v1/responses` non-stream, and `agent` over WebSocket (two-stage, time to the final `res`).
Each rep measures `--requests` sequential requests on one keep-alive connection (p50/p99 latency) and
`--conns` connections x `--per-conn` requests in parallel (req/s). Tables print the median over reps with
the min-max spread; the overhead column is our p50 minus the floor's; the server CPU column is the server
process's (our supervisor's, or the floor's) CPU per sequential request, which the machine's noise moves far
less than latency. `--builds tree,base` measures the working tree and `--baseline` (both installed the same
way, bench_managers.ensure_install) one after the other in the same run, the floor once. Raw numbers go to
bench/results/http_api-<date>.json, the report to bench/results/http_api-run.txt. It never asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import psutil
import uvloop
from bench_common import add_output_args, chosen, free_port, log, publish, summarize
from bench_managers import BENCH_DIR, ensure_install
from gw_client import TOKEN, Conn, RpcFailed
from gw_report import fmt, print_table, wait_quiet
from gw_servers import Ours, make_root, our_env, remove

from openclaw_sup.config.models import Target
from openclaw_sup.workers.agent.providers import ChatRequest, call

Request = Callable[[int], Awaitable[float | tuple[float, float]]]
BUILDS = ("ours", "tree", "base")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="the overhead of openclaw-sup's HTTP API over the echo provider")
    p.add_argument("--requests", type=int, default=300, help="sequential requests per rep (default 300)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each measure (default 3)")
    p.add_argument("--conns", type=int, default=8, help="parallel connections (default 8)")
    p.add_argument("--per-conn", type=int, default=40, help="requests per parallel connection (default 40)")
    p.add_argument("--words", type=int, default=8, help="words in the user message = streamed chunks (8)")
    p.add_argument("--pause", type=float, default=0.5, help="idle seconds between measures")
    p.add_argument("--builds", default="ours", help=f"comma list from {','.join(BUILDS)} (default ours: this venv)")
    p.add_argument("--baseline", default="main", help="git ref the `base` build installs (default main)")
    add_output_args(p, "http_api", "keep the gateway's temp dir (config, log)")
    args = p.parse_args(argv)
    args.build_list = chosen(p, args.builds, BUILDS, "build")
    return args


class OursEcho(Ours):
    """Our gateway with both OpenAI-compatible endpoints on and the echo provider as the default model."""

    key = "ours-http"
    title = "openclaw-sup (echo)"

    def prepare(self) -> None:
        super().prepare()
        cfg = json.loads((self.state / "openclaw.json").read_text())
        cfg["gateway"]["http"] = {"endpoints": {"chatCompletions": {"enabled": True}, "responses": {"enabled": True}}}
        cfg["agents"] = {"defaults": {"model": "echo/echo"}}
        (self.state / "openclaw.json").write_text(json.dumps(cfg))

    def env(self) -> dict[str, str]:
        return {**super().env(), "OPENCLAW_SKIP_CRON": "1", "OPENCLAW_SKIP_CHANNELS": "1"}


# ===================================================================================== one request each

def message(words: int, i: int) -> str:
    return " ".join(f"w{i}-{k}" for k in range(words))


def chat_body(words: int, i: int, stream: bool) -> bytes:
    return orjson.dumps({"model": "openclaw", "stream": stream,
                         "messages": [{"role": "user", "content": message(words, i)}]})


async def chat_once(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as resp:
        raw = await resp.read()
    took = time.perf_counter() - t0
    if resp.status != 200 or b'"content"' not in raw:
        raise RuntimeError(f"{url} answered {resp.status}: {raw[:200]!r}")
    return took * 1000


async def stream_once(session: aiohttp.ClientSession, url: str, body: bytes,
                      headers: dict[str, str]) -> tuple[float, float]:
    """(ms to `[DONE]`, ms to the first content chunk)."""
    t0 = time.perf_counter()
    first = None
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}: {(await resp.read())[:200]!r}")
        async for line in resp.content:
            if first is None and b'"content"' in line:
                first = time.perf_counter()
            if line.startswith(b"data: [DONE]"):
                break
    end = time.perf_counter()
    return (end - t0) * 1000, ((first or end) - t0) * 1000


async def ws_open(session: aiohttp.ClientSession, url: str) -> Conn:
    """A `gateway-client`/`backend` operator with write scope (needed by `agent`), shared token, loopback."""
    ws = await session.ws_connect(url, autoping=True, compress=0, max_msg_size=0)
    conn = Conn(ws)
    first = await conn._frame(10)
    if first.get("event") != "connect.challenge":
        raise RpcFailed("protocol", f"first frame was not connect.challenge: {str(first)[:120]}")
    params = {"minProtocol": 4, "maxProtocol": 4, "role": "operator", "scopes": ["operator.read", "operator.write"],
              "client": {"id": "gateway-client", "version": "bench", "platform": "linux", "mode": "backend"},
              "auth": {"token": TOKEN}}
    await ws.send_str(orjson.dumps({"type": "req", "id": "1", "method": "connect", "params": params}).decode())
    conn.hello = await conn._result("1", 10)
    return conn


async def agent_once(conn: Conn, words: int, i: int) -> float:
    """`agent` to its final `res` (the first `res` is the `accepted` ack of the two-stage answer)."""
    conn.next_id += 1
    rid = str(conn.next_id)
    params = {"message": message(words, i), "idempotencyKey": str(uuid.uuid4()), "agentId": "main",
              "sessionKey": f"agent:main:bench-{uuid.uuid4()}"}
    t0 = time.perf_counter()
    await conn.ws.send_str(orjson.dumps({"type": "req", "id": rid, "method": "agent", "params": params}).decode())
    while True:
        payload = await conn._result(rid, 30)
        if payload.get("status") != "accepted":
            break
    took = time.perf_counter() - t0
    if payload.get("status") != "ok":
        raise RuntimeError(f"agent answered {str(payload)[:200]}")
    return took * 1000


# ========================================================================================== measures

async def sequential(make: Callable[[], Awaitable[Any]], one: Callable[[Any, int], Awaitable[Any]], n: int,
                     close: Callable[[Any], Awaitable[None]], server_cpu: Callable[[], float]) -> dict[str, Any]:
    client = await make()
    try:
        for i in range(5):  # warm the connection and the server's code paths
            await one(client, -i - 1)
        times, firsts = [], []
        cpu0 = server_cpu()
        t0 = time.perf_counter()
        for i in range(n):
            got = await one(client, i)
            if isinstance(got, tuple):
                times.append(got[0])
                firsts.append(got[1])
            else:
                times.append(got)
        wall = time.perf_counter() - t0
        cpu = server_cpu() - cpu0
    finally:
        await close(client)
    out = {"ms": times, "perS": n / wall, "serverCpuUs": cpu / n * 1e6, **summarize(times)}
    if firsts:
        out["firstMs"] = firsts
        out["firstP50"] = summarize(firsts)["p50"]
    return out


async def parallel(make: Callable[[], Awaitable[Any]], one: Callable[[Any, int], Awaitable[Any]], conns: int,
                   per: int, close: Callable[[Any], Awaitable[None]]) -> dict[str, Any]:
    clients = [await make() for _ in range(conns)]
    try:
        await asyncio.gather(*(one(c, -1) for c in clients))
        t0 = time.perf_counter()

        async def run(c: Any, base: int) -> None:
            for i in range(per):
                await one(c, base + i)

        await asyncio.gather(*(run(c, k * per) for k, c in enumerate(clients)))
        wall = time.perf_counter() - t0
    finally:
        for c in clients:
            await close(c)
    return {"perS": conns * per / wall, "wallS": wall}


def http_client(url: str, headers: dict[str, str], words: int, stream: bool, path: str = "/v1/chat/completions"):
    """(make, one, close) for an HTTP measure: one keep-alive session per client."""
    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, force_close=False))

    async def one(session: aiohttp.ClientSession, i: int) -> Any:
        if path == "/v1/responses":
            body = orjson.dumps({"model": "openclaw", "input": message(words, i)})
            return await chat_once(session, url + path, body, headers)
        body = chat_body(words, i, stream)
        if stream:
            return await stream_once(session, url + path, body, headers)
        return await chat_once(session, url + path, body, headers)

    async def close(session: aiohttp.ClientSession) -> None:
        await session.close()

    return make, one, close


def ws_client(url: str, words: int):
    async def make() -> tuple[aiohttp.ClientSession, Conn]:
        session = aiohttp.ClientSession()
        return session, await ws_open(session, url)

    async def one(client: tuple[aiohttp.ClientSession, Conn], i: int) -> float:
        return await agent_once(client[1], words, i)

    async def close(client: tuple[aiohttp.ClientSession, Conn]) -> None:
        await client[1].close()
        await client[0].close()

    return make, one, close


async def provider_alone(n: int, words: int) -> dict[str, Any]:
    """The echo provider coroutine, in-process: the model's own share of every figure below."""
    target = Target(provider="echo", model="echo", api="echo")
    times = []
    for i in range(n):
        req = ChatRequest(messages=[{"role": "user", "content": message(words, i)}])
        t0 = time.perf_counter()
        await call(target, req, lambda _t: None)
        times.append((time.perf_counter() - t0) * 1000)
    return {"ms": times, "perS": 1000 / statistics.mean(times), **summarize(times)}


async def measure_floor(args: argparse.Namespace, floor_http: str, floor_cpu: Callable[[], float]) -> dict[str, Any]:
    plain = {"Content-Type": "application/json"}
    rows: dict[str, tuple[str, Any]] = {
        "floor": ("floor: echo behind a bare aiohttp server, non-stream", http_client(floor_http, plain, args.words,
                                                                                      False)),
        "floorStream": ("floor: same, stream", http_client(floor_http, plain, args.words, True)),
    }
    res: dict[str, Any] = {"provider": {"title": "echo provider, in-process", "reps": []}}
    for _ in range(args.reps):
        res["provider"]["reps"].append(await provider_alone(args.requests, args.words))
    return res | await measure_rows(args, rows, floor_cpu)


async def measure_ours(args: argparse.Namespace, gw: OursEcho, prefix: str) -> dict[str, Any]:
    gw_http, gw_ws = f"http://127.0.0.1:{gw.port}", gw.url
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    rows: dict[str, tuple[str, Any]] = {
        f"{prefix}chat": (f"{gw.title}: /v1/chat/completions, non-stream", http_client(gw_http, auth, args.words,
                                                                                     False)),
        f"{prefix}chatStream": (f"{gw.title}: /v1/chat/completions, stream", http_client(gw_http, auth, args.words,
                                                                                       True)),
        f"{prefix}responses": (f"{gw.title}: /v1/responses, non-stream", http_client(gw_http, auth, args.words, False,
                                                                                    "/v1/responses")),
        f"{prefix}agentWs": (f"{gw.title}: agent over WebSocket (final res)", ws_client(gw_ws, args.words)),
    }
    return await measure_rows(args, rows, lambda: gw.cpu_split()["supervisor"])


async def measure_rows(args: argparse.Namespace, rows: dict[str, tuple[str, Any]],
                       server_cpu: Callable[[], float]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for key, (title, (make, one, close)) in rows.items():
        res[key] = {"title": title, "reps": []}
        for rep in range(args.reps):
            await asyncio.sleep(args.pause)
            seq = await sequential(make, one, args.requests, close, server_cpu)
            await asyncio.sleep(args.pause)
            par = await parallel(make, one, args.conns, args.per_conn, close)
            res[key]["reps"].append({"sequential": {k: v for k, v in seq.items()}, "parallel": par})
            log(f"{title}: rep {rep + 1}/{args.reps}: p50 {seq['p50']:.2f} ms, p99 {seq['p99']:.2f} ms, "
                f"{par['perS']:.0f} req/s with {args.conns} connections")
    return res


# ============================================================================================ report

def med_spread(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    return f"{fmt(statistics.median(values), digits)} [{fmt(min(values), digits)}-{fmt(max(values), digits)}]"


def render(res: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    header = ["measure", "p50 ms", "p99 ms", "seq req/s", f"par req/s ({args.conns} conns)", "first chunk p50 ms",
              "p50 over floor ms", "server CPU us/req"]
    prov = res["provider"]["reps"]
    rows = [[res["provider"]["title"], med_spread([r["p50"] for r in prov], 3), med_spread([r["p99"] for r in prov], 3),
             "-", "-", "-", "-", "-"]]
    floor_p50 = {False: statistics.median(r["sequential"]["p50"] for r in res["floor"]["reps"]),
                 True: statistics.median(r["sequential"]["p50"] for r in res["floorStream"]["reps"])}
    for key in [k for k in res if k != "provider" and isinstance(res[k], dict) and "reps" in res[k]]:
        reps = res[key]["reps"]
        seq = [r["sequential"] for r in reps]
        p50 = statistics.median(s["p50"] for s in seq)
        over = "-" if key.startswith("floor") else fmt(p50 - floor_p50[key.endswith("chatStream")], 2)
        first = med_spread([s["firstP50"] for s in seq]) if "firstP50" in seq[0] else "-"
        rows.append([res[key]["title"], med_spread([s["p50"] for s in seq]), med_spread([s["p99"] for s in seq]),
                     med_spread([s["perS"] for s in seq], 0), med_spread([r["parallel"]["perS"] for r in reps], 0),
                     first, over, med_spread([s.get("serverCpuUs", float("nan")) for s in seq], 0)])
    print_table(f"latency and throughput: median over {args.reps} reps [min-max]; {args.requests} sequential "
                f"requests per rep, {args.conns}x{args.per_conn} in parallel; {args.words}-word messages", header, rows)
    print("\n'p50 over floor' = our p50 minus the bare server's p50 for the same kind of request (stream or not);"
          "\nfor `agent` over WebSocket and /v1/responses it is taken against the non-stream floor.")
    return []


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    busy = wait_quiet()
    log(f"machine CPU {busy:.0f}% busy before the start")
    floor_port = free_port()
    floor = subprocess.Popen([sys.executable, str(BENCH_DIR / "http_floor.py"), "--port", str(floor_port)],
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(BENCH_DIR)})
    floor_proc = psutil.Process(floor.pid)

    def floor_cpu() -> float:
        t = floor_proc.cpu_times()
        return t.user + t.system

    try:
        assert floor.stdout is not None
        if floor.stdout.readline().strip() != b"ready":
            raise SystemExit("bench/http_floor.py did not start")
        res = uvloop.run(measure_floor(args, f"http://127.0.0.1:{floor_port}", floor_cpu))
        res["cpuBusyBeforePct"] = busy
        res["problems"] = []
        for build in args.build_list:
            res |= run_build(args, build)
            res["problems"] += res.pop("buildProblems")
    finally:
        floor.terminate()
        floor.wait(10)
    finished = dt.datetime.now(dt.UTC)
    headline = (f"the overhead of our HTTP API over the echo provider; "
                f"{len(res['problems'])} warning/error log lines")
    publish("http_api", args, started, finished, headline, lambda: render(res, args), {"results": res})


def run_build(args: argparse.Namespace, build: str) -> dict[str, Any]:
    """One build's rows (keys prefixed with the build unless it is `ours`): start, measure, stop."""
    root = make_root("ocsb-http-")
    bindir = None if build == "ours" else ensure_install(args.cache, args.baseline if build == "base" else None)
    gw = OursEcho(root, our_env(args.cache), bindir, {"ours": OursEcho.title, "tree": "openclaw-sup (this tree)",
                                                      "base": f"openclaw-sup {args.baseline}"}[build])
    try:
        gw.start()
        uvloop.run(gw.wait_ready())
        uvloop.run(wait_agent(f"http://127.0.0.1:{gw.port}"))
        log(f"{gw.title}: ready on port {gw.port}")
        res = uvloop.run(measure_ours(args, gw, "" if build == "ours" else f"{build}:"))
        expected = "cron: scheduler disabled"  # OPENCLAW_SKIP_CRON keeps the bench to the agent worker
        res["buildProblems"] = [p for p in gw.log_problems() if expected not in p][:20]
    finally:
        with contextlib.suppress(Exception):
            gw.stop()
        remove(root, args.keep_tmp)
    return res


async def wait_agent(base: str, timeout: float = 30.0) -> None:
    """Until a completion succeeds: the agent worker is running and answering."""
    deadline = time.monotonic() + timeout
    body = chat_body(2, 0, False)
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(Exception):
                await chat_once(session, base + "/v1/chat/completions", body,
                                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
                return
            if time.monotonic() > deadline:
                raise SystemExit("the agent worker never answered /v1/chat/completions")
            await asyncio.sleep(0.2)


if __name__ == "__main__":
    main()
