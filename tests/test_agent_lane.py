"""`agents.defaults.maxConcurrent`, upstream's global lane: at most that many agent runs at once across sessions
(the others wait their turn and then run), the channel workers ask no more turns at once than that, and an edit of
it respawns the agent and the channel workers; unset, upstream's default of max(8, 4 per CPU). Cron turns have a
lane of their own."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any
from urllib.request import Request, urlopen

from test_agent_live import TOKEN, SlowModel, client, slow_config

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


def test_a_cron_turn_has_its_own_lane_beside_the_inbound_one(gateway_factory) -> None:
    """Upstream's lanes: an isolated cron agent turn holds a `cron` slot, not one of `maxConcurrent`'s, so it runs
    while inbound runs fill the main lane, and does not take a slot an inbound run waits for."""
    model = SlowModel()
    try:
        cfg = slow_config(model)
        cfg["agents"]["defaults"]["maxConcurrent"] = 1
        cfg["cron"] = {"enabled": True}
        g = gateway_factory({}, config=cfg, extra_env={"OPENCLAW_SKIP_CRON": ""}).start()
        g.wait_state("scheduler", "running")
        c = client(g)
        assert c.request("chat.send", {"sessionKey": "agent:main:inbound-0", "message": "inbound 0",
                                       "idempotencyKey": "inbound-0"})["status"] == "started"
        wait_for(lambda: len(model.requests) == 1, 15, what="the first inbound model call")
        job = c.request("cron.add", {"name": "lane", "schedule": {"kind": "every", "everyMs": 3_600_000},
                                     "sessionTarget": "isolated",
                                     "payload": {"kind": "agentTurn", "message": "cron turn"}})
        c.request("cron.run", {"id": job["id"], "mode": "force"})
        wait_for(lambda: len(model.requests) == 2, 15, what="the cron turn's model call beside the inbound run")
        assert model.requests[1]["messages"][-1]["content"] == "cron turn"
        assert c.request("chat.send", {"sessionKey": "agent:main:inbound-1", "message": "inbound 1",
                                       "idempotencyKey": "inbound-1"})["status"] == "started"
        time.sleep(1.0)  # the second inbound run had every chance to start: it waits for the main lane's one slot
        assert len(model.requests) == 2
        model.release.set()
        for key in ("inbound-0", "inbound-1"):
            assert c.request("agent.wait", {"runId": key, "timeoutMs": 15000})["status"] == "ok"
        run = wait_for(lambda: next(iter(c.request("cron.runs", {"id": job["id"]})["entries"]), None), 15,
                       what="the cron run's entry")
        assert run["status"] == "ok", run
        assert [r["messages"][-1]["content"] for r in model.requests] == ["inbound 0", "cron turn", "inbound 1"]
        c.close()
    finally:
        model.close()


def test_an_http_api_completion_waits_for_the_inbound_lane(gateway_factory) -> None:
    """`/v1/chat/completions` runs the agent as an inbound turn does (upstream's `main` lane): with the lane full it
    waits its turn, then answers."""
    model = SlowModel()
    try:
        cfg = slow_config(model)
        cfg["agents"]["defaults"]["maxConcurrent"] = 1
        cfg["gateway"]["http"] = {"endpoints": {"chatCompletions": {"enabled": True}}}
        g = gateway_factory({}, config=cfg).start()
        c = client(g)
        assert c.request("chat.send", {"sessionKey": "agent:main:inbound", "message": "inbound",
                                       "idempotencyKey": "inbound"})["status"] == "started"
        wait_for(lambda: len(model.requests) == 1, 15, what="the inbound model call")
        answers: list[dict[str, Any]] = []
        body = {"model": "openclaw", "messages": [{"role": "user", "content": "over http"}]}
        req = Request(f"http://127.0.0.1:{g.port}/v1/chat/completions", data=json.dumps(body).encode(),
                      method="POST", headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        asker = threading.Thread(target=lambda: answers.append(json.loads(urlopen(req, timeout=30).read())))
        asker.start()
        time.sleep(1.0)  # the completion had every chance to reach the model: it waits for the lane's one slot
        assert len(model.requests) == 1 and not answers
        model.release.set()
        asker.join(30)
        assert answers and answers[0]["choices"][0]["message"]["content"] == "thinking done", answers
        assert [r["messages"][-1]["content"] for r in model.requests] == ["inbound", "over http"]
        assert c.request("agent.wait", {"runId": "inbound", "timeoutMs": 15000})["status"] == "ok"
        c.close()
    finally:
        model.close()
