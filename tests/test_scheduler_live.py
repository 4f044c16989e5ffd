"""The scheduler worker inside a real gateway: jobs added over the WebSocket run as real processes, survive a
SIGKILL of the worker, back off and disable themselves, and heartbeats skip and deliver over the bus."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import Gateway, holds_open, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient, GatewayError

TOKEN = "scheduler-token-0123456789abcdef"


def make_gateway(factory: Any, *, cron: dict | None = None, heartbeat: dict | None = None,
                 kinds: tuple[str, ...] = ("sup_fake_agent",), workers: dict | None = None,
                 scheduler_options: dict | None = None) -> Gateway:
    """A gateway with cron on; `scheduler_options` replaces the config-derived options (for testTimeScale)."""
    cron_cfg = {"enabled": True, **(cron or {})}
    hb_cfg = heartbeat if heartbeat is not None else {"every": "0m"}
    all_workers = dict(workers or {})
    env = {"OPENCLAW_SKIP_CRON": ""}
    if scheduler_options is not None:
        all_workers["scheduler"] = {"kind": "scheduler", "options": {
            "cron": cron_cfg, "heartbeat": hb_cfg, "agentHeartbeats": {}, **scheduler_options}}
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}}, "cron": cron_cfg,
              "agents": {"defaults": {"heartbeat": hb_cfg}}}
    return factory({"kinds": list(kinds), "restart": {"stableAfterMs": 200}, "workers": all_workers}, config=config,
                   extra_env=env)


def connect(gw: Gateway) -> GatewayClient:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    return c


def entries(c: GatewayClient, job_id: str, **params: Any) -> list[dict]:
    return c.request("cron.runs", {"id": job_id, "limit": 200, **params})["entries"]


def wait_entries(c: GatewayClient, job_id: str, n: int, timeout: float = 15, **params: Any) -> list[dict]:
    return wait_for(lambda: len(e := entries(c, job_id, **params)) >= n and e, timeout, what=f"{n} runs of {job_id}")


def command_job(argv: list[str], every_ms: int = 500, **extra: Any) -> dict:
    return {"name": extra.pop("name", "cmd"), "schedule": {"kind": "every", "everyMs": every_ms},
            "payload": {"kind": "command", "argv": argv, **extra.pop("payload", {})}, **extra}


def agent_log(path: Path, method: str | None = None) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if method is None or r["method"] == method]


# -- jobs ------------------------------------------------------------------------------------------------


def test_command_job_runs_on_schedule_with_history_events_and_status(gateway_factory, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory).start()
    c = connect(gw)
    out = tmp_path / "ticks"
    job = c.request("cron.add", command_job(["sh", "-c", f"date +%s%N >> {out}; echo tick"], name="ticker"))
    assert job["enabled"] and job["state"]["nextRunAtMs"] == job["nextRunAtMs"] > job["createdAtMs"]
    ok = wait_entries(c, job["id"], 3)
    assert all(e["status"] == "ok" and e["summary"] == "tick" and e["exitCode"] == 0 for e in ok)
    assert all(e["action"] == "finished" and e["durationMs"] >= 0 and e["completionStatus"] == "succeeded"
               for e in ok)
    assert len(out.read_text().split()) >= 3
    started = [ev["payload"] for ev in c.events if ev.get("event") == "cron"] + [c.next_event("cron")["payload"]]
    assert {"added", "started", "finished"} & {p["action"] for p in started}
    status = c.request("cron.status", {})
    assert status["enabled"] is True and status["storage"] == "sqlite" and status["jobs"] == 1
    assert status["sqlitePath"].endswith("/state/openclaw.sqlite") and status["nextWakeAtMs"] > 0
    assert status["storePath"] == status["sqlitePath"]
    assert (gw.state_dir / "state" / "openclaw.sqlite").exists()
    listed = c.request("cron.list", {"includeDisabled": False, "limit": 200, "offset": 0})
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["hasMore"] is False
    assert listed["jobs"][0]["state"]["lastRunStatus"] == "ok"
    # Runs keep to the slots counted from creation (no drift from run to run); how late they fire is measured
    # by bench/scheduler.py, not asserted here.
    slots = [e["runAtMs"] - job["createdAtMs"] for e in ok]
    assert all(s % 500 < 250 or s % 500 > 450 for s in slots), slots
    c.request("cron.update", {"id": job["id"], "patch": {"enabled": False}})
    wait_for(lambda: "runningAtMs" not in c.request("cron.get", {"id": job["id"]})["state"], 5,
             what="the run in progress finished")
    count = len(out.read_text().split())
    time.sleep(1.2)
    assert len(out.read_text().split()) == count
    assert c.request("cron.list", {})["total"] == 0 and c.request("cron.list", {"includeDisabled": True})["total"] == 1
    assert c.request("cron.remove", {"id": job["id"]}) == {"ok": True, "removed": True}
    assert c.request("cron.status", {})["jobs"] == 0


def test_sigkill_mid_run_marks_it_interrupted_kills_the_group_and_goes_on(gateway_factory, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory).start()
    c = connect(gw)
    slow, pids = tmp_path / "slow", tmp_path / "pids"
    slow.touch()
    script = f"echo $$ >> {pids}; if [ -e {slow} ]; then rm {slow}; sleep 300 & wait; fi; echo done"
    job = c.request("cron.add", command_job(["sh", "-c", script], every_ms=500, name="long"))
    wait_for(lambda: not slow.exists(), 10, what="the long run to start")
    leader = int(pids.read_text().split()[0])
    group = wait_for(lambda: [p.pid for p in psutil.process_iter() if p.pid != leader and _pgid(p.pid) == leader],
                     5, what="the run's sleep in the run's process group")
    old = gw.worker("scheduler")["pid"]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (w := gw.worker("scheduler"))["state"] == "running" and w["pid"] != old, 15,
             what="the scheduler back")
    wait_for(lambda: not any(psutil.pid_exists(p) and _pgid(p) == leader for p in [leader, *group]), 10,
             what="the interrupted run's process group gone")
    after = wait_entries(c, job["id"], 3)
    interrupted = [e for e in after if e.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0]["status"] == "error"
    assert "interrupted" in interrupted[0]["error"] and interrupted[0]["completionStatus"] == "unknown"
    newer = [e for e in after if e["runAtMs"] > interrupted[0]["runAtMs"]]
    assert newer and all(e["status"] == "ok" and e["summary"] == "done" for e in newer)
    text = gw.log_text()
    assert "was interrupted by a scheduler restart" in text
    assert f"leftover process(es) of interrupted run {interrupted[0]['runId']} (process group {leader})" in text
    db = sqlite3.connect(f"file:{gw.state_dir / 'state' / 'openclaw.sqlite'}?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT status FROM task_runs WHERE runtime = 'cron' AND "
                      "json_extract(detail_json, '$.runId') = ?", (interrupted[0]["runId"],)).fetchall() == [("lost",)]


def test_graceful_stop_mid_run_kills_the_command_and_records_it(gateway_factory, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory).start()
    c = connect(gw)
    pids = tmp_path / "pids"
    job = c.request("cron.add", command_job(["sh", "-c", f"echo $$ >> {pids}; sleep 300 & wait"], every_ms=300))
    wait_for(lambda: pids.exists() and pids.read_text().strip(), 10, what="the run to start")
    leader = int(pids.read_text().split()[0])
    c.close()
    assert gw.stop() == 0
    assert not any(_pgid(p.pid) == leader for p in psutil.process_iter())
    db = sqlite3.connect(f"file:{gw.state_dir / 'state' / 'openclaw.sqlite'}?mode=ro", uri=True)
    rows = db.execute("SELECT status, detail_json FROM task_runs WHERE runtime = 'cron' AND source_id = ?",
                      (job["id"],)).fetchall()
    assert [(status, json.loads(d)["status"], json.loads(d).get("interrupted")) for status, d in rows] == [
        ("lost", "error", True)]
    assert db.execute("SELECT status FROM cron_run_receipts WHERE job_id = ?", (job["id"],)).fetchall() == [
        ("interrupted",)]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_failing_job_backs_off_then_is_auto_disabled(gateway_factory, tmp_path: Path) -> None:
    # testTimeScale 0.0001: the 30 s, 1 m, 5 m, 15 m, 60 m backoff becomes 3, 6, 30, 90, 360 ms.
    gw = make_gateway(gateway_factory, scheduler_options={"testTimeScale": 0.0001}).start()
    c = connect(gw)
    job = c.request("cron.add", command_job(["sh", "-c", "echo nope >&2; exit 3"], every_ms=20, name="flaky"))
    disabled = wait_for(lambda: not (j := c.request("cron.get", {"id": job["id"]}))["enabled"] and j, 20,
                        what="the job auto-disabled")
    assert disabled["state"]["autoDisabled"]["reason"] == "consecutive-failures"
    assert disabled["state"]["consecutiveErrors"] == 10 and "nextRunAtMs" not in disabled
    runs = sorted(entries(c, job["id"]), key=lambda e: e["runAtMs"])
    assert len(runs) == 10 and all(e["status"] == "error" for e in runs)
    assert runs[0]["error"] == "command exited with code 3: nope"
    gaps = [b["runAtMs"] - (a["runAtMs"] + a["durationMs"]) for a, b in itertools.pairwise(runs)]
    # From the 5th error on the backoff (360 ms) outweighs the 20 ms schedule.
    assert all(g >= 340 for g in gaps[4:]), gaps
    line = f"cron: job {job['id']} (flaky) disabled (consecutive-failures) after 10 consecutive errors"
    wait_for(lambda: line in gw.log_text(), 5, what="the auto-disable line")
    time.sleep(0.5)
    assert len(entries(c, job["id"])) == 10
    # Re-enabling clears the counters and the job runs again.
    c.request("cron.update", {"id": job["id"], "patch": {"enabled": True}})
    wait_entries(c, job["id"], 11)
    assert c.request("cron.get", {"id": job["id"]})["state"].get("autoDisabled") is None


def test_missed_job_runs_once_after_downtime(gateway_factory, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory).start()
    c = connect(gw)
    job = c.request("cron.add", command_job(["true"], every_ms=2000, name="catchup"))
    wait_entries(c, job["id"], 1, timeout=5)
    c.close()
    assert gw.stop() == 0
    stopped = int(time.time() * 1000)
    time.sleep(5)  # two or three slots missed
    restarted = int(time.time() * 1000)
    gw.start()
    c = connect(gw)
    after = wait_for(lambda: len(r := [e for e in entries(c, job["id"]) if e["runAtMs"] > stopped]) >= 2 and r, 10,
                     what="the catch-up run and the next regular one")
    missed = [e for e in after if e["dueAtMs"] < restarted]
    assert len(missed) == 1, after
    assert missed[0]["runAtMs"] - missed[0]["dueAtMs"] >= 3000  # it ran late, once
    regular = [e for e in after if e is not missed[0]]
    assert all(e["dueAtMs"] >= restarted and e["runAtMs"] - e["dueAtMs"] < 1000 for e in regular), regular
    assert all((e["dueAtMs"] - job["createdAtMs"]) % 2000 == 0 for e in after)


def test_agent_turn_and_announce_delivery(gateway_factory, tmp_path: Path) -> None:
    log = tmp_path / "bus.jsonl"
    gw = make_gateway(gateway_factory, workers={
        "agent": {"kind": "agent", "options": {"logFile": str(log), "reply": "All 3 backups verified."}},
        "channel:telegram:main": {"kind": "fake_channel", "options": {"logFile": str(log)}},
    }).start()
    c = connect(gw)
    job = c.request("cron.add", {
        "name": "report", "schedule": {"kind": "at", "at": "1s"}, "sessionTarget": "isolated",
        "payload": {"kind": "agentTurn", "message": "Check the backups", "timeoutSeconds": 30, "model": "m1"},
        "delivery": {"mode": "announce", "channel": "telegram", "accountId": "main", "to": "@ops"}})
    run = wait_entries(c, job["id"], 1)[0]
    assert run["status"] == "ok" and run["deliveryStatus"] == "delivered"
    assert run["summary"] == "All 3 backups verified."
    turn = agent_log(log, "agent.turn")[0]["params"]
    assert turn["message"] == "Check the backups" and turn["sessionKey"] == f"cron:{job['id']}"
    assert turn["model"] == "m1" and turn["source"]["jobId"] == job["id"]
    sent = agent_log(log, "channel.send")[0]
    assert sent["worker"] == "channel:telegram:main" and sent["params"]["text"] == "All 3 backups verified."
    assert sent["params"]["to"] == "@ops"
    # A one-shot that succeeded is deleted.
    wait_for(lambda: c.request("cron.status", {})["jobs"] == 0, 5, what="the one-shot deleted")
    # No such channel account: the delivery fails, the run stays ok and the job keeps its schedule.
    job2 = c.request("cron.add", {
        "name": "lost", "schedule": {"kind": "every", "everyMs": 400}, "sessionTarget": "isolated",
        "payload": {"kind": "agentTurn", "message": "ping"},
        "delivery": {"mode": "announce", "channel": "irc", "accountId": "nope"}})
    run2 = wait_entries(c, job2["id"], 1)[0]
    assert run2["status"] == "ok" and run2["deliveryStatus"] == "not-delivered" and run2["delivered"] is False
    assert "no channel account channel:irc:nope" in run2["deliveryError"] and run2["completionStatus"] == "failed"
    assert c.request("cron.get", {"id": job2["id"]})["state"]["consecutiveErrors"] == 0


def test_agent_turn_without_an_agent_worker_is_an_error(gateway_factory) -> None:
    # the built-in agent kind is replaced by one this build does not provide, so no agent worker starts
    gw = make_gateway(gateway_factory, kinds=("sup_test_kinds",),
                      workers={"agent": {"kind": "not_provided_agent"}}).start()
    assert "agent" not in {w["name"] for w in gw.status()["workers"]}
    log = gw.log_text()
    assert "worker agent (kind not_provided_agent) is not provided by this build; skipped" in log
    assert "worker agent spawned" not in log, "a worker of a kind the build lacks was forked"
    c = connect(gw)
    job = c.request("cron.add", {"name": "orphan", "schedule": {"kind": "every", "everyMs": 300},
                                 "payload": {"kind": "agentTurn", "message": "hello"}})
    run = wait_entries(c, job["id"], 1)[0]
    assert run["status"] == "error"
    assert run["error"] == "agent.turn failed: UNAVAILABLE: no worker named 'agent'"


def test_webhook_delivery_carries_the_token(gateway_factory, tmp_path: Path) -> None:
    import http.server
    import threading

    seen: list[tuple[str, dict]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.headers.get("Authorization", ""), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        secret = "hook-secret-0123456789"
        gw = make_gateway(gateway_factory, cron={"webhookToken": secret}).start()
        c = connect(gw)
        job = c.request("cron.add", command_job(["echo", "built"], every_ms=300, name="hooked",
                                                delivery={"mode": "webhook",
                                                          "to": f"http://127.0.0.1:{server.server_port}/cron"}))
        run = wait_entries(c, job["id"], 1)[0]
        assert run["deliveryStatus"] == "delivered"
        auth, body = seen[0]
        assert auth == f"Bearer {secret}" and body["jobId"] == job["id"] and body["summary"] == "built"
        assert secret not in gw.log_text()
    finally:
        server.shutdown()


# -- heartbeats ------------------------------------------------------------------------------------------


def quiet_window() -> dict:
    """activeHours that exclude the next hour or so, in UTC."""
    start = datetime.now(UTC) + timedelta(hours=2)
    end = start + timedelta(hours=1)
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"), "timezone": "UTC"}


def test_heartbeat_skipped_in_quiet_hours(gateway_factory, tmp_path: Path) -> None:
    log = tmp_path / "bus.jsonl"
    gw = make_gateway(gateway_factory, heartbeat={"every": "1s", "activeHours": quiet_window()},
                      workers={"agent": {"kind": "agent", "options": {"logFile": str(log)}}}).start()
    c = connect(gw)
    event = c.next_event("heartbeat", 5)["payload"]
    assert event["status"] == "skipped" and event["reason"] == "quiet-hours" and event["agentId"] == "main"
    wait_for(lambda: "heartbeat skipped reason=quiet-hours agent=main" in gw.log_text(), 5, what="the skip line")
    last = c.request("last-heartbeat", {})
    assert last["status"] == "skipped" and last["reason"] == "quiet-hours"
    beat = next(j for j in c.request("cron.list", {})["jobs"] if j.get("declarationKey") == "heartbeat:main")
    assert beat["displayName"] == "Heartbeat (main)" and beat["payload"] == {"kind": "heartbeat"}
    assert beat["schedule"]["everyMs"] == 1000
    runs = wait_entries(c, beat["id"], 2)
    assert all(r["status"] == "skipped" and r["error"] == "heartbeat skipped: quiet-hours" for r in runs)
    assert agent_log(log, "agent.turn") == []
    with pytest.raises(GatewayError) as info:
        c.request("cron.remove", {"id": beat["id"]})
    assert info.value.code == "INVALID_REQUEST" and "system-owned heartbeat" in info.value.error["message"]


def test_heartbeat_unknown_account_then_sent_and_acked(gateway_factory, tmp_path: Path) -> None:
    log, reply = tmp_path / "bus.jsonl", tmp_path / "reply"
    reply.write_text("The disk is 97% full.")
    agent = {"kind": "agent", "options": {"logFile": str(log), "replyFile": str(reply)}}
    gw = make_gateway(gateway_factory, heartbeat={"every": "1s", "target": "telegram", "accountId": "nope"},
                      workers={"agent": agent}).start()
    c = connect(gw)
    wait_for(lambda: "heartbeat: unknown accountId" in gw.log_text(), 8, what="the unknown accountId line")
    event = wait_for(lambda: (e := c.next_event("heartbeat", 5)["payload"])["reason"] == "unknown-account" and e, 10)
    assert event["status"] == "skipped" and event["preview"] == "The disk is 97% full."
    assert agent_log(log, "channel.send") == []
    gw.stop()

    gw2 = make_gateway(gateway_factory, heartbeat={"every": "1s", "target": "telegram", "accountId": "main",
                                                   "to": "@me"},
                       workers={"agent": agent, "channel:telegram:main": {"kind": "fake_channel",
                                                                          "options": {"logFile": str(log)}}}).start()
    c2 = connect(gw2)
    sent = wait_for(lambda: (e := c2.next_event("heartbeat", 5)["payload"])["status"] == "sent" and e, 10)
    assert sent["channel"] == "telegram" and sent["to"] == "@me" and sent["preview"] == "The disk is 97% full."
    assert agent_log(log, "channel.send")[0]["params"]["text"] == "The disk is 97% full."
    turn = agent_log(log, "agent.turn")[-1]["params"]
    assert turn["kind"] == "heartbeat" and "HEARTBEAT_OK" in turn["message"]
    assert turn["sessionKey"] == "agent:main:main"
    reply.write_text("HEARTBEAT_OK")
    wait_for(lambda: c2.next_event("heartbeat", 5)["payload"]["status"] == "ok-token", 10, what="an ack")
    sends = len(agent_log(log, "channel.send"))
    time.sleep(1.5)
    assert len(agent_log(log, "channel.send")) == sends


def test_heartbeat_in_flight_and_alerts_disabled(gateway_factory, tmp_path: Path) -> None:
    log = tmp_path / "bus.jsonl"
    gw = make_gateway(gateway_factory, heartbeat={"every": "1s"}, workers={
        "agent": {"kind": "agent", "options": {"logFile": str(log), "delayS": 2.5, "reply": "slow news"}}}).start()
    wait_for(lambda: "heartbeat skipped reason=requests-in-flight agent=main" in gw.log_text(), 8,
             what="an in-flight skip")
    gw.stop()
    hidden = {"showOk": False, "showAlerts": False, "useIndicator": False}
    gw2 = make_gateway(gateway_factory, heartbeat={"every": "1s", "target": "telegram", "accountId": "main"},
                       workers={"agent": {"kind": "agent", "options": {"logFile": str(log)}},
                                "channel:telegram:main": {"kind": "fake_channel",
                                                          "options": {"heartbeatVisibility": hidden}}}).start()
    c = connect(gw2)
    event = c.next_event("heartbeat", 5)["payload"]
    assert event["status"] == "skipped" and event["reason"] == "alerts-disabled"
    wait_for(lambda: "heartbeat skipped reason=alerts-disabled agent=main" in gw2.log_text(), 5, what="the skip line")


def test_set_heartbeats_and_wake(gateway_factory, tmp_path: Path) -> None:
    log = tmp_path / "bus.jsonl"
    gw = make_gateway(gateway_factory, heartbeat={"every": "1s", "target": "none"},
                      workers={"agent": {"kind": "agent", "options": {"logFile": str(log), "reply": "noted"}}}).start()
    c = connect(gw)
    assert c.request("set-heartbeats", {"enabled": False}) == {"ok": True, "enabled": False}
    wait_for(lambda: (e := c.next_event("heartbeat", 5)["payload"])["reason"] == "disabled" and e, 10)
    wait_for(lambda: "heartbeat skipped reason=disabled agent=main" in gw.log_text(), 5, what="the skip line")
    turns = len(agent_log(log, "agent.turn"))
    assert c.request("wake", {"mode": "now", "text": "deploy finished"}) == {"ok": True}
    wait_for(lambda: len(agent_log(log, "agent.turn")) > turns, 5, what="the wake turn")
    turn = agent_log(log, "agent.turn")[-1]["params"]
    assert [e["text"] for e in turn["systemEvents"]] == ["deploy finished"] and turn["source"]["trigger"] == "wake"
    event = wait_for(lambda: (e := c.next_event("heartbeat", 5)["payload"]).get("reason") == "target-none" and e, 5)
    assert event["reason"] == "target-none" and event["preview"] == "noted"
    with pytest.raises(GatewayError) as info:
        c.request("wake", {"mode": "later", "text": "x"})
    assert "mode must be now or next-heartbeat" in info.value.error["message"]


# -- switches, failures, validation ------------------------------------------------------------------------


def test_scheduler_started_disabled_runs_nothing_by_itself(gateway_factory, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, scheduler_options={"cron": {"enabled": False}}).start()
    wait_for(lambda: "cron: scheduler disabled; jobs will not run automatically" in gw.log_text(), 5)
    c = connect(gw)
    out = tmp_path / "out"
    job = c.request("cron.add", command_job(["sh", "-c", f"echo x >> {out}"], every_ms=100))
    status = c.request("cron.status", {})
    assert status["enabled"] is False and status["nextWakeAtMs"] is None
    time.sleep(0.6)
    assert not out.exists()
    res = c.request("cron.run", {"id": job["id"], "mode": "force"})
    assert res["ok"] and res["enqueued"] and res["runId"]
    assert wait_entries(c, job["id"], 1, runId=res["runId"])[0]["trigger"] == "manual"


def test_unevaluable_schedule_logs_tick_failed_and_is_disabled(gateway_factory, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, scheduler_options={"testTimeScale": 0.001}).start()
    c = connect(gw)
    out = tmp_path / "good"
    good = c.request("cron.add", command_job(["sh", "-c", f"echo x >> {out}"], every_ms=300, name="good"))
    c.close()
    gw.stop()
    db = sqlite3.connect(gw.state_dir / "state" / "openclaw.sqlite")
    broken = {"id": "broken-1", "name": "broken", "enabled": True, "createdAtMs": 0, "updatedAtMs": 0,
              "schedule": {"kind": "cron", "expr": "every tuesday"}, "sessionTarget": "isolated",
              "wakeMode": "now", "payload": {"kind": "command", "argv": ["true"]}, "state": {}}
    with db:
        db.execute("INSERT INTO cron_jobs (store_key, job_id, name, enabled, payload_kind, job_json, sort_order, "
                   "updated_at) VALUES (?, 'broken-1', 'broken', 1, 'command', ?, 9, 0)",
                   (os.path.abspath(gw.state_dir / "cron" / "jobs.json"), json.dumps(broken)))
    db.close()
    gw.start()
    c = connect(gw)
    job = wait_for(lambda: not (j := c.request("cron.get", {"id": "broken-1"}))["enabled"] and j, 10,
                   what="the broken job disabled")
    assert job["state"]["autoDisabled"]["reason"] == "schedule-errors"
    text = gw.log_text()
    assert "cron: timer tick failed: job broken-1 (broken): cannot compute its next run" in text
    assert gw.worker("scheduler")["restarts"] == 0
    lines = len(out.read_text().split())
    wait_for(lambda: len(out.read_text().split()) > lines, 5, what="the good job still running")
    assert c.request("cron.get", {"id": good["id"]})["enabled"] is True


def test_validation_errors_name_the_field(gateway_factory) -> None:
    gw = make_gateway(gateway_factory).start()
    c = connect(gw)
    cases = [
        ("cron.add", {"name": "x", "schedule": {"kind": "cron", "expr": "0 25 * * *"},
                      "payload": {"kind": "command", "argv": ["true"]}}, "invalid cron.add params: schedule.expr"),
        ("cron.add", {"name": "x", "schedule": {"kind": "every", "everyMs": 1000}, "payload": {"kind": "shell"}},
         "payload.kind: expected systemEvent, agentTurn or command"),
        ("cron.get", {"id": "missing"}, "cron job not found: missing"),
        ("cron.update", {"id": "missing", "patch": {}}, "cron job not found"),
        ("cron.runs", {"id": "missing"}, "cron job not found"),
        ("cron.list", {"limit": 0}, "limit must be a whole number from 1 to 200"),
        ("cron.run", {}, "missing id"),
        ("set-heartbeats", {"enabled": "yes"}, 'pass {"enabled": true}'),
    ]
    for method, params, message in cases:
        with pytest.raises(GatewayError) as info:
            c.request(method, params)
        assert info.value.code == "INVALID_REQUEST" and message in info.value.error["message"], (method, info.value)
    job = c.request("cron.add", command_job(["true"], every_ms=3_600_000))
    assert c.request("cron.run", {"id": job["id"], "mode": "due"}) == {"ok": True, "ran": False, "reason": "not-due"}


# -- the real openclaw CLI --------------------------------------------------------------------------------


def openclaw(gw: Gateway, *args: str) -> Any:
    return run_openclaw(gw, *args, "--url", f"ws://127.0.0.1:{gw.port}", "--token", TOKEN)


def test_real_cli_cron_status_list_run_and_runs(gateway_factory, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory).start()
    c = connect(gw)
    job = c.request("cron.add", command_job(["echo", "from-cli"], every_ms=3_600_000, name="nightly-backup"))
    status = openclaw(gw, "cron", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    body = json.loads(status.stdout[status.stdout.index("{"):])
    assert body["enabled"] is True and body["jobs"] == 1 and body["nextWakeAtMs"] == job["nextRunAtMs"]
    listed = openclaw(gw, "cron", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "nightly-backup" in listed.stdout and job["id"] in listed.stdout
    ran = openclaw(gw, "cron", "run", job["id"], "--wait", "--poll-interval", "500ms")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert '"completionStatus": "succeeded"' in ran.stdout
    runs = openclaw(gw, "cron", "runs", "--id", job["id"], "--limit", "5")
    assert runs.returncode == 0, runs.stdout + runs.stderr
    assert json.loads(runs.stdout[runs.stdout.index("{"):])["entries"][0]["summary"] == "from-cli"


def test_a_settled_scheduler_closes_the_state_database_never_during_a_run_and_opens_it_again_on_use(
        gateway_factory, tmp_path: Path) -> None:
    """The shared state database's schema holds ~250 KB of SQLite memory per connection: a settled scheduler (no
    request and no job work for `settleMs`) closes it, keeps it while a run still uses it, and the next request or
    due job opens it again."""
    gw = make_gateway(gateway_factory, scheduler_options={"settleMs": 300}).start()
    db = (gw.state_dir / "state" / "openclaw.sqlite").resolve()
    pid = gw.worker("scheduler")["pid"]
    wait_for(lambda: not holds_open(pid, db), 10, what="the idle scheduler closed the state database")
    c = connect(gw)
    started, release = tmp_path / "started", tmp_path / "release"
    script = f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done; echo done"
    job = c.request("cron.add", command_job(["sh", "-c", script], every_ms=3_600_000, name="held"))
    assert holds_open(pid, db), "cron.add did not open the state database again"
    assert c.request("cron.run", {"id": job["id"], "mode": "force"})["enqueued"]
    wait_for(started.exists, 10, what="the run started")
    time.sleep(1.0)  # three settle delays with the run going on
    assert holds_open(pid, db), "the scheduler closed the state database under a running job"
    release.touch()
    ok = wait_entries(c, job["id"], 1)
    assert ok[0]["status"] == "ok" and ok[0]["summary"] == "done"
    wait_for(lambda: not holds_open(pid, db), 10, what="the scheduler closed the state database after the run")
    assert c.request("cron.get", {"id": job["id"]})["state"]["lastRunStatus"] == "ok"  # read back through a new one
    assert gw.worker("scheduler")["pid"] == pid
