"""A stop that lands while the worker's fork is still in flight waits for that fork (an awaited future, not a
polled flag) and then stops the new process: nothing is left running, and the worker can start again."""

from __future__ import annotations

import re

import psutil
import pytest

from conftest import wait_for
from openclaw_sup.gateway.client import GatewayClient

pytestmark = pytest.mark.live

TOKEN = "spawn-stop-token-0123456789abcdef"


def test_stop_right_after_restart_waits_for_the_fork_and_leaves_no_process(gateway_factory) -> None:
    gw = gateway_factory({"workers": {"victim": {"kind": "sleeper"}}},
                         config={"gateway": {"auth": {"mode": "token", "token": TOKEN}}}).start()
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    try:
        first = gw.worker("victim")["pid"]
        for round_ in range(5):  # back to back: the stop arrives while the restart's fork is in flight
            assert c.request("workers.restart", {"name": "victim"}, timeout=30)["state"] == "starting"
            stopped = c.request("workers.stop", {"name": "victim"}, timeout=30)
            assert stopped["state"] == "stopped", (round_, stopped)
            assert gw.worker("victim")["pid"] is None
            c.request("workers.start", {"name": "victim"}, timeout=30)
            gw.wait_state("victim", "running")
        spawned = {int(p) for p in re.findall(r"worker victim spawned \(pid (\d+)\)", gw.log_text())}
        current = gw.worker("victim")["pid"]
        assert first in spawned and current in spawned and len(spawned) == 11
        leftovers = [p for p in spawned - {current} if psutil.pid_exists(p)
                     and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert leftovers == []
        wait_for(lambda: gw.log_text().count("worker victim stopped (pid") == 10, 5, what="ten stop lines")
        assert gw.worker("victim")["restarts"] == 0  # an operator's stops are not crashes
    finally:
        c.close()
