"""`workers.*` on a real gateway: the process table over the protocol (with history), the once-a-second `workers`
event for subscribers only, and an operator's restart / stop / start with their refusals and scope."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conftest import Gateway, wait_for
from openclaw_sup.gateway.client import GatewayClient, GatewayError

TOKEN = "workers-rpc-token-0123456789abcdef"


def make_gateway(factory: Any) -> Gateway:
    return factory({"kinds": []}, config={"gateway": {"auth": {"mode": "token", "token": TOKEN}},
                                          "agents": {"defaults": {"model": "echo/echo"}}},
                   extra_env={"OPENCLAW_SKIP_CRON": ""})


def client(gw: Gateway, scopes: list[str] | None = None) -> GatewayClient:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, scopes=scopes)
    c.connect()
    return c


def test_list_matches_the_process_table_with_history(gateway_factory) -> None:
    gw = make_gateway(gateway_factory).start()
    c = client(gw)
    status = gw.status()
    # the history is sampled once a second: a worker that became ready a moment ago may not have its first one yet
    def sampled() -> dict | None:
        r = c.request("workers.list", {"history": True})
        return r if all(w["samples"] for w in r["workers"]) else None

    listed = wait_for(sampled, 5, interval=0.2, what="a first sample of every worker")
    assert [(w["name"], w["pid"], w["state"]) for w in listed["workers"]] == [
        (w["name"], w["pid"], w["state"]) for w in status["workers"]]
    assert listed["supervisor"]["pid"] == status["supervisor"]["pid"]
    for w in listed["workers"]:
        assert w["samples"] and len(w["samples"][-1]) == 3 and w["samples"][-1][1] > 0  # [ts, rss, cpu]
    assert "samples" not in c.request("workers.list")["workers"][0]
    c.close()


def test_subscribers_get_workers_events_once_a_second_until_they_leave(gateway_factory) -> None:
    gw = make_gateway(gateway_factory).start()
    watcher, other = client(gw), client(gw)
    assert watcher.request("workers.subscribe")["intervalMs"] == 1000
    first = watcher.next_event("workers", timeout=3)
    second = watcher.next_event("workers", timeout=3)
    assert second["payload"]["ts"] - first["payload"]["ts"] >= 900
    assert {w["name"] for w in first["payload"]["workers"]} == {"agent", "scheduler", "browser"}
    assert first["payload"]["workers"][0]["sample"] is not None
    time.sleep(1.5)
    other.request("health")
    assert not [e for e in other.events if e["event"] == "workers"]  # not subscribed: nothing pushed
    watcher.request("workers.unsubscribe")
    watcher.events.clear()
    time.sleep(2.2)
    watcher.request("health")
    assert not [e for e in watcher.events if e["event"] == "workers"]
    watcher.close()
    other.close()


def test_restart_stop_start_a_worker(gateway_factory) -> None:
    gw = make_gateway(gateway_factory).start()
    c = client(gw)
    before = gw.pids()
    res = c.request("workers.restart", {"name": "agent"}, timeout=30)
    assert res["ok"] and res["name"] == "agent"
    wait_for(lambda: gw.worker("agent")["state"] == "running" and gw.worker("agent")["pid"] != before["agent"], 15,
             what="the agent worker running with a new pid")
    assert gw.worker("scheduler")["pid"] == before["scheduler"]
    assert gw.worker("agent")["restarts"] == 0  # an operator's restart is not a crash
    assert "worker agent: restart asked by an operator" in gw.log_text()

    assert c.request("workers.stop", {"name": "scheduler"}, timeout=30)["state"] == "stopped"
    assert gw.worker("scheduler")["pid"] is None
    with pytest.raises(GatewayError, match="already stopped"):
        c.request("workers.stop", {"name": "scheduler"})
    with pytest.raises(GatewayError, match=r"use workers\.start"):
        c.request("workers.restart", {"name": "scheduler"})
    c.request("workers.start", {"name": "scheduler"})
    gw.wait_state("scheduler", "running")
    with pytest.raises(GatewayError, match=r"use workers\.restart"):
        c.request("workers.start", {"name": "scheduler"})
    with pytest.raises(GatewayError, match="no worker named 'nope'"):
        c.request("workers.restart", {"name": "nope"})
    with pytest.raises(GatewayError, match="requires name"):
        c.request("workers.stop", {})
    c.close()

    reader = client(gw, scopes=["operator.read"])
    assert reader.request("workers.list")["workers"]
    with pytest.raises(GatewayError, match=r"missing scope: operator\.admin"):
        reader.request("workers.restart", {"name": "agent"})
    reader.close()
