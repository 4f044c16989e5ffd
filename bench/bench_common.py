"""Shared pieces of the recovery bench: the report listener, percentiles, process-tree memory, CLI timing.

Every timestamp is `time.monotonic()` (CLOCK_MONOTONIC, system-wide), so times taken by the bench, by the
workers and by the listener thread compare directly.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024
SERVING = ("running", "idle")
"""Worker states that count as up: running, or on-demand and not used yet (it starts on its first request)."""
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path.home() / ".cache" / "openclaw-sup-bench"


def rounded(value: Any) -> Any:
    """`value` with every float to 6 decimals (1 us of a CLOCK_MONOTONIC stamp in s, 1 ns of a latency in ms):
    the raw files hold every sample, and 17 significant digits each tripled their size."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def add_output_args(p: argparse.ArgumentParser, bench: str, keep_help: str, *, cache: bool = True,
                    txt: bool = True) -> None:
    """`--cache`, `--out`, `--txt` and `--keep-tmp`, worded the same in every bench."""
    if cache:
        p.add_argument("--cache", type=Path, default=CACHE, help="where the peers' installs and venvs live")
    p.add_argument("--out", type=Path, default=None, help=f"raw JSON (default bench/results/{bench}-<date>.json)")
    if txt:
        p.add_argument("--txt", type=Path, default=RESULTS / f"{bench}-run.txt", help="copy of the printed report")
    p.add_argument("--keep-tmp", action="store_true", help=keep_help)


def chosen(p: argparse.ArgumentParser, raw: str, known: Sequence[str], what: str = "peer") -> list[str]:
    """The names of a comma list, each checked against `known` (an unknown one is a usage error)."""
    names = [s.strip() for s in raw.split(",") if s.strip()]
    bad = [s for s in names if s not in known]
    if bad:
        p.error(f"unknown {what}(s) {', '.join(bad)}; choose from {', '.join(known)}")
    return names


def log(msg: str) -> None:
    """Progress goes to stderr so stdout stays the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def print_problems(problems: list[str]) -> None:
    print("\n== problems seen")
    for p in problems or ["none"]:
        print(f"   - {p}")


def publish(bench: str, args: argparse.Namespace, started: dt.datetime, finished: dt.datetime, headline: str,
            render: Callable[[], Any], data: dict[str, Any]) -> None:
    """Print the report `render` prints (it returns the target verdicts), then keep it: the raw numbers as JSON
    (`--out`, else results/<bench>-<date>.json) and, when the bench has `--txt`, the printed text."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print(f"{bench} bench {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC; {os.cpu_count()} cpus, "
              f"{platform.system()} {platform.release()}, Python {platform.python_version()}; {headline}")
        verdicts = render()
    out = getattr(args, "out", None) or RESULTS / f"{bench}-{started:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = {
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
        **data,
        "targets": verdicts,
    }
    out.write_text(json.dumps(rounded(raw), separators=(",", ":"), default=str) + "\n")
    text = buf.getvalue() + f"\nraw numbers: {out}\n"
    print(text, end="")
    txt = getattr(args, "txt", None)
    if txt is not None:
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text(text)


@dataclass(frozen=True)
class Report:
    """One line a worker sent: `name pid t0 ppid [extra...]`, stamped when the listener had it whole."""

    name: str
    pid: int
    t0: float
    ppid: int
    received: float
    extra: tuple[str, ...] = ()


class Listener:
    """A TCP listener on 127.0.0.1 in its own thread, so arrivals are stamped without waiting on the bench.

    It keeps every report in order; `wait_for` blocks the bench until a matching one arrives.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.reports: list[Report] = []
        self.bad_lines: list[str] = []
        self._cond = threading.Condition()
        self._stop_r, self._stop_w = os.pipe()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        self._buffers: dict[socket.socket, bytearray] = {}
        self._thread = threading.Thread(target=self._run, name="report-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data == "stop":
                    return
                if key.fileobj is self.sock:
                    with contextlib.suppress(BlockingIOError):
                        conn, _addr = self.sock.accept()
                        conn.setblocking(False)
                        self._buffers[conn] = bytearray()
                        self._sel.register(conn, selectors.EVENT_READ, "conn")
                    continue
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                now = time.monotonic()
                if not data:
                    self._sel.unregister(conn)
                    self._buffers.pop(conn, None)
                    conn.close()
                    continue
                buf = self._buffers[conn]
                buf.extend(data)
                while b"\n" in buf:
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf[:] = rest
                    self._add(line.decode("utf-8", "replace"), now)

    def _add(self, line: str, now: float) -> None:
        parts = line.split()
        try:
            report = Report(parts[0], int(parts[1]), float(parts[2]), int(parts[3]), now, tuple(parts[4:]))
        except (IndexError, ValueError):
            with self._cond:
                self.bad_lines.append(line)
            return
        with self._cond:
            self.reports.append(report)
            self._cond.notify_all()

    def mark(self) -> int:
        """Index of the next report to arrive: pass it to `wait_for` to ignore older ones."""
        with self._cond:
            return len(self.reports)

    def wait_for(self, pred: Callable[[Report], bool], start: int, timeout: float) -> Report | None:
        """The first report from index `start` on that matches `pred`, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.reports):
                    if pred(self.reports[i]):
                        return self.reports[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_names(self, names: Sequence[str], start: int, timeout: float) -> dict[str, Report]:
        """Latest report of each name from `start` on, waiting until all names reported or timeout."""
        deadline = time.monotonic() + timeout
        seen: dict[str, Report] = {}
        i = start
        with self._cond:
            while True:
                while i < len(self.reports):
                    r = self.reports[i]
                    if r.name in names:
                        seen[r.name] = r
                    i += 1
                left = deadline - time.monotonic()
                if len(seen) == len(names) or left <= 0:
                    return seen
                self._cond.wait(left)

    def pids(self) -> set[int]:
        with self._cond:
            return {r.pid for r in self.reports}

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for conn in list(self._buffers):
            conn.close()
        self.sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._sel.close()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, min, max and n: the spread matters as much as the median for a supervisor."""
    s = sorted(values)
    if not s:
        return {
            "p50": float("nan"),
            "p90": float("nan"),
            "p99": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
            "n": 0,
        }
    return {
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "min": s[0],
        "max": s[-1],
        "n": len(s),
    }


ROLLUP_FIELDS = ("Pss_Anon", "Pss_File", "Private_Dirty", "Shared_Dirty", "Shared_Clean")


def smaps_rollup(pid: int) -> dict[str, int]:
    """Where a process's pages are (bytes): anonymous or file-backed PSS, and private vs shared with its kin.

    For a forked tree the split tells what sharing works: Shared_* pages are the fork server's image still
    shared with a worker, Private_Dirty what a process wrote (its own heap, and copies made on write).
    """
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ROLLUP_FIELDS:
                out[name] = int(rest.split()[0]) * 1024
    return out


PFN_MASK = (1 << 55) - 1
PRESENT, FILE_PAGE = 1 << 63, 1 << 61


def distinct_pages(pids: Sequence[int]) -> dict[str, int] | None:
    """Bytes of the distinct physical pages a tree maps (anonymous and file-backed), each counted once however many
    of its processes map it: the tree's footprint as on a host where it is the only program, whatever else runs
    here (PSS gives a share of a library's pages to every other process mapping it). Needs the pages' frame
    numbers, which /proc/PID/pagemap shows only to root (None otherwise)."""
    page = os.sysconf("SC_PAGE_SIZE")
    seen: dict[str, set[int]] = {"anon": set(), "file": set()}
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
            pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except OSError:
            continue
        try:
            for line in maps:
                start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
                try:
                    data = os.pread(pagemap, (end - start) // page * 8, start // page * 8)
                except OSError:  # [vsyscall]
                    continue
                for (entry,) in struct.iter_unpack("<Q", data):
                    if entry & PRESENT:
                        if not entry & PFN_MASK:
                            return None
                        seen["file" if entry & FILE_PAGE else "anon"].add(entry & PFN_MASK)
        finally:
            os.close(pagemap)
    return {kind: len(pfns) * page for kind, pfns in seen.items()}


def process_role(cmdline: str) -> str:
    """A short name for a tree member: our titles are `openclaw-sup: <role> [profile]`; a peer's worker is
    `python worker.py wN PORT`; anything else is its program's name."""
    words = cmdline.split()
    if words[:1] == ["openclaw-sup:"] and len(words) > 1:
        return words[1]
    if len(words) >= 3 and words[-3].endswith("worker.py"):
        return words[-2]
    return Path(words[0]).name if words else "?"


def tree_memory(pid: int) -> dict[str, Any]:
    """RSS, PSS and USS of a manager alone and summed with all its descendants, and each process's own.

    PSS is the fair total: pages shared between forked processes are split between them, not counted
    once per process as RSS does. Each row also has its smaps_rollup split (`smaps_rollup`).
    """
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    rows = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            mi = p.memory_full_info()
            name = " ".join(p.cmdline())
            rows.append(
                {
                    "pid": p.pid,
                    "ppid": p.ppid(),
                    "name": name[:80],
                    "role": process_role(name),
                    "rss": mi.rss,
                    "pss": mi.pss,
                    "uss": mi.uss,
                    "threads": p.num_threads(),
                    **smaps_rollup(p.pid),
                }
            )
    mgr = next((r for r in rows if r["pid"] == pid), {"rss": 0, "pss": 0, "uss": 0})
    return {
        "managerRss": mgr["rss"],
        "managerPss": mgr["pss"],
        "managerUss": mgr["uss"],
        "treeRss": sum(r["rss"] for r in rows),
        "treePss": sum(r["pss"] for r in rows),
        "treeUss": sum(r["uss"] for r in rows),
        "procs": len(rows),
        "treeDistinct": distinct_pages([r["pid"] for r in rows]),
        "detail": rows,
    }


def pss_split_rows(title: str, mem: dict[str, Any], group: dict[str, str] | None = None) -> list[list[str]]:
    """One row per role of a tree (roles in `group` are folded into one row, e.g. w0..w4 -> "worker"):
    count, PSS each (median when several), PSS summed, private dirty, shared, anonymous and file PSS."""
    group = group or {}
    by: dict[str, list[dict[str, Any]]] = {}
    for d in mem["detail"]:
        by.setdefault(group.get(d["role"], d["role"]), []).append(d)
    rows = []
    for role, ds in by.items():
        def med(key: str, ds: list[dict[str, Any]] = ds) -> str:
            return f"{statistics.median(d.get(key, 0) for d in ds) / MB:.1f}"

        shared = statistics.median(d.get("Shared_Dirty", 0) + d.get("Shared_Clean", 0) for d in ds) / MB
        rows.append([title, role, str(len(ds)), med("pss"), f"{sum(d['pss'] for d in ds) / MB:.1f}",
                     med("Private_Dirty"), f"{shared:.1f}", med("Pss_Anon"), med("Pss_File"),
                     str(max(d.get("threads", 0) for d in ds))])
        title = ""
    rows.append(["", "total", str(mem["procs"]), "", f"{mem['treePss'] / MB:.1f}", "", "", "", "", ""])
    return rows


PSS_SPLIT_HEADER = ["tree", "process", "n", "PSS each", "PSS sum", "priv dirty", "shared", "PSS anon",
                    "PSS file", "threads"]


@dataclass(frozen=True)
class Stamp:
    """One line of the timeline file bench/timeline/sitecustomize.py writes."""

    pid: int
    ppid: int
    t: float
    cpu: float
    event: str
    detail: str


def read_timeline(path: Path) -> list[Stamp]:
    """Every stamp of a timeline file, in time order (processes append concurrently)."""
    stamps = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(" ", 5)
            with contextlib.suppress(ValueError, IndexError):
                stamps.append(Stamp(int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]), parts[4],
                                    parts[5] if len(parts) > 5 else ""))
    return sorted(stamps, key=lambda s: s.t)


TIMELINE_DIR = Path(__file__).resolve().parent / "timeline"


STARTUP_MODULES = ("openclaw_sup.supervisor.main", "openclaw_sup.supervisor.arbiter", "openclaw_sup.gateway.http_app",
                   "aiohttp")
STARTUP_MILESTONES = (
    ("python", "supervisor", "interpreter and site up (exec -> here: interpreter start-up)"),
    ("mainImport", "supervisor", "openclaw_sup.supervisor.main starts loading"),
    ("forkServerForked", "supervisor", "fork server forked (imports and config before it done)"),
    ("arbiterImport", "supervisor", "openclaw_sup.supervisor.arbiter starts loading (after the fork)"),
    ("bound", "supervisor", "gateway port bound"),
    ("forkServerPreloaded", "fork server", "fork server preloaded (its gc.freeze)"),
    ("firstWorkerForked", "fork server", "first worker forked"),
    ("listening", "supervisor", "clients served: the `gateway listening` log record (ms precision)"),
    ("firstWorkerReady", "worker", "first worker said ready (log record, ms precision)"),
    ("lastWorkerReady", "worker", "last first-start worker said ready: the gateway leaves `starting`"),
    ("httpImport", "supervisor", "gateway.http_app (aiohttp side) starts loading"),
)


def startup_milestones(stamps: Sequence[Stamp], root: int, port: int, t_spawn: float,
                       ready_at: Sequence[float] = (), listening_at: Sequence[float] = ()
                       ) -> tuple[dict[str, float], dict[str, float]]:
    """ms from spawn to each milestone of STARTUP_MILESTONES that the stamps show, for the tree of `root`; and
    the CPU ms its process had spent by then (for the milestones a stamp marks)."""
    cpu: dict[str, float] = {}

    def first(pred: Callable[[Stamp], bool]) -> float | None:
        return next((s.t for s in stamps if pred(s)), None)

    def stamped(name: str, pred: Callable[[Stamp], bool]) -> float | None:
        hit = next((s for s in stamps if pred(s)), None)
        if hit is None:
            return None
        cpu[name] = hit.cpu * 1000
        return hit.t

    fs_pid = next((s.pid for s in stamps if s.event == "child" and s.ppid == root), None)
    found = {
        "python": stamped("python", lambda s: s.pid == root and s.event == "start"),
        "mainImport": stamped("mainImport", lambda s: s.pid == root and s.detail == "openclaw_sup.supervisor.main"),
        "forkServerForked": stamped("forkServerForked", lambda s: s.pid == root and s.event == "fork"),
        "arbiterImport": stamped("arbiterImport",
                                 lambda s: s.pid == root and s.detail == "openclaw_sup.supervisor.arbiter"),
        "bound": stamped("bound", lambda s: s.pid == root and s.event == "bind" and s.detail.endswith(f",{port})")),
        "forkServerPreloaded": stamped("forkServerPreloaded", lambda s: s.pid == fs_pid and s.event == "gc.freeze"),
        "firstWorkerForked": first(lambda s: s.ppid == fs_pid and s.event == "child"),
        "listening": min(listening_at) if listening_at else None,
        "firstWorkerReady": min(ready_at) if ready_at else None,
        "lastWorkerReady": max(ready_at) if ready_at else None,
        "httpImport": stamped("httpImport", lambda s: s.pid == root and s.detail == "openclaw_sup.gateway.http_app"),
    }
    return {k: (v - t_spawn) * 1000 for k, v in found.items() if v is not None}, cpu


def log_times(path: Path, needle: str, offset: float) -> list[float]:
    """Monotonic times of our gateway's JSONL log records whose message contains `needle`; `offset` is
    time.time() - time.monotonic() (records carry wall-clock ISO times to the millisecond)."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                rec = json.loads(line)
                if needle in str(rec.get("message", "")):
                    out.append(dt.datetime.fromisoformat(rec["time"]).timestamp() - offset)
    return out


def timeline_env(path: Path, modules: Sequence[str], pythonpath: str | None = None) -> dict[str, str]:
    """The variables that switch the timeline stamps on for a process tree (bench/timeline/)."""
    parts = [str(TIMELINE_DIR), *([pythonpath] if pythonpath else [])]
    return {"OCSB_TIMELINE": str(path), "OCSB_TIMELINE_MODULES": ",".join(modules), "PYTHONPATH": ":".join(parts)}


def time_cli(argv: list[str], env: dict[str, str] | None, runs: int) -> tuple[list[float], list[int], str]:
    """Wall time (ms) of the whole CLI process, as a user waits for it; also exit codes and last output."""
    times: list[float] = []
    codes: list[int] = []
    out = ""
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        times.append((time.perf_counter() - t) * 1000)
        codes.append(r.returncode)
        out = (r.stdout + r.stderr).strip()
    return times, codes, out


def free_port() -> int:
    """A TCP port nobody listens on right now (for our gateway's own listener)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[Any], timeout: float, *, group: bool = False) -> float | None:
    """SIGTERM (to the process, or to its group when it is the group's leader and its children would not get it
    otherwise), wait up to `timeout`, then SIGKILL the group; returns the ms SIGTERM -> exit, None if killed."""
    if proc.poll() is not None:
        return 0.0
    t = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return (time.monotonic() - t) * 1000
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def kill_leftovers(pids: set[int], since: float) -> list[int]:
    """SIGKILL reported worker pids still alive, only processes born after `since` (no pid-reuse kills)."""
    killed = []
    for pid in sorted(pids):
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.create_time() >= since - 1 and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                killed.append(pid)
    return killed
