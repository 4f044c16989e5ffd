"""CPU per health probe on the raw transport, in-process: the gateway's own cost of a keep-alive `GET /healthz`,
this tree beside a baseline build in one run.

Timing a probe over loopback on a shared machine mostly measures the scheduler (bench/gateway.py does that,
with the spread). This bench measures what the server side itself spends: `GatewayServer`'s `PortProtocol`
is fed the same request head over and over on a transport that only counts what is written, under the
process's CPU clock (`time.process_time`), `--n` requests per rep, `--reps` reps. Each build runs in its own
interpreter: the working tree in this venv, `--baseline` installed beside it (bench_managers.ensure_install).

    .venv/bin/python bench/probe_cpu.py                 # this tree beside main
    .venv/bin/python bench/probe_cpu.py --baseline HEAD~3 --n 50000 --reps 9
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REQUESTS = {
    "GET /healthz": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:18789\r\nUser-Agent: probe\r\nAccept: */*\r\n\r\n",
    "HEAD /readyz": b"HEAD /readyz HTTP/1.1\r\nHost: 127.0.0.1:18789\r\nUser-Agent: probe\r\nAccept: */*\r\n\r\n",
}


class CountingTransport:
    """What PortProtocol uses of a transport; writes are only counted."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise AssertionError("a kept-alive probe connection was closed")

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def _measure(n: int, reps: int) -> dict[str, list[float]]:
    from openclaw_sup.gateway.port import PortProtocol
    from openclaw_sup.gateway.server import GatewayServer

    srv = GatewayServer("127.0.0.1", 0, lambda: {"started": True, "workers": {}}, "bench")
    out: dict[str, list[float]] = {}
    for name, head in REQUESTS.items():
        proto, transport = PortProtocol(srv), CountingTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        for _ in range(1000):
            proto.data_received(head)
        out[name] = []
        for _ in range(reps):
            t0 = time.process_time()
            for _ in range(n):
                proto.data_received(head)
            out[name].append((time.process_time() - t0) / n * 1e6)
        proto.connection_lost(None)
    return out


def child(n: int, reps: int) -> None:
    import uvloop

    print(json.dumps(uvloop.run(_measure(n, reps))))


def run_build(python: Path, n: int, reps: int) -> dict[str, list[float]]:
    r = subprocess.run([str(python), __file__, "--child", "--n", str(n), "--reps", str(reps)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode:
        raise SystemExit(f"{python}: exited {r.returncode}: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CPU per raw-transport health probe, this tree beside a baseline")
    p.add_argument("--n", type=int, default=20000, help="requests per rep (default 20000)")
    p.add_argument("--reps", type=int, default=7, help="repetitions (default 7)")
    p.add_argument("--baseline", default="main", help="git ref installed beside this tree (default main)")
    p.add_argument("--cache", type=Path, default=None, help="where the baseline's install lives")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.n, args.reps)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_common import CACHE, summarize
    from bench_managers import ensure_install
    from gw_report import print_table

    base_bin = ensure_install(args.cache or CACHE, args.baseline)
    builds = {"this tree": Path(sys.executable), args.baseline: base_bin / "python"}
    results = {title: run_build(py, args.n, args.reps) for title, py in builds.items()}
    rows = []
    for name in REQUESTS:
        for title, res in results.items():
            s = summarize(res[name])
            rows.append([name, title, f"{s['p50']:.2f}", f"{s['min']:.2f}-{s['max']:.2f}"])
    print_table(f"CPU per probe answered on the raw transport, in-process (us; {args.n} requests x {args.reps} reps)",
                ["request", "build", "us p50", "us range"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
