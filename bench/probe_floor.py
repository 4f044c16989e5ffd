"""The floor under a keep-alive probe on this host, beside the gateway, with one compiled client.

The issue's goal is 15 000 keep-alive probes a second on one connection. On one connection a rate is one over a
round trip, and most of a round trip is not the server's: loopback TCP, waking the other side, and where the
scheduler puts client and server. This bench runs the compiled client (bench/probe_client.c) alternately against
three servers and prints each one's rate, latency and CPU per answer:

- `floor-c`: bench/probe_floor.c, a blocking C server that only answers (the host's floor);
- `floor-uvloop`: an asyncio Protocol on uvloop that answers fixed bytes from `data_received` (the floor of any
  server on this event loop);
- `gateway`: openclaw-sup of this checkout as bench/gateway.py runs it (`gw_servers.Ours`), `GET /healthz`.

usage: python bench/probe_floor.py [--seconds 2] [--reps 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from bench_common import free_port, log, stop_process, summarize
from gw_cprobe import build, probe_loop
from gw_servers import Ours

HERE = Path(__file__).resolve().parent
UVLOOP_SERVER = r"""
import asyncio, sys, uvloop
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 27\r\n"
          b"Cache-Control: no-store\r\nDate: Sun, 06 Dec 2026 00:00:00 GMT\r\n\r\n" b'{"ok":true,"status":"live"}')
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(ANSWER)
async def main():
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await srv.serve_forever()
uvloop.run(main())
"""


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout:g}s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of each run")
    p.add_argument("--reps", type=int, default=5, help="runs against each server, alternating")
    p.add_argument("--out", help="raw JSON")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ocsb-floor-"))
    client = build(tmp)
    floor_bin = build(tmp, HERE / "probe_floor.c")
    ports = {name: free_port() for name in ("floor-c", "floor-uvloop")}
    floors = {
        "floor-c": subprocess.Popen([str(floor_bin), str(ports["floor-c"])]),
        "floor-uvloop": subprocess.Popen([sys.executable, "-c", UVLOOP_SERVER, str(ports["floor-uvloop"])]),
    }
    gw = Ours(tmp / "gateway", dict(os.environ))
    gw.start()
    ports["gateway"] = gw.port
    pids = {**{name: proc.pid for name, proc in floors.items()}, "gateway": gw.pid}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in ports}
    try:
        for name in floors:
            wait_port(ports[name])
        asyncio.run(gw.wait_ready())
        time.sleep(3.0)  # the gateway's workers settle
        for rep in range(args.reps):
            for name, port in ports.items():
                pid = pids[name]
                before = cpu_s(pid)
                r = probe_loop(client, port, "/healthz", args.seconds)
                n = sum(r["statuses"].values())
                r["serverCpuUsPerAnswer"] = (cpu_s(pid) - before) / max(1, n) * 1e6
                r["clientCpuUsPerAnswer"] = r["clientCpuS"] / max(1, n) * 1e6
                lat = r.pop("latencyMs")
                r["latency"] = summarize(lat)
                results[name].append(r)
                log(f"rep {rep + 1}/{args.reps} {name}: {r['perS']:.0f}/s p50 {r['latency']['p50']:.3f} ms "
                    f"p99 {r['latency']['p99']:.3f} ms, server CPU {r['serverCpuUsPerAnswer']:.1f} us/answer")
    finally:
        for proc in floors.values():
            stop_process(proc, 10.0)
        gw.stop()
    print(f"keep-alive GET /healthz on one connection, compiled client, {args.reps} x {args.seconds:g} s alternating "
          f"(median [min-max] of the runs)")
    print(f"{'server':14} {'req/s':>22} {'p50 ms':>8} {'p99 ms':>8} {'server CPU us/answer':>22} "
          f"{'client CPU us':>14}")
    for name, runs in results.items():
        rate = summarize([r["perS"] for r in runs])
        cpu = summarize([r["serverCpuUsPerAnswer"] for r in runs])
        print(f"{name:14} {rate['p50']:>8.0f} [{rate['min']:.0f}-{rate['max']:.0f}] "
              f"{summarize([r['latency']['p50'] for r in runs])['p50']:>8.3f} "
              f"{summarize([r['latency']['p99'] for r in runs])['p50']:>8.3f} "
              f"{cpu['p50']:>10.1f} [{cpu['min']:.1f}-{cpu['max']:.1f}] "
              f"{summarize([r['clientCpuUsPerAnswer'] for r in runs])['p50']:>14.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
