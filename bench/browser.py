"""Browser bench: `browser.start` -> CDP ready, and a SIGKILLed Chromium -> healthy again, on Debian's chromium.

Run: .venv/bin/python bench/browser.py [--runs N]

One real gateway (temp HOME, loopback port, token auth) with a `browser` section (headless, noSandbox as root).
Each run of "start" stops the profile, then times the `browser.start` RPC as a client sees it (it answers once
CDP passed a websocket round trip) beside the worker's own launch -> CDP-ready figure (`cdpReadyMs`). Each run
of "crash" starts the profile fresh (so the restart backoff begins at its first step, 0.25 s), SIGKILLs the
Chromium leader and polls `browser.status` every 20 ms until a new pid is `running` with `cdpReady`. Medians
and spread go to stdout, raw numbers to bench/results/browser-<date>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import SERVING, add_output_args, log, publish, summarize

from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.ipc.control import ControlError, call

BIN = Path(sys.executable).parent / "openclaw-sup"
TOKEN = "bench-browser-token-0123456789abcdef"
POLL_S = 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="browser.start -> CDP ready, Chromium crash -> healthy again")
    p.add_argument("--runs", type=int, default=10, help="runs of each measure (default 10)")
    add_output_args(p, "browser", "keep the gateway's temp dir (config, logs)", cache=False, txt=False)
    return p.parse_args(argv)


def free_port_block() -> int:
    """A gateway port whose managed CDP port (port + 11) is free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port + 11))
            return port
    raise SystemExit("no free port pair")


class BenchGateway:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.state = self.home / ".openclaw"
        self.state.mkdir(parents=True)
        self.port = free_port_block()
        cfg = {"gateway": {"mode": "local", "port": self.port, "auth": {"mode": "token", "token": TOKEN}},
               "logging": {"file": str(root / "gateway.log")},
               "browser": {"enabled": True, "headless": True, "noSandbox": os.geteuid() == 0}}
        (self.state / "openclaw.json").write_text(json.dumps(cfg))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}, "HOME": str(self.home),
               "OPENCLAW_SKIP_CRON": "1", "OPENCLAW_SKIP_CHANNELS": "1"}
        self.proc = subprocess.Popen([str(BIN), "gateway"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(ControlError, OSError, KeyError):
                snap = call(self.state / "run" / "ctl.sock", "status", timeout=2)
                if snap["supervisor"]["started"] and any(w["name"] == "browser" and w["state"] in SERVING
                                                         for w in snap["workers"]):
                    break
            time.sleep(0.05)
        else:
            self.stop()
            raise SystemExit("the gateway or its browser worker did not start within 30 s")
        self.client = GatewayClient(f"ws://127.0.0.1:{self.port}", token=TOKEN, timeout=60)
        self.client.connect()

    def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.request(method, params or {})

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def measure_start(gw: BenchGateway, runs: int) -> dict[str, list[float]]:
    rpc_ms, ready_ms = [], []
    for i in range(runs):
        gw.rpc("browser.stop")
        t0 = time.perf_counter()
        st = gw.rpc("browser.start")
        rpc_ms.append((time.perf_counter() - t0) * 1000)
        ready_ms.append(float(st["cdpReadyMs"]))
        log(f"start {i + 1}/{runs}: rpc {rpc_ms[-1]:.0f} ms, worker launch -> CDP ready {ready_ms[-1]:.0f} ms")
    return {"start_rpc_ms": rpc_ms, "launch_to_cdp_ready_ms": ready_ms}


def measure_crash(gw: BenchGateway, runs: int) -> dict[str, list[float]]:
    healthy_ms, relaunch_ms = [], []
    for i in range(runs):
        gw.rpc("browser.stop")
        old = gw.rpc("browser.start")
        t0 = time.perf_counter()
        os.kill(old["pid"], signal.SIGKILL)
        deadline = t0 + 60
        while True:
            st = gw.rpc("browser.status")
            if st["state"] == "running" and st["cdpReady"] and st["pid"] not in (None, old["pid"]):
                break
            if time.perf_counter() > deadline:
                raise SystemExit(f"Chromium not healthy 60 s after its SIGKILL: {st}")
            time.sleep(POLL_S)
        healthy_ms.append((time.perf_counter() - t0) * 1000)
        relaunch_ms.append(float(st["cdpReadyMs"]))
        log(f"crash {i + 1}/{runs}: healthy again after {healthy_ms[-1]:.0f} ms (relaunch {relaunch_ms[-1]:.0f} ms)")
    return {"crash_to_healthy_ms": healthy_ms, "relaunch_to_cdp_ready_ms": relaunch_ms}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("chromium") is None:
        raise SystemExit("Debian's chromium is not installed (apt-get install chromium)")
    started = dt.datetime.now(dt.UTC)
    root = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    gw = BenchGateway(root)
    try:
        version = gw.rpc("browser.start")["browserVersion"]
        log(f"gateway on port {gw.port}, {version}, CDP port {gw.port + 11}")
        samples = {**measure_start(gw, args.runs), **measure_crash(gw, args.runs)}
    finally:
        gw.stop()
        if not args.keep_tmp:
            shutil.rmtree(root, ignore_errors=True)
    finished = dt.datetime.now(dt.UTC)
    stats = {name: summarize(values) for name, values in samples.items()}
    labels = {
        "start_rpc_ms": "browser.start RPC (client wall time, CDP ready)",
        "launch_to_cdp_ready_ms": "  of which launch -> CDP websocket answers (worker)",
        "crash_to_healthy_ms": "Chromium SIGKILL -> healthy again (status poll 20 ms)",
        "relaunch_to_cdp_ready_ms": "  of which relaunch -> CDP ready (after the 0.25 s backoff)",
    }

    def render() -> dict[str, Any]:
        print(f"{'measure':<58} {'p50':>8} {'p90':>8} {'min':>8} {'max':>8} {'n':>4}")
        for name, label in labels.items():
            s = stats[name]
            print(f"{label:<58} {s['p50']:8.0f} {s['p90']:8.0f} {s['min']:8.0f} {s['max']:8.0f} {s['n']:4d}")
        print("(milliseconds)")
        return {}

    publish("browser", args, started, finished, f"{version}, headless, {args.runs} runs each", render,
            {"browserVersion": version, "samples": samples, "stats": stats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
