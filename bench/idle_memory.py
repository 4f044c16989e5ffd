"""Idle memory of two builds side by side, per process, over alternating starts.

The recovery and gateway benches take one idle sample per build, and the supervisor's own figure moves by up to
2 MB from one start to the next: more than most worker-side changes. This starts each build `--runs` times,
alternating builds, in the two layouts those benches measure (`gateway`: the default gateway, token auth, no
client; `tiny`: manager + 5 idle `tiny` workers, cron and channels off), samples every process of the tree after
`--settle` seconds (PSS and private dirty from smaps_rollup) and prints, per process, the median and [min-max].
`--client-use`: in the `gateway` layout, one client first makes a call that reads the shared state database
(`device.pair.list`, as a paired CLI's connect does), so what a used gateway keeps at idle is measured too.

    .venv/bin/python bench/idle_memory.py --builds tree,base --baseline main --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench_common import SERVING, Listener, tree_memory
from bench_managers import Ours, Unavailable, bytecode_env, ensure_install, tear_down

from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.ipc.control import ControlError

TOKEN = "idle-memory-bench-token-0123456789"
MB = 2**20


class OursGateway(Ours):
    """The default gateway: the built-in workers its config brings (scheduler, agent; the browser on demand)."""

    def __init__(self, report_port: int, base_env: dict[str, str], bindir: Path, title: str) -> None:
        super().__init__(report_port, False, base_env, workers={}, bindir=bindir, title=title)
        (self.state_dir / "openclaw.json").write_text(json.dumps(
            {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}},
             "logging": {"file": str(self.gw_log)}}))
        self.state_dir.joinpath("openclaw.json").chmod(0o600)

    def argv(self) -> list[str]:
        return [str(self.bin), "gateway", "--port", str(self.gateway_port)]

    def env(self, base: Any = None) -> dict[str, str]:
        env = super().env(base)
        for name in ("OPENCLAW_SUP_CONFIG", "OPENCLAW_SKIP_CRON", "OPENCLAW_SKIP_CHANNELS"):
            env.pop(name, None)
        return env


def use_state(port: int) -> None:
    """One client call that reads the shared state database, as a gateway in use gets."""
    client = GatewayClient(f"ws://127.0.0.1:{port}", token=TOKEN, timeout=30)
    client.connect()
    try:
        client.request("device.pair.list")
    finally:
        client.close()


def sample(layout: str, bindir: Path, title: str, settle: float, env: dict[str, str],
           client_use: bool = False) -> dict[str, Any]:
    """Start one build in one layout, wait until every eager worker runs (`client_use`: then make one call), idle
    `settle` s, measure, stop."""
    listener = Listener()
    mgr = (OursGateway(listener.port, env, bindir, title) if layout == "gateway"
           else Ours(listener.port, False, env, bindir=bindir, title=title))
    try:
        mgr.start()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(ControlError, OSError):  # not answering yet
                workers = mgr.snapshot()["workers"]
                if workers and all(w["state"] in SERVING or w.get("onDemand") for w in workers):
                    break
            if time.monotonic() > deadline or not mgr.alive():
                raise Unavailable(f"{title} ({layout}) did not come up: {mgr.tail()[-400:]}")
            time.sleep(0.05)
        if client_use and isinstance(mgr, OursGateway):
            use_state(mgr.gateway_port)
        time.sleep(settle)
        return tree_memory(mgr.pid)
    finally:
        tear_down(mgr, listener)


def role(name: str) -> str:
    return "w0..w4" if name[:1] == "w" and name[1:].isdigit() else name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--builds", default="tree,base", help="comma list from tree,base")
    p.add_argument("--baseline", default="main", help="git ref that `base` installs")
    p.add_argument("--layouts", default="gateway,tiny", help="comma list from gateway,tiny")
    p.add_argument("--runs", type=int, default=3, help="starts of each build in each layout")
    p.add_argument("--settle", type=float, default=7.0, help="idle seconds before the sample")
    p.add_argument("--client-use", action="store_true", help="gateway layout: one state-reading call before idling")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "openclaw-sup-bench")
    p.add_argument("--out", type=Path, help="raw JSON")
    args = p.parse_args()
    builds = [b for b in args.builds.split(",") if b]
    bindirs = {b: ensure_install(args.cache, args.baseline if b == "base" else None) for b in builds}
    titles = {b: "this tree" if b == "tree" else args.baseline for b in builds}
    env = bytecode_env(args.cache / "pycache")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in range(args.runs):
        for layout in args.layouts.split(","):
            for build in builds if run % 2 == 0 else builds[::-1]:
                raw[layout][build].append(sample(layout, bindirs[build], titles[build], args.settle, env,
                                                 args.client_use))
    client = "one state-reading call first (gateway layout)" if args.client_use else "no client"
    print(f"idle memory, {args.runs} alternating starts per build, {args.settle:g}s settle, {client} "
          f"(MiB: PSS median [min-max], private dirty median; `distinct`: the tree's distinct physical pages, each "
          f"counted once, as PSS would count them on a host where the tree is the only program)")
    for layout, per_build in raw.items():
        print(f"\n== {layout}")
        table: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        for build, samples in per_build.items():
            for mem in samples:
                table["tree"][build].append((mem["treePss"] / MB, mem["treeUss"] / MB))
                if mem.get("treeDistinct"):
                    distinct = mem["treeDistinct"]
                    table["distinct (anon)"][build].append(((distinct["anon"] + distinct["file"]) / MB,
                                                            distinct["anon"] / MB))
                by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for proc in mem["detail"]:
                    by_role[role(proc["role"])].append(proc)
                for name, procs in by_role.items():
                    table[name][build].append((statistics.median(pr["pss"] for pr in procs) / MB,
                                               statistics.median(pr.get("Private_Dirty", 0) for pr in procs) / MB))
        print(f"{'process':>18}  " + "  ".join(f"{titles[b]:>32}" for b in builds))
        for name, cols in sorted(table.items(), key=lambda kv: (kv[0] == "distinct (anon)", kv[0] == "tree")):
            cells = []
            for b in builds:
                vals = cols.get(b, [])
                if not vals:
                    cells.append(f"{'-':>32}")
                    continue
                pss = [v[0] for v in vals]
                cells.append(f"{statistics.median(pss):6.2f} [{min(pss):.2f}-{max(pss):.2f}] pd "
                             f"{statistics.median(v[1] for v in vals):5.2f}".rjust(32))
            label = "tree total (pd=USS)" if name == "tree" else name
            print(f"{label:>18}  " + "  ".join(cells))
    if args.out:
        args.out.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
