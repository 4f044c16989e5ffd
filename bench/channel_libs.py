"""What a channel client library costs each forked worker: imported in the fork server (shared) or after the fork
(private), against the worker on the shared aiohttp alone.

Run: .venv/bin/python bench/channel_libs.py [--workers 4]

A parent imports what our fork server preloads (zmq, uvloop, orjson, sqlite3, logging) plus aiohttp, optionally
the library, freezes the GC, and forks `--workers` children; each imports the library (when not preloaded), builds
a client and an aiohttp session, then idles; the children's PSS and USS (median) are printed. Candidates that are
not installed are skipped: matrix-nio comes with the test extra; `pip install mautrix slack-sdk` for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import statistics
import subprocess
import sys
import time

CANDIDATES = {"(aiohttp only)": [], "matrix-nio": ["nio"], "mautrix": ["mautrix.client"],
              "slack-sdk": ["slack_sdk.web.async_client", "slack_sdk.socket_mode.aiohttp"]}


async def build_clients(mods: list[str]) -> None:
    import aiohttp

    if "nio" in mods:
        import nio

        await nio.AsyncClient("http://127.0.0.1:9", "@bot:localhost").close()
    if "mautrix.client" in mods:
        from mautrix.api import HTTPAPI
        from mautrix.client import ClientAPI

        ClientAPI(api=HTTPAPI("http://127.0.0.1:9", token="x"))
    if "slack_sdk.web.async_client" in mods:
        from slack_sdk.web.async_client import AsyncWebClient

        AsyncWebClient(token="x", base_url="http://127.0.0.1:9/api/")
    async with aiohttp.ClientSession():
        await asyncio.sleep(0.5)


def measure(mods: list[str], preload: bool, workers: int) -> tuple[float, float]:
    """(median PSS, median USS) in MB of the forked children."""
    import psutil

    for m in ["zmq", "uvloop", "orjson", "sqlite3", "logging", "aiohttp", *(mods if preload else [])]:
        importlib.import_module(m)
    gc.collect()
    gc.freeze()
    r, w = os.pipe()
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            for m in mods:
                importlib.import_module(m)
            asyncio.run(build_clients(mods))
            os.write(w, b"x")
            time.sleep(60)
            os._exit(0)
        pids.append(pid)
    os.close(w)
    for _ in pids:
        os.read(r, 1)
    infos = [psutil.Process(p).memory_full_info() for p in pids]
    for p in pids:
        os.kill(p, 9)
        os.waitpid(p, 0)
    return statistics.median(i.pss for i in infos) / 2**20, statistics.median(i.uss for i in infos) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        pss, uss = measure(CANDIDATES[args.one[0]], args.one[1] == "preloaded", args.workers)
        print(f"{pss:.1f} {uss:.1f}")
        return
    print(f"{'client':<16} {'imported':<12} {'worker PSS':>10} {'worker USS':>10}")
    for name, mods in CANDIDATES.items():
        try:
            for m in mods:
                importlib.import_module(m.split(".")[0])
        except ImportError:
            print(f"{name:<16} not installed")
            continue
        for where in ("after fork", "preloaded") if mods else ("after fork",):
            out = subprocess.run([sys.executable, __file__, "--workers", str(args.workers), "--one", name,
                                  "preloaded" if where == "preloaded" else "child"],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"{name:<16} {where:<12} {float(out[0]):8.1f} MB {float(out[1]):8.1f} MB")


if __name__ == "__main__":
    main()
