"""`openclaw-sup status [--json] [--watch]`: the process table, worker by worker.

Standard library only (no typer, asyncio, zmq or rich), so it answers in tens of milliseconds.
Exit 0 when every wanted worker is running or idle (on-demand, not used yet), 1 when any is not (failed, backoff,
starting...),
2 when no gateway answers (the reason goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from openclaw_sup.argformat import HelpFormatter
from openclaw_sup.config.paths import NODE_RUN_DIR, resolve_or_report
from openclaw_sup.ipc.control import ControlError, call

SERVING = ("running", "idle")
STATE_NOTES = {"idle": " (starts on first use)"}
COLUMNS = ("NAME", "KIND", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT", "RSS", "CPU%", "HB", "LAST ERROR")


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 1048576:.1f} MB"


def exit_code(snapshot: dict[str, object]) -> int:
    started = snapshot["supervisor"].get("started", True)
    return 0 if started and all(w["state"] in SERVING for w in snapshot["workers"]) else 1


def render(snap: dict[str, object], width: int = 160) -> str:
    sup = snap["supervisor"]
    head = (f"openclaw-sup {sup['version']} [{sup['profile']}]  pid {sup['pid']}  rss {fmt_bytes(sup['rss'])}  "
            f"up {fmt_duration(sup['uptimeS'])}  {sup['listen']}"
            + ("" if sup.get("started", True) else "  (starting)"))
    rows = [COLUMNS]
    for w in snap["workers"]:
        last_exit = (w["lastExit"] or {}).get("text") or "-"
        state = w["state"] + STATE_NOTES.get(w["state"], "") + (f" ({w['retryInS']:.1f}s)" if w.get("retryInS") else "")
        hb = "-" if w["heartbeatAgeS"] is None else f"{w['heartbeatAgeS']:.1f}s"
        cpu = "-" if w["cpuPct"] is None else f"{w['cpuPct']:.1f}"
        rows.append((w["name"], w["kind"], str(w["pid"] or "-"), state, fmt_duration(w["uptimeS"]),
                     str(w["restarts"]), last_exit, fmt_bytes(w["rss"]), cpu, hb, w["lastError"] or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = [head, *notes(sup), ""]
    for r in rows:
        line = "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + "  " + r[-1]
        lines.append(line[:width] if width else line)
    if not snap["workers"]:
        lines.append("(no workers)")
    return "\n".join(lines)


def notes(sup: dict[str, object]) -> list[str]:
    """Lines under the header for what goes beyond one worker: no fork server, its standbys, a port under pressure."""
    out = []
    fs = sup.get("forkServer") or {}
    if fs.get("problem"):
        out.append(f"fork server: DOWN - {fs['problem']}")
    elif fs.get("standbys") or fs.get("standbysWanted"):
        pids = ", ".join(str(p) for p in fs.get("standbys") or []) or "being forked"
        out.append(f"fork server: pid {fs.get('pid')}; standby for the next respawn: {pids} (kept while workers "
                   f"exit unplanned)")
    port, fds = sup.get("port") or {}, sup.get("fds") or {}
    if port and (port["refusedPerAddress"] or port["refusedFull"] or port["evicted"]
                 or port["open"] >= port["capacity"] * 0.8):
        used = f"; fds {fds['open']}/{fds['limit']}" if "open" in fds else ""
        out.append(f"port: {port['open']} of {port['capacity']} sockets open, {port['unauthenticated']} "
                   f"unauthenticated; refused {port['refusedPerAddress'] + port['refusedFull']}, "
                   f"evicted {port['evicted']} since start{used}")
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="openclaw-sup status", description="Show the gateway's workers.",
                                formatter_class=HelpFormatter)
    p.add_argument("--json", action="store_true", help="print the raw snapshot as JSON")
    p.add_argument("--watch", action="store_true", help="refresh every second until interrupted")
    p.add_argument("--profile")
    p.add_argument("--dev", action="store_true")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the gateway")
    p.add_argument("--node", action="store_true", help="the node host (`openclaw-sup node run`), not the gateway")
    args = p.parse_args(argv)
    paths = resolve_or_report(args.profile, args.dev)
    if paths is None:
        return 2
    if args.watch:  # a Ctrl-C is taken only between draws, never halfway through one
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    code = 2
    while True:
        try:
            socket = paths.state_dir / NODE_RUN_DIR / "ctl.sock" if args.node else paths.control_socket
            snap = call(socket, "status", timeout=args.timeout)
        except ControlError as exc:
            if args.json:
                print(json.dumps({"ok": False, "error": str(exc)}))
            print(f"openclaw-sup status: {exc}", file=sys.stderr)
            code = 2
        else:
            code = exit_code(snap)
            if args.json:
                print(json.dumps(snap, indent=2))
            else:
                if args.watch:
                    sys.stdout.write("\x1b[H\x1b[2J")
                width = 0 if not sys.stdout.isatty() else _terminal_width()
                print(render(snap, width))
        if not args.watch:
            return code
        try:
            sys.stdout.flush()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            time.sleep(1.0)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        except KeyboardInterrupt:
            return code


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((160, 40)).columns
