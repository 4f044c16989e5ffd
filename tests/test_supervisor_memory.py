"""The supervisor's idle memory: state database connections no client uses are closed, and opened again on use."""

from __future__ import annotations

import time

from conftest import holds_open, wait_for
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
        first = client.request("device.pair.list")
        assert holds_open(gw.proc.pid, db), "device.pair.list did not open the state database"
        time.sleep(0.5)
        assert holds_open(gw.proc.pid, db), "closed before it was idle for 2 s"
        wait_for(lambda: not holds_open(gw.proc.pid, db), 10, what="the idle connection closed")
        assert client.request("device.pair.list") == first
        assert holds_open(gw.proc.pid, db), "the next call did not open it again"
        assert client.request("health")["ok"] is True
    finally:
        client.close()
    wait_for(lambda: not holds_open(gw.proc.pid, db), 10, what="the connection closed again once idle")
    assert gw.proc.poll() is None
