"""`gateway --force`: end whatever gateway listens on the port first, but never a process that is not one."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil


class ForceRefused(RuntimeError):
    pass


def _is_gateway(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        cmd = " ".join(proc.cmdline())
        return "openclaw" in cmd or proc.name().startswith("openclaw")
    return False


def listeners(port: int) -> list[psutil.Process]:
    pids = {c.pid for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
    return [psutil.Process(p) for p in sorted(pids) if p != os.getpid() and psutil.pid_exists(p)]


def free_port(port: int, timeout: float = 5.0) -> list[str]:
    """Stop the gateway processes listening on `port`; return what was done, raise for a stranger."""
    done = []
    for proc in listeners(port):
        if not _is_gateway(proc):
            with contextlib.suppress(psutil.Error):
                name = proc.name()
            raise ForceRefused(f"--force: port {port} is held by pid {proc.pid} ({name}), which is not an OpenClaw "
                               "gateway; refusing to kill it (stop it yourself or pick another --port)")
        # Signal the gateway's own process group head: our supervisor stops its workers on SIGTERM.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
            done.append(f"--force: stopped gateway pid {proc.pid} listening on port {port}")
        except psutil.TimeoutExpired:
            proc.kill()
            done.append(f"--force: killed gateway pid {proc.pid} on port {port} (no exit {timeout:g}s after SIGTERM)")
    deadline = time.monotonic() + timeout
    while listeners(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    return done
