"""Gateway bench: openclaw-sup's gateway port beside the real OpenClaw gateway (2026.9.6, Node 24), one run.

Run: .venv/bin/python bench/gateway.py [--ours-runs 5] [--real-runs 3] [--gateways ours,ours5w,real]

For each gateway, on the same machine with the same asyncio client (bench/gw_client.py): spawn -> port
accepts and spawn -> first successful `health`; idle memory and threads of the whole process tree;
handshake latency; sequential and parallel `health`; idle authenticated connections held; `GET /healthz`
keep-alive. It prints one table per measure, our targets, and writes every raw number to
bench/results/gateway-<date>.json and the report to bench/results/gateway-run.txt. It never asserts timings.
See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import resource
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from bench_common import MB, add_output_args, chosen, log, print_problems, publish, summarize
from bench_managers import Unavailable
from gw_client import handshakes, healthz, hold_idle, parallel, sequential
from gw_report import fmt, print_table, skipped_row, spread, wait_quiet
from gw_servers import Gateway, Ours, OursWorkers, Real, install_real, make_root, our_env, remove

GATEWAYS = ("ours", "ours5w", "real")
TITLES = {"ours": Ours.title, "ours5w": OursWorkers.title, "real": Real.title}
TARGETS = {"first_rpc_ms": 500.0, "seq_per_s": 5000.0, "seq_p99_ms": 2.0, "idle10k_mb": 200.0}
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
    p.add_argument("--idle-conns-ours", type=int, default=10_000, help="a second, larger hold for ours; 0 skips")
    p.add_argument("--hold", type=float, default=5.0, help="seconds the idle connections are held")
    p.add_argument("--open-concurrency", type=int, default=200, help="handshakes in flight while opening")
    p.add_argument("--healthz-s", type=float, default=3.0, help="seconds of GET /healthz")
    p.add_argument("--pause", type=float, default=1.0, help="idle seconds between measures")
    add_output_args(p, "gateway", "keep the gateways' temp dirs (configs, logs)")
    args = p.parse_args(argv)
    args.gw_list = chosen(p, args.gateways, GATEWAYS, "gateway")
    return args


def raise_nofile() -> dict[str, Any]:
    """Soft RLIMIT_NOFILE up to the hard limit; the gateways inherit it (their own limit is read back)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    new_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"softBefore": soft, "hard": hard, "soft": new_soft}


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
    await asyncio.sleep(pause)
    times, errors = await handshakes(gw.url, args.handshakes)
    res["handshake"] = {"ms": times, "errors": errors}
    log(f"{gw.title}: handshake p50 {summarize(times)['p50']:.2f} ms ({len(errors)} errors)")
    await asyncio.sleep(pause)
    res["sequential"] = {"reps": []}
    for _ in range(args.reps):
        seq, cpu = await with_cpu(gw, sequential(gw.url, args.sequential))
        res["sequential"]["reps"].append({**seq, **cpu})
        log(f"{gw.title}: {args.sequential} sequential health: {seq['perS']:.0f}/s")
        await asyncio.sleep(pause)
    res["parallel"] = {"reps": []}
    for _ in range(args.reps):
        par, cpu = await with_cpu(gw, parallel(gw.url, args.par_conns, args.par_calls))
        res["parallel"]["reps"].append({**par, **cpu})
        log(f"{gw.title}: {args.par_conns}x{args.par_calls} parallel health: {par['perS']:.0f}/s")
        await asyncio.sleep(pause)
    hz, cpu = await with_cpu(gw, healthz(gw.http, args.healthz_s))
    res["healthz"] = {"reps": [{**hz, **cpu}]}
    log(f"{gw.title}: GET /healthz {hz['perS']:.0f}/s")
    res["holds"] = {}
    for n in holds:
        await asyncio.sleep(pause)
        need = n + 200
        server_limit = gw.stats()["nofile"]
        if limits["soft"] < need or (server_limit is not None and server_limit < need):
            res["holds"][str(n)] = {
                "skipped": f"RLIMIT_NOFILE too low for {n} connections: bench soft "
                f"{limits['soft']} (hard {limits['hard']}), gateway {server_limit}"
            }
            continue
        conc = min(args.open_concurrency, gw.preauth_cap or args.open_concurrency)
        hold = await hold_idle(gw.url, n, args.hold, conc, gw.stats, gw.cpu_s)
        res["holds"][str(n)] = hold
        delta = (hold["after"]["treeRss"] - hold["before"]["treeRss"]) / MB
        log(
            f"{gw.title}: {n} idle connections: {hold['held']} held, +{delta:.1f} MB RSS, "
            f"opened in {hold['openS']:.1f} s, errors {hold['errors'] or 'none'}"
        )
        if not gw.alive():
            raise Unavailable(f"exited during the {n}-connection hold: {gw.log_tail()}")


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
        if key == "ours5w":
            return uvloop.run(measure(OursWorkers(root, env), args, args.ours_runs, False, [], limits))
        holds = [n for n in (args.idle_conns, args.idle_conns_ours) if n > 0]
        return uvloop.run(measure(Ours(root, env), args, args.ours_runs, True, holds, limits))
    finally:
        remove(root, args.keep_tmp)


# ==================================================================================== report


def _starts(results: dict[str, Any], field: str) -> list[list[str]]:
    rows = []
    for key, r in results.items():
        values = [s[field] for s in r.get("starts", []) if field in s]
        if not values:
            if field == "workersReportedMs" and key != "ours5w":
                continue
            rows.append(skipped_row(TITLES[key], r.get("skipped", "no data")))
            continue
        rows.append([TITLES[key], *spread(values, 0)])
    return rows


def _lat_rows(results: dict[str, Any], section: str, digits: int = 2, rate: bool = True) -> list[list[str]]:
    rows = []
    for key, r in results.items():
        if key == "ours5w":
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


def _proc_label(cmdline: str) -> str:
    """A short name for a tree member: our process titles are `openclaw-sup: <role> [profile]`."""
    words = cmdline.split()
    if words[:1] == ["openclaw-sup:"] and len(words) > 1:
        return words[1]
    return Path(words[0]).name if words else "?"


def _cpu_pair(hold: dict[str, Any]) -> str:
    """Server tree and bench CPU while the connections were being opened, % of one core."""
    cpu = hold.get("openCpu") or {}
    wall = hold["openS"] or 1.0
    srv = cpu.get("serverCpuS")
    return f"{fmt(100 * srv / wall if srv is not None else None, 0)}/{fmt(100 * cpu.get('clientCpuS', 0) / wall, 0)}"


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
        f"RLIMIT_NOFILE: soft {limits['softBefore']} -> {limits['soft']} (hard {limits['hard']}), inherited by "
        "the gateways"
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
            names = [_proc_label(d["name"]) for d in r["idle"]["detail"]]
            print(f"   {TITLES[key]}: {', '.join(names)}")
    print_table(
        f"handshake: TCP + WS upgrade + challenge + connect -> hello-ok, {args.handshakes} sequential (ms)",
        [*cols, "errors"],
        _lat_rows(results, "handshake", rate=False),
    )
    rcols = [*cols, "req/s p50", "req/s range", "srv CPU%", "bench CPU%"]
    print_table(
        f"{args.sequential} sequential `health` on one connection, x{args.reps} (latency ms, all reps pooled; rate per "
        "rep)",
        rcols,
        _lat_rows(results, "sequential"),
    )
    print_table(
        f"{args.par_conns} connections x {args.par_calls} `health` in parallel, x{args.reps} (latency ms; total rate "
        "per rep)",
        rcols,
        _lat_rows(results, "parallel"),
    )
    print_table(
        f"GET /healthz keep-alive, one connection, {args.healthz_s:g}s (ms)", rcols, _lat_rows(results, "healthz")
    )
    rows = []
    for key, r in results.items():
        holds = r.get("holds")
        if key == "ours5w":
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
            rows.append(
                [
                    TITLES[key],
                    n,
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
                    "yes" if h["healthAfterHold"] else "NO",
                ]
            )
    print_table(
        f"idle authenticated connections held {args.hold:g}s; server tree memory (MB)",
        [
            "gateway",
            "asked",
            "in flight",
            "opened",
            "held",
            "errors",
            "503 retries",
            "open s",
            "CPU% srv/bench",
            "RSS before",
            "RSS held",
            "RSS delta",
            "PSS delta",
            "health ok",
        ],
        rows,
    )
    print(
        "   in flight: handshakes at once while opening (the real gateway admits 32 pre-auth connections per IP "
        "and answers 503 beyond; refused upgrades are retried)"
    )
    for key, r in results.items():
        for n, h in (r.get("holds") or {}).items():
            if h.get("errors"):
                print(f"   {TITLES[key]} ({n}) errors: {h['errors']}")
    stops = [f"{TITLES[k]} {fmt(r['stopMs'], 0)} ms" for k, r in results.items() if r.get("stopMs") is not None]
    if stops:
        print("\nSIGTERM -> exit (last instance, after the load): " + ", ".join(stops))
    verdicts = _targets(results.get("ours"))
    problems = [p for r in results.values() for p in r.get("problems", [])]
    print_problems(problems)
    return verdicts


def _targets(ours: dict[str, Any] | None) -> dict[str, Any]:
    if not ours or not ours.get("starts"):
        return {}
    checks: list[tuple[str, float | None, float, str]] = []
    rpc = [s["rpcMs"] for s in ours.get("starts", [])]
    if rpc:
        checks.append(("first RPC < 0.5 s (p50, ms)", summarize(rpc)["p50"], TARGETS["first_rpc_ms"], "<"))
        checks.append(("first RPC < 0.5 s (max, ms)", max(rpc), TARGETS["first_rpc_ms"], "<"))
    seq = ours.get("sequential")
    if seq:
        rate = summarize([rep["perS"] for rep in seq["reps"]])["p50"]
        lat = [v for rep in seq["reps"] for v in rep["latencyMs"]]
        checks.append(("sequential >= 5000 req/s (p50 of reps)", rate, TARGETS["seq_per_s"], ">="))
        checks.append(("sequential p99 < 2 ms", summarize(lat)["p99"], TARGETS["seq_p99_ms"], "<"))
    big = [h for n, h in (ours.get("holds") or {}).items() if int(n) >= 10_000 and "after" in h]
    if big:
        h = big[0]
        held_ok = h["held"] >= 10_000
        checks.append(
            (
                "10k idle conns: tree RSS < 200 MB",
                h["after"]["treeRss"] / MB if held_ok else None,
                TARGETS["idle10k_mb"],
                "<",
            )
        )
        checks.append(
            (
                "10k idle conns: tree PSS < 200 MB",
                h["after"]["treePss"] / MB if held_ok else None,
                TARGETS["idle10k_mb"],
                "<",
            )
        )
        checks.append(
            (
                "  RSS delta for them < 200 MB",
                (h["after"]["treeRss"] - h["before"]["treeRss"]) / MB if held_ok else None,
                TARGETS["idle10k_mb"],
                "<",
            )
        )
    print("\n== targets (openclaw-sup)")
    verdicts: dict[str, Any] = {}
    for name, value, limit, op in checks:
        met = value is not None and (value < limit if op == "<" else value >= limit)
        print(f"   {name:<36} {fmt(value):>10}   {'met' if met else 'NOT MET'}")
        verdicts[name] = {"value": value, "limit": limit, "met": met}
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limits = raise_nofile()
    started = dt.datetime.now(dt.UTC)
    log(f"gateways {','.join(args.gw_list)}; RLIMIT_NOFILE {limits}")
    results: dict[str, Any] = {}
    for key in args.gw_list:
        results[key] = run_one(key, args, limits)
    finished = dt.datetime.now(dt.UTC)
    publish("gateway", args, started, finished, "client: aiohttp on uvloop, one process",
            lambda: report(results, args, limits), {"rlimitNofile": limits, "gateways": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
