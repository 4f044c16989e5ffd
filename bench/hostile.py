"""Hostile peers against a supervisor limited to few descriptors: is the good client served throughout?

The supervisor runs as under `ulimit -n 1024` (soft and hard). Three phases, each measured the same way:
`before` (quiet), `attack` (bench/attacker.py, a separate process with its own limit raised, holds
`--connections` useless connections from `--addresses` loopback addresses, reconnecting each one the server
closes), and `after` (the attacker gone). Throughout, from 127.0.0.1: one authenticated WebSocket asks
`health` every 200 ms, a fresh client connects and asks `health` every 500 ms, `GET /healthz` every 500 ms,
and `openclaw-sup status` runs every 2 s. In each phase the agent worker is SIGKILLed and timed back to
`running`. Once a second: the supervisor's descriptors, RSS and CPU, and its port counters.

    .venv/bin/python bench/hostile.py                        # 5000 connections, 60 s attack (~2 min)
    .venv/bin/python bench/hostile.py --connections 600 --attack 15 --addresses 20   # quick

Loopback only; it stops by itself. It prints figures and keeps the raw numbers; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from bench_common import SERVING, add_output_args, log, print_problems, publish, summarize
from gw_client import RpcFailed, connect_params, new_session
from sup_harness import TOKEN, Supervisor

BENCH_DIR = Path(__file__).resolve().parent
PHASES = ("before", "attack", "after")


class Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lat: dict[str, list[float]] = {"persistent": [], "fresh": [], "http": [], "status": []}
        self.fail: dict[str, Counter[str]] = {k: Counter() for k in self.lat}
        self.restart_ms: list[float] = []
        self.samples: list[dict[str, Any]] = []
        self.port: list[dict[str, Any]] = []
        self.attacker: list[dict[str, Any]] = []

    def report(self) -> dict[str, Any]:
        return {"latencyMs": {k: summarize(v) for k, v in self.lat.items()},
                "failures": {k: dict(v) for k, v in self.fail.items()}, "restartMs": self.restart_ms,
                "samples": self.samples, "port": self.port, "attacker": self.attacker}


async def open_ws(session: aiohttp.ClientSession, url: str,
                  scopes: tuple[str, ...] = ("operator.read",)) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    try:
        challenge = await ws.receive_json(timeout=10)
        assert challenge.get("event") == "connect.challenge", challenge
        params = {**connect_params(TOKEN), "scopes": list(scopes)}
        await ws.send_json({"type": "req", "id": "c", "method": "connect", "params": params})
        await answer(ws, "c")
    except BaseException:
        await ws.close()
        raise
    return ws


async def answer(ws: aiohttp.ClientWebSocketResponse, rid: str) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RpcFailed(f"closed {ws.close_code}", str(msg.extra))
        frame = json.loads(msg.data)
        if frame.get("type") == "res" and frame.get("id") == rid:
            if not frame.get("ok"):
                raise RpcFailed(frame["error"]["code"], frame["error"]["message"])
            return frame["payload"]


def why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:80]}"


class Bench:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.url = f"ws://127.0.0.1:{sup.port}"
        self.phase = Phase("before")
        self.stop = asyncio.Event()

    async def persistent(self, session: aiohttp.ClientSession) -> None:
        ws: aiohttp.ClientWebSocketResponse | None = None
        n = 0
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                if ws is None or ws.closed:
                    ws = await open_ws(session, self.url)
                n += 1
                await ws.send_json({"type": "req", "id": f"h{n}", "method": "health"})
                await answer(ws, f"h{n}")
                self.phase.lat["persistent"].append((time.perf_counter() - t) * 1000)
            except Exception as exc:
                self.phase.fail["persistent"][why(exc)] += 1
                ws = None
            await asyncio.sleep(0.2)
        if ws is not None:
            await ws.close()

    async def fresh(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                ws = await open_ws(session, self.url)
                await ws.send_json({"type": "req", "id": "h", "method": "health"})
                await answer(ws, "h")
                await ws.close()
                self.phase.lat["fresh"].append((time.perf_counter() - t) * 1000)
            except Exception as exc:
                self.phase.fail["fresh"][why(exc)] += 1
            await asyncio.sleep(0.5)

    async def http(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                async with session.get(f"http://127.0.0.1:{self.sup.port}/healthz",
                                       timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}")
                self.phase.lat["http"].append((time.perf_counter() - t) * 1000)
            except Exception as exc:
                self.phase.fail["http"][why(exc)] += 1
            await asyncio.sleep(0.5)

    async def status_cli(self) -> None:
        while not self.stop.is_set():
            try:
                code, ms = await asyncio.to_thread(self.sup.cli_status)
                if code == 2:
                    self.phase.fail["status"]["no answer (exit 2)"] += 1
                else:
                    self.phase.lat["status"].append(ms)
            except Exception as exc:
                self.phase.fail["status"][why(exc)] += 1
            await asyncio.sleep(2.0)

    async def sampler(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self.phase.samples.append(await asyncio.to_thread(self.sup.sample))
                st = await asyncio.to_thread(self.sup.status)
                self.phase.port.append({"t": time.monotonic(), **st["supervisor"]["port"],
                                        "fdsSeen": st["supervisor"]["fds"]})
            await asyncio.sleep(1.0)

    async def run_phase(self, name: str, seconds: float, attacker: subprocess.Popen[str] | None = None) -> Phase:
        self.phase = Phase(name)
        log(f"phase {name}: {seconds:g}s")
        t_end = time.monotonic() + seconds
        await asyncio.sleep(min(seconds / 2, 8.0))
        try:
            self.phase.restart_ms.append(await asyncio.to_thread(self.sup.kill_worker, "agent"))
        except Exception as exc:
            self.phase.fail["persistent"][f"restart: {why(exc)}"] += 1
        await asyncio.sleep(max(0.0, t_end - time.monotonic()))
        return self.phase


def read_attacker(proc: subprocess.Popen[str], sink: list[dict[str, Any]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        with contextlib.suppress(ValueError):
            sink.append(json.loads(line))


async def main_async(args: argparse.Namespace, sup: Supervisor) -> dict[str, Phase]:
    bench = Bench(sup)
    phases: dict[str, Phase] = {}
    async with new_session() as session:
        loops = [asyncio.create_task(c) for c in (bench.persistent(session), bench.fresh(session),
                                                    bench.http(session), bench.status_cli(), bench.sampler())]
        phases["before"] = await bench.run_phase("before", args.quiet)
        attacker = subprocess.Popen([sys.executable, str(BENCH_DIR / "attacker.py"), "--port", str(sup.port),
                                     "--connections", str(args.connections), "--addresses", str(args.addresses),
                                     "--duration", str(args.attack)], stdout=subprocess.PIPE, text=True)
        lines: list[dict[str, Any]] = []
        reader = threading.Thread(target=read_attacker, args=(attacker, lines), daemon=True)
        reader.start()
        phases["attack"] = await bench.run_phase("attack", args.attack, attacker)
        await asyncio.to_thread(attacker.wait, 60)
        reader.join(10)
        phases["attack"].attacker = lines
        await asyncio.sleep(2.0)
        phases["after"] = await bench.run_phase("after", args.quiet)
        bench.stop.set()
        await asyncio.gather(*loops, return_exceptions=True)
    return phases


def fmt(s: dict[str, float]) -> str:
    if not s["n"]:
        return "-"
    return f"{s['p50']:7.1f} {s['p90']:7.1f} {s['p99']:7.1f} {s['max']:8.1f} {int(s['n']):5d}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nofile", type=int, default=1024, help="the supervisor's descriptor limit (soft = hard)")
    p.add_argument("--connections", type=int, default=5000, help="hostile connections the attacker holds")
    p.add_argument("--addresses", type=int, default=200, help="loopback source addresses of the attacker")
    p.add_argument("--attack", type=float, default=60.0, help="seconds of attack")
    p.add_argument("--quiet", type=float, default=20.0, help="seconds of the before and after phases")
    add_output_args(p, "hostile", "keep the gateway's temp dir (its log)", cache=False)
    args = p.parse_args()
    started = dt.datetime.now(dt.UTC)
    sup = Supervisor(nofile=args.nofile, keep=args.keep_tmp)
    problems: list[str] = []
    try:
        sup.start()
        phases = asyncio.run(main_async(args, sup))
        final = sup.status()
        down = [(w["name"], w["state"]) for w in final["workers"] if w["state"] not in SERVING]
        if down:
            problems.append(f"workers not running at the end: {down}")
        lines = sup.log_lines()
    finally:
        code = sup.stop()
    if code not in (0, None):
        problems.append(f"the supervisor exited {code} at SIGTERM")
    errors = [r["message"] for r in lines if r.get("level") in ("error", "fatal")]
    finished = dt.datetime.now(dt.UTC)

    def render() -> dict[str, Any]:
        print("\nlatency ms            p50     p90     p99      max     n   failures")
        for kind in ("persistent", "fresh", "http", "status"):
            for name in PHASES:
                ph = phases[name]
                fails = sum(ph.fail[kind].values())
                print(f"  {kind:10} {name:7} {fmt(summarize(ph.lat[kind]))}   {fails}"
                      + (f"  {dict(ph.fail[kind])}" if fails else ""))
        print("\nagent SIGKILL -> running again (ms): "
              + "  ".join(f"{n} {phases[n].restart_ms[0]:.0f}" if phases[n].restart_ms else f"{n} -"
                          for n in PHASES))
        print("\nsupervisor           fds first/max/last     RSS MB first/max/last   CPU s")
        for name in PHASES:
            s = phases[name].samples
            if s:
                fds = [x["fds"] for x in s]
                rss = [x["rss"] / 2**20 for x in s]
                print(f"  {name:7}            {fds[0]:4d} {max(fds):4d} {fds[-1]:4d}        "
                      f"{rss[0]:6.1f} {max(rss):6.1f} {rss[-1]:6.1f}   {s[-1]['cpuS'] - s[0]['cpuS']:6.1f}")
        port = phases["attack"].port
        if port:
            last = port[-1]
            print(f"\nport during the attack: open max {max(x['open'] for x in port)} of capacity "
                  f"{last['capacity']}, unauthenticated max {max(x['unauthenticated'] for x in port)}; "
                  f"evicted {last['evicted']}, refused per address {last['refusedPerAddress']}, "
                  f"refused full {last['refusedFull']}")
        att = [x for x in phases["attack"].attacker if not x.get("final")]
        final_att = next((x for x in phases["attack"].attacker if x.get("final")), {})
        if att:
            print(f"attacker: held max {max(x['held'] for x in att)}, median "
                  f"{sorted(x['held'] for x in att)[len(att) // 2]}; opened {final_att.get('opened')}; "
                  f"connect errors {final_att.get('connectErrors')}")
            ended = Counter(final_att.get("ended", {}))
            print("  ended by the server: " + ", ".join(f"{k} {v}" for k, v in ended.most_common(12)))
        print(f"\nlog: {len(lines)} records, {len(errors)} at error level")
        for e in errors[:8]:
            print(f"  error: {e[:160]}")
        print_problems(problems)
        served = all(not sum(phases["attack"].fail[k].values()) for k in ("persistent", "status"))
        return {"goodClientServedThroughout": served}

    publish("hostile", args, started, finished,
            f"supervisor ulimit -n {args.nofile}, {args.connections} hostile connections from {args.addresses} "
            f"address{'es' if args.addresses != 1 else ''} for {args.attack:g}s", render,
            {"phases": {n: ph.report() for n, ph in phases.items()}, "problems": problems, "logErrors": errors})


if __name__ == "__main__":
    main()
