"""Recovery bench: openclaw-sup beside circus 0.19.0 and supervisord 4.3.0, measured the same way.

Run: .venv/bin/python bench/recovery.py [--kills N] [--peers ours,circus,circus-fast,supervisord]

For each manager (five equivalent workers w0..w4, kill target always w0) it measures kill -9 -> replacement
reported, kill -9 -> replacement's first line, idle memory of the whole tree, and the wall time of the
`status` CLI; for openclaw-sup also the worker -> supervisor bus throughput. It prints one table per
measure, checks our figures against the targets, and writes every raw number to
bench/results/recovery-<date>.json. See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import (
    MB,
    PSS_SPLIT_HEADER,
    Listener,
    Report,
    Stamp,
    add_output_args,
    chosen,
    log,
    print_problems,
    pss_split_rows,
    publish,
    read_timeline,
    summarize,
    time_cli,
    tree_memory,
)
from bench_managers import (
    WORKERS,
    Circus,
    CircusFast,
    Manager,
    Ours,
    Supervisord,
    Unavailable,
    bytecode_env,
    ensure_install,
    ensure_peer,
    ensure_regular_install,
    tear_down,
)

from openclaw_sup.ipc.control import ControlError, call

PEERS = ("ours", "ours-tree", "ours-tree-nostandby", "ours-tree-atboot", "ours-base", "circus", "circus-fast",
         "supervisord")
OURS = ("ours", "ours-tree", "ours-tree-nostandby", "ours-tree-atboot", "ours-base")
TUNINGS = {"ours-tree-nostandby": {"forkServer": {"standbys": 0}},
           "ours-tree-atboot": {"forkServer": {"standbyAtBoot": True}}}
"""This tree with other fork-server settings: no standby at all, or one kept from boot on (by default one is made
after the first unplanned exit, so the idle sample has none and the first kill forks)."""
TITLES = {
    "ours": Ours.title,
    "ours-tree": "openclaw-sup (this tree, installed)",
    "ours-tree-nostandby": "openclaw-sup (this tree, installed, standbys 0)",
    "ours-tree-atboot": "openclaw-sup (this tree, installed, standby from boot)",
    "ours-base": "openclaw-sup (baseline, installed)",
    "circus": Circus.title,
    "circus-fast": CircusFast.title,
    "supervisord": Supervisord.title,
}
TARGETS = {
    "recovery_p50_ms": 8.0,
    "recovery_p99_ms": 20.0,
    "pss_mb": 50.0,
    "bus_msg_s": 100_000.0,
    "status_ms": 100.0,
}
START_TIMEOUT = 30.0
RESPAWN_TIMEOUT = 30.0



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="kill -9 recovery, memory, status and bus bench, side by side")
    p.add_argument("--kills", type=int, default=100, help="kill -9 of w0 per manager (default 100)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list from {','.join(PEERS)}")
    p.add_argument("--settle", type=float, default=5.0, help="seconds idle before the memory sample")
    p.add_argument("--status-runs", type=int, default=20, help="runs of each status CLI")
    p.add_argument("--bus-count", type=int, default=500_000, help="events the flood worker sends per rep")
    p.add_argument("--bus-reps", type=int, default=3, help="bus throughput repetitions (0 to skip)")
    p.add_argument("--seed", type=int, default=None, help="seed for the waits between kills")
    p.add_argument("--baseline", default="main",
                   help="git ref that `ours-base` installs (default main); `ours-tree` installs the working tree "
                        "the same way, so the two compare on equal terms in one run")
    add_output_args(p, "recovery", "keep each manager's temp dir (configs, logs)", txt=False)
    args = p.parse_args(argv)
    TITLES["ours-base"] = f"openclaw-sup {args.baseline} (installed)"
    args.peer_list = chosen(p, args.peers, PEERS)
    if args.kills < 1:
        p.error("--kills must be at least 1")
    return args


def make_manager(key: str, port: int, args: argparse.Namespace) -> Manager:
    """Build a manager; for a peer, install it first (raises Unavailable when that fails)."""
    env = bytecode_env(args.cache / "pycache")
    if key == "ours":
        return Ours(port, args.keep_tmp, env)
    if key in ("ours-tree", "ours-base", *TUNINGS):
        bindir = ensure_install(args.cache, args.baseline if key == "ours-base" else None)
        return Ours(port, args.keep_tmp, env, bindir=bindir, title=TITLES[key], tuning=TUNINGS.get(key))
    if key in ("circus", "circus-fast"):
        bindir = ensure_peer(args.cache, "circus")
        return (Circus if key == "circus" else CircusFast)(port, bindir, args.keep_tmp, env)
    return Supervisord(port, ensure_peer(args.cache, "supervisor"), args.keep_tmp, env)


# ==================================================================================== one manager


def run_manager(key: str, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Start one manager, then memory, status and the kill series on it; always tear it down."""
    listener = Listener()
    try:
        mgr = make_manager(key, listener.port, args)
    except Unavailable as exc:
        listener.close()
        return {"skipped": str(exc)}
    regular = _regular_install(key, args)
    result: dict[str, Any] = {"title": mgr.title, "waitRangeS": list(mgr.wait_range), "loadavg": os.getloadavg()}
    log(f"{mgr.title}: starting ({' '.join(mgr.argv())})")
    try:
        mark = listener.mark()
        t_start = time.monotonic()
        mgr.start()
        first = listener.wait_names(WORKERS, mark, START_TIMEOUT)
        if len(first) < len(WORKERS):
            missing = sorted(set(WORKERS) - set(first))
            tail = mgr.tail()
            raise Unavailable(
                f"{', '.join(missing)} did not report within {START_TIMEOUT:g}s"
                + (f"; log tail: {tail[-400:]}" if tail else "")
            )
        result["coldStartMs"] = (max(r.received for r in first.values()) - t_start) * 1000
        log(f"{mgr.title}: 5 workers reported in {result['coldStartMs']:.0f} ms; settling {args.settle:g}s")
        time.sleep(args.settle)
        if not mgr.alive():
            raise Unavailable(f"exited during the settle: {mgr.tail()[-400:]}")
        mem = tree_memory(mgr.pid)
        result["memory"] = mem
        result["memory"]["workers"] = {n: r.pid for n, r in first.items()}
        times = _status_timings(mgr, result, regular, args.status_runs)
        log(
            f"{mgr.title}: status p50 {statistics.median(times):.1f} ms; {args.kills} kills "
            f"(wait {mgr.wait_range[0]:g}-{mgr.wait_range[1]:g}s each)"
        )
        kills = kill_series(mgr, listener, first, args.kills, rng)
        result["kills"] = kills
        mgr.after_kills(len(kills))
        result["loadavgEnd"] = os.getloadavg()
    except Unavailable as exc:
        result["skipped"] = str(exc)
        log(f"{mgr.title}: skipped: {exc}")
    finally:
        tear_down(mgr, listener)
    result["problems"] = mgr.problems
    return result


def _regular_install(key: str, args: argparse.Namespace) -> list[str] | str | None:
    """For ours: argv of `status` from a regular (non-editable) install, or why there is none."""
    if key != "ours":
        return None
    try:
        return [str(ensure_regular_install(args.cache) / "openclaw-sup"), "status"]
    except Unavailable as exc:
        return str(exc)


def _status_timings(mgr: Manager, result: dict[str, Any], regular: list[str] | str | None, runs: int) -> list[float]:
    """Time the status CLI (and, for ours, the regular install's), interleaved so background load hits both."""
    argvs = {"status": mgr.status_argv()}
    if isinstance(regular, list):
        argvs["statusRegularInstall"] = regular
    elif isinstance(regular, str):
        result["statusRegularInstall"] = {"skipped": regular}
    env = mgr.env()
    for argv in argvs.values():
        time_cli(argv, env, 2)  # warm-up: bytecode cache and page cache
    for key, argv in argvs.items():
        result[key] = {"argv": argv, "wallMs": [], "exitCodes": [], "lastOutput": ""}
    for _ in range(runs):
        for key, argv in argvs.items():
            wall, codes, out = time_cli(argv, env, 1)
            result[key]["wallMs"] += wall
            result[key]["exitCodes"] += codes
            result[key]["lastOutput"] = out
    for key in argvs:
        codes = result[key]["exitCodes"]
        if any(codes):
            out = result[key]["lastOutput"]
            mgr.problems.append(f"{mgr.title}: {key} CLI exited non-zero ({sorted(set(codes))}): {out[-200:]}")
    if isinstance(mgr, Ours):
        result["status"]["rpcMs"] = _rpc_times(mgr, runs)
    wall_ms: list[float] = result["status"]["wallMs"]
    return wall_ms


def _rpc_times(mgr: Ours, runs: int) -> list[float]:
    """The same status request in-process: separates the supervisor's answer from CLI start-up."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call(mgr.control, "status")
        times.append((time.perf_counter() - t) * 1000)
    return times


def kill_series(
    mgr: Manager, listener: Listener, first: dict[str, Report], n: int, rng: random.Random
) -> list[dict[str, Any]]:
    """SIGKILL w0 n times; each latency runs from just before os.kill to the new w0's report arriving."""
    current = first["w0"]
    others = {name: r.pid for name, r in first.items() if name != "w0"}
    records: list[dict[str, Any]] = []
    for i in range(n):
        wait = rng.uniform(*mgr.wait_range)
        time.sleep(max(0.0, current.received + wait - time.monotonic()))
        mark = listener.mark()
        old = current.pid
        t_kill = time.monotonic()
        try:
            os.kill(old, signal.SIGKILL)
        except ProcessLookupError:
            mgr.problems.append(f"{mgr.title}: w0 pid {old} was already gone before kill #{i + 1}")
            break
        new = listener.wait_for(lambda r, old=old: r.name == "w0" and r.pid != old, mark, RESPAWN_TIMEOUT)
        if new is None:
            mgr.problems.append(f"{mgr.title}: w0 did not come back within {RESPAWN_TIMEOUT:g}s of kill #{i + 1}")
            break
        records.append(
            {
                "i": i + 1,
                "waitS": round(wait, 4),
                "oldPid": old,
                "newPid": new.pid,
                "newPpid": new.ppid,
                "tKill": t_kill,
                "tFirstLine": new.t0,
                "tReported": new.received,
                "latencyMs": (new.received - t_kill) * 1000,
                "firstLineMs": (new.t0 - t_kill) * 1000,
            }
        )
        current = new
        if (i + 1) % 10 == 0 or i + 1 == n:
            recent = [r["latencyMs"] for r in records[-10:]]
            log(f"{mgr.title}: {i + 1}/{n} kills, last 10 p50 {statistics.median(recent):.1f} ms")
    again = [r for r in listener.reports if r.name in others and r.pid != others[r.name]]
    if again:
        mgr.problems.append(f"{mgr.title}: untouched workers were respawned: {sorted({r.name for r in again})}")
    if isinstance(mgr, Ours):
        add_recovery_steps(records, read_timeline(mgr.timeline_file))
    return records


RECOVERY_STEPS = (
    ("tReaped", "kill -> fork server reaps w0 (its killpg of the dead group)"),
    ("tAsked", "-> supervisor sends the spawn request (exit read, state machine, backoff 0)"),
    ("tForked", "-> fork server forks, or hands the request to its standby (request read)"),
    ("tChild", "-> child runs (the fork itself), or the standby has the request"),
    ("tFirstLine", "-> `tiny` starts (worker runtime: bus link, loop, hello)"),
    ("tReported", "-> report reaches the bench (TCP connect + line)"),
)


def add_recovery_steps(records: list[dict[str, Any]], stamps: list[Stamp]) -> None:
    """Date each recovery's steps from our tree's stamps (bench/timeline/): see RECOVERY_STEPS. A replacement
    forked before the kill was the fork server's standby: its steps are the hand-off (the fork server's
    `sendmsg`) and the standby opening its output pipe."""
    for rec in records:
        reaped = next((s for s in stamps if s.event == "killpg" and s.detail == str(rec["oldPid"])), None)
        child = next((s for s in stamps if s.event == "child" and s.pid == rec["newPid"]), None)
        if reaped is None or child is None:
            continue
        asked = next((s for s in stamps if s.event == "sendmsg" and s.t >= reaped.t and s.pid != child.ppid), None)
        after = asked.t if asked else reaped.t
        rec["standby"] = child.t < rec["tKill"]
        if rec["standby"]:
            forked = next((s for s in stamps if s.event == "sendmsg" and s.pid == child.ppid and s.t >= after), None)
            child = next((s for s in stamps if s.event == "stdout" and s.pid == rec["newPid"]  # not its rehearsal
                          and s.t >= (forked.t if forked else after)), None)
        else:
            forked = next((s for s in stamps if s.event == "fork" and s.pid == child.ppid and s.t <= child.t
                           and s.t >= after), None)
        rec.update(tReaped=reaped.t, tAsked=asked.t if asked else None, tForked=forked.t if forked else None,
                   tChild=child.t if child else None)


# ==================================================================================== bus


def run_bus(args: argparse.Namespace) -> dict[str, Any]:
    """One flood worker per fresh gateway, args.bus_reps times; rates from the supervisor's own counter."""
    reps: list[dict[str, Any]] = []
    problems: list[str] = []
    for rep in range(args.bus_reps):
        log(f"bus: rep {rep + 1}/{args.bus_reps}, {args.bus_count} events")
        listener = Listener()
        mgr = Ours(
            listener.port,
            args.keep_tmp,
            bytecode_env(args.cache / "pycache"),
            workers={
                "flood": {
                    "kind": "flood",
                    "options": {"port": listener.port, "count": args.bus_count, "delayS": 1.0},
                }
            },
        )
        try:
            mgr.start()
            reps.append(_one_flood(mgr, listener))
            log(
                f"bus: rep {rep + 1}: {reps[-1].get('receivedPerS', float('nan')):,.0f} msg/s received, "
                f"{reps[-1].get('dropped')} dropped at the sender"
            )
        except Unavailable as exc:
            problems.append(f"bus rep {rep + 1}: {exc}")
        finally:
            tear_down(mgr, listener)
            problems += mgr.problems
    return {"count": args.bus_count, "reps": reps, "problems": problems}


def _one_flood(mgr: Ours, listener: Listener) -> dict[str, Any]:
    """Poll busReceived every 50 ms; the end is interpolated where it reaches baseline + events sent.

    A status call can take tens of ms while the supervisor drains a flood, so a poll is not dated by when
    its answer came back but by when the supervisor built it: `started + uptimeS` from the snapshot, with
    the supervisor's `started` pinned to within a millisecond by the quick calls before the flood.
    """
    samples: list[tuple[float, int]] = []
    brackets: list[tuple[float, float, float]] = []  # (sent, answered, uptimeS) of each call
    call_ms: list[float] = []
    end: Report | None = None
    deadline = time.monotonic() + 180
    target: int | None = None
    end_seen_at = 0.0
    while time.monotonic() < deadline:
        t = time.perf_counter()
        asked = time.monotonic()
        try:
            snap = mgr.snapshot(timeout=5)
        except ControlError:
            if not mgr.alive():
                raise Unavailable(f"gateway exited: {mgr.tail()[-400:]}") from None
            time.sleep(0.05)
            continue
        now = time.monotonic()
        samples.append((now, int(snap["supervisor"]["busReceived"])))
        brackets.append((asked, now, float(snap["supervisor"]["uptimeS"])))
        call_ms.append((time.perf_counter() - t) * 1000)
        if end is None:
            end = listener.wait_for(lambda r: r.extra[:1] == ("end",), 0, 0)
            if end is not None:
                end_seen_at = now
        if end is not None:
            t_start = float(end.extra[1])
            base = [v for ts, v in samples if ts <= t_start]
            if not base:
                raise Unavailable("no status sample before the flood started")
            target = base[-1] + int(end.extra[2])
            if samples[-1][1] >= target or now - end_seen_at > 10:
                break
        time.sleep(0.05)
    if end is None or target is None:
        raise Unavailable("the flood worker never reported its end")
    t_start, t_end = float(end.extra[1]), end.t0
    sent, dropped = int(end.extra[2]), int(end.extra[3])
    baseline = target - sent
    started = _supervisor_start(brackets)
    dated = [(started + up, v) for (_, _, up), (_, v) in zip(brackets, samples, strict=True)]
    t_done = _crossing(dated, target)
    received = samples[-1][1] - baseline
    out: dict[str, Any] = {
        "sent": sent,
        "dropped": dropped,
        "received": received,
        "baseline": baseline,
        "tStart": t_start,
        "tSendEnd": t_end,
        "tReceivedAll": t_done,
        "senderAttemptsPerS": (sent + dropped) / (t_end - t_start),
        "statusCallMs": summarize(call_ms),
        "samples": len(samples),
    }
    if t_done is None:
        mgr.problems.append(f"bus: only {received} of {sent} accepted events reached the supervisor")
    else:
        out["receivedPerS"] = sent / (t_done - t_start)
    return out


def _supervisor_start(brackets: list[tuple[float, float, float]]) -> float:
    """The supervisor's monotonic start time: each call bounds it by [sent - uptime, answered - uptime]."""
    lo = max(sent - up for sent, _, up in brackets) - 0.0005  # uptimeS is rounded to the ms
    hi = min(answered - up for _, answered, up in brackets) + 0.0005
    return (lo + hi) / 2 if lo <= hi else hi


def _crossing(samples: list[tuple[float, int]], target: int) -> float | None:
    """Time the counter reached `target`, linearly interpolated between the two polls around it."""
    for (t0, v0), (t1, v1) in itertools.pairwise(samples):
        if v1 >= target > v0:
            return t0 + (t1 - t0) * (target - v0) / (v1 - v0)
    return None


# ==================================================================================== report


def fmt(v: float, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n== {title}")
    for j, r in enumerate([header, *rows]):
        cells = [str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        print("  ".join(cells).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _ours_tree_note(mem: dict[str, Any]) -> str:
    """Each part of our tree; a built-in worker the gateway adds beyond w0..w4 is named and set apart."""
    parts = {d["pid"]: d for d in mem["detail"]}
    sup = parts.pop(mem["detail"][0]["pid"])
    bench_pids = set(mem["workers"].values())
    workers = [d for pid, d in parts.items() if pid in bench_pids]
    others = [d for pid, d in parts.items() if pid not in bench_pids]
    forkserver = [d for d in others if "forkserver" in d["name"]]
    standby = [d for d in others if "standby" in d["name"]]
    extra = [d for d in others if d not in forkserver and d not in standby]
    note = (
        f"supervisor {fmt(sup['pss'] / MB)} MB PSS, fork server "
        f"{', '.join(fmt(d['pss'] / MB) for d in forkserver) or '-'} MB, "
        + (f"its standby {', '.join(fmt(d['pss'] / MB) for d in standby)} MB, " if standby else "")
        + f"workers w0..w4 {', '.join(fmt(d['pss'] / MB) for d in workers)} MB PSS each"
    )
    if extra:
        names = ", ".join(
            f"{d['name'].split()[1] if len(d['name'].split()) > 1 else d['pid']} {fmt(d['pss'] / MB)} MB" for d in extra
        )
        without = (mem["treePss"] - sum(d["pss"] for d in extra)) / MB
        note += (
            f"; plus built-in worker(s) the bench could not switch off: {names} (tree without them {without:.1f} MB)"
        )
    return note


def _print_recovery_steps(title: str, kills: list[dict[str, Any]]) -> None:
    """Where each of our recoveries went, step by step (ms), from the tree's own stamps."""
    dated = [k for k in kills if all(k.get(f) is not None for f, _ in RECOVERY_STEPS)]
    if not dated:
        return
    rows = []
    prev = "tKill"
    for field, what in RECOVERY_STEPS:
        s = summarize([(k[field] - k[prev]) * 1000 for k in dated])
        rows.append([what, *(fmt(s[c], 2) for c in ("p50", "p90", "p99", "min", "max"))])
        prev = field
    s = summarize([(k["tReported"] - k["tKill"]) * 1000 for k in dated])
    rows.append(["= kill -> replacement reported", *(fmt(s[c], 2) for c in ("p50", "p90", "p99", "min", "max"))])
    standby = sum(bool(k.get("standby")) for k in dated)
    print_table(f"{title} recovery, step by step (ms; {len(dated)} kills dated by the tree's own stamps, {standby} "
                "taken by a standby)",
                ["step", "p50", "p90", "p99", "min", "max"], rows)


def status_row(title: str, cmd: str, wall: list[float], codes: list[int]) -> list[str]:
    s = summarize(wall)
    exits = ",".join(map(str, sorted(set(codes))))
    return [title, cmd, *(fmt(s[c]) for c in ("p50", "p90", "min", "max")), f"{s['n']} (exit {exits})"]


def spread_rows(results: dict[str, Any], field: str, extra: bool = False) -> list[list[str]]:
    rows = []
    for key, res in results.items():
        title = TITLES[key]
        if "kills" not in res:
            rows.append([title, f"skipped: {res.get('skipped', 'no data')}"] + [""] * (6 + 2 * extra))
            continue
        s = summarize([k[field] for k in res["kills"]])
        row = [title, *(fmt(s[c]) for c in ("p50", "p90", "p99", "min", "max")), str(s["n"])]
        if extra:
            lo, hi = res["waitRangeS"]
            row += [fmt(res["kills"][0][field]) if res["kills"] else "", f"{lo:g}-{hi:g}s"]
        rows.append(row)
    return rows


def report(results: dict[str, Any], bus: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    """Print every table and the targets; return the target verdicts for the JSON."""
    loads = [f"{TITLES[k]} {r['loadavg'][0]:.2f}" for k, r in results.items() if "loadavg" in r]
    if loads:
        print(
            "1-min load average as each manager started (other load on the machine skews every figure): "
            + ", ".join(loads)
        )
    cols = ["manager", "p50", "p90", "p99", "min", "max", "n"]
    print_table(
        f"kill -9 of w0 -> replacement reported to the bench (ms), {args.kills} kills requested",
        [*cols, "1st kill", "wait"],  # ours by default forks its first respawn; a standby follows it
        spread_rows(results, "latencyMs", extra=True),
    )
    print_table("kill -9 of w0 -> replacement's first line of code (ms)", cols, spread_rows(results, "firstLineMs"))

    rows = []
    for key, res in results.items():
        m = res.get("memory")
        if not m:
            rows.append([TITLES[key], f"skipped: {res.get('skipped', 'no data')}", "", "", "", "", ""])
            continue
        rows.append(
            [
                TITLES[key],
                fmt(m["managerRss"] / MB),
                fmt(m["managerPss"] / MB),
                fmt(m["treeRss"] / MB),
                fmt(m["treePss"] / MB),
                fmt(m["treeUss"] / MB),
                str(m["procs"]),
            ]
        )
    print_table(
        f"idle memory, manager + 5 idle workers, after {args.settle:g}s settle (MB)",
        ["manager", "mgr RSS", "mgr PSS", "tree RSS", "tree PSS", "tree USS", "procs"],
        rows,
    )
    for key in OURS:
        ours_mem = results.get(key, {}).get("memory")
        if ours_mem:
            print(f"   {TITLES[key]}: " + _ours_tree_note(ours_mem))
    rows = []
    for key, res in results.items():
        if res.get("memory"):
            rows += pss_split_rows(TITLES[key], res["memory"], {w: "w0..w4" for w in WORKERS})
    print_table("idle memory per process (MB; PSS each = median of the processes of that row; priv dirty, shared, "
                "PSS anon/file from smaps_rollup)", PSS_SPLIT_HEADER, rows)
    for key in OURS:
        _print_recovery_steps(TITLES[key], results.get(key, {}).get("kills") or [])

    rows = []
    for key, res in results.items():
        st = res.get("status")
        if not st:
            rows.append([TITLES[key], f"skipped: {res.get('skipped', 'no data')}", "", "", "", "", ""])
            continue
        cmd = Path(st["argv"][0]).name + " " + st["argv"][-1]
        rows.append(status_row(TITLES[key], cmd, st["wallMs"], st["exitCodes"]))
        reg = res.get("statusRegularInstall")
        if reg and "wallMs" in reg:
            rows.append(status_row("  regular install", cmd, reg["wallMs"], reg["exitCodes"]))
        elif reg:
            rows.append(["  regular install", f"skipped: {reg.get('skipped')}", "", "", "", "", ""])
    print_table(
        "status CLI wall time, whole process (ms)",
        ["manager", "command", "p50", "p90", "min", "max", "n"],
        rows,
    )
    rpc = results.get("ours", {}).get("status", {}).get("rpcMs")
    if rpc:
        s = summarize(rpc)
        print(f"   openclaw-sup in-process status RPC: p50 {fmt(s['p50'], 2)} ms, p90 {fmt(s['p90'], 2)} ms")

    bus_rate = None
    if bus is not None:
        rates = [r["receivedPerS"] for r in bus["reps"] if "receivedPerS" in r]
        print(
            f"\n== bus throughput worker -> supervisor (openclaw-sup, one flood worker, "
            f"{bus['count']:,} events "
            f"per rep)"
        )
        if rates:
            s = summarize(rates)
            bus_rate = s["p50"]
            sender = summarize([r["senderAttemptsPerS"] for r in bus["reps"]])
            drops = [r["dropped"] for r in bus["reps"]]
            calls = max(r["statusCallMs"]["max"] for r in bus["reps"])
            print(
                f"   received: p50 {s['p50']:,.0f} msg/s (min {s['min']:,.0f}, max {s['max']:,.0f}, "
                f"n {s['n']}); "
                f"sender attempts p50 {sender['p50']:,.0f}/s; dropped at the sender (queue full) per rep: "
                f"{', '.join(f'{d:,}' for d in drops)}; slowest status call during the flood {calls:.1f} ms"
            )
        else:
            print("   no rep completed: " + "; ".join(bus["problems"]))

    verdicts: dict[str, Any] = {}
    for key in OURS:
        ours = results.get(key)
        if ours is None:
            continue
        # (name, value, limit, comparison): "<=" and "<" are upper bounds, ">=" a lower bound.
        checks: list[tuple[str, float | None, float, str]] = []
        if "kills" in ours:
            s = summarize([k["latencyMs"] for k in ours["kills"]])
            checks += [
                ("recovery p50 <= 8 ms", s["p50"], TARGETS["recovery_p50_ms"], "<="),
                ("recovery p99 <= 20 ms", s["p99"], TARGETS["recovery_p99_ms"], "<="),
            ]
        if "memory" in ours:
            checks.append(("total PSS < 50 MB", ours["memory"]["treePss"] / MB, TARGETS["pss_mb"], "<"))
        if bus is not None and key == "ours":
            checks.append(("bus >= 100k msg/s", bus_rate, TARGETS["bus_msg_s"], ">="))
        if "status" in ours:
            p50 = statistics.median(ours["status"]["wallMs"])
            checks.append(("status < 100 ms (p50)", p50, TARGETS["status_ms"], "<"))
        reg = ours.get("statusRegularInstall") or {}
        if "wallMs" in reg:
            p50 = statistics.median(reg["wallMs"])
            checks.append(("  same, regular install", p50, TARGETS["status_ms"], "<"))
        print(f"\n== targets ({TITLES[key]})")
        for name, value, limit, op in checks:
            ok = {"<=": lambda v, lim: v <= lim, "<": lambda v, lim: v < lim, ">=": lambda v, lim: v >= lim}[op]
            met = value is not None and ok(value, limit)
            shown = "-" if value is None else (f"{value:,.0f}" if limit > 1000 else f"{value:.1f}")
            print(f"   {name:<24} {shown:>10}   {'met' if met else 'NOT MET'}")
            verdicts[f"{key}: {name}"] = {"value": value, "limit": limit, "met": met}

    problems = [p for res in results.values() for p in res.get("problems", [])]
    problems += bus["problems"] if bus else []
    print_problems(problems)
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    started = dt.datetime.now(dt.UTC)
    log(f"peers {','.join(args.peer_list)}; {args.kills} kills each; seed {seed}")
    results: dict[str, Any] = {}
    for key in args.peer_list:
        results[key] = run_manager(key, args, rng)
    bus = run_bus(args) if "ours" in args.peer_list and args.bus_reps > 0 else None
    finished = dt.datetime.now(dt.UTC)
    publish("recovery", args, started, finished, f"seed {seed}", lambda: report(results, bus, args),
            {"seed": seed, "managers": results, "bus": bus})
    return 0


if __name__ == "__main__":
    sys.exit(main())
