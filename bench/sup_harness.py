"""One openclaw-sup gateway for the hardening benches (hostile.py, fuzz.py, soak.py): started on loopback with
its own state, port and descriptor limit; sampled from outside (RSS, tree PSS, descriptors, threads); its
workers killed and timed back through the control socket, as `openclaw-sup status` sees them.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from bench_common import SERVING, free_port, stop_process, tree_memory

from openclaw_sup.ipc.control import ControlError, call

OUR_BIN = Path(sys.executable).parent / "openclaw-sup"
TOKEN = "bench-hardening-token-0123456789"
HOOK_TOKEN = "bench-hook-token-9876543210abcdef"


class Supervisor:
    def __init__(self, nofile: int | None = None, settings: dict[str, Any] | None = None,
                 config: dict[str, Any] | None = None, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="oc-harden-"))
        self.keep = keep
        self.port = free_port()
        self.nofile = nofile
        self.state = self.root / "state"
        self.state.mkdir(mode=0o700)
        self.log_file = self.root / "gateway.log"
        self.stdout = self.root / "stdout.txt"
        cfg = {"gateway": {"mode": "local", "port": self.port, "auth": {"mode": "token", "token": TOKEN},
                           "http": {"endpoints": {"chatCompletions": {"enabled": True}}}},
               "logging": {"file": str(self.log_file)}, "agents": {"defaults": {"model": "echo/echo"}},
               "hooks": {"enabled": True, "token": HOOK_TOKEN}, **(config or {})}
        config_path = self.state / "openclaw.json"
        config_path.write_text(json.dumps(cfg))
        config_path.chmod(0o600)
        (self.root / "sup.json").write_text(json.dumps(settings or {}))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def control(self) -> Path:
        return self.state / "run" / "ctl.sock"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
        env.update(HOME=str(self.root), OPENCLAW_STATE_DIR=str(self.state),
                   OPENCLAW_SUP_CONFIG=str(self.root / "sup.json"))
        return env

    def start(self, timeout: float = 60.0) -> None:
        limit = self.nofile

        def limits() -> None:
            if limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # as `ulimit -n N`: soft and hard

        out = self.stdout.open("ab")
        self.proc = subprocess.Popen([str(OUR_BIN), "gateway"], env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=limits)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ControlError, OSError, ValueError):
                st = self.status()
                if st["supervisor"]["started"] and all(w["state"] in SERVING for w in st["workers"]):
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}: {self.stdout.read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError("gateway did not start with every worker running")

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        return call(self.control, "status", timeout=timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker(self, name: str) -> dict[str, Any]:
        return next(w for w in self.status()["workers"] if w["name"] == name)

    def kill_worker(self, name: str, timeout: float = 60.0) -> float:
        """SIGKILL a worker; ms until status shows a new pid of it `running`."""
        old = self.worker(name)["pid"]
        t = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while time.monotonic() - t < timeout:
            with contextlib.suppress(ControlError, OSError, StopIteration):
                w = self.worker(name)
                if w["state"] == "running" and w["pid"] not in (None, old):
                    return (time.monotonic() - t) * 1000
            time.sleep(0.01)
        raise RuntimeError(f"{name} not back within {timeout:g}s")

    def sample(self) -> dict[str, Any]:
        """Supervisor RSS and descriptors and threads, the tree's PSS; from /proc, not from the gateway."""
        p = psutil.Process(self.pid)
        mem = tree_memory(self.pid)
        return {"t": time.monotonic(), "rss": p.memory_info().rss, "treePss": mem["treePss"],
                "fds": p.num_fds(), "threads": p.num_threads(), "treeThreads": sum(
                    _threads(q) for q in [p, *p.children(recursive=True)]), "cpuS": sum(p.cpu_times()[:2])}

    def cli_status(self) -> tuple[int, float]:
        t = time.perf_counter()
        res = subprocess.run([str(OUR_BIN), "status"], env=self.env(), capture_output=True, timeout=30)
        return res.returncode, (time.perf_counter() - t) * 1000

    def log_lines(self) -> list[dict[str, Any]]:
        with contextlib.suppress(OSError):
            return [json.loads(x) for x in self.log_file.read_text(errors="replace").splitlines() if x.strip()]
        return []

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, 30)
        code = self.proc.returncode
        if self.keep:
            print(f"[bench] kept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        return code


def _threads(p: psutil.Process) -> int:
    with contextlib.suppress(psutil.Error):
        return p.num_threads()
    return 0
