"""Out of file descriptors: a spawn or a fork server restart that fails is a visible, retried failure, and
everything comes back by itself once descriptors are free again.

The supervisor's soft RLIMIT_NOFILE is lowered from outside (prlimit(2)) below what it has open, so nothing
new can be opened; the slow retry of `failed` workers is set to ten minutes, so a recovery seen here is the
supervisor noticing the room, not that timer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest
from test_gateway_protocol import client, gw_config

from conftest import BIN, Gateway, wait_for

UPGRADE_NO_END = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 13\r\n")
SETTINGS = {"workers": {"w": {"kind": "sleeper"}, "agent": {"kind": "fake_owner"}},
            "restart": {"failedRetryMs": 600_000}}


@pytest.fixture
def gw(gateway_factory) -> Gateway:
    return gateway_factory(SETTINGS, config=gw_config()).start()


class Starved:
    """The supervisor's soft descriptor limit held below what it has open, until `release`. The kernel hands out
    the lowest free number under the limit, so the limit is also kept at or below the workers' output pipes (the
    pipes of which the supervisor holds one end): what a dying worker, or a lost fork server's workers, frees
    must not make room again."""

    def __init__(self, g: Gateway, below: int = 8) -> None:
        self.pid = g.status()["supervisor"]["pid"]
        self.soft, self.hard = resource.prlimit(self.pid, resource.RLIMIT_NOFILE)
        fds = os.listdir(f"/proc/{self.pid}/fd")
        pipes: dict[str, list[int]] = {}
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                if target.startswith("pipe:"):
                    pipes.setdefault(target, []).append(int(fd))
        outputs = [ends[0] for ends in pipes.values() if len(ends) == 1]  # the other end is a worker's
        resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (min([len(fds) - below, *outputs]), self.hard))

    def release(self) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (self.soft, self.hard))


@pytest.fixture
def starve(gw: Gateway) -> Iterator[type[Starved]]:
    made: list[Starved] = []

    def make(g: Gateway, below: int = 8) -> Starved:
        made.append(Starved(g, below))
        return made[-1]

    yield make  # type: ignore[misc]
    for s in made:
        s.release()


def states(g: Gateway) -> dict[str, tuple[str, str | None]]:
    return {w["name"]: (w["state"], w["lastError"]) for w in g.status()["workers"]}


def test_a_spawn_out_of_descriptors_is_visible_then_recovers(gw: Gateway, starve) -> None:
    s = starve(gw)
    os.kill(gw.worker("w")["pid"], signal.SIGKILL)
    _state, error = wait_for(lambda: (w := states(gw)["w"])[0] in ("backoff", "failed") and w[1]
                            and "Too many open files" in w[1] and w, 20, what="the failed spawn in status")
    assert error.startswith("spawn failed: OSError: [Errno 24]")
    res = gw.run_cli("status", "--json")
    assert res.returncode == 1, res.stderr  # answered (1: a worker is not running), though out of descriptors
    assert json.loads(res.stdout)["workers"]
    assert gw.status()["supervisor"]["fds"]["sparesLent"] > 0, "status was answered with a spare descriptor"
    wait_for(lambda: states(gw)["w"][0] == "failed", 20, what="w marked failed after its crash-loop window")
    s.release()
    wait_for(lambda: states(gw)["w"][0] == "running", 20, what="w running again once descriptors are free")
    log = gw.log_text()
    assert "worker w: spawn failed: OSError: [Errno 24] Too many open files" in log
    assert "worker w is crash-looping" in log


def test_a_fork_server_lost_while_out_of_descriptors_comes_back(gw: Gateway, starve) -> None:
    c = client(gw)
    c.connect()
    s = starve(gw)
    os.kill(gw.status()["supervisor"]["forkServerPid"], signal.SIGKILL)
    sup = wait_for(lambda: (st := gw.status()["supervisor"])["forkServer"]["problem"] and st, 20,
                   what="the fork server reported down")
    assert "cannot start a fork server" in sup["forkServer"]["problem"]
    assert "Too many open files" in sup["forkServer"]["problem"]
    assert sup["started"] is True, "a started gateway stays started whatever its workers do"
    shown = gw.run_cli("status")
    assert "fork server: DOWN - cannot start a fork server" in shown.stdout, shown.stdout + shown.stderr
    wait_for(lambda: all(st in ("backoff", "failed") and err and "no fork server" in err
                         for st, err in states(gw).values()), 20, what="every worker waiting for a fork server")
    assert c.request("health")["ok"] is True, "an authenticated client is served throughout"
    s.release()
    wait_for(lambda: all(st == "running" for st, _ in states(gw).values()), 30,
             what="every worker running once a fork server could be started")
    assert gw.status()["supervisor"]["forkServer"]["problem"] is None
    late = client(gw)
    late.connect()  # not "gateway starting": the gateway left `starting` once and for all
    assert late.request("health")["ok"] is True
    assert "fork server back" in gw.log_text()


def test_hostile_sockets_at_a_low_descriptor_limit(gateway_factory) -> None:
    """600 unauthenticated sockets against a supervisor limited to 256 descriptors: the good client, `status`
    and a worker restart all still work, and once the attacker leaves the port is as before."""
    settings = {**SETTINGS, "limits": {"headTimeoutMs": 60_000}}
    g = gateway_factory(settings, config=gw_config()).start()
    pid = g.status()["supervisor"]["pid"]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, 256))
    cap = wait_for(lambda: (p := g.status()["supervisor"]["port"])["capacity"] < 256 and p["capacity"], 10,
                   what="the port's capacity fitted to the new limit")
    good = client(g)
    good.connect()
    hostile: list[socket.socket] = []
    for i in range(600):
        s = socket.socket()
        s.bind((f"127.0.3.{i % 25 + 1}", 0))
        s.connect(("127.0.0.1", g.port))
        s.sendall((b"", b"GET / HTTP/1.1\r\nHost: x\r\n", UPGRADE_NO_END)[i % 3])
        hostile.append(s)
    port = wait_for(lambda: (p := g.status()["supervisor"]["port"])["evicted"] > 0 and p, 10,
                    what="evictions under the attack")
    assert port["open"] <= port["capacity"] + 1
    shown = g.run_cli("status")
    # the capacity is refitted each second from the supervisor's own descriptors (a CLI's control connection, a
    # pipe), so it may move by one or two between the reads: what is shown is the fitted one, under the limit
    fitted = re.search(r"of (\d+) sockets open", shown.stdout)
    assert shown.returncode == 0 and fitted and abs(int(fitted[1]) - cap) <= 2 and int(fitted[1]) < 256, shown.stdout
    assert good.request("health")["ok"] is True
    late = client(g)
    late.connect()
    assert late.request("health")["ok"] is True, "a new good client gets in during the attack"
    assert g.run_cli("status").returncode == 0
    old = g.worker("w")["pid"]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (w := g.worker("w"))["state"] == "running" and w["pid"] != old, 20,
             what="w back during the attack")
    for s in hostile:
        s.close()
    wait_for(lambda: g.status()["supervisor"]["port"]["unauthenticated"] == 0, 20, what="the attacker gone")
    assert good.request("health")["ok"] is True and late.request("health")["ok"] is True
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert fds < 128, f"{fds} descriptors still open after the attack"


def test_the_soft_descriptor_limit_is_raised_unless_the_operator_chose_it(gateway_factory) -> None:
    raised = start_with_limit(gateway_factory({"kinds": []}, config=gw_config()), 512, 4096)
    assert limit_of(raised) == (4096, 4096), "soft raised to hard (LimitNOFILE= in a unit sets both)"
    chosen = start_with_limit(gateway_factory({"kinds": [], "limits": {"nofile": 700}}, config=gw_config()), 512, 4096)
    assert limit_of(chosen) == (700, 4096)
    wait_for(lambda: chosen.status()["supervisor"]["fds"].get("limit") == 700, 10, what="the limit in status")


def limit_of(g: Gateway) -> tuple[int, int]:
    return resource.prlimit(g.status()["supervisor"]["pid"], resource.RLIMIT_NOFILE)


def start_with_limit(g: Gateway, soft: int, hard: int) -> Gateway:
    """Start the gateway as a shell that ran `ulimit -Sn soft -Hn hard` would."""
    out = g.stdout.open("ab")
    g.proc = subprocess.Popen([str(BIN), "gateway"], env=g.env, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    out.close()
    g.wait_all_running()
    return g
