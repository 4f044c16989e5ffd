"""On-demand workers: declared at boot, forked by their first request (the browser by default, `onDemand` in the
supervisor's side file names them).

Real gateways, real workers, real Chromium: an idle boot has no browser process; the first `browser.*` request
(or a worker's relayed request) starts the worker and is answered; a worker that cannot start gives a bounded,
named error; a crash after the start is restarted like any worker; a reload of an idle worker only updates its
spec; a stop leaves nothing behind; a Chromium left by a killed predecessor makes the browser start at boot.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import psutil
import pytest

from conftest import Gateway, page_served, run_openclaw, wait_for
from openclaw_sup.config.browser_state import RECORD_FILE, WANTED_FILE, left_running
from openclaw_sup.config.plan import worker_specs
from openclaw_sup.config.restart import Event, InvalidTransition, State, next_state
from openclaw_sup.config.settings import ConfigError, SupervisorSettings, parse_settings
from openclaw_sup.gateway.client import GatewayClient, GatewayError

CHROMIUM = shutil.which("chromium")
TOKEN = "on-demand-token-0123456789abcdef"
ROOT = os.geteuid() == 0
BROWSER = {"onDemand": ["browser"]}
"""The product's default (the test harness keeps every worker eager unless a test says otherwise)."""
PAGE = b"<html><head><title>on-demand page</title></head><body>hi</body></html>"


def config(**browser: Any) -> dict[str, Any]:
    return {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
            "browser": {"headless": True, "noSandbox": ROOT, "ssrfPolicy": {"allowedHostnames": ["127.0.0.1"]},
                        **browser}}


def connect(gw: Gateway) -> GatewayClient:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN, timeout=40)
    c.connect()
    return c


def tree(gw: Gateway) -> list[str]:
    """The command lines of every process under the supervisor."""
    assert gw.proc is not None
    out = []
    for proc in psutil.Process(gw.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(" ".join(proc.cmdline()))
    return out


def browser_processes(gw: Gateway) -> list[str]:
    return [c for c in tree(gw) if c.startswith("openclaw-sup: browser") or "--remote-debugging-port" in c]


def spawned_lines(gw: Gateway, name: str) -> list[str]:
    return [m for m in gw.log_text().splitlines() if m.startswith(f"worker {name} spawned")]


# -- the rules, in process ----------------------------------------------------------------------------------


def test_idle_is_a_state_of_the_one_table() -> None:
    assert next_state(State.IDLE, Event.START) is State.STARTING
    assert next_state(State.IDLE, Event.STOP) is State.STOPPED
    for event in (Event.READY, Event.EXIT, Event.RETRY, Event.GIVE_UP):
        with pytest.raises(InvalidTransition):
            next_state(State.IDLE, event)


def test_the_browser_is_on_demand_by_default_and_the_side_file_can_change_it() -> None:
    def on_demand(settings: SupervisorSettings) -> dict[str, bool]:
        return {s.name: s.on_demand for s in worker_specs({}, settings, env={})}

    assert on_demand(SupervisorSettings()) == {"scheduler": False, "agent": False, "browser": True}
    assert on_demand(parse_settings({"onDemand": []}, "x"))["browser"] is False
    eager = parse_settings({"onDemand": ["agent", "side"], "workers": {"side": {"kind": "sleeper"}}}, "x")
    assert on_demand(eager) == {"scheduler": False, "agent": True, "browser": False, "side": True}
    with pytest.raises(ConfigError, match=r"onDemand: expected a list of worker names"):
        parse_settings({"onDemand": "browser"}, "/etc/sup.json")
    specs = {s.name: s for s in worker_specs({}, SupervisorSettings(), env={})}
    assert specs["browser"].digest() != worker_specs({}, parse_settings({"onDemand": []}, "x"), env={})[2].digest()


def test_left_running_names_profiles_with_a_record_or_a_wanted_marker(tmp_path: Path) -> None:
    assert left_running(tmp_path) == []
    for profile, name in (("a", RECORD_FILE), ("b", WANTED_FILE)):
        (tmp_path / "browser" / profile).mkdir(parents=True)
        (tmp_path / "browser" / profile / name).write_text("{}")
    (tmp_path / "browser" / "c" / "user-data").mkdir(parents=True)
    assert left_running(tmp_path) == ["a", "b"]


# -- real gateways --------------------------------------------------------------------------------------------


def test_idle_boot_has_no_browser_process_and_concurrent_first_requests_share_one_start(gateway_factory) -> None:
    gw = gateway_factory(BROWSER, config=config())
    gw.start()
    browser = gw.worker("browser")
    assert browser["state"] == "idle" and browser["pid"] is None and browser["onDemand"]
    assert gw.worker("agent")["state"] == "running" and not gw.worker("agent")["onDemand"]
    assert browser_processes(gw) == [] and spawned_lines(gw, "browser") == []
    assert "worker browser idle: starts on first use" in gw.log_text()
    assert gw.status()["supervisor"]["started"]
    with urlopen(f"http://127.0.0.1:{gw.port}/readyz", timeout=5) as res:  # idle counts as ready
        assert res.status == 200
    res = gw.run_cli("status")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "idle (starts on first use)" in next(line for line in res.stdout.splitlines() if line.startswith("browser"))
    c = connect(gw)
    try:
        listed = {w["name"]: w for w in c.request("workers.list")["workers"]}
        assert listed["browser"]["state"] == "idle" and listed["browser"]["onDemand"]
        assert "browser.status" in c.hello["features"]["methods"]
    finally:
        c.close()

    answers: list[Any] = []

    def ask() -> None:
        client = connect(gw)
        try:
            answers.append(client.request("browser.status"))
        except GatewayError as exc:
            answers.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 6 and all(isinstance(a, dict) and a["enabled"] and a["state"] == "stopped"
                                     for a in answers), answers
    assert gw.worker("browser")["state"] == "running"
    assert len(spawned_lines(gw, "browser")) == 1  # six first requests, one fork
    assert "worker browser: first use (browser.status); starting it" in gw.log_text()
    assert [c for c in tree(gw) if c.startswith("openclaw-sup: browser")]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is missing (scripts/test installs it)")
def test_first_browser_request_starts_worker_and_chromium_crash_restarts_stop_leaves_nothing(gateway_factory) -> None:
    with page_served(PAGE) as url:
        gw = gateway_factory(BROWSER, config=config())
        gw.start()
        assert gw.worker("browser")["state"] == "idle" and browser_processes(gw) == []
        c = connect(gw)
        try:
            opened = c.request("browser.open", {"url": url})  # the very first browser request: worker + Chromium
            assert opened["ok"] and opened["title"] == "on-demand page"
            first = gw.worker("browser")
            assert first["state"] == "running" and first["restarts"] == 0
            status = c.request("browser.status")
            assert status["running"] and status["cdpReady"]
            assert "worker browser: first use (browser.open); starting it" in gw.log_text()

            os.kill(first["pid"], signal.SIGKILL)  # after its start, a crash is restarted like any worker's
            again = wait_for(lambda: (w := gw.worker("browser"))["state"] == "running" and w["pid"] != first["pid"]
                             and w, 20, what="the browser worker restarted")
            assert again["restarts"] == 1
            wait_for(lambda: not psutil.pid_exists(status["pid"]) or psutil.Process(status["pid"]).status()
                     == psutil.STATUS_ZOMBIE, 10, what="the old Chromium gone with its worker")
            wait_for(lambda: (s := c.request("browser.status"))["running"] and s["cdpReady"], 30,
                     what="Chromium restored by the new worker")
            assert c.request("browser.tabs")["running"]
        finally:
            c.close()
        below = psutil.Process(gw.proc.pid).children(recursive=True)
        assert any("--remote-debugging-port" in " ".join(p.cmdline()) for p in below)
        assert gw.stop() == 0
        wait_for(lambda: not [p for p in below if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 10,
                 what="every worker and Chromium process gone after stop")


def test_a_relayed_request_wakes_an_on_demand_worker(gateway_factory) -> None:
    gw = gateway_factory({"onDemand": ["answerer"], "workers": {
        "asker": {"kind": "asker", "options": {"target": "answerer"}}, "answerer": {"kind": "sleeper"}}})
    gw.start(wait_running=False)
    wait_for(lambda: "asker got" in gw.log_text(), 15, what="the asker's answer")
    answerer = gw.worker("answerer")
    assert answerer["state"] == "running" and f"'pid': {answerer['pid']}" in gw.log_text()
    assert "worker answerer: first use (echo from asker); starting it" in gw.log_text()
    assert len(spawned_lines(gw, "answerer")) == 1


def test_an_on_demand_worker_that_cannot_start_gives_a_bounded_named_error(gateway_factory, tmp_path: Path) -> None:
    fault = tmp_path / "fault"
    fault.write_text("no display for the browser")
    gw = gateway_factory({**BROWSER, "workers": {"browser": {"kind": "crasher", "options": {"faultFile": str(fault)}}}},
                         config=config())
    gw.start()
    assert gw.worker("browser")["state"] == "idle"
    c = connect(gw)
    try:
        with pytest.raises(GatewayError) as err:
            c.request("browser.status")
        assert err.value.code == "UNAVAILABLE"
        assert err.value.error["message"] == ("the browser worker (started on first use) could not start (it is "
                                              "failed; last error: crasher: fatal: no display for the browser)")
        assert c.request("health")["ok"]  # the gateway itself is untouched
    finally:
        c.close()
    fault.unlink()
    c = connect(gw)
    try:  # `failed` is not `idle`: the next request is refused at once until the slow retry or `workers.start`
        with pytest.raises(GatewayError, match="the browser worker is failed"):
            c.request("browser.status")
        assert c.request("workers.start", {"name": "browser"})["ok"]
        gw.wait_state("browser", "running")
    finally:
        c.close()


def test_a_first_request_waits_at_most_the_start_timeout(gateway_factory) -> None:
    never_ready = {"kind": "never_ready", "liveness": {"startTimeoutMs": 500}}
    gw = gateway_factory({**BROWSER, "workers": {"browser": never_ready}}, config=config())
    gw.start()
    c = connect(gw)
    try:
        t0 = time.monotonic()
        with pytest.raises(GatewayError) as err:
            c.request("browser.status")
        waited = time.monotonic() - t0
    finally:
        c.close()
    message = err.value.error["message"]
    assert message.startswith("the browser worker (started on first use) is not ready after 1.5s (it is "), message
    assert "last error: did not say ready within 0.5s" in message and err.value.error.get("retryable") is True
    assert 1.4 < waited < 10


def test_reload_of_an_idle_worker_updates_its_spec_and_a_running_one_is_respawned(gateway_factory) -> None:
    gw = gateway_factory(BROWSER, config=config())
    gw.start()
    before = gw.worker("browser")
    cfg_path = gw.state_dir / "openclaw.json"

    def edit(**browser: Any) -> None:
        cfg = json.loads(cfg_path.read_text())
        cfg["browser"].update(browser)
        cfg_path.write_text(json.dumps(cfg))

    edit(extraArgs=["--window-size=640,480"])
    after = wait_for(lambda: (w := gw.worker("browser"))["digest"] != before["digest"] and w, 15,
                     what="the browser's spec updated")
    assert after["state"] == "idle" and after["pid"] is None and spawned_lines(gw, "browser") == []
    c = connect(gw)
    try:
        c.request("browser.status")
    finally:
        c.close()
    running = gw.worker("browser")
    assert running["state"] == "running" and running["digest"] == after["digest"]
    edit(extraArgs=["--window-size=800,600"])
    wait_for(lambda: (w := gw.worker("browser"))["state"] == "running" and w["pid"] != running["pid"], 15,
             what="the running browser respawned with its new spec")
    assert len(spawned_lines(gw, "browser")) == 2
    respawned = gw.worker("browser")["pid"]
    edit(enabled=False)
    wait_for(lambda: "browser" not in gw.pids(), 15, what="the browser worker removed")
    wait_for(lambda: not psutil.pid_exists(respawned) or psutil.Process(respawned).status() == psutil.STATUS_ZOMBIE,
             10, what="its process gone")
    edit(enabled=True)  # declared again, idle until its next first use
    wait_for(lambda: "browser" in gw.pids(), 15, what="the browser worker declared again")
    assert gw.worker("browser")["state"] == "idle" and len(spawned_lines(gw, "browser")) == 2


def test_the_real_openclaw_cli_is_the_first_browser_user(gateway_factory) -> None:
    gw = gateway_factory(BROWSER, config=config())
    gw.start()
    assert gw.worker("browser")["state"] == "idle"
    res = run_openclaw(gw, "browser", "--json", "status", "--url", f"ws://127.0.0.1:{gw.port}", "--token", TOKEN)
    assert res.returncode == 0, res.stdout + res.stderr
    st = json.loads(res.stdout)
    assert st["profile"] == "openclaw" and st["running"] is False and st["cdpPort"] == gw.port + 11
    assert gw.worker("browser")["state"] == "running"
    assert "worker browser: first use (browser.request); starting it" in gw.log_text()


def test_a_settings_reload_can_make_the_idle_browser_eager(gateway_factory) -> None:
    gw = gateway_factory(BROWSER, config=config())
    gw.start()
    assert gw.worker("browser")["state"] == "idle"
    gw.settings_file.write_text(json.dumps({**json.loads(gw.settings_file.read_text()), "onDemand": []}))
    gw.signal(signal.SIGHUP)
    started = gw.wait_state("browser", "running")
    assert started["pid"] and not started["onDemand"]
    gw.settings_file.write_text(json.dumps({**json.loads(gw.settings_file.read_text()), "onDemand": ["browser"]}))
    gw.signal(signal.SIGHUP)  # on-demand again while it runs: it is respawned with the new spec, and runs on
    wait_for(lambda: (w := gw.worker("browser"))["onDemand"] and w["state"] == "running" and w["pid"] != started[
        "pid"], 15, what="the browser respawned as on-demand")


def test_an_operator_stop_is_not_undone_by_a_request_and_an_in_place_restart_makes_it_idle(gateway_factory) -> None:
    gw = gateway_factory(BROWSER, config=config())
    gw.start()
    c = connect(gw)
    try:
        assert c.request("workers.stop", {"name": "browser"})["state"] == "stopped"
        with pytest.raises(GatewayError, match="the browser worker is stopped; try again once it is running"):
            c.request("browser.status")
        assert spawned_lines(gw, "browser") == []
        assert c.request("workers.start", {"name": "browser"})["ok"]
        gw.wait_state("browser", "running")
    finally:
        c.close()
    gw.signal(signal.SIGUSR1)  # a fresh set of workers, as at boot: the browser idle again, Chromium not wanted
    wait_for(lambda: (w := gw.worker("browser"))["state"] == "idle" and w["pid"] is None
             and "in-place restart done" in gw.log_text(), 20, what="the browser idle after the in-place restart")
    c = connect(gw)
    try:
        assert c.request("browser.status")["enabled"]
    finally:
        c.close()
    assert len(spawned_lines(gw, "browser")) == 2


def test_an_empty_on_demand_list_starts_the_browser_at_boot(gateway_factory) -> None:
    gw = gateway_factory({"onDemand": []}, config=config())
    gw.start()
    browser = gw.worker("browser")
    assert browser["state"] == "running" and browser["pid"] and not browser["onDemand"]
    assert [c for c in tree(gw) if c.startswith("openclaw-sup: browser")]


def test_a_chromium_left_by_a_killed_predecessor_starts_the_browser_at_boot(gateway_factory) -> None:
    """A SIGKILLed tree can leave Chromium's helpers behind: the worker that sweeps them must not wait for a
    first use that may never come."""
    gw = gateway_factory(BROWSER, config=config())
    leftover = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    try:
        record = gw.state_dir / "browser" / "openclaw" / RECORD_FILE
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"pgid": leftover.pid, "started": psutil.Process(leftover.pid).create_time()}))
        gw.start()
        assert gw.worker("browser")["state"] == "running"
        assert ("worker browser starts now, not on first use: Chromium of profile(s) openclaw was running when it "
                "last stopped") in gw.log_text()
        assert leftover.wait(10) == -signal.SIGKILL
        wait_for(lambda: 'killed 1 leftover Chromium process(es) of profile "openclaw"' in gw.log_text(), 10,
                 what="the sweep's line")
        assert not record.exists()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


# -- an on-demand agent (opt-in): the first run after boot, on every path ------------------------------------


def agent_gateway(gateway_factory, **env: str) -> Gateway:
    cfg = {"gateway": {"auth": {"mode": "token", "token": TOKEN}, "http": {"endpoints": {
        "chatCompletions": {"enabled": True}, "responses": {"enabled": True}}}},
        "agents": {"defaults": {"model": "echo/echo", "heartbeat": {"every": "0m"}}}, "cron": {"enabled": True}}
    gw = gateway_factory({"onDemand": ["agent"]}, config=cfg, extra_env=env)
    gw.start()
    assert gw.worker("agent")["state"] == "idle" and not [c for c in tree(gw) if c.startswith("openclaw-sup: agent")]
    return gw


def http_post(gw: Gateway, path: str, body: dict[str, Any]) -> dict[str, Any]:
    from urllib.request import Request

    req = Request(f"http://127.0.0.1:{gw.port}{path}", data=json.dumps(body).encode(), method="POST",
                  headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urlopen(req, timeout=40) as res:
        assert res.status == 200
        return json.loads(res.read())


def chat_final(c: GatewayClient, run_id: str, timeout: float = 20) -> dict[str, Any]:
    """The payload of the run's final `chat` event (already read or still to come)."""
    deadline = time.monotonic() + timeout
    while True:
        for ev in c.events:
            if ev["event"] == "chat" and ev["payload"]["state"] == "final" and ev["payload"]["runId"] == run_id:
                return ev["payload"]
        msg = json.loads(c.ws.recv(max(0.05, deadline - time.monotonic())))
        if msg.get("type") == "event":
            c.events.append(msg)


def first_use(gw: Gateway, why: str) -> None:
    assert f"worker agent: first use ({why}); starting it" in gw.log_text()
    assert gw.worker("agent")["state"] == "running" and len(spawned_lines(gw, "agent")) == 1


def test_an_on_demand_agent_answers_a_first_ws_chat_send(gateway_factory) -> None:
    gw = agent_gateway(gateway_factory)
    c = connect(gw)
    try:
        assert gw.worker("agent")["state"] == "idle"  # a handshake alone does not start it
        ack = c.request("chat.send", {"sessionKey": "agent:main:main", "message": "first words",
                                      "idempotencyKey": "first-1"})
        assert ack == {"runId": "first-1", "status": "started"}
        final = chat_final(c, "first-1")
        assert final["message"]["content"][0]["text"] == "first words"
    finally:
        c.close()
    first_use(gw, "chat.send")


def test_an_on_demand_agent_answers_first_http_chat_completions_then_responses(gateway_factory) -> None:
    gw = agent_gateway(gateway_factory)
    done = http_post(gw, "/v1/chat/completions", {"model": "openclaw",
                                                   "messages": [{"role": "user", "content": "over http"}]})
    assert done["choices"][0]["message"]["content"] == "over http"
    first_use(gw, "agent.complete")
    gw.stop()
    gw = agent_gateway(gateway_factory)
    answer = http_post(gw, "/v1/responses", {"model": "openclaw", "input": "a first response"})
    assert answer["output"][0]["content"][0]["text"] == "a first response"
    first_use(gw, "agent.complete")


def test_an_on_demand_agent_answers_a_first_cron_agent_turn(gateway_factory) -> None:
    gw = agent_gateway(gateway_factory, OPENCLAW_SKIP_CRON="")
    gw.wait_state("scheduler", "running")
    c = connect(gw)
    try:
        job = c.request("cron.add", {"name": "first", "schedule": {"kind": "every", "everyMs": 60_000},
                                     "sessionTarget": "isolated", "payload": {"kind": "agentTurn",
                                                                               "message": "cron speaks first"}})
        c.request("cron.run", {"id": job["id"], "mode": "force"})
        run = wait_for(lambda: next(iter(c.request("cron.runs", {"id": job["id"]})["entries"]), None), 30,
                       what="the cron run")
    finally:
        c.close()
    assert run["status"] == "ok" and run["summary"] == "cron speaks first", run
    first_use(gw, "agent.turn from scheduler")
