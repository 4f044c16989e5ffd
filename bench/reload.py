"""Reload bench: a config edit -> the affected worker running again, openclaw-sup beside circus reloadconfig.

Run: .venv/bin/python bench/reload.py [--edits 50] [--peers ours,ours-d50,circus]

openclaw-sup runs six stand-in workers (tests/kinds/sup_standin_kinds.py: scheduler, agent, three telegram
accounts, one irc account); each edit rewrites openclaw.json with a new `channels.irc.nick` (temp file +
os.replace) and the file watcher applies it alone: only `channel:irc:default` should be replaced. It runs
twice, with the default 200 ms debounce and with `gateway.reload.debounceMs: 50`. circus 0.19.0 runs six
watchers of bench/worker.py with `check_delay = 0.1`; each edit rewrites the ini with new `args` for w0 and
runs `circusctl reloadconfig`, as an operator applies it. Both count every other worker whose pid changed.
It prints the spread of each measure side by side and writes every raw number to
bench/results/reload-<date>.json and the report to bench/results/reload-run.txt. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import uvloop
from bench_common import (
    Listener,
    add_output_args,
    chosen,
    log,
    print_problems,
    publish,
    summarize,
)
from bench_managers import (
    REPO,
    WORKER_PY,
    Manager,
    Unavailable,
    bytecode_env,
    circus_section,
    ensure_peer,
    tear_down,
)
from gw_report import fmt, print_table, skipped_row, spread, wait_quiet
from gw_servers import Ours, make_root, remove

from openclaw_sup.ipc.control import ControlError, call

PEERS = ("ours", "ours-d50", "circus")
TITLES = {
    "ours": "openclaw-sup (debounce 200 ms, default)",
    "ours-d50": "openclaw-sup (debounceMs 50)",
    "circus": "circus 0.19.0 (check_delay 0.1)",
}
TARGET_P99_MS = 300.0
IRC = "channel:irc:default"
OUR_WORKERS = ("scheduler", "agent", "channel:telegram:a", "channel:telegram:b", "channel:telegram:c", IRC)
CIRCUS_WATCHERS = ("w0", "w1", "w2", "w3", "w4", "w5")
KINDS_DIR = REPO / "tests" / "kinds"
DETECT_TIMEOUT = 15.0



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="config edit -> affected worker ready: openclaw-sup vs circus")
    p.add_argument("--edits", type=int, default=50, help="edits per manager (default 50)")
    p.add_argument("--circus-edits", type=int, default=None, help="edits for circus (default: --edits)")
    p.add_argument("--gap", type=float, default=0.5, help="seconds from one edit's result to the next edit")
    p.add_argument("--poll-ms", type=float, default=5.0, help="status poll interval for ours (default 5 ms)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list from {','.join(PEERS)}")
    add_output_args(p, "reload", "keep the temp dirs (configs, logs)")
    args = p.parse_args(argv)
    args.peer_list = chosen(p, args.peers, PEERS)
    if args.edits < 1:
        p.error("--edits must be at least 1")
    return args


def replace_file(path: Path, text: str) -> tuple[float, float]:
    """Write a temp file beside `path` and rename it over: (wall, monotonic) right after the rename."""
    tmp = path.with_name(path.name + ".bench-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return time.time(), time.monotonic()


# ==================================================================================== openclaw-sup


class OursReload(Ours):
    """Our gateway with the stand-in kinds and the brief's channels; reload mode hybrid, optional debounce."""

    def __init__(self, root: Path, env: dict[str, str], debounce_ms: int | None) -> None:
        super().__init__(root, env)
        self.debounce_ms = debounce_ms
        self.cfg: dict[str, Any] = {}

    def prepare(self) -> None:
        super().prepare()
        reload_cfg: dict[str, Any] = {"mode": "hybrid"}
        if self.debounce_ms is not None:
            reload_cfg["debounceMs"] = self.debounce_ms
        self.cfg = {
            "gateway": {
                "mode": "local",
                "port": self.port,
                "reload": reload_cfg,
                "auth": {"mode": "token", "token": "benchtoken"},
            },
            "logging": {"file": str(self.gw_log)},
            "channels": {
                "telegram": {
                    "botToken": "1:a",
                    "accounts": {"a": {"botToken": "2:b"}, "b": {"botToken": "3:c"}, "c": {"botToken": "4:d"}},
                },
                "irc": {"host": "127.0.0.1", "nick": "n0"},
            },
        }
        self.config_path.write_text(json.dumps(self.cfg, indent=1))
        self.side = self.run_dir / "openclaw-sup.json5"
        self.side.write_text('{"kinds": ["sup_standin_kinds"]}\n')

    @property
    def config_path(self) -> Path:
        return self.state / "openclaw.json"

    @property
    def control(self) -> Path:
        return self.state / "run" / "ctl.sock"

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(OPENCLAW_SUP_CONFIG=str(self.side), PYTHONPATH=str(KINDS_DIR))
        return env

    def workers(self) -> tuple[dict[str, dict[str, Any]], float, float]:
        """Worker rows by name, and when the call was sent and answered (monotonic)."""
        sent = time.monotonic()
        snap = call(self.control, "status", timeout=5)
        answered = time.monotonic()
        rows = snap["workers"]
        assert isinstance(rows, list)
        return {w["name"]: w for w in rows}, sent, answered


def _all_running(gw: OursReload, timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(ControlError, OSError):
            rows, _, _ = gw.workers()
            if set(OUR_WORKERS) <= set(rows) and all(rows[n]["state"] == "running" for n in OUR_WORKERS):
                return rows
        time.sleep(0.05)
    states = {n: w.get("state") for n, w in rows.items()}
    raise Unavailable(f"workers not all running within {timeout:g}s: {states}; log: {gw.log_tail()}")


def run_ours(key: str, args: argparse.Namespace) -> dict[str, Any]:
    """One gateway, `args.edits` irc nick edits; per edit the poll-detected, readyS and log-based latencies."""
    debounce = 50 if key == "ours-d50" else None
    root = make_root(f"ocsb-reload-{key}-")
    gw = OursReload(root, bytecode_env(args.cache / "pycache"), debounce)
    res: dict[str, Any] = {"title": TITLES[key], "debounceMs": debounce or 200, "loadavg": os.getloadavg()}
    edits: list[dict[str, Any]] = []
    try:
        gw.start()
        uvloop.run(gw.wait_ready())
        rows = _all_running(gw, 30)
        base = {n: rows[n]["pid"] for n in OUR_WORKERS}
        res["basePids"] = base
        log(f"{TITLES[key]}: 6 workers running; {args.edits} edits")
        time.sleep(1.0)
        poll = args.poll_ms / 1000
        for i in range(args.edits):
            old = rows[IRC]["pid"]
            gw.cfg["channels"]["irc"]["nick"] = f"n{i + 1}"
            wall, mono = replace_file(gw.config_path, json.dumps(gw.cfg, indent=1))
            rec: dict[str, Any] = {"i": i + 1, "oldPid": old, "tReplaceWall": wall, "tReplace": mono, "polls": 0}
            deadline = mono + DETECT_TIMEOUT
            while True:
                time.sleep(poll)
                try:
                    rows, sent, answered = gw.workers()
                except ControlError as exc:
                    rec.setdefault("controlErrors", []).append(str(exc))
                    if time.monotonic() > deadline:
                        break
                    continue
                rec["polls"] += 1
                irc = rows.get(IRC) or {}
                if irc.get("pid") not in (None, old) and irc.get("state") == "running":
                    rec.update(newPid=irc["pid"], tDetected=answered, detectedMs=(answered - mono) * 1000)
                    if irc.get("readyS") is not None:
                        ready_at = (sent + answered) / 2 - irc["readyS"]
                        rec["readySMs"] = (ready_at - mono) * 1000
                    break
                if time.monotonic() > deadline:
                    break
            if "newPid" not in rec:
                gw.problems.append(f"openclaw-sup: edit {i + 1}: {IRC} not replaced within {DETECT_TIMEOUT:g}s")
                edits.append(rec)
                break
            changed = {n: rows[n]["pid"] for n in OUR_WORKERS if n != IRC and rows[n]["pid"] != base[n]}
            rec["othersChanged"] = changed
            edits.append(rec)
            if (i + 1) % 10 == 0:
                recent = [e["detectedMs"] for e in edits[-10:] if "detectedMs" in e]
                log(
                    f"{TITLES[key]}: {i + 1}/{args.edits} edits, last 10 detected p50 {summarize(recent)['p50']:.0f} ms"
                )
            time.sleep(args.gap)
        _log_times(gw, edits)
        final, _, _ = gw.workers()
        res["finalWorkers"] = final
        others = {n: final[n]["pid"] for n in OUR_WORKERS if n != IRC and final[n]["pid"] != base[n]}
        res["unaffectedRestarts"] = len(others) + sum(1 for e in edits if e.get("othersChanged"))
        if others:
            gw.problems.append(f"openclaw-sup: workers other than {IRC} were replaced: {others}")
        res["stopMs"] = gw.stop()
    except Unavailable as exc:
        res["skipped"] = str(exc)
        log(f"{TITLES[key]}: skipped: {exc}")
    finally:
        with contextlib.suppress(Exception):
            gw.stop()
        warn = gw.log_problems()
        res["logWarnings"] = warn
        remove(root, args.keep_tmp)
    res["edits"] = edits
    res["problems"] = gw.problems
    return res


def _iso(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _log_times(gw: OursReload, edits: list[dict[str, Any]]) -> None:
    """From the JSONL log: when each reload was decided, the old irc worker stopped, the new one was ready.

    Log times are wall-clock ISO stamps truncated to the millisecond; the edit time is `time.time()` taken
    right after os.replace, so these are comparable to within ~1 ms.
    """
    ready: dict[int, float] = {}
    stopped: dict[int, float] = {}
    reloads: list[float] = []
    digests: set[str] = set()
    try:
        lines = gw.gw_log.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        msg = str(r.get("message", ""))
        t = _iso(str(r.get("time")))
        for prefix, into in ((f"worker {IRC} ready (pid ", ready), (f"worker {IRC} stopped (pid ", stopped)):
            if msg.startswith(prefix):
                with contextlib.suppress(ValueError):
                    into[int(msg[len(prefix) :].split(",", 1)[0].split(")", 1)[0])] = t
        if msg.startswith("config reload (file change"):
            reloads.append(t)
        elif msg.startswith(f"{IRC} started with options "):
            digests.add(msg.rsplit(" ", 1)[-1])
    for e in edits:
        wall = e["tReplaceWall"]
        if e.get("newPid") in ready:
            e["logReadyMs"] = (ready[e["newPid"]] - wall) * 1000
        if e["oldPid"] in stopped:
            e["logStoppedMs"] = (stopped[e["oldPid"]] - wall) * 1000
        after = [t for t in reloads if t >= wall - 0.002]
        if after:
            e["logReloadMs"] = (after[0] - wall) * 1000
    if len(reloads) != len(edits):
        gw.problems.append(
            f"openclaw-sup: {len(edits)} edits but {len(reloads)} 'config reload (file change' records in the log"
        )
    if len(digests) != len(edits) + 1:
        gw.problems.append(
            f"openclaw-sup: {IRC} reported {len(digests)} distinct option digests for "
            f"{len(edits)} edits (expected {len(edits) + 1})"
        )
    missing = [e["i"] for e in edits if "newPid" in e and "logReadyMs" not in e]
    if missing:
        gw.problems.append(f"openclaw-sup: no 'worker {IRC} ready' log record for edit(s) {missing[:10]}")


# ==================================================================================== circus


class CircusReload(Manager):
    """circusd with six watchers of bench/worker.py, check_delay 0.1; edits rewrite w0's args."""

    key = "circus-reload"
    title = TITLES["circus"]

    def __init__(self, report_port: int, bindir: Path, base_env: dict[str, str], keep_tmp: bool) -> None:
        super().__init__(report_port, keep_tmp, base_env)
        self.bindir = bindir
        self.endpoint = f"ipc://{self.tmp / 'endpoint.sock'}"
        self.ini = self.tmp / "circus.ini"
        self.rev = 0
        self.ini.write_text(self.render())

    def render(self) -> str:
        lines = circus_section(self.tmp, self.endpoint, 0.1)
        for w in CIRCUS_WATCHERS:
            extra = f" rev{self.rev}" if w == "w0" else ""
            lines += [
                "",
                f"[watcher:{w}]",
                f"cmd = {self.bindir / 'python'}",
                f"args = -u {WORKER_PY} {w} {self.report_port}{extra}",
                "numprocesses = 1",
                "copy_env = True",
            ]
        return "\n".join(lines) + "\n"

    def argv(self) -> list[str]:
        return [str(self.bindir / "circusd"), str(self.ini)]

    def status_argv(self) -> list[str]:
        return [str(self.bindir / "circusctl"), "--endpoint", self.endpoint, "status"]

    def reload_argv(self) -> list[str]:
        return [str(self.bindir / "circusctl"), "--endpoint", self.endpoint, "reloadconfig"]

    def log_file(self) -> Path:
        return self.tmp / "circus.log"


def run_circus(args: argparse.Namespace) -> dict[str, Any]:
    """Each edit: new args for w0 in the ini, then `circusctl reloadconfig`; latency to the new w0's report."""
    n_edits = args.circus_edits if args.circus_edits is not None else args.edits
    res: dict[str, Any] = {"title": TITLES["circus"], "loadavg": os.getloadavg()}
    try:
        bindir = ensure_peer(args.cache, "circus")
    except Unavailable as exc:
        return {**res, "skipped": str(exc), "edits": [], "problems": []}
    listener = Listener()
    env = bytecode_env(args.cache / "pycache")
    mgr = CircusReload(listener.port, bindir, env, args.keep_tmp)
    edits: list[dict[str, Any]] = []
    try:
        mark = listener.mark()
        mgr.start()
        first = listener.wait_names(CIRCUS_WATCHERS, mark, 30)
        if len(first) < len(CIRCUS_WATCHERS):
            raise Unavailable(
                f"watchers {sorted(set(CIRCUS_WATCHERS) - set(first))} did not report; {mgr.tail()[-300:]}"
            )
        base = {n: r.pid for n, r in first.items()}
        res["basePids"] = base
        current = first["w0"]
        log(f"{TITLES['circus']}: 6 watchers reported; {n_edits} edits")
        time.sleep(1.0)
        for i in range(n_edits):
            mgr.rev = i + 1
            mark = listener.mark()
            old = current.pid
            wall, mono = replace_file(mgr.ini, mgr.render())
            t = time.perf_counter()
            r = subprocess.run(mgr.reload_argv(), env=mgr.env(), capture_output=True, text=True, timeout=120)
            ctl_ms = (time.perf_counter() - t) * 1000
            t_ctl = time.monotonic()
            new = listener.wait_for(lambda rep, old=old: rep.name == "w0" and rep.pid != old, mark, DETECT_TIMEOUT)
            rec: dict[str, Any] = {
                "i": i + 1,
                "oldPid": old,
                "tReplace": mono,
                "tReplaceWall": wall,
                "circusctlMs": ctl_ms,
                "tCtlDone": t_ctl,
                "circusctlExit": r.returncode,
                "circusctlOut": (r.stdout + r.stderr).strip()[-200:],
            }
            if r.returncode:
                mgr.problems.append(
                    f"circus: edit {i + 1}: circusctl reloadconfig exited {r.returncode}: {rec['circusctlOut']}"
                )
            if new is None:
                mgr.problems.append(f"circus: edit {i + 1}: no new w0 within {DETECT_TIMEOUT:g}s")
                edits.append(rec)
                break
            rec.update(
                newPid=new.pid,
                tReported=new.received,
                reportedMs=(new.received - mono) * 1000,
                firstLineMs=(new.t0 - mono) * 1000,
            )
            others = [rep for rep in listener.reports[mark:] if rep.name != "w0"]
            rec["othersChanged"] = {rep.name: rep.pid for rep in others if rep.pid != base.get(rep.name)}
            edits.append(rec)
            current = new
            if (i + 1) % 10 == 0:
                recent = [e["reportedMs"] for e in edits[-10:] if "reportedMs" in e]
                log(f"{TITLES['circus']}: {i + 1}/{n_edits} edits, last 10 p50 {summarize(recent)['p50']:.0f} ms")
            time.sleep(args.gap)
        time.sleep(0.5)
        again = {rep.name for rep in listener.reports if rep.name != "w0" and rep.pid != base.get(rep.name)}
        res["unaffectedRestarts"] = sum(
            1 for rep in listener.reports if rep.name != "w0" and rep.pid != base.get(rep.name)
        )
        if again:
            mgr.problems.append(f"circus: watchers other than w0 were respawned: {sorted(again)}")
    except Unavailable as exc:
        res["skipped"] = str(exc)
        log(f"{TITLES['circus']}: skipped: {exc}")
    finally:
        tear_down(mgr, listener)
    res["edits"] = edits
    res["problems"] = mgr.problems
    return res


# ==================================================================================== report


def report(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One table per measure, every manager side by side; then the target and the problems seen."""
    loads = [
        f"{r['title']} {r['cpuBusyBeforePct']:.0f}% (load avg {r['loadavg'][0]:.2f})"
        for r in results.values()
        if "loadavg" in r
    ]
    print(
        "machine CPU busy over the second before each manager started (the bench waits for < 25%; other load "
        "skews every figure): " + ", ".join(loads)
    )
    cols = ["manager", "p50", "p90", "p99", "min", "max", "n"]

    def rows_for(fields: dict[str, str]) -> list[list[str]]:
        rows = []
        for key, r in results.items():
            field = fields.get(key)
            if field is None:
                continue
            if "skipped" in r:
                rows.append(skipped_row(r["title"], r["skipped"]))
                continue
            rows.append([r["title"], *spread([e[field] for e in r["edits"] if field in e])])
        return rows

    ours_keys = [k for k in results if k != "circus"]
    print_table(
        "edit -> affected worker ready (ms): ours from the log's `worker channel:irc:default ready` record (ms "
        "stamps), circus from the new w0's own TCP report, circusctl reloadconfig included",
        cols,
        rows_for({**dict.fromkeys(ours_keys, "logReadyMs"), "circus": "reportedMs"}),
    )
    print_table(
        f"edit -> status shows {IRC} running with a new pid (ms), polled every {args.poll_ms:g} ms "
        "(a user's view; upper bound of the above)",
        cols,
        rows_for(dict.fromkeys(ours_keys, "detectedMs")),
    )
    print_table(
        "edit -> ready, from status `readyS` (cross-check of the log figure)",
        cols,
        rows_for(dict.fromkeys(ours_keys, "readySMs")),
    )
    print_table(
        "where the time goes, openclaw-sup, from the log (ms after the edit): `config reload (file "
        "change ...)` = watcher + debounce + plan; old irc worker `stopped`; new one `ready` is above",
        ["manager / record", *cols[1:]],
        [
            [f"{r[0]} / {name}", *r[1:]] if len(r) > 2 else r
            for field, name in (("logReloadMs", "reload"), ("logStoppedMs", "stopped"))
            for r in rows_for(dict.fromkeys(ours_keys, field))
        ],
    )
    if "circus" in results:
        print_table(
            "where the time goes, circus (ms)",
            ["measure", *cols[1:]],
            [
                [name, *r[1:]] if len(r) > 2 else r
                for field, name in (
                    ("circusctlMs", "circusctl reloadconfig wall time"),
                    ("firstLineMs", "edit -> new w0's first line of code"),
                )
                for r in rows_for({"circus": field})
            ],
        )
    rows = []
    for _key, r in results.items():
        if "skipped" in r:
            rows.append(skipped_row(r["title"], r["skipped"]))
            continue
        done = sum(1 for e in r["edits"] if "newPid" in e)
        rows.append([r["title"], str(len(r["edits"])), str(done), str(r.get("unaffectedRestarts", "-"))])
    print_table(
        "edits applied; restarts of workers the edit did not touch (target 0)",
        ["manager", "edits", "replaced", "unaffected restarts"],
        rows,
    )
    verdicts: dict[str, Any] = {}
    print(f"\n== target (openclaw-sup): edit -> affected worker ready p99 < {TARGET_P99_MS:g} ms, debounce included")
    for key in ours_keys:
        r = results[key]
        values = [e["logReadyMs"] for e in r.get("edits", []) if "logReadyMs" in e]
        p99 = summarize(values)["p99"] if values else None
        met = p99 is not None and p99 < TARGET_P99_MS
        print(f"   {r['title']:<42} p99 {fmt(p99):>7} ms   {'met' if met else 'NOT MET'}")
        verdicts[key] = {"p99Ms": p99, "limitMs": TARGET_P99_MS, "met": met}
    problems = [p for r in results.values() for p in r.get("problems", [])]
    print_problems(problems)
    warns = sorted({w for r in results.values() for w in r.get("logWarnings", [])})
    if warns:
        print("\n== warn/error lines in our gateway logs (distinct)")
        for w in warns:
            print(f"   - {w}")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {}
    for key in args.peer_list:
        busy = wait_quiet()
        log(f"{TITLES[key]}: machine CPU {busy:.0f}% busy before the start")
        results[key] = run_circus(args) if key == "circus" else run_ours(key, args)
        results[key]["cpuBusyBeforePct"] = busy
    finished = dt.datetime.now(dt.UTC)
    publish("reload", args, started, finished, f"{args.edits} edits each, {args.gap:g}s apart",
            lambda: report(results, args), {"managers": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
