"""`agents.defaults.maxConcurrent`, upstream's global lane: at most that many agent runs at once across sessions
(the others wait their turn and then run), the channel workers ask no more turns at once than that, and an edit of
it respawns the agent and the channel workers; unset, upstream's default of max(8, 4 per CPU)."""

from __future__ import annotations

import os
import time

from test_agent_live import SlowModel, client, slow_config

from conftest import wait_for
from openclaw_sup.config.models import max_concurrent
from openclaw_sup.config.plan import classify, worker_specs

SESSIONS = 4


def test_runs_beyond_max_concurrent_wait_their_turn(gateway_factory) -> None:
    model = SlowModel()
    try:
        cfg = slow_config(model)
        cfg["agents"]["defaults"]["maxConcurrent"] = 2
        g = gateway_factory({}, config=cfg).start()
        c = client(g)
        for i in range(SESSIONS):
            ack = c.request("chat.send", {"sessionKey": f"agent:main:lane-{i}", "message": f"run {i}",
                                          "idempotencyKey": f"lane-{i}"})
            assert ack["status"] == "started"
        wait_for(lambda: len(model.requests) >= 2, 15, what="two model calls")
        time.sleep(1.0)  # the other two sessions' runs had every chance to start: they wait in the lane
        assert len(model.requests) == 2
        model.release.set()
        for i in range(SESSIONS):
            assert c.request("agent.wait", {"runId": f"lane-{i}", "timeoutMs": 15000})["status"] == "ok"
        assert sorted(r["messages"][-1]["content"] for r in model.requests) == [f"run {i}" for i in range(SESSIONS)]
        c.close()
    finally:
        model.close()


def test_channel_workers_follow_max_concurrent_and_its_edit_respawns_them() -> None:
    base = {"agents": {"defaults": {"model": "echo/echo"}},
            "channels": {"telegram": {"botToken": "1:x", "accounts": {"a": {}, "b": {}}}}}
    default = max(8, 4 * len(os.sched_getaffinity(0)))
    assert max_concurrent(base["agents"]) == default
    specs = {s.name: s for s in worker_specs(base)}
    assert {specs[n].options["maxConcurrent"] for n in ("channel:telegram:a", "channel:telegram:b")} == {default}
    edited = {**base, "agents": {"defaults": {"model": "echo/echo", "maxConcurrent": 3}}}
    assert {s.options.get("maxConcurrent") for s in worker_specs(edited) if s.name.startswith("channel:")} == {3}
    changes = classify(base, edited)
    assert sorted(changes.changes[0].workers) == ["agent", "channel:telegram:a", "channel:telegram:b"]
    assert sorted(s.name for s in changes.workers.respawn) == ["agent", "channel:telegram:a", "channel:telegram:b"]
