"""What the Control UI costs the supervisor: nothing while no browser is open, no growth with one left open.

Three gateways side by side in one run, each with its own state dir and port, idle but for what is named:

- `ui-off`     `gateway.controlUi.enabled: false`: the reference
- `ui-idle`    the dashboard served, no browser
- `ui-browser` the dashboard served, Chromium (headless, Playwright) on the Workers view for the whole run:
               subscribed to the once-a-second `workers` push, sparklines, heartbeat ticks

Every `--every` seconds the supervisor's RSS (psutil) and CPU time are sampled; the report prints, per peer,
RSS at the start of the window and at its end, its maximum and a least-squares slope in MB per 10 minutes,
and CPU % over each interval (median and spread). Prints figures; passes or fails nothing.

    .venv/bin/python bench/control_ui.py                 # 10 minutes
    .venv/bin/python bench/control_ui.py --minutes 2 --every 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "openclaw-sup"
TOKEN = "bench-control-ui-token-0123456789"
MB = 1024 * 1024
PEERS = ("ui-off", "ui-idle", "ui-browser")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peer:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root / name
        self.home = self.root / "home"
        (self.home / ".openclaw").mkdir(parents=True)
        self.port = free_port()
        cfg: dict[str, Any] = {"gateway": {"mode": "local", "port": self.port,
                                           "auth": {"mode": "token", "token": TOKEN}},
                               "agents": {"defaults": {"model": "echo/echo"}},
                               "logging": {"file": str(self.root / "gateway.log")}}
        if name == "ui-off":
            cfg["gateway"]["controlUi"] = {"enabled": False}
        (self.home / ".openclaw" / "openclaw.json").write_text(json.dumps(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
        env.update(HOME=str(self.home), OPENCLAW_SKIP_CRON="")
        self.proc = subprocess.Popen([str(BIN), "gateway"], env=env, stdout=(self.root / "out.txt").open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.samples: list[tuple[float, int, float]] = []  # (monotonic, rss, cpu seconds)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name}: the gateway did not listen on {self.port}")

    def sample(self) -> None:
        p = psutil.Process(self.proc.pid)
        t = p.cpu_times()
        self.samples.append((time.monotonic(), p.memory_info().rss, t.user + t.system))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def slope_mb_per_10min(samples: list[tuple[float, int, float]]) -> float:
    xs = [s[0] for s in samples]
    ys = [s[1] / MB for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 600


def report(peers: list[Peer]) -> list[str]:
    lines = [f"{'peer':<11} {'RSS start':>10} {'RSS end':>9} {'RSS max':>9} {'slope MB/10min':>15} "
             f"{'CPU % median':>13} {'CPU % p10-p90':>14} {'samples':>8}"]
    for p in peers:
        s = p.samples
        cpu = sorted(100 * (b[2] - a[2]) / (b[0] - a[0]) for a, b in itertools.pairwise(s))
        p10, p90 = cpu[int(0.1 * (len(cpu) - 1))], cpu[int(0.9 * (len(cpu) - 1))]
        lines.append(f"{p.name:<11} {s[0][1] / MB:>9.1f}M {s[-1][1] / MB:>8.1f}M {max(x[1] for x in s) / MB:>8.1f}M "
                     f"{slope_mb_per_10min(s):>+15.2f} {statistics.median(cpu):>13.2f} "
                     f"{p10:>6.2f}-{p90:<7.2f} {len(s):>8}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the browser stays open (default 10)")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds after the browser opens before sampling")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="bench-control-ui-"))
    peers = [Peer(name, root) for name in PEERS]
    try:
        for p in peers:
            p.wait_ready()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"], headless=True)
            page = browser.new_page()
            watched = peers[2]
            page.goto(f"http://127.0.0.1:{watched.port}/workers#token={TOKEN}")
            page.wait_for_selector("#workers-table tr.worker", timeout=30_000)
            log(f"browser open on {watched.name}'s Workers view; warming up {args.warmup:g}s")
            page.wait_for_timeout(args.warmup * 1000)
            end = time.monotonic() + args.minutes * 60
            while True:
                for p in peers:
                    p.sample()
                if time.monotonic() >= end:
                    break
                page.wait_for_timeout(args.every * 1000)  # keeps Playwright's event loop turning
            rows = page.evaluate("document.querySelectorAll('#workers-table tr.worker').length")
            status = page.inner_text("#connection-status")
            browser.close()
        print(f"Control UI cost, {args.minutes:g} min, a sample every {args.every:g}s "
              f"(browser still '{status}' with {rows} worker rows at the end)")
        for line in report(peers):
            print(line)
    finally:
        for p in peers:
            p.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
