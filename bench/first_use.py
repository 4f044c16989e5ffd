"""First-use bench: what an on-demand worker saves at idle and what its first request pays, beside the same worker
eager, in one run.

Run: .venv/bin/python bench/first_use.py [--runs 5] [--workers browser,agent]

For each worker and run, two fresh gateways (temp state, loopback port, token auth, the echo model) boot one after
the other: the worker eager (`onDemand: []`) and on-demand (`onDemand: [<worker>]`). After `--settle` idle seconds
the tree's PSS is sampled; then one client connects and times its first request to that worker (`browser.status`
or `chat.history`) as it sees it, and the gateway's log gives the worker's spawn -> ready. An eager worker's first
request is a bus round trip; an on-demand one's includes the fork, the worker's start-up and whatever it defers
to its first request (the agent opens its store). Medians and spread go to stdout, raw numbers to
bench/results/first_use-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from typing import Any

from bench_common import MB, add_output_args, chosen, log, publish, summarize
from sup_harness import TOKEN, Supervisor

from openclaw_sup.gateway.client import GatewayClient

FIRST_REQUEST = {"browser": ("browser.status", {}), "agent": ("chat.history", {"sessionKey": "agent:main:main"})}
MODES = ("eager", "on-demand")
READY = re.compile(r"worker (\S+) ready \(pid \d+, ([0-9.]+) ms after spawn\)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="on-demand vs eager workers: idle PSS and the first request")
    p.add_argument("--runs", type=int, default=5, help="gateways booted per worker and mode (default 5)")
    p.add_argument("--workers", default="browser,agent", help="comma list from browser,agent")
    p.add_argument("--settle", type=float, default=3.0, help="idle seconds before the PSS sample and the request")
    add_output_args(p, "first_use", "keep the gateways' temp dirs (config, logs)", cache=False, txt=False)
    args = p.parse_args(argv)
    args.workers = chosen(p, args.workers, tuple(FIRST_REQUEST), "worker")
    return args


def one_boot(worker: str, mode: str, settle: float, keep: bool) -> dict[str, Any]:
    sup = Supervisor(settings={"onDemand": [worker] if mode == "on-demand" else []},
                     config={"browser": {"headless": True}}, keep=keep)
    try:
        sup.start()
        time.sleep(settle)
        idle = {"treePss": sup.sample()["treePss"], "state": sup.worker(worker)["state"]}
        client = GatewayClient(f"ws://127.0.0.1:{sup.port}", token=TOKEN, timeout=60)
        client.connect()
        method, params = FIRST_REQUEST[worker]
        t0 = time.perf_counter()
        client.request(method, params)
        first_ms = (time.perf_counter() - t0) * 1000
        client.close()
        ready = [float(m[2]) for r in sup.log_lines() if (m := READY.search(str(r.get("message", ""))))
                 and m[1] == worker]
        return {**idle, "firstMs": first_ms, "spawnToReadyMs": ready[-1] if ready else None}
    finally:
        sup.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {w: {m: [] for m in MODES} for w in args.workers}
    for worker in args.workers:
        for i in range(args.runs):
            for mode in MODES:
                res = one_boot(worker, mode, args.settle, args.keep_tmp)
                raw[worker][mode].append(res)
                log(f"{worker} {mode} {i + 1}/{args.runs}: idle tree PSS {res['treePss'] / MB:.1f} MB "
                    f"({worker} {res['state']}), first {FIRST_REQUEST[worker][0]} {res['firstMs']:.1f} ms")
    finished = dt.datetime.now(dt.UTC)

    def render() -> dict[str, Any]:
        print(f"{'worker':<8} {'mode':<10} {'idle tree PSS MB p50 [min-max]':>32} "
              f"{'first request ms p50 [min-max]':>32} {'spawn->ready ms p50':>20} {'n':>3}")
        for worker in args.workers:
            for mode in MODES:
                rows = raw[worker][mode]
                pss = summarize([r["treePss"] / MB for r in rows])
                first = summarize([r["firstMs"] for r in rows])
                ready = [r["spawnToReadyMs"] for r in rows if r["spawnToReadyMs"] is not None]
                print(f"{worker:<8} {mode:<10} {pss['p50']:>16.1f} [{pss['min']:.1f}-{pss['max']:.1f}]      "
                      f"{first['p50']:>16.1f} [{first['min']:.1f}-{first['max']:.1f}]      "
                      f"{summarize(ready)['p50']:>14.1f} {len(rows):>3}")
        print(f"(first request: {', '.join(f'{w} {FIRST_REQUEST[w][0]}' for w in args.workers)}, "
              f"after {args.settle:g}s idle)")
        return {}

    publish("first_use", args, started, finished, f"{args.runs} boots per worker and mode", render,
            {"runs": raw})
    return 0


if __name__ == "__main__":
    sys.exit(main())
