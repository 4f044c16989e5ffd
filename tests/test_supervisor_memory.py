"""The supervisor's idle memory: state database connections no client uses are closed, and opened again on use."""

from __future__ import annotations

import json
import time

from conftest import holds_open, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient

TOKEN = "idle-state-token-0123456789abcdef"


def test_the_supervisor_closes_an_idle_state_connection_and_opens_it_again_for_the_next_client(
        gateway_factory) -> None:
    """The device store's connection to the shared state database (its schema alone ~250 KB of SQLite memory) is
    closed once no client used it for 2 s; the next call that needs it opens it again and is answered."""
    gw = gateway_factory({}, config={"gateway": {"auth": {"mode": "token", "token": TOKEN}}}).start()
    assert gw.proc is not None
    db = (gw.state_dir / "state" / "openclaw.sqlite").resolve()
    wait_for(db.exists, 10, what="the workers created the state database")
    client = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, timeout=30)
    client.connect()
    try:
        asked = time.monotonic()  # before the supervisor's last use of the connection
        first = client.request("device.pair.list")
        assert holds_open(gw.proc.pid, db), "device.pair.list did not open the state database"
        wait_for(lambda: not holds_open(gw.proc.pid, db), 10, what="the idle connection closed")
        assert time.monotonic() - asked >= 2.0, "closed before it was idle for 2 s"  # load only makes this later
        assert client.request("device.pair.list") == first
        assert holds_open(gw.proc.pid, db), "the next call did not open it again"
        assert client.request("health")["ok"] is True
    finally:
        client.close()
    wait_for(lambda: not holds_open(gw.proc.pid, db), 10, what="the connection closed again once idle")
    assert gw.proc.poll() is None


def test_the_real_cli_connects_again_once_the_idle_state_connection_was_closed(gateway_factory) -> None:
    """The real CLI's device-authenticated connect reads the device store: its second run, after the supervisor
    closed that idle connection, is authenticated through a connection opened again and answered alike."""
    gw = gateway_factory({}, config={"gateway": {"auth": {"mode": "token", "token": TOKEN}}}).start()
    assert gw.proc is not None
    db = (gw.state_dir / "state" / "openclaw.sqlite").resolve()
    runs = []
    for _ in range(2):
        run = run_openclaw(gw, "devices", "list", "--json", shared=True)
        assert run.returncode == 0, run.stderr[-2000:]
        runs.append(json.loads(run.stdout))
        wait_for(lambda: not holds_open(gw.proc.pid, db), 10, what="the idle connection closed")
    assert runs[0] == runs[1]
