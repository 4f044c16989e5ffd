"""sd_notify: the Notifier against a real datagram socket, and the real supervisor speaking it to a unit's socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, free_port
from openclaw_sup.supervisor.sdnotify import Notifier, status_line


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def _recv(sock: socket.socket, timeout: float = 2.0) -> dict[str, str]:
    sock.settimeout(timeout)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def _drain(sock: socket.socket) -> list[dict[str, str]]:
    out = []
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines()))
    sock.setblocking(True)
    return out


def test_messages_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier(path, 2_000_000)
    assert n.enabled and n.watchdog_interval == 1.0
    assert n.ready("up")
    assert _recv(sock) == {"READY": "1", "STATUS": "up"}
    assert not n.status("up"), "an unchanged STATUS line is not re-sent"
    assert n.status("2 workers:\n 2 running")
    assert _recv(sock) == {"STATUS": "2 workers: 2 running"}
    assert n.watchdog()
    assert _recv(sock) == {"WATCHDOG": "1"}
    assert n.reloading()
    msg = _recv(sock)
    assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
    assert n.stopping("bye")
    assert _recv(sock) == {"STOPPING": "1", "STATUS": "bye"}
    n.close()


def test_abstract_socket_address() -> None:
    name = f"openclaw-sup-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        n = Notifier("@" + name)
        assert n.ready()
        assert _recv(sock) == {"READY": "1"}
    finally:
        sock.close()


def test_silent_without_a_manager(tmp_path: Path) -> None:
    n = Notifier(None, 1_000_000)
    assert not n.enabled and n.watchdog_interval is None
    assert not n.ready() and not n.watchdog() and not n.stopping()
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert gone.enabled and not gone.ready(), "a dead socket is a False, never an exception"


def test_from_env_unsets_and_checks_the_watchdog_pid(notify_socket: tuple[socket.socket, str]) -> None:
    _, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid()), "OTHER": "x"}
    n = Notifier.from_env(env)
    assert n.watchdog_usec == 3_000_000 and env == {"OTHER": "x"}
    other = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"})
    assert other.enabled and other.watchdog_usec is None, "a watchdog meant for another pid is not ours"
    kept = {"NOTIFY_SOCKET": path}
    Notifier.from_env(kept, unset=False)
    assert kept == {"NOTIFY_SOCKET": path}


def test_watchdog_pings_from_the_event_loop(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier(path, 400_000)
    assert n.watchdog_interval == pytest.approx(0.2)
    healthy = {"ok": True}

    def pings() -> int:
        return sum(m == {"WATCHDOG": "1"} for m in _drain(sock))

    async def main() -> tuple[int, int]:
        """Pings keep coming while healthy (three seen), and none once the loop reports itself unhealthy."""
        n.start_watchdog(asyncio.get_running_loop(), lambda: healthy["ok"])
        seen, deadline = 0, time.monotonic() + 10
        while seen < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            seen += pings()
        healthy["ok"] = False
        pings()  # one sent just before the switch may still be queued
        await asyncio.sleep(3 * n.watchdog_interval)
        n.stop_watchdog()
        return seen, pings()

    healthy_pings, sick_pings = asyncio.run(main())
    assert healthy_pings >= 3 and sick_pings == 0, (healthy_pings, sick_pings)


def test_status_line() -> None:
    workers = [{"name": "agent", "state": "running"}, {"name": "channel:irc:a", "state": "backoff"},
               {"name": "scheduler", "state": "running"}]
    assert status_line(workers, "ws://127.0.0.1:1") == \
        "ws://127.0.0.1:1; 3 workers: 2 running, 1 backoff (channel:irc:a)"
    assert status_line([]) == "no workers"


@pytest.mark.live
def test_supervisor_speaks_sd_notify(tmp_path: Path) -> None:
    """The real gateway under a fake unit: READY=1, WATCHDOG=1 at least twice in 2 s, STATUS=, RELOADING=1 then
    READY=1 around a SIGHUP reload, STOPPING=1 after SIGTERM."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock_path = tmp_path / "notify.sock"
    sock.bind(str(sock_path))
    home, state = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    state.mkdir(mode=0o700)
    (state / "openclaw.json").write_text(json.dumps({
        "gateway": {"mode": "local", "auth": {"token": "x" * 24}}, "logging": {"file": str(tmp_path / "gw.log")}}))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}, "HOME": str(home),
           "OPENCLAW_STATE_DIR": str(state), "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen([str(BIN), "gateway", "--port", str(free_port())], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    seen: list[tuple[float, dict[str, str]]] = []

    def collect(until: float, stop_when: str | None = None) -> None:
        while time.monotonic() < until:
            sock.settimeout(max(0.01, until - time.monotonic()))
            try:
                data = sock.recv(4096).decode()
            except TimeoutError:
                return
            msg = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            seen.append((time.monotonic(), msg))
            if stop_when and stop_when in msg:
                return

    try:
        collect(time.monotonic() + 20, stop_when="READY")
        assert any("READY" in m for _, m in seen), f"no READY=1 within 20 s: {seen}"
        ready_at = next(t for t, m in seen if "READY" in m)
        collect(ready_at + 2.2)
        pings = [t for t, m in seen if m.get("WATCHDOG") == "1" and ready_at <= t <= ready_at + 2.0]
        assert len(pings) >= 2, f"expected WATCHDOG=1 at least twice within 2 s of READY: {seen}"
        assert any("STATUS" in m for _, m in seen), seen
        mark = len(seen)
        proc.send_signal(signal.SIGHUP)
        collect(time.monotonic() + 10, stop_when="READY")
        reload_msgs = [m for _, m in seen[mark:] if "RELOADING" in m or "READY" in m]
        assert reload_msgs and reload_msgs[0].get("RELOADING") == "1" and "READY" in reload_msgs[-1], seen[mark:]
        mark = len(seen)
        proc.send_signal(signal.SIGTERM)
        collect(time.monotonic() + 10, stop_when="STOPPING")
        assert any(m.get("STOPPING") == "1" for _, m in seen[mark:]), seen[mark:]
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
        sock.close()
