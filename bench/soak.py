"""Soak: mixed load, worker SIGKILLs and a hostile trickle for a fixed time; does anything fail, grow or leak?

Load, in parallel loops: WebSocket RPCs on long-lived authenticated connections (`health`, `status`,
`logs.tail`, `cron.list` from the scheduler, `agent` two-stage runs on the echo model), fresh connections
(connect + `health`), HTTP (`/healthz`, `/v1/chat/completions` on the echo agent, `/hooks/wake` with the
right and a wrong token), and a trickle of useless sockets (silent, half heads, unauthenticated WebSockets).
Every `--kill-every` seconds a worker (scheduler or agent, in turn) is SIGKILLed. Every 5 s: the supervisor's
RSS, descriptors and threads, the tree's PSS and threads.

A request answered UNAVAILABLE because its worker was restarting is counted apart from real failures.

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --duration 30   # quick

Loopback only; it stops by itself; it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import os
import time
from collections import Counter, defaultdict
from typing import Any

import aiohttp
from bench_common import SERVING, add_output_args, log, print_problems, publish
from hostile import answer, open_ws, why
from sup_harness import HOOK_TOKEN, TOKEN, Supervisor

RESTARTING = ("is starting", "is backoff", "is crashed", "exited", "not accepting requests")
"""How an answer says its worker was down for the moment (a SIGKILL of this bench), not that something broke."""


class Soak:
    def __init__(self, sup: Supervisor, duration: float, kill_every: float) -> None:
        self.sup = sup
        self.url = f"ws://127.0.0.1:{sup.port}"
        self.http = f"http://127.0.0.1:{sup.port}"
        self.deadline = time.monotonic() + duration
        self.kill_every = kill_every
        self.ok: Counter[str] = Counter()
        self.restarting: Counter[str] = Counter()
        self.failed: dict[str, Counter[str]] = defaultdict(Counter)
        self.samples: list[dict[str, Any]] = []
        self.kills: list[tuple[str, float]] = []
        self.n = 0

    @property
    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def outcome(self, kind: str, exc: BaseException | None) -> None:
        if exc is None:
            self.ok[kind] += 1
        elif ("UNAVAILABLE" in str(exc) or "HTTP 503" in str(exc)) and any(
                w in str(exc) for w in RESTARTING):
            self.restarting[kind] += 1
        else:
            self.failed[kind][why(exc)] += 1

    async def rpc_loop(self, session: aiohttp.ClientSession, method: str, params: dict[str, Any] | None,
                       pause: float) -> None:
        ws: aiohttp.ClientWebSocketResponse | None = None
        while self.running:
            err: BaseException | None = None
            try:
                if ws is None or ws.closed:
                    ws = await open_ws(session, self.url, ("operator.read", "operator.write"))
                self.n += 1
                rid = f"{method}-{self.n}"
                body = dict(params or {})
                if method == "agent":
                    body["idempotencyKey"] = rid
                await ws.send_json({"type": "req", "id": rid, "method": method, "params": body})
                payload = await answer(ws, rid)
                if method == "agent" and payload.get("status") == "accepted":
                    await answer(ws, rid)
            except Exception as exc:
                err = exc
                if ws is not None and ws.closed:
                    ws = None
            self.outcome(f"ws {method}", err)
            await asyncio.sleep(pause)
        if ws is not None:
            await ws.close()

    async def fresh_loop(self, session: aiohttp.ClientSession) -> None:
        while self.running:
            err: BaseException | None = None
            try:
                ws = await open_ws(session, self.url)
                await ws.send_json({"type": "req", "id": "h", "method": "health"})
                await answer(ws, "h")
                await ws.close()
            except Exception as exc:
                err = exc
            self.outcome("ws connect+health", err)
            await asyncio.sleep(0.3)

    async def http_loop(self, session: aiohttp.ClientSession, kind: str, method: str, path: str,
                        headers: dict[str, str], body: Any, want: tuple[int, ...], pause: float) -> None:
        while self.running:
            err: BaseException | None = None
            try:
                async with session.request(method, self.http + path, headers=headers, json=body,
                                           timeout=aiohttp.ClientTimeout(total=30)) as r:
                    text = await r.text()
                    if r.status not in want:
                        raise RuntimeError(f"HTTP {r.status}: {text[:80]}")
            except Exception as exc:
                err = exc
            self.outcome(kind, err)
            await asyncio.sleep(pause)

    async def trickle(self) -> None:
        """A few useless sockets at a time, each left to the server's deadlines."""
        held: list[asyncio.StreamWriter] = []
        i = 0
        while self.running:
            i += 1
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.sup.port)
                kind = i % 3
                if kind == 1:
                    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
                elif kind == 2:
                    key = base64.b64encode(os.urandom(16))
                    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
                held.append(writer)
                self.ok["hostile socket opened"] += 1
            while len(held) > 40:
                held.pop(0).close()
            await asyncio.sleep(0.5)
        for w in held:
            w.close()

    async def killer(self) -> None:
        names = ("agent", "scheduler")
        i = 0
        await asyncio.sleep(self.kill_every)
        while self.running:
            name = names[i % len(names)]
            i += 1
            try:
                ms = await asyncio.to_thread(self.sup.kill_worker, name)
                self.kills.append((name, ms))
            except Exception as exc:
                self.failed["worker restart"][why(exc)] += 1
            await asyncio.sleep(self.kill_every)

    async def sampler(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.samples.append(await asyncio.to_thread(self.sup.sample))
            if not self.running:
                return
            await asyncio.sleep(5.0)

    async def run(self) -> None:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        chat = {"model": "openclaw", "messages": [{"role": "user", "content": "soak"}]}
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(
                self.rpc_loop(session, "health", None, 0.05),
                self.rpc_loop(session, "status", None, 0.2),
                self.rpc_loop(session, "logs.tail", {"limit": 50}, 0.5),
                self.rpc_loop(session, "cron.list", None, 0.2),
                self.rpc_loop(session, "agent", {"message": "soak run"}, 0.3),
                self.fresh_loop(session),
                self.http_loop(session, "http /healthz", "GET", "/healthz", {}, None, (200,), 0.1),
                self.http_loop(session, "http chat completion", "POST", "/v1/chat/completions", bearer, chat,
                               (200,), 0.5),
                self.http_loop(session, "http hook right token", "POST", "/hooks/wake",
                               {"Authorization": f"Bearer {HOOK_TOKEN}"}, {"text": "soak", "mode": "next-heartbeat"},
                               (200,), 1.0),
                self.http_loop(session, "http hook wrong token", "POST", "/hooks/wake",
                               {"X-OpenClaw-Token": "wrong"}, {"text": "x"}, (401, 429), 0.1),
                self.trickle(), self.killer(), self.sampler())


def stats(samples: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[float, float, float, float]:
    """first, at one minute (warmed up: aiohttp imported, every worker respawned once), last, max."""
    values = [s[key] / scale for s in samples]
    warm = next((s[key] / scale for s in samples if s["t"] - samples[0]["t"] >= 60), values[-1])
    return values[0], warm, values[-1], max(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--kill-every", type=float, default=20.0, help="seconds between worker SIGKILLs")
    p.add_argument("--nofile", type=int, default=1024, help="the supervisor's descriptor limit (soft = hard)")
    add_output_args(p, "soak", "keep the gateway's temp dir (its log)", cache=False)
    args = p.parse_args()
    started = dt.datetime.now(dt.UTC)
    sup = Supervisor(nofile=args.nofile, keep=args.keep_tmp)
    problems: list[str] = []
    soak = Soak(sup, args.duration, args.kill_every)
    try:
        sup.start()
        log(f"soak: {args.duration:g}s, a worker SIGKILLed every {args.kill_every:g}s")
        asyncio.run(soak.run())
        time.sleep(2.0)
        soak.samples.append(sup.sample())
        final = sup.status()
        down = [(w["name"], w["state"]) for w in final["workers"] if w["state"] not in SERVING]
        if down:
            problems.append(f"workers not running at the end: {down}")
        lines = sup.log_lines()
    finally:
        code = sup.stop()
    if code not in (0, None):
        problems.append(f"the supervisor exited {code} at SIGTERM")
    errors = [r["message"] for r in lines if r.get("level") in ("error", "fatal")
              and "killed by SIGKILL" not in r["message"]]
    finished = dt.datetime.now(dt.UTC)

    def render() -> dict[str, Any]:
        kinds = sorted(set(soak.ok) | set(soak.failed) | set(soak.restarting))
        total_fail = sum(sum(c.values()) for c in soak.failed.values())
        print(f"\n{'requests':34} {'ok':>8} {'worker restarting':>18} {'failed':>7}")
        for k in kinds:
            print(f"  {k:32} {soak.ok[k]:8d} {soak.restarting[k]:18d} {sum(soak.failed[k].values()):7d}"
                  + (f"  {dict(soak.failed[k].most_common(3))}" if soak.failed[k] else ""))
        print(f"  {'total':32} {sum(soak.ok.values()):8d} {sum(soak.restarting.values()):18d} {total_fail:7d}")
        restart = sorted(ms for _n, ms in soak.kills)
        if restart:
            print(f"\n{len(restart)} SIGKILLs; back to running in ms: p50 {restart[len(restart) // 2]:.0f}, "
                  f"max {restart[-1]:.0f}")
        print(f"\n{'':24} {'first':>9} {'at 1 min':>9} {'last':>9} {'max':>9}")
        for label, key, scale in (("supervisor RSS MB", "rss", 2**20), ("tree PSS MB", "treePss", 2**20),
                                  ("supervisor fds", "fds", 1), ("supervisor threads", "threads", 1),
                                  ("tree threads", "treeThreads", 1)):
            first, warm, last, top = stats(soak.samples, key, scale)
            print(f"  {label:22} {first:9.1f} {warm:9.1f} {last:9.1f} {top:9.1f}")
        print(f"\nlog: {len(lines)} records; {len(errors)} at error level besides the kills")
        for e in errors[:6]:
            print(f"  error: {e[:160]}")
        print_problems(problems)
        return {"noFailures": total_fail == 0, "noProblems": not problems}

    publish("soak", args, started, finished, f"{args.duration:g}s, SIGKILL every {args.kill_every:g}s, "
            f"ulimit -n {args.nofile}", render,
            {"ok": dict(soak.ok), "restarting": dict(soak.restarting),
             "failed": {k: dict(v) for k, v in soak.failed.items()}, "kills": soak.kills, "samples": soak.samples,
             "problems": problems, "logErrors": errors})


if __name__ == "__main__":
    main()
