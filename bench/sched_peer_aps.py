"""The scheduler bench's peer: APScheduler 3.11 (AsyncIOScheduler, SQLAlchemy job store on SQLite), run by the
Python of its own venv (bench/scheduler.py installs it), so the bench measures it as it measures ours.

`lateness`: `--jobs` interval jobs of `--every-ms`, start dates staggered evenly across the interval, each a
coroutine that stamps its first line and runs `date +%s%N`, until `--firings` have finished; writes every firing
as JSON to `--out` (wall-clock ms: due, coroutine start, the child's clock).
`idle`: starts the scheduler with no job and prints `empty`; on SIGUSR1 adds `--jobs` jobs due far ahead (half
cron daily 12 h from now in Europe/Paris, half every hour), prints `ready <seconds it took>`, then holds for
`--hold` seconds while the bench samples this process's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

FIRINGS: list[dict[str, Any]] = []
STARTS: dict[int, float] = {}
DONE = asyncio.Event()
STATE: dict[str, Any] = {"every": 1.0, "want": 0}


async def fire(index: int) -> None:
    """One firing: stamp, then the same command ours runs; its due slot is recomputed from the start date."""
    t = time.time()
    start, every = STARTS[index], STATE["every"]
    due = start + int((t - start) // every) * every
    proc = await asyncio.create_subprocess_exec("date", "+%s%N", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    FIRINGS.append({"jobId": str(index), "dueAtMs": due * 1000, "runAtMs": t * 1000,
                    "schedulerMs": (t - due) * 1000, "processMs": int(out.strip()) / 1e6 - due * 1000})
    if len(FIRINGS) >= STATE["want"]:
        DONE.set()


async def nothing() -> None:
    """The idle jobs' callable: never runs during the bench."""


async def lateness(args: argparse.Namespace) -> None:
    sched = AsyncIOScheduler(jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{args.db}")})
    sched.start()
    every = args.every_ms / 1000
    STATE.update(every=every, want=args.firings)
    base = int(time.time()) + 2
    for i in range(args.jobs):
        STARTS[i] = base + i * every / args.jobs
        start = datetime.fromtimestamp(STARTS[i], UTC)
        sched.add_job(fire, IntervalTrigger(seconds=every, start_date=start), args=[i], id=f"late-{i}",
                      max_instances=1, misfire_grace_time=30)
    t0 = time.monotonic()
    await DONE.wait()
    span = time.monotonic() - t0
    sched.shutdown(wait=False)
    firings = sorted(FIRINGS, key=lambda f: f["dueAtMs"])[: args.firings]
    with open(args.out, "w") as fh:
        json.dump({"jobs": args.jobs, "everyMs": args.every_ms, "spanS": span, "firings": firings,
                   "perJob": {str(i): sum(1 for f in firings if f["jobId"] == str(i)) for i in range(args.jobs)}}, fh)


async def idle(args: argparse.Namespace) -> None:
    sched = AsyncIOScheduler(jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{args.db}")})
    sched.start()
    go = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
    print("empty", flush=True)
    await go.wait()
    hour = (datetime.now().hour + 12) % 24
    t = time.monotonic()
    for i in range(args.jobs):
        trigger = (CronTrigger(hour=hour, minute=i % 60, timezone="Europe/Paris") if i % 2 == 0
                   else IntervalTrigger(hours=1))
        sched.add_job(nothing, trigger, id=f"idle-{i}")
    print(f"ready {time.monotonic() - t:.3f}", flush=True)
    await asyncio.sleep(args.hold)
    sched.shutdown(wait=False)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("lateness", "idle"))
    p.add_argument("--db", required=True)
    p.add_argument("--jobs", type=int, default=10)
    p.add_argument("--every-ms", type=int, default=1000)
    p.add_argument("--firings", type=int, default=500)
    p.add_argument("--hold", type=float, default=60.0)
    p.add_argument("--out", default="late.json")
    args = p.parse_args()
    asyncio.run(lateness(args) if args.mode == "lateness" else idle(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
