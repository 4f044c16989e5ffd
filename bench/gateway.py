"""Gateway bench: openclaw-sup's gateway port beside the real OpenClaw gateway (2026.9.6, Node 24), one run.

Run: .venv/bin/python bench/gateway.py [--ours-runs 5] [--real-runs 3] [--gateways ours,ours5w,real]
     .venv/bin/python bench/gateway.py --gateways tree,base --baseline lead --rounds 3 --measures probes,cprobes \
         --ours-runs 1 --real-runs 0 --reps 1 --idle-conns-ours 0 --idle-conns 0    # probes only, A/B alternately

For each gateway, on the same machine with the same asyncio client (bench/gw_client.py): spawn -> port
accepts and spawn -> first successful `health`; idle memory and threads of the whole process tree;
handshake latency; sequential and parallel `health`; idle authenticated connections held; `GET /healthz`
keep-alive; the health probes from a Python client thread and from a compiled client in its own process
(bench/probe_client.c, built with gcc at bench time). It prints one table per measure, our targets, and writes
every raw number to bench/results/gateway-<date>.json and the report to bench/results/gateway-run.txt. It never
asserts timings. See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from bench_common import (
    MB,
    PSS_SPLIT_HEADER,
    STARTUP_MILESTONES,
    add_output_args,
    chosen,
    log,
    print_problems,
    process_role,
    pss_split_rows,
    publish,
    summarize,
)
from bench_managers import WORKERS, Unavailable, ensure_install
from gw_client import handshakes, healthz, parallel, sequential
from gw_cprobe import build as build_cprobe
from gw_cprobe import probe_loop as cprobe_loop
from gw_lean import hold_lean, probe_loop, probe_pipelined
from gw_report import fmt, print_table, skipped_row, spread, wait_quiet
from gw_servers import Gateway, Ours, OursWorkers, Real, install_real, make_root, our_env, remove

GATEWAYS = ("ours", "ours5w", "tree", "tree5w", "base", "base5w", "real")
OURS = ("ours", "tree", "base")
TITLES = {"ours": Ours.title, "ours5w": OursWorkers.title, "real": Real.title,
          "tree": "openclaw-sup (this tree, installed)", "tree5w": "openclaw-sup (this tree, installed) + 5 workers",
          "base": "openclaw-sup (baseline, installed)", "base5w": "openclaw-sup (baseline, installed) + 5 workers"}
TARGETS = {"first_rpc_ms": 150.0, "seq_per_s": 5000.0, "seq_p99_ms": 2.0, "idle10k_mb": 200.0, "idle50k_mb": 250.0,
           "idle_pss_mb": 50.0, "probe_per_s": 15_000.0, "probe_p99_ms": 0.5}
PROBES = (("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/readyz"))
MEASURES = ("handshake", "sequential", "parallel", "healthz", "probes", "cprobes", "pipelined", "holds")
FD_MARGIN = 1000  # descriptors a gateway (~100 with its reserve) and the bench need beside the held connections
T = TypeVar("T")



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="openclaw-sup's gateway beside the real OpenClaw gateway")
    p.add_argument("--gateways", default=",".join(GATEWAYS), help=f"comma list from {','.join(GATEWAYS)}")
    p.add_argument("--ours-runs", type=int, default=5, help="cold starts of ours (default 5)")
    p.add_argument("--real-runs", type=int, default=3, help="cold starts of the real gateway (default 3)")
    p.add_argument("--settle", type=float, default=5.0, help="idle seconds before the memory sample")
    p.add_argument("--handshakes", type=int, default=200, help="sequential handshakes (default 200)")
    p.add_argument("--sequential", type=int, default=1000, help="sequential health calls (default 1000)")
    p.add_argument("--par-conns", type=int, default=10, help="parallel connections (default 10)")
    p.add_argument("--par-calls", type=int, default=100, help="health calls per parallel connection (100)")
    p.add_argument("--reps", type=int, default=5, help="repetitions of the sequential and parallel measures (5)")
    p.add_argument("--idle-conns", type=int, default=1000, help="idle connections, every gateway (1000)")
    p.add_argument("--idle-conns-ours", default="10000,50000",
                   help="larger holds for ours, comma list (default 10000,50000); 0 skips")
    p.add_argument("--hold", type=float, default=5.0, help="seconds the idle connections are held")
    p.add_argument("--hold-largest", type=float, default=35.0,
                   help="seconds the largest hold lasts (default 35: it spans a 30 s tick to every connection)")
    p.add_argument("--open-concurrency", type=int, default=200, help="handshakes in flight while opening")
    p.add_argument("--healthz-s", type=float, default=3.0, help="seconds of GET /healthz (aiohttp client)")
    p.add_argument("--probe-s", type=float, default=2.0, help="seconds of each raw-socket probe measure")
    p.add_argument("--probe-reps", type=int, default=7, help="repetitions of each raw-socket probe measure")
    p.add_argument("--pause", type=float, default=1.0, help="idle seconds between measures")
    p.add_argument("--measures", default=",".join(MEASURES),
                   help=f"load measures to run, comma list from {','.join(MEASURES)} (default all; cprobes: the "
                        "compiled probe client)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the gateway list this many times, alternately (tree, base, tree, base...), pooling "
                        "each gateway's reps (default 1)")
    p.add_argument("--baseline", default="main",
                   help="git ref that `base`/`base5w` install (default main); `tree`/`tree5w` install the working tree "
                        "the same way, so the two compare on equal terms in one run")
    add_output_args(p, "gateway", "keep the gateways' temp dirs (configs, logs)")
    args = p.parse_args(argv)
    TITLES["base"] = f"openclaw-sup {args.baseline} (installed)"
    TITLES["base5w"] = f"openclaw-sup {args.baseline} (installed) + 5 workers"
    args.gw_list = chosen(p, args.gateways, GATEWAYS, "gateway")
    args.measure_set = set(chosen(p, args.measures, MEASURES, "measure"))
    try:
        args.big_holds = [int(n) for n in args.idle_conns_ours.split(",") if int(n) > 0]
    except ValueError:
        p.error(f"--idle-conns-ours {args.idle_conns_ours!r}: a comma list of numbers")
    return args


def raise_nofile(need: int) -> dict[str, Any]:
    """The bench's RLIMIT_NOFILE up to `need` (the hard limit too when it is lower and we may raise it, as
    root may); the gateways inherit it, and the report prints what each one had."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
    new_soft, new_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if new_hard != resource.RLIM_INFINITY and new_soft < new_hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_hard, new_hard))
    new_soft, new_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"softBefore": soft, "hardBefore": hard, "hard": new_hard, "soft": new_soft}


# ==================================================================================== one gateway


async def with_cpu(gw: Gateway, coro: Awaitable[T]) -> tuple[T, dict[str, float]]:
    """Run a measure; also the CPU seconds the server tree and this client process spent meanwhile."""
    s0, c0, t0 = gw.cpu_s(), time.process_time(), time.perf_counter()
    value = await coro
    wall = time.perf_counter() - t0
    cpu = {"serverCpuS": gw.cpu_s() - s0, "clientCpuS": time.process_time() - c0, "wallS": wall}
    return value, cpu


async def measure(
    gw: Gateway, args: argparse.Namespace, runs: int, load: bool, holds: list[int], limits: dict[str, Any]
) -> dict[str, Any]:
    """Cold starts, then (on the last instance) idle figures and, if `load`, every load measure."""
    res: dict[str, Any] = {"title": gw.title, "starts": [], "loadavg": os.getloadavg()}
    try:
        for i in range(runs):
            gw.start()
            start = await gw.wait_ready()
            res["starts"].append(start)
            log(
                f"{gw.title}: start {i + 1}/{runs}: port {start['portMs']:.0f} ms, first health "
                f"{start['rpcMs']:.0f} ms ({start['rpcAttempts']} attempt(s))"
            )
            if i < runs - 1:
                start["stopMs"] = gw.stop()
        await asyncio.sleep(args.settle / 2)  # the start-up tail (late imports, warm-up) is not idle load
        cpu0, t0 = gw.cpu_s(), time.monotonic()
        await asyncio.sleep(args.settle / 2)
        idle = gw.stats()
        idle["idleCpuPct"] = 100 * (idle["cpuS"] - cpu0) / (idle["at"] - t0)
        res["idle"] = idle
        log(
            f"{gw.title}: idle tree {idle['treeRss'] / MB:.1f} MB RSS, {idle['procs']} procs, {idle['threads']} threads"
        )
        if load:
            await _load(gw, args, res, holds, limits)
        await asyncio.sleep(args.pause)
        res["stopMs"] = gw.stop()
    except Unavailable as exc:
        res["skipped"] = str(exc)
        log(f"{gw.title}: skipped: {exc}")
    finally:
        with contextlib.suppress(Exception):
            gw.stop()
        if isinstance(gw, Ours):
            gw.problems += [f"{gw.title}: log line {p}" for p in gw.log_problems()[:20]]
        if isinstance(gw, OursWorkers):
            gw.close()
    res["problems"] = gw.problems
    return res


async def _load(
    gw: Gateway, args: argparse.Namespace, res: dict[str, Any], holds: list[int], limits: dict[str, Any]
) -> None:
    pause = args.pause
    want = args.measure_set
    if "handshake" in want:
        await asyncio.sleep(pause)
        times, errors = await handshakes(gw.url, args.handshakes)
        res["handshake"] = {"ms": times, "errors": errors}
        log(f"{gw.title}: handshake p50 {summarize(times)['p50']:.2f} ms ({len(errors)} errors)")
    if "sequential" in want:
        await asyncio.sleep(pause)
        res["sequential"] = {"reps": []}
        for _ in range(args.reps):
            seq, cpu = await with_cpu(gw, sequential(gw.url, args.sequential))
            res["sequential"]["reps"].append({**seq, **cpu})
            log(f"{gw.title}: {args.sequential} sequential health: {seq['perS']:.0f}/s")
            await asyncio.sleep(pause)
    if "parallel" in want:
        res["parallel"] = {"reps": []}
        for _ in range(args.reps):
            par, cpu = await with_cpu(gw, parallel(gw.url, args.par_conns, args.par_calls))
            res["parallel"]["reps"].append({**par, **cpu})
            log(f"{gw.title}: {args.par_conns}x{args.par_calls} parallel health: {par['perS']:.0f}/s")
            await asyncio.sleep(pause)
    if "healthz" in want:
        hz, cpu = await with_cpu(gw, healthz(gw.http, args.healthz_s))
        res["healthz"] = {"reps": [{**hz, **cpu}]}
        log(f"{gw.title}: GET /healthz (aiohttp client) {hz['perS']:.0f}/s")
    if "probes" in want:
        res["probes"] = await _probes(gw, args, "raw client", probe_loop)
    if "cprobes" in want and args.cprobe is not None:
        res["cprobes"] = await _probes(gw, args, "compiled client",
                                       lambda *a: cprobe_loop(args.cprobe, *a))  # type: ignore[no-any-return]
    if "pipelined" in want:
        res["pipelined"] = await asyncio.to_thread(
            probe_pipelined, gw.port, ["/health", "/healthz", "/ready", "/readyz", "/startup", "/startupz"], 200)
        log(f"{gw.title}: pipelined probes: {res['pipelined']['answers']}/{res['pipelined']['asked']} answers, "
            f"problems {res['pipelined']['problems'] or 'none'}")
    if "holds" not in want:
        return
    res["holds"] = {}
    pristine = gw.stats()  # before any hold: closing connections leaves memory the allocator keeps for reuse
    for n in holds:
        await asyncio.sleep(pause)
        server_limit = gw.stats()["nofile"]
        room = min(limits["soft"], server_limit or limits["soft"]) - FD_MARGIN
        hold_n = min(n, room // 1000 * 1000)
        if hold_n < n and (hold_n <= 0 or n <= args.idle_conns or any(m >= hold_n for m in holds if m < n)):
            res["holds"][str(n)] = {
                "skipped": f"RLIMIT_NOFILE too low for {n} connections: bench soft "
                f"{limits['soft']} (hard {limits['hard']}), gateway {server_limit}"
            }
            continue
        conc = min(args.open_concurrency, gw.preauth_cap or args.open_concurrency)
        hold_s = args.hold_largest if n == max(holds) and n > args.idle_conns else args.hold
        hold = await hold_lean(gw.port, hold_n, hold_s, conc, gw.stats, gw.cpu_split)
        hold["healthAfterHold"] = await gw.health_ok()
        if hold_n < n:
            # The fd limit allows fewer: hold what it allows and carry the measured cost per connection to n,
            # counted from the tree before any hold (memory kept from an earlier hold is then part of the cost).
            per_conn = {k: (hold["after"][k] - pristine[k]) / max(1, hold["held"]) for k in ("treeRss", "treePss")}
            hold["extrapolatedTo"] = {"n": n, "limitedBy": f"RLIMIT_NOFILE {limits['soft']} (hard {limits['hard']})",
                                      "perConnBytes": per_conn, **{k: pristine[k] + per_conn[k] * n for k in per_conn}}
        res["holds"][str(n)] = hold
        delta = (hold["after"]["treeRss"] - hold["before"]["treeRss"]) / MB
        log(
            f"{gw.title}: {n} idle connections: {hold['held']} held, +{delta:.1f} MB RSS, "
            f"opened in {hold['openS']:.1f} s, errors {hold['errors'] or 'none'}"
        )
        if not gw.alive():
            raise Unavailable(f"exited during the {n}-connection hold: {gw.log_tail()}")


async def _probes(gw: Gateway, args: argparse.Namespace, label: str,
                  loop: Callable[[int, str, float, str], dict[str, Any]]) -> dict[str, Any]:
    """Each probe of PROBES back to back on one connection, `--probe-reps` times, from `loop` (a client run in
    a thread or its own process). The bench CPU is the client's own when it says it (a process of its own)."""
    out = {}
    for method, path in PROBES:
        reps = []
        for _ in range(args.probe_reps):
            await asyncio.sleep(args.pause)
            pr, cpu = await with_cpu(gw, asyncio.to_thread(loop, gw.port, path, args.probe_s, method))
            reps.append({**pr, **cpu, "clientCpuS": pr.get("clientCpuS", cpu["clientCpuS"])})
        out[f"{method} {path}"] = {"reps": reps}
        log(f"{gw.title}: {method} {path} {label} {summarize([r['perS'] for r in reps])['p50']:.0f}/s "
            f"statuses {reps[-1]['statuses']}")
    return out


def run_one(key: str, args: argparse.Namespace, limits: dict[str, Any]) -> dict[str, Any]:
    """One gateway's whole series, started only once the machine is quiet; its temp dir removed after."""
    busy = wait_quiet()
    log(f"{TITLES[key]}: machine CPU {busy:.0f}% busy before the start")
    res = _run_one(key, args, limits)
    res["cpuBusyBeforePct"] = busy
    return res


def _run_one(key: str, args: argparse.Namespace, limits: dict[str, Any]) -> dict[str, Any]:
    root = make_root(f"ocsb-gw-{key}-")
    try:
        if key == "real":
            try:
                log("real gateway: checking the install (scripts/install-openclaw-cli)")
                gw: Gateway = Real(root, dict(os.environ), install_real())
            except Unavailable as exc:
                return {"title": Real.title, "skipped": str(exc), "problems": []}
            holds = [args.idle_conns] if args.idle_conns > 0 else []
            return uvloop.run(measure(gw, args, args.real_runs, True, holds, limits))
        env = our_env(args.cache)
        try:
            ref = args.baseline if key.startswith("base") else None
            bindir = None if key.startswith("ours") else ensure_install(args.cache, ref)
        except Unavailable as exc:
            return {"title": TITLES[key], "skipped": str(exc), "problems": []}
        if key.endswith("5w"):
            gw5 = OursWorkers(root, env, bindir, TITLES[key])
            return uvloop.run(measure(gw5, args, args.ours_runs, False, [], limits))
        holds = [n for n in (args.idle_conns, *args.big_holds) if n > 0]
        return uvloop.run(measure(Ours(root, env, bindir, TITLES[key]), args, args.ours_runs, True, holds, limits))
    finally:
        remove(root, args.keep_tmp)


# ==================================================================================== report


def _starts(results: dict[str, Any], field: str) -> list[list[str]]:
    rows = []
    for key, r in results.items():
        values = [s[field] for s in r.get("starts", []) if field in s]
        if not values:
            if field == "workersReportedMs" and not key.endswith("5w"):
                continue
            rows.append(skipped_row(TITLES[key], r.get("skipped", "no data")))
            continue
        rows.append([TITLES[key], *spread(values, 0)])
    return rows


def _lat_rows(results: dict[str, Any], section: str, digits: int = 2, rate: bool = True) -> list[list[str]]:
    rows = []
    for key, r in results.items():
        if key.endswith("5w"):
            continue
        m = r.get(section)
        if not m:
            rows.append(skipped_row(TITLES[key], r.get("skipped", "no data")))
            continue
        reps = m.get("reps", [])
        values = m["ms"] if section == "handshake" else [v for rep in reps for v in rep["latencyMs"]]
        row = [TITLES[key], *spread(values, digits)]
        if rate:
            wall = sum(rep["wallS"] for rep in reps)
            rates = summarize([rep["perS"] for rep in reps])
            span = f"{rates['min']:.0f}-{rates['max']:.0f}" if len(reps) > 1 else "-"
            row += [
                fmt(rates["p50"], 0),
                span,
                fmt(100 * sum(rep["serverCpuS"] for rep in reps) / wall, 0),
                fmt(100 * sum(rep["clientCpuS"] for rep in reps) / wall, 0),
            ]
        else:
            row.append(str(len(m["errors"])))
        rows.append(row)
    return rows


def _cpu_pair(hold: dict[str, Any]) -> str:
    """Server tree and bench CPU while the connections were being opened, % of one core."""
    cpu = hold.get("openCpu") or {}
    wall = hold["openS"] or 1.0
    srv = cpu.get("serverCpuS")
    return f"{fmt(100 * srv / wall if srv is not None else None, 0)}/{fmt(100 * cpu.get('clientCpuS', 0) / wall, 0)}"


def _probe_rows(results: dict[str, Any], section: str) -> list[list[str]]:
    rows = []
    for key, r in results.items():
        probes = r.get(section)
        if key.endswith("5w"):
            continue
        if not probes:
            rows.append(skipped_row(TITLES[key], r.get("skipped", "no data")))
            continue
        title = TITLES[key]
        for name, m in probes.items():
            reps = m["reps"]
            lat = [v for rep in reps for v in rep["latencyMs"]]
            wall = sum(rep["wallS"] for rep in reps)
            rates = summarize([rep["perS"] for rep in reps])
            statuses: dict[int, int] = {}
            for rep in reps:
                for st, k in rep["statuses"].items():
                    statuses[int(st)] = statuses.get(int(st), 0) + k
            p99s = summarize([summarize(rep["latencyMs"])["p99"] for rep in reps])
            rows.append([title, name, *spread(lat, 3), f"{p99s['p50']:.3f} [{p99s['min']:.3f}-{p99s['max']:.3f}]",
                         fmt(rates["p50"], 0), f"{rates['min']:.0f}-{rates['max']:.0f}",
                         fmt(100 * sum(rep["serverCpuS"] for rep in reps) / wall, 0),
                         fmt(100 * sum(rep["clientCpuS"] for rep in reps) / wall, 0),
                         ",".join(f"{st}x{k}" for st, k in sorted(statuses.items()))])
            title = ""
    return rows


def _print_timeline(results: dict[str, Any]) -> None:
    """Milestones of our cold starts, from the tree's own stamps (bench/timeline/): median [min-max] ms."""
    ours = {k: r for k, r in results.items() if k != "real" and any("timeline" in s for s in r.get("starts", []))}
    if not ours:
        return
    keys = list(ours)
    extra = [("portMs", "bench", "port accepts a TCP connection"),
             ("rpcMs", "bench", "first successful `health` (fresh connection)"),
             ("workersReportedMs", "bench", "all 5 idle workers reported")]

    def values(r: dict[str, Any], name: str) -> list[float]:
        return [s["timeline"][name] if name in s.get("timeline", {}) else s[name]
                for s in r["starts"] if name in s.get("timeline", {}) or name in s]

    def cpu_ms(r: dict[str, Any], name: str) -> str:
        if name == "rpcMs":  # the supervisor's, and the whole tree's, as the first answer came
            got = [f"{summarize([s[f] for s in r['starts'] if f in s])['p50']:.0f}" for f in ("rootCpuMs", "treeCpuMs")
                   if any(f in s for s in r["starts"])]
            return " / ".join(got) or "-"
        got = [s["timelineCpu"][name] for s in r["starts"] if name in s.get("timelineCpu", {})]
        return f"{summarize(got)['p50']:.0f}" if got else "-"

    rows = []
    for name, who, what in [*STARTUP_MILESTONES, *extra]:
        cells = []
        for k in keys:
            v = summarize(values(ours[k], name))
            cells += ["-" if not v["n"] else f"{v['p50']:.0f} [{v['min']:.0f}-{v['max']:.0f}]", cpu_ms(ours[k], name)]
        if any(c != "-" for c in cells):
            rows.append((summarize(values(ours[keys[0]], name))["p50"], [what, who, *cells]))
    rows.sort(key=lambda r: (r[0] != r[0], r[0]))
    print_table("start-up timeline: ms from spawn to each milestone, median [min-max] over the cold starts; CPU ms "
                "the milestone's process had spent by then, median (first `health`: supervisor / whole tree)",
                ["milestone", "process", *(f"{TITLES[k]}{col}" for k in keys for col in ("", " CPU"))],
                [r for _, r in rows])


def report(results: dict[str, Any], args: argparse.Namespace, limits: dict[str, Any]) -> dict[str, Any]:
    """Print every table side by side, then our targets and the problems seen; return the verdicts."""
    loads = [
        f"{TITLES[k]} {r['cpuBusyBeforePct']:.0f}% (load avg {r['loadavg'][0]:.2f})"
        for k, r in results.items()
        if "loadavg" in r
    ]
    if loads:
        print(
            "machine CPU busy over the second before each gateway started (the bench waits for < 25%; the 1-min "
            "load average still carries the previous gateway's load): " + ", ".join(loads)
        )
    print(
        f"RLIMIT_NOFILE of the bench: soft {limits['softBefore']} -> {limits['soft']} (hard {limits['hardBefore']} -> "
        f"{limits['hard']}), inherited by the gateways"
    )
    cols = ["gateway", "p50", "p90", "p99", "min", "max", "n"]
    print_table("spawn -> port accepts a TCP connection (ms), fresh state each start", cols, _starts(results, "portMs"))
    print_table(
        "spawn -> first successful `health` on a fresh authenticated connection (ms)", cols, _starts(results, "rpcMs")
    )
    rows = _starts(results, "workersReportedMs")
    if rows:
        print_table("spawn -> all 5 idle workers reported (ms)", cols, rows)
    rows = []
    for key, r in results.items():
        m = r.get("idle")
        if not m:
            rows.append(skipped_row(TITLES[key], r.get("skipped", "no data")))
            continue
        rows.append(
            [
                TITLES[key],
                fmt(m["treeRss"] / MB),
                fmt(m["treePss"] / MB),
                fmt(m["treeUss"] / MB),
                fmt(m["managerRss"] / MB),
                str(m["procs"]),
                str(m["threads"]),
                fmt(m["idleCpuPct"], 2),
            ]
        )
    print_table(
        f"idle, whole process tree, after {args.settle:g}s without clients (MB; CPU % of one core over the last "
        f"{args.settle / 2:g}s)",
        ["gateway", "tree RSS", "tree PSS", "tree USS", "main RSS", "procs", "threads", "CPU %"],
        rows,
    )
    for key, r in results.items():
        if r.get("idle"):
            names = [process_role(d["name"]) for d in r["idle"]["detail"]]
            print(f"   {TITLES[key]}: {', '.join(names)}")
    rows = []
    for key, r in results.items():
        if r.get("idle"):
            rows += pss_split_rows(TITLES[key], r["idle"], {w: "w0..w4" for w in WORKERS})
    print_table("idle memory per process (MB; PSS each = median of the processes of that row; priv dirty, shared, "
                "PSS anon/file from smaps_rollup)", PSS_SPLIT_HEADER, rows)
    _print_timeline(results)
    want = args.measure_set
    if "handshake" in want:
        print_table(
            f"handshake: TCP + WS upgrade + challenge + connect -> hello-ok, {args.handshakes} sequential (ms)",
            [*cols, "errors"],
            _lat_rows(results, "handshake", rate=False),
        )
    rcols = [*cols, "req/s p50", "req/s range", "srv CPU%", "bench CPU%"]
    if "sequential" in want:
        print_table(f"{args.sequential} sequential `health` on one connection, x{args.reps} (latency ms, all reps "
                    "pooled; rate per rep)", rcols, _lat_rows(results, "sequential"))
    if "parallel" in want:
        print_table(f"{args.par_conns} connections x {args.par_calls} `health` in parallel, x{args.reps} (latency ms; "
                    "total rate per rep)", rcols, _lat_rows(results, "parallel"))
    if "healthz" in want:
        print_table(f"GET /healthz keep-alive, one connection, aiohttp client, {args.healthz_s:g}s (ms)", rcols,
                    _lat_rows(results, "healthz"))
    reps = args.probe_reps * args.rounds
    for section, client in (("probes", "raw-socket client in a thread"),
                            ("cprobes", "compiled client (bench/probe_client.c) in its own process")):
        if section in args.measure_set:
            print_table(f"health probes keep-alive, one connection, {client}, {args.probe_s:g}s x{reps} (latency ms, "
                        "reps pooled; p99 of each rep: median [min-max])",
                        ["gateway", "request", *rcols[1:7], "rep p99", *rcols[7:], "statuses"],
                        _probe_rows(results, section))
    for key, r in results.items():
        pl = r.get("pipelined")
        if pl:
            print(f"   pipelined ({TITLES[key]}): GET and HEAD of the six probe paths written at once, 200 rounds: "
                  f"{pl['answers']}/{pl['asked']} answers in order, {pl['perS']:,.0f}/s; statuses "
                  f"{pl['statusByRequest']}; problems: {'; '.join(pl['problems']) or 'none'}")
    if "holds" in want:
        _print_holds(results)
    stops = [f"{TITLES[k]} {fmt(r['stopMs'], 0)} ms" for k, r in results.items() if r.get("stopMs") is not None]
    if stops:
        print("\nSIGTERM -> exit (last instance, after the load): " + ", ".join(stops))
    verdicts = _targets(results)
    problems = [p for r in results.values() for p in r.get("problems", [])]
    print_problems(problems)
    return verdicts


def _print_holds(results: dict[str, Any]) -> None:
    rows = []
    for key, r in results.items():
        holds = r.get("holds")
        if key.endswith("5w"):
            continue
        if holds is None:
            rows.append(skipped_row(TITLES[key], r.get("skipped", "no data")))
            continue
        for n, h in holds.items():
            if "skipped" in h:
                rows.append(skipped_row(f"{TITLES[key]} ({n})", h["skipped"]))
                continue
            b, a = h["before"], h["after"]
            errs = sum(h["errors"].values())
            cpu = h.get("holdCpuPct") or {}
            rows.append(
                [
                    TITLES[key],
                    n if h["requested"] == int(n) else f"{n} -> {h['requested']}",
                    str(len(h.get("sources", [])) or 1),
                    str(h["concurrency"]),
                    str(h["opened"]),
                    str(h["held"]),
                    str(errs),
                    str(h["retried503"]),
                    fmt(h["openS"], 2),
                    _cpu_pair(h),
                    fmt(b["treeRss"] / MB),
                    fmt(a["treeRss"] / MB),
                    fmt((a["treeRss"] - b["treeRss"]) / MB),
                    fmt((a["treePss"] - b["treePss"]) / MB),
                    fmt(h.get("holdS"), 0),
                    f"{fmt(cpu.get('supervisor'), 2)}/{fmt(cpu.get('tree'), 2)}",
                    str(h.get("eventsDuringHold", "-")),
                    "yes" if h["healthAfterHold"] else "NO",
                ]
            )
    print_table(
        "idle authenticated connections held; server tree memory (MB)",
        ["gateway", "asked", "src IPs", "in flight", "opened", "held", "errors", "503 retries", "open s",
         "CPU% srv/bench", "RSS before", "RSS held", "RSS delta", "PSS delta", "hold s", "CPU% root/tree held",
         "events held", "health ok"],
        rows,
    )
    print(
        "   in flight: handshakes at once while opening (the real gateway admits 32 pre-auth connections per IP "
        "and answers 503 beyond; refused upgrades are retried). Client: one lean asyncio protocol per connection "
        "(bench/gw_lean.py), from 127.0.0.1.. as many loopback source addresses as 20 000 per address need. "
        "CPU% root/tree held: while held, % of one core, of the root process (our supervisor) and of the whole "
        "tree; events held: frames the clients got meanwhile (a `tick` to each every 30 s)."
    )
    for key, r in results.items():
        for n, h in (r.get("holds") or {}).items():
            if h.get("errors"):
                print(f"   {TITLES[key]} ({n}) errors: {h['errors']}")
            ext = h.get("extrapolatedTo")
            if ext:
                per = ext.get("perConnBytes") or {}
                print(f"   {TITLES[key]} ({n}): {ext['limitedBy']} allows {h['requested']}; at {ext['n']} connections "
                      f"the cost per held connection measured from the tree before any hold "
                      f"({per.get('treeRss', 0) / 1024:.2f} KB RSS) gives tree RSS {ext['treeRss'] / MB:.1f} MB, PSS "
                      f"{ext['treePss'] / MB:.1f} MB (extrapolated, not measured)")


def _hold_checks(ours: dict[str, Any], n: int, limit: float) -> list[tuple[str, float | None, float, str]]:
    h = (ours.get("holds") or {}).get(str(n))
    if not h or "after" not in h:
        return []
    k = f"{n // 1000}k"
    ext = h.get("extrapolatedTo")
    if ext:
        held = h["held"] >= h["requested"]
        got = f"{h['held'] // 1000}k held"
        return [(f"{k} idle conns: tree RSS < {limit:g} MB (from {got})", ext["treeRss"] / MB if held else None,
                 limit, "<"),
                (f"{k} idle conns: tree PSS < {limit:g} MB (from {got})", ext["treePss"] / MB if held else None,
                 limit, "<")]
    held = h["held"] >= n
    return [
        (f"{k} idle conns: tree RSS < {limit:g} MB", h["after"]["treeRss"] / MB if held else None, limit, "<"),
        (f"{k} idle conns: tree PSS < {limit:g} MB", h["after"]["treePss"] / MB if held else None, limit, "<"),
    ]


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    for key in OURS:
        ours = results.get(key)
        if ours and ours.get("starts"):
            verdicts.update({f"{key}: {k}": v for k, v in _targets_of(key, ours, results.get(f"{key}5w")).items()})
    return verdicts


def _targets_of(key: str, ours: dict[str, Any], with5w: dict[str, Any] | None) -> dict[str, Any]:
    checks: list[tuple[str, float | None, float, str]] = []
    rpc = [s["rpcMs"] for s in ours.get("starts", [])]
    if rpc:
        checks.append(("first RPC < 150 ms (p50)", summarize(rpc)["p50"], TARGETS["first_rpc_ms"], "<"))
    for label, r in (("alone", ours), ("+ 5 idle workers", with5w)):
        idle = (r or {}).get("idle")
        if idle:
            checks.append((f"idle tree PSS < 50 MB ({label})", idle["treePss"] / MB, TARGETS["idle_pss_mb"], "<"))
    seq = ours.get("sequential")
    if seq:
        rate = summarize([rep["perS"] for rep in seq["reps"]])["p50"]
        lat = [v for rep in seq["reps"] for v in rep["latencyMs"]]
        checks.append(("sequential >= 5000 req/s (p50 of reps)", rate, TARGETS["seq_per_s"], ">="))
        checks.append(("sequential p99 < 2 ms", summarize(lat)["p99"], TARGETS["seq_p99_ms"], "<"))
    for section, client in (("probes", ""), ("cprobes", ", C client")):
        probe = (ours.get(section) or {}).get("GET /healthz")
        if probe:
            rate = summarize([rep["perS"] for rep in probe["reps"]])["p50"]
            lat = [v for rep in probe["reps"] for v in rep["latencyMs"]]
            checks.append((f"GET /healthz >= 15000 req/s (p50 of reps{client})", rate, TARGETS["probe_per_s"], ">="))
            checks.append((f"GET /healthz p99 < 0.5 ms{client}", summarize(lat)["p99"], TARGETS["probe_p99_ms"], "<"))
    checks += _hold_checks(ours, 10_000, TARGETS["idle10k_mb"])
    checks += _hold_checks(ours, 50_000, TARGETS["idle50k_mb"])
    print(f"\n== targets ({TITLES[key]})")
    verdicts: dict[str, Any] = {}
    for name, value, limit, op in checks:
        met = value is not None and (value < limit if op == "<" else value >= limit)
        print(f"   {name:<52} {fmt(value):>10}   {'met' if met else 'NOT MET'}")
        verdicts[name] = {"value": value, "limit": limit, "met": met}
    return verdicts


def pool(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Add a later round of one gateway to its first: reps, starts and problems pooled, the rest kept from the
    first round (idle memory, holds, pipelined)."""
    for name, value in more.items():
        mine = into.get(name)
        if mine is None:
            into[name] = value
        elif isinstance(mine, list):
            mine.extend(value)
        elif isinstance(mine, dict) and "reps" in mine:
            mine["reps"].extend(value["reps"])
        elif name in ("probes", "cprobes"):
            for request, m in value.items():
                pool(mine.setdefault(request, {"reps": []}), m)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limits = raise_nofile(max([args.idle_conns, *args.big_holds]) + 1000)
    started = dt.datetime.now(dt.UTC)
    log(f"gateways {','.join(args.gw_list)} x{args.rounds}; RLIMIT_NOFILE {limits}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ocsb-cprobe-") as tmp:
        args.cprobe = None
        if "cprobes" in args.measure_set:
            try:
                args.cprobe = build_cprobe(Path(tmp))
            except Unavailable as exc:
                log(f"compiled probe client: skipped: {exc}")
        for _ in range(args.rounds):
            for key in args.gw_list:
                res = run_one(key, args, limits)
                if key in results:
                    pool(results[key], res)
                else:
                    results[key] = res
    finished = dt.datetime.now(dt.UTC)
    headline = "client: aiohttp on uvloop, one process (lean protocols for holds, a raw socket for probes)"
    publish("gateway", args, started, finished, headline,
            lambda: report(results, args, limits), {"rlimitNofile": limits, "gateways": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
