"""Scheduler bench: how late the scheduler worker fires, and what it costs while 1000 jobs wait.

Run: .venv/bin/python bench/scheduler.py [--firings 500] [--jobs 10] [--every-ms 1000] [--idle-jobs 1000]
     [--peers ours,apscheduler] [--refs REF,...]

openclaw-sup runs as a real gateway (`openclaw-sup gateway`, `cron.enabled: true`, heartbeats off); the bench
drives it over the WebSocket as a client would (`cron.add`, `cron.update`, `cron.runs`, `cron` events).

1. Lateness: `--jobs` `every` jobs of `--every-ms`, their `anchorMs` staggered evenly across the interval, each
   running the command `date +%s%N`, until `--firings` runs have finished. Per firing, three clock pairs, all
   wall clock (CLOCK_REALTIME) on the same machine:
   - scheduler: the run record's `dueAtMs` (the slot) -> `runAtMs` (the worker's stamp as it begins the run),
     both whole ms as the store keeps them: the figure judged against the target;
   - process: `dueAtMs` -> the `date` child's own clock (ns) in the run's `summary`: due -> the job's process
     running, fork/exec included;
   - client: `dueAtMs` -> the `cron` `started` event read by the bench's WebSocket client.
2. Idle: `--idle-jobs` jobs due far ahead (half `cron` daily 12 h from now, half `every` 1 h), then the worker
   pid's CPU over `--idle-s` in windows of `--window-s` (on-CPU ns of all its threads from
   /proc/<pid>/task/*/schedstat; psutil's tick-based cpu_times over the whole span as a cross-check), as % of
   one core; the same with no job first; the worker's RSS/PSS/USS with 0 and with 1000 jobs.
3. Peer: APScheduler 3.11 (AsyncIOScheduler + SQLAlchemy SQLite job store, the closest durable in-process
   Python peer; no cron/atd/fcron is installed here and systemd-run needs systemd as PID 1), measured the same
   way by bench/sched_peer_aps.py in its own venv.

With `--refs`, each git ref's build (a regular install, bench/bench_managers.py) is measured after ours in the same
run and the same way, as `ours@<ref>`: a change beside the builds before it.

It prints the spread of each measure and writes every raw number to bench/results/scheduler-<date>.json and the
report to bench/results/scheduler-run.txt. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import uvloop
from bench_common import MB, add_output_args, chosen, log, print_problems, publish, summarize
from bench_managers import PEER_PACKAGES, Unavailable, bytecode_env, ensure_install, ensure_peer
from gw_client import TOKEN
from gw_report import fmt, print_table, spread, wait_quiet
from gw_servers import Ours, make_root, remove

from openclaw_sup.gateway.client import GatewayClient, GatewayError
from openclaw_sup.ipc.control import ControlError, call

PEERS = ("ours", "apscheduler")
TARGET_P99_MS = 50.0
TARGET_IDLE_CPU_PCT = 0.5
APS_REQUIREMENT = "APScheduler[sqlalchemy]==3.11.3"
PEER_SCRIPT = Path(__file__).resolve().parent / "sched_peer_aps.py"
PAGE = 200  # cron.runs page size (the method's maximum limit)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="scheduler worker: firing lateness and idle cost with 1000 jobs")
    p.add_argument("--firings", type=int, default=500, help="firings measured for lateness (default 500)")
    p.add_argument("--jobs", type=int, default=10, help="every-jobs firing, staggered across the interval")
    p.add_argument("--every-ms", type=int, default=1000, help="each job's interval (default 1000 ms)")
    p.add_argument("--idle-jobs", type=int, default=1000, help="jobs held idle for the CPU measure")
    p.add_argument("--loaded-firings", type=int, default=500,
                   help="firings measured again with the idle jobs in place (0 skips)")
    p.add_argument("--idle-s", type=float, default=30.0, help="seconds of CPU sampling with the idle jobs")
    p.add_argument("--baseline-s", type=float, default=10.0, help="seconds of CPU sampling with no job")
    p.add_argument("--window-s", type=float, default=5.0, help="CPU sampling window")
    p.add_argument("--settle", type=float, default=5.0, help="idle seconds after adding jobs, before sampling")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list from {','.join(PEERS)}")
    p.add_argument("--refs", default="", help="git refs whose builds are measured after ours, the same way (e.g. a "
                                              "commit before a change, main): a regular install of each")
    add_output_args(p, "scheduler", "keep the temp dir (config, log, store)")
    args = p.parse_args(argv)
    args.peer_list = chosen(p, args.peers, PEERS)
    if args.firings < 1 or args.jobs < 1 or args.idle_jobs < 0 or args.loaded_firings < 0:
        p.error("--firings and --jobs must be at least 1, --idle-jobs at least 0")
    if args.every_ms < 10 * args.jobs:
        p.error("--every-ms must leave at least 10 ms between two jobs' slots (every-ms >= 10 x jobs)")
    if args.window_s <= 0 or args.idle_s < args.window_s:
        p.error("--window-s must be positive and --idle-s at least one window")
    return args


def now_ms() -> int:
    return int(time.time() * 1000)


# ==================================================================================== CPU sampling


def oncpu_ns(pid: int) -> int:
    """On-CPU time of every thread of `pid` in ns (schedstat field 1): precise where psutil has 10 ms ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def psutil_cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def sample_cpu(pid: int, seconds: float, window: float, others: dict[str, int] | None = None) -> dict[str, Any]:
    """% of one core used by `pid` per window (schedstat), and over the whole span (psutil, cross-check)."""
    proc = psutil.Process(pid)
    others = others or {}
    ctx0 = proc.num_ctx_switches()
    ps0 = psutil_cpu_s(pid)
    other0 = {k: oncpu_ns(p) for k, p in others.items()}
    t_start = time.monotonic()
    windows: list[float] = []
    n = max(1, int(seconds // window))
    prev_ns, prev_t = oncpu_ns(pid), time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t_start + (i + 1) * window - time.monotonic()))
        ns, t = oncpu_ns(pid), time.monotonic()
        windows.append((ns - prev_ns) / 1e9 / (t - prev_t) * 100)
        prev_ns, prev_t = ns, t
    span = time.monotonic() - t_start
    ctx1 = proc.num_ctx_switches()
    other_pct = {k: (oncpu_ns(p) - other0[k]) / 1e9 / span * 100 for k, p in others.items()}
    return {
        "windowS": window,
        "windowsPct": windows,
        "spanS": span,
        "psutilSpanPct": (psutil_cpu_s(pid) - ps0) / span * 100,
        "wakeupsPerS": (ctx1.voluntary - ctx0.voluntary) / span,
        "involuntaryPerS": (ctx1.involuntary - ctx0.involuntary) / span,
        "othersPct": other_pct,
        "machineLoadavg": os.getloadavg(),
    }


def memory(pid: int) -> dict[str, int]:
    mi = psutil.Process(pid).memory_full_info()
    return {"rss": mi.rss, "pss": mi.pss, "uss": mi.uss}


# ==================================================================================== openclaw-sup


class OursCron(Ours):
    """Our gateway with cron on and heartbeats off: the stock workers, the scheduler among them."""

    def prepare(self) -> None:
        super().prepare()
        cfg = json.loads((self.state / "openclaw.json").read_text())
        cfg["cron"] = {"enabled": True}
        cfg["agents"] = {"defaults": {"heartbeat": {"every": "0m"}}}
        (self.state / "openclaw.json").write_text(json.dumps(cfg))

    @property
    def control(self) -> Path:
        return self.state / "run" / "ctl.sock"

    def worker_pid(self, name: str, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(ControlError, OSError):
                rows = call(self.control, "status", timeout=5)["workers"]
                assert isinstance(rows, list)
                last = {w["name"]: w.get("state") for w in rows}
                for w in rows:
                    if w["name"] == name and w.get("state") == "running":
                        return int(w["pid"])
            time.sleep(0.1)
        raise Unavailable(f"worker {name} not running within {timeout:g}s (workers {last}); log: {self.log_tail()}")


def fetch_runs(c: GatewayClient, job_ids: set[str]) -> list[dict[str, Any]]:
    """Every finished run of these jobs, through `cron.runs` pages (scope all, oldest first)."""
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = c.request("cron.runs", {"scope": "all", "limit": PAGE, "offset": offset, "sortDir": "asc"})
        out += [e for e in page["entries"] if e.get("jobId") in job_ids]
        if not page.get("hasMore"):
            return out
        offset = page["nextOffset"]


def lateness_ours(gw: OursCron, c: GatewayClient, pid: int, args: argparse.Namespace, want_firings: int,
                  tag: str) -> dict[str, Any]:
    """`--jobs` staggered every-jobs until `want_firings` runs finished; the three clock pairs per firing."""
    every, n_jobs = args.every_ms, args.jobs
    base = (now_ms() // 1000 + 2) * 1000
    ids: list[str] = []
    for i in range(n_jobs):
        job = c.request("cron.add", {
            "name": f"bench-late-{i}", "schedule": {"kind": "every", "everyMs": every,
                                                    "anchorMs": base + i * every // n_jobs},
            "payload": {"kind": "command", "argv": ["date", "+%s%N"]}})
        ids.append(job["id"])
    want = set(ids)
    log(f"ours{tag}: {n_jobs} jobs every {every} ms, first due in {(base - now_ms()) / 1000:.1f}s; "
        f"waiting for {want_firings} firings (~{want_firings * every / n_jobs / 1000:.0f}s)")
    received: dict[str, float] = {}
    finished = 0
    t_first = time.monotonic()
    cpu0 = psutil.cpu_times()
    worker0 = oncpu_ns(pid)
    deadline = time.monotonic() + want_firings * every / n_jobs / 1000 * 3 + 30
    while finished < want_firings:
        if time.monotonic() > deadline:
            gw.problems.append(f"ours{tag}: only {finished} of {want_firings} firings finished in time")
            break
        try:
            ev = c.next_event("cron", timeout=max(1.0, every / 1000 * 2))
        except TimeoutError:
            continue
        t = time.time() * 1000
        p = ev.get("payload") or {}
        if p.get("jobId") not in want:
            continue
        if p.get("action") == "started":
            received[p["runId"]] = t
        elif p.get("action") == "finished":
            finished += 1
            if finished % 100 == 0:
                log(f"ours{tag}: {finished}/{want_firings} firings")
    busy = _busy_pct(cpu0, psutil.cpu_times())
    span = time.monotonic() - t_first
    worker_pct = (oncpu_ns(pid) - worker0) / 1e9 / span * 100
    for job_id in ids:
        c.request("cron.update", {"id": job_id, "patch": {"enabled": False}})
    time.sleep(every / 1000 + 0.5)  # a run begun just before the disable finishes
    runs = fetch_runs(c, want)
    for job_id in ids:
        c.request("cron.remove", {"id": job_id})
    due = sorted((r for r in runs if r.get("trigger") == "due" and r.get("dueAtMs") is not None),
                 key=lambda r: (r["dueAtMs"], r["runAtMs"]))[: want_firings]
    firings = []
    for r in due:
        f = {"jobId": r["jobId"], "runId": r["runId"], "dueAtMs": r["dueAtMs"], "runAtMs": r["runAtMs"],
             "status": r["status"], "durationMs": r.get("durationMs"), "schedulerMs": r["runAtMs"] - r["dueAtMs"]}
        with contextlib.suppress(TypeError, ValueError):
            f["processMs"] = int(str(r.get("summary")).strip()) / 1e6 - r["dueAtMs"]
        if r["runId"] in received:
            f["clientMs"] = received[r["runId"]] - r["dueAtMs"]
        firings.append(f)
    bad = [f for f in firings if f["status"] != "ok"]
    if bad:
        gw.problems.append(f"ours{tag}: {len(bad)} firing(s) not ok, e.g. {bad[0]}")
    if len(firings) < want_firings:
        gw.problems.append(f"ours{tag}: {len(firings)} due firings in the store, {want_firings} wanted")
    per_job = {j: sum(1 for f in firings if f["jobId"] == j) for j in ids}
    return {"jobs": n_jobs, "everyMs": every, "spanS": span, "machineBusyPct": busy, "workerCpuPct": worker_pct,
            "firings": firings,
            "perJob": per_job, "otherRuns": len(runs) - len(due)}


def _busy_pct(a: Any, b: Any) -> float:
    idle = (b.idle + getattr(b, "iowait", 0)) - (a.idle + getattr(a, "iowait", 0))
    total = sum(b) - sum(a)
    return 100 * (1 - idle / total) if total > 0 else float("nan")


def far_jobs(n: int) -> list[dict[str, Any]]:
    """Half a cron job once a day 12 h from now, half every hour: none falls due during the bench."""
    hour = (dt.datetime.now().hour + 12) % 24
    out = []
    for i in range(n):
        sched: dict[str, Any] = ({"kind": "cron", "expr": f"{i % 60} {hour} * * *", "tz": "Europe/Paris"}
                                 if i % 2 == 0 else {"kind": "every", "everyMs": 3_600_000})
        out.append({"name": f"bench-idle-{i}", "schedule": sched, "payload": {"kind": "command", "argv": ["true"]}})
    return out


def baseline_ours(gw: OursCron, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """CPU and memory of the worker fresh from its start, no job ever added."""
    res: dict[str, Any] = {}
    time.sleep(args.settle)
    res["memoryNoJobs"] = memory(pid)
    if args.baseline_s > 0:
        log(f"ours: worker CPU with no job, {args.baseline_s:g}s")
        res["cpuNoJobs"] = sample_cpu(pid, args.baseline_s, args.window_s, {"supervisor": gw.pid})
    return res


def idle_ours(gw: OursCron, c: GatewayClient, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """CPU and memory of the worker with `--idle-jobs` jobs due far ahead."""
    res: dict[str, Any] = {"jobs": args.idle_jobs}
    sup = {"supervisor": gw.pid}
    log(f"ours: adding {args.idle_jobs} idle jobs")
    add_ms = []
    for spec in far_jobs(args.idle_jobs):
        t = time.perf_counter()
        c.request("cron.add", spec)
        add_ms.append((time.perf_counter() - t) * 1000)
    res["addMs"] = add_ms
    st = c.request("cron.status", {})
    res["status"] = st
    if st.get("jobs") != args.idle_jobs:
        gw.problems.append(f"ours: cron.status says {st.get('jobs')} jobs after adding {args.idle_jobs}")
    nxt = st.get("nextWakeAtMs")
    if args.idle_jobs and (not nxt or nxt - now_ms() < (args.settle + args.idle_s + 60) * 1000):
        gw.problems.append(f"ours: next wake {nxt} falls inside the idle measure")
    time.sleep(args.settle)
    log(f"ours: worker CPU with {args.idle_jobs} jobs, {args.idle_s:g}s")
    res["cpu"] = sample_cpu(pid, args.idle_s, args.window_s, sup)
    res["memory"] = memory(pid)
    with contextlib.suppress(OSError):
        db = gw.state / "state"
        # the scheduler's rows live in upstream's shared state database (beside other stores' rows) and its side file
        res["storeBytes"] = sum(p.stat().st_size for pattern in ("openclaw.sqlite*", "openclaw-sup-scheduler.sqlite*")
                                for p in db.glob(pattern))
    return res


def run_ours(args: argparse.Namespace, ref: str | None = None) -> dict[str, Any]:
    """This tree's gateway, or (`ref`) a regular install of that git ref's build."""
    root = make_root("ocsb-sched-")
    res: dict[str, Any] = {"title": f"openclaw-sup {ref} scheduler worker" if ref else "openclaw-sup scheduler worker"}
    try:
        gw = OursCron(root, bytecode_env(args.cache / "pycache"), ensure_install(args.cache, ref) if ref else None)
    except Unavailable as exc:
        res["skipped"] = str(exc)
        return res
    try:
        res["quietBusyPct"] = wait_quiet()
        res["loadavg"] = os.getloadavg()
        gw.start()
        uvloop.run(gw.wait_ready())
        pid = gw.worker_pid("scheduler")
        res["workerPid"] = pid
        c = GatewayClient(gw.url, token=TOKEN, timeout=30)
        c.connect()
        log(f"ours: gateway up, scheduler pid {pid}")
        base = baseline_ours(gw, pid, args)
        res["lateness"] = lateness_ours(gw, c, pid, args, args.firings, "")
        res["loadavgIdle"] = os.getloadavg()
        res["idle"] = {**base, **idle_ours(gw, c, pid, args)}
        if args.loaded_firings > 0:
            res["loadavgLoaded"] = os.getloadavg()
            tag = f" (+{args.idle_jobs} idle jobs)"
            res["latenessLoaded"] = lateness_ours(gw, c, pid, args, args.loaded_firings, tag)
        c.close()
        if gw.worker_pid("scheduler") != pid:
            gw.problems.append("ours: the scheduler worker was replaced during the bench")
        res["stopMs"] = gw.stop()
    except (Unavailable, GatewayError, OSError, ControlError) as exc:
        res["skipped"] = f"{type(exc).__name__}: {exc}"
        log(f"ours: skipped: {res['skipped']}")
    finally:
        with contextlib.suppress(Exception):
            gw.stop()
        res["logWarnings"] = gw.log_problems()
        remove(root, args.keep_tmp)
    res["problems"] = gw.problems
    return res


# ==================================================================================== APScheduler


def run_aps(args: argparse.Namespace) -> dict[str, Any]:
    """The peer script in APScheduler's venv: lateness, then idle jobs held while the bench samples its CPU."""
    res: dict[str, Any] = {"title": "APScheduler 3.11.3 (AsyncIOScheduler, SQLAlchemy SQLite job store)",
                           "problems": []}
    PEER_PACKAGES.setdefault("apscheduler", (APS_REQUIREMENT, "python"))
    try:
        bindir = ensure_peer(args.cache, "apscheduler")
    except Unavailable as exc:
        res["skipped"] = str(exc)
        return res
    root = make_root("ocsb-sched-aps-")
    env = bytecode_env(args.cache / "pycache")
    try:
        res["quietBusyPct"] = wait_quiet()
        res["loadavg"] = os.getloadavg()
        out = root / "late.json"
        log(f"apscheduler: {args.jobs} jobs every {args.every_ms} ms, {args.firings} firings")
        r = subprocess.run([str(bindir / "python"), str(PEER_SCRIPT), "lateness", "--db", str(root / "late.sqlite"),
                            "--jobs", str(args.jobs), "--every-ms", str(args.every_ms), "--firings",
                            str(args.firings), "--out", str(out)], env=env, capture_output=True, text=True,
                           timeout=args.firings * args.every_ms / args.jobs / 1000 * 3 + 60)
        if r.returncode:
            raise Unavailable(f"peer lateness exited {r.returncode}: {r.stderr.strip()[-300:]}")
        res["lateness"] = json.loads(out.read_text())
        res["loadavgIdle"] = os.getloadavg()
        res["idle"] = idle_aps(bindir, root, env, args)
    except (Unavailable, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        res["skipped"] = f"{type(exc).__name__}: {exc}"
        log(f"apscheduler: skipped: {res['skipped']}")
    finally:
        remove(root, args.keep_tmp)
    return res


def idle_aps(bindir: Path, root: Path, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    hold = args.settle * 2 + args.baseline_s + args.idle_s + 30
    res: dict[str, Any] = {"jobs": args.idle_jobs}
    proc = subprocess.Popen([str(bindir / "python"), str(PEER_SCRIPT), "idle", "--db", str(root / "idle.sqlite"),
                             "--jobs", str(args.idle_jobs), "--hold", str(hold)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "empty": scheduler started, no job yet
        if not line.startswith("empty"):
            raise Unavailable(f"peer idle did not start: {line!r} {proc.stderr.read()[-300:] if proc.stderr else ''}")
        time.sleep(args.settle)
        res["memoryNoJobs"] = memory(proc.pid)
        if args.baseline_s > 0:
            log(f"apscheduler: CPU with no job, {args.baseline_s:g}s")
            res["cpuNoJobs"] = sample_cpu(proc.pid, args.baseline_s, args.window_s)
        proc.send_signal(10)  # SIGUSR1: add the jobs now
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise Unavailable(f"peer idle did not add its jobs: {line!r}")
        res["addS"] = float(line.split()[1])
        time.sleep(args.settle)
        log(f"apscheduler: CPU with {args.idle_jobs} jobs, {args.idle_s:g}s")
        res["cpu"] = sample_cpu(proc.pid, args.idle_s, args.window_s)
        res["memory"] = memory(proc.pid)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return res


# ==================================================================================== report


def _cpu_cells(cpu: dict[str, Any] | None) -> list[str]:
    if not cpu:
        return ["-"] * 6
    w = cpu["windowsPct"]
    return [fmt(statistics.median(w), 3), fmt(min(w), 3), fmt(max(w), 3), str(len(w)),
            fmt(cpu["psutilSpanPct"], 3), fmt(cpu["wakeupsPerS"], 1)]


def _runs(results: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None, str]]:
    """(label, lateness data or None, why skipped) for every lateness run, in the order they ran."""
    out: list[tuple[str, dict[str, Any] | None, str]] = []
    for key, r in results.items():
        name = "ours" if key == "ours" else key
        out.append((name, r.get("lateness"), r.get("skipped", "no data")))
        if key.startswith("ours") and "latenessLoaded" in r:
            out.append((f"{key} +{r['idle']['jobs']} idle jobs", r["latenessLoaded"], ""))
    return out


def report(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    for r in results.values():
        if "loadavg" in r:
            print(f"{r['title']}: 1-min load average at start {r['loadavg'][0]:.2f} (5-min {r['loadavg'][1]:.2f}), "
                  f"machine CPU {fmt(r.get('quietBusyPct'))} % busy over the second before")
    ours = results.get("ours", {})
    late = ours.get("lateness")
    rows = []
    pairs = (("schedulerMs", "scheduler"), ("processMs", "process"), ("clientMs", "client"))
    for name, lt, why in _runs(results):
        if not lt:
            rows.append([name, f"skipped ({why[:200]})"])
            continue
        for field, label in pairs:
            vals = [f[field] for f in lt["firings"] if field in f]
            if vals:
                rows.append([f"{name}: {label}", *spread(vals)])
    print_table(f"firing lateness, due -> started (ms), {args.jobs} jobs every {args.every_ms} ms staggered",
                ["run: clock pair", "p50", "p90", "p99", "min", "max", "n"], rows)
    print("   clock pairs (all CLOCK_REALTIME, same machine):\n"
          "   - scheduler = the run record's dueAtMs (the slot) -> runAtMs (the worker's stamp as it begins the run);"
          " whole ms\n     as the store keeps them, runAtMs truncated, so it may read up to 1 ms low; judged against "
          "the target\n"
          "   - process = dueAtMs -> the `date +%s%N` child's own clock (fork/exec included)\n"
          "   - client = dueAtMs -> the `cron` started event read by the bench's WebSocket client\n"
          "   - APScheduler: scheduler = the interval slot -> the job coroutine's first line; process as ours")
    for name, lt, _ in _runs(results):
        if not lt:
            continue
        fs = lt["firings"]
        chunks = [[f["schedulerMs"] for f in fs[i: i + 100]] for i in range(0, len(fs), 100)]
        per = "; ".join(f"{fmt(summarize(ch)['p50'], 0)}/{fmt(summarize(ch)['p99'], 0)}/{fmt(max(ch), 0)}"
                        for ch in chunks)
        dur = [f["durationMs"] for f in fs if f.get("durationMs") is not None]
        jobs = lt["perJob"].values()
        print(f"   {name}: {len(fs)} firings in {lt['spanS']:.1f}s; per job {min(jobs)}-{max(jobs)}"
              + (f"; run duration p50 {fmt(summarize(dur)['p50'])} ms" if dur else ""))
        if "machineBusyPct" in lt:
            print(f"      meanwhile the scheduler worker used {fmt(lt['workerCpuPct'])} % of a core, the machine was "
                  f"{fmt(lt['machineBusyPct'])} % busy")
        print(f"      scheduler pair per 100 firings in order (p50/p99/max): {per}")

    rows = []
    for key, r in results.items():
        idle = r.get("idle")
        if not idle:
            rows.append([r["title"], f"skipped ({r.get('skipped', 'no data')[:200]})"])
            continue
        name = "ours" if key == "ours" else key
        rows.append([f"{name}, no job", *_cpu_cells(idle.get("cpuNoJobs"))])
        rows.append([f"{name}, {idle['jobs']} jobs", *_cpu_cells(idle.get("cpu"))])
    print_table(f"idle CPU of the scheduler process (% of one core; windows of {args.window_s:g}s, on-CPU ns of all "
                "threads from schedstat)", ["process", "median", "min", "max", "windows", "psutil span", "wakeups/s"],
                rows)
    print("   psutil span = psutil cpu_times over the whole span (10 ms ticks: a cross-check only); wakeups/s = "
          "voluntary context\n   switches of the main thread; ours has about 1/s from the worker runtime's "
          "liveness heartbeat to the supervisor.")
    sup = ((ours.get("idle") or {}).get("cpu") or {}).get("othersPct", {}).get("supervisor")
    if sup is not None:
        print(f"   our supervisor process over the same {args.idle_s:g}s: {sup:.3f} % of a core")

    rows = []
    for key, r in results.items():
        idle = r.get("idle")
        if not idle or "memory" not in idle:
            continue
        name = "ours" if key == "ours" else key
        for label, m in (("no job", idle.get("memoryNoJobs")), (f"{idle['jobs']} jobs", idle["memory"])):
            if m:
                rows.append([f"{name}, {label}", fmt(m["rss"] / MB), fmt(m["pss"] / MB), fmt(m["uss"] / MB)])
    print_table("memory of the scheduler process (MB)", ["process", "RSS", "PSS", "USS"], rows)
    oi = ours.get("idle") or {}
    if oi.get("addMs"):
        s = summarize(oi["addMs"])
        print(f"   ours: cron.add over the WebSocket while adding the {oi['jobs']} jobs: p50 {s['p50']:.2f} ms, "
              f"p99 {s['p99']:.2f} ms, max {s['max']:.1f} ms; store {oi.get('storeBytes', 0) / MB:.1f} MB on disk")
    ai = (results.get("apscheduler") or {}).get("idle") or {}
    if ai.get("addS") is not None:
        print(f"   apscheduler: add_job x {ai['jobs']} in-process took {ai['addS']:.2f}s")
    if "apscheduler" not in results:
        print("\n   no peer measured: --peers did not include apscheduler (no cron, atd or fcron is installed "
              "here, and systemd-run timers need systemd as PID 1)")

    verdicts: dict[str, Any] = {}
    checks: list[tuple[str, float | None, float]] = []
    if late:
        checks.append(("lateness p99 < 50 ms", summarize([f["schedulerMs"] for f in late["firings"]])["p99"],
                       TARGET_P99_MS))
    cpu = (oi.get("cpu") or {}).get("windowsPct")
    if cpu:
        checks.append((f"idle CPU, {oi['jobs']} jobs < 0.5 %", statistics.median(cpu), TARGET_IDLE_CPU_PCT))
    print("\n== targets (openclaw-sup)")
    for name, value, limit in checks:
        met = value is not None and value < limit
        print(f"   {name:<28} {fmt(value, 3):>8}   {'met' if met else 'NOT MET'}")
        verdicts[name] = {"value": value, "limit": limit, "met": met}
    problems = [p for r in results.values() for p in r.get("problems", [])]
    problems += [f"ours log: {w}" for w in ours.get("logWarnings", [])]
    print_problems(problems)
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    load = os.getloadavg()
    log(f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; peers {','.join(args.peer_list)}")
    results: dict[str, Any] = {}
    if "ours" in args.peer_list:
        results["ours"] = run_ours(args)
    for ref in (r for r in args.refs.split(",") if r):
        results[f"ours@{ref}"] = run_ours(args, ref)
    if "apscheduler" in args.peer_list:
        results["apscheduler"] = run_aps(args)
    finished = dt.datetime.now(dt.UTC)
    headline = f"load average at start {load[0]:.2f} (1 min) {load[1]:.2f} (5 min)"
    publish("scheduler", args, started, finished, headline, lambda: report(results, args), {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
