"""The fork server's standby: a process forked ahead and half started, which a respawn takes instead of a fork.

Real gateways, real processes, real ZeroMQ: by default none is kept while nothing crashes, one is made after an
unplanned exit and released once exits stop for `standbyKeepMs`; the standby's pid becomes the respawned worker's,
the worker it becomes answers and asks on the bus under its own name, a new standby follows, none is kept when the
settings say 0, and one that keeps dying before its request is given up (respawns then fork as before).
"""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from conftest import Gateway, wait_for
from openclaw_sup.config.settings import ConfigError, ForkServerTuning, SupervisorSettings, parse_settings
from openclaw_sup.workers.forkserver import STANDBY_AFTER_BOOT_S, STANDBY_FAILURES_MAX, STANDBY_QUIET_S

FAST = {"restart": {"stableAfterMs": 200}, "liveness": {"heartbeatIntervalMs": 200}}
AT_BOOT = {**FAST, "forkServer": {"standbyAtBoot": True}}


def standbys(gw: Gateway) -> list[int]:
    """Pids of the fork server's children titled as standbys."""
    fs = psutil.Process(gw.status()["supervisor"]["forkServerPid"])
    found = []
    for child in fs.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "openclaw-sup: standby [" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def one_standby(gw: Gateway, other_than: int | None = None) -> int:
    return wait_for(lambda: (s := standbys(gw)) and len(s) == 1 and s[0] != other_than and s[0], 10,
                    what="one standby forked by the fork server")


def respawned(gw: Gateway, name: str, old: int) -> dict:
    return wait_for(lambda: (w := gw.worker(name))["state"] == "running" and w["pid"] != old and w, 10,
                    what=f"{name} running again after its kill")


def test_a_respawn_takes_the_standby_which_then_works_on_the_bus(gateway_factory) -> None:
    gw = gateway_factory({**AT_BOOT, "workers": {"victim": {"kind": "sleeper"},
                                                 "asker": {"kind": "asker", "options": {"target": "victim"}}}})
    gw.start()
    fs = gw.status()["supervisor"]["forkServerPid"]
    first = one_standby(gw)
    assert first not in gw.pids().values(), "a standby is not a worker of the status table"
    wait_for(lambda: gw.status()["supervisor"]["forkServer"]["standbys"] == [first], 5,
             what="the standby's pid in the status snapshot")

    victim = gw.worker("victim")["pid"]
    time.sleep(0.25)  # past stableAfterMs: a first crash, restarted at once
    os.kill(victim, signal.SIGKILL)
    back = respawned(gw, "victim", victim)
    assert back["pid"] == first, "the respawn forked instead of taking the standby"
    log = gw.log_text()  # the exit is logged after the respawn's request left, yet still ahead of the spawn
    assert log.index(f"worker victim exited (pid {victim}") < log.index(f"worker victim spawned (pid {first})")
    proc = psutil.Process(first)
    assert proc.ppid() == fs
    assert os.getpgid(first) == first, "a worker leads its own process group, standby-born or not"
    assert "openclaw-sup: victim [" in " ".join(proc.cmdline())
    wait_for(lambda: gw.worker("victim")["rss"], 5, what="heartbeats (with stats) from the standby-born worker")

    second = one_standby(gw, other_than=first)
    asker = gw.worker("asker")["pid"]
    os.kill(asker, signal.SIGKILL)
    assert respawned(gw, "asker", asker)["pid"] == second
    # The standby-born asker asks the standby-born victim through the supervisor and gets its answer.
    wait_for(lambda: f"'pid': {first}" in gw.log_text(), 10, what="the asker's answer from the victim")

    third = one_standby(gw, other_than=second)
    assert gw.stop() == 0
    assert not psutil.pid_exists(third) or psutil.Process(third).status() == psutil.STATUS_ZOMBIE, \
        "the standby outlived the gateway"


def test_by_default_a_standby_follows_an_unplanned_exit_and_goes_when_exits_stop(gateway_factory) -> None:
    keep_ms = 2500
    gw = gateway_factory({**FAST, "forkServer": {"standbyKeepMs": keep_ms}, "workers": {"victim": {"kind": "sleeper"}}})
    gw.start()
    time.sleep(STANDBY_AFTER_BOOT_S + STANDBY_QUIET_S * 3)
    assert standbys(gw) == [], "a standby at boot on a host where nothing crashed"
    assert gw.status()["supervisor"]["forkServer"]["standbysWanted"] == 0

    victim = gw.worker("victim")["pid"]
    time.sleep(0.25)
    os.kill(victim, signal.SIGKILL)
    forked = respawned(gw, "victim", victim)["pid"]
    standby = one_standby(gw)
    assert standby != forked and gw.status()["supervisor"]["forkServer"]["standbysWanted"] == 1
    assert f"standby for the next respawn: {standby} " in gw.run_cli("status").stdout
    time.sleep(0.25)
    os.kill(forked, signal.SIGKILL)
    killed_at = time.monotonic()
    assert respawned(gw, "victim", forked)["pid"] == standby, "the exit after the first did not take the standby"
    one_standby(gw, other_than=standby)  # replaced, as exits keep the standbys wanted

    wait_for(lambda: standbys(gw) == [], keep_ms / 1000 + 5, what="the standby released once exits stopped")
    assert time.monotonic() - killed_at >= keep_ms / 1000 - 0.1, "released before standbyKeepMs without an exit"
    assert gw.status()["supervisor"]["forkServer"]["standbysWanted"] == 0
    assert "standby" not in gw.run_cli("status").stdout
    assert gw.worker("victim")["restarts"] == 2
    assert gw.stop() == 0


def test_no_standby_when_the_settings_say_zero(gateway_factory) -> None:
    gw = gateway_factory({**FAST, "forkServer": {"standbys": 0}, "workers": {"victim": {"kind": "sleeper"}}})
    gw.start()
    time.sleep(STANDBY_QUIET_S * 3)
    assert standbys(gw) == []
    victim = gw.worker("victim")["pid"]
    time.sleep(0.25)
    os.kill(victim, signal.SIGKILL)
    respawned(gw, "victim", victim)
    time.sleep(STANDBY_QUIET_S * 3)
    assert standbys(gw) == []
    assert gw.stop() == 0


def test_a_standby_that_keeps_dying_is_given_up_and_respawns_still_fork(gateway_factory) -> None:
    gw = gateway_factory({**AT_BOOT, "workers": {"victim": {"kind": "sleeper"}}})
    gw.start()
    previous = None
    for _ in range(STANDBY_FAILURES_MAX):
        previous = one_standby(gw, other_than=previous)
        os.kill(previous, signal.SIGKILL)
    time.sleep(STANDBY_QUIET_S * 15)  # past the retry delay after a standby's death
    assert standbys(gw) == [], "a standby was forked again after it died on start-up each time"
    victim = gw.worker("victim")["pid"]
    os.kill(victim, signal.SIGKILL)
    respawned(gw, "victim", victim)
    assert gw.worker("victim")["restarts"] == 1
    assert gw.stop() == 0


def test_a_standby_forked_before_a_kind_module_loaded_is_replaced_not_used(gateway_factory) -> None:
    """The browser kind's module loads in the fork server only when a browser worker is first wanted: the standby
    forked before that lacks its pages, so the browser worker is forked, that standby dropped, and the next one
    (forked after the load) is what the following respawn takes."""
    gw = gateway_factory({**AT_BOOT, "workers": {"victim": {"kind": "sleeper"}}},
                         config={"browser": {"enabled": False}})
    gw.start()
    stale = one_standby(gw)
    path = gw.state_dir / "openclaw.json"
    cfg = json.loads(path.read_text())
    cfg["browser"] = {"enabled": True}
    path.write_text(json.dumps(cfg))
    browser = wait_for(lambda: (w := {x["name"]: x for x in gw.status()["workers"]}.get("browser"))
                       and w["state"] == "running" and w["pid"], 20,
                       what="the browser worker started by the config edit")
    assert browser != stale, "a standby without the browser module's pages became the browser worker"
    fresh = one_standby(gw, other_than=stale)
    assert not psutil.pid_exists(stale) or psutil.Process(stale).status() == psutil.STATUS_ZOMBIE
    victim = gw.worker("victim")["pid"]
    os.kill(victim, signal.SIGKILL)
    assert respawned(gw, "victim", victim)["pid"] == fresh
    assert gw.stop() == 0


def test_the_standby_settings_are_checked() -> None:
    tuning = parse_settings({"forkServer": {"standbys": 2, "standbyAtBoot": True, "standbyKeepMs": 1000}}, "x")
    assert tuning.fork_server == ForkServerTuning(standbys=2, standby_at_boot=True, standby_keep_ms=1000)
    assert SupervisorSettings().fork_server == ForkServerTuning(standbys=1, standby_at_boot=False,
                                                                standby_keep_ms=600_000)
    with pytest.raises(ConfigError, match=r"forkServer\.standbyAtBoot: 1 is not true or false"):
        parse_settings({"forkServer": {"standbyAtBoot": 1}}, "x")
    with pytest.raises(ConfigError, match=r"forkServer\.standbyKeepMs: True is not a non-negative number"):
        parse_settings({"forkServer": {"standbyKeepMs": True}}, "x")
