"""Hot reload against a running gateway, with real edits of the config file."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Gateway, free_port, wait_for
from openclaw_sup.gateway.client import ConnectionClosed, GatewayClient

TOKEN = "reload-token-0123456789abcdef"
SETTINGS = {"kinds": ["sup_standin_kinds"], "restart": {"stableAfterMs": 200}}


def base_config(mode: str = "hybrid") -> dict[str, Any]:
    return {
        "gateway": {"mode": "local", "auth": {"token": TOKEN}, "reload": {"mode": mode, "debounceMs": 100}},
        "cron": {"enabled": True},
        "agents": {"defaults": {"heartbeat": {"every": "30m"}}},
        "channels": {
            "telegram": {"botToken": "1:aaa", "accounts": {"main": {"botToken": "2:bbb"},
                                                           "alerts": {"botToken": "3:ccc"}}},
            "irc": {"host": "127.0.0.1", "nick": "claw"},
        },
    }


ALL = {"scheduler", "agent", "browser", "channel:telegram:main", "channel:telegram:alerts", "channel:irc:default"}


@pytest.fixture
def make(gateway_factory):
    def start(mode: str = "hybrid") -> Gateway:
        gw = gateway_factory(SETTINGS, config=base_config(mode),
                             extra_env={"PYTHONPATH": str(Path(__file__).parent / "kinds"),
                                        "OPENCLAW_SKIP_CRON": ""})
        gw.start()
        assert set(gw.pids()) == ALL
        return gw
    return start


def edit(gw: Gateway, change) -> None:  # type: ignore[no-untyped-def]
    path = gw.state_dir / "openclaw.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg, indent=2))


def reloads(gw: Gateway) -> list[str]:
    return [m for m in gw.log_text().splitlines() if m.startswith("config reload (file change")]


def wait_reloads(gw: Gateway, n: int) -> list[str]:
    return wait_for(lambda: len(r := reloads(gw)) >= n and r, 10, what=f"{n} reloads")


def changed(before: dict[str, int | None], after: dict[str, int | None]) -> set[str]:
    return {n for n in before if before[n] != after.get(n)}


def test_one_channel_account_respawns_exactly_that_worker(make) -> None:
    gw = make()
    before = gw.pids()
    watcher = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    watcher.connect()
    edit(gw, lambda c: c["channels"]["telegram"]["accounts"]["main"].update(botToken="9:zzz"))
    wait_reloads(gw, 1)
    ev = watcher.next_event("config.changed", 10)["payload"]
    assert ev["path"] == str(gw.state_dir / "openclaw.json") and ev["hash"].startswith("sha256:")
    reload_state = watcher.request("health")["configReload"]
    assert reload_state["mode"] == "hybrid" and "respawn channel:telegram:main" in reload_state["lastOutcome"]
    gw.wait_all_running()
    wait_for(lambda: gw.worker("channel:telegram:main")["state"] == "running"
             and gw.worker("channel:telegram:main")["pid"] != before["channel:telegram:main"], 10)
    assert changed(before, gw.pids()) == {"channel:telegram:main"}
    assert "9:zzz" not in gw.log_text()


def test_cron_edit_touches_only_the_scheduler(make) -> None:
    gw = make()
    before = gw.pids()
    edit(gw, lambda c: c["agents"]["defaults"]["heartbeat"].update(every="10m"))
    wait_reloads(gw, 1)
    wait_for(lambda: gw.worker("scheduler")["pid"] != before["scheduler"]
             and gw.worker("scheduler")["state"] == "running", 10)
    assert changed(before, gw.pids()) == {"scheduler"}


def test_gateway_port_moves_the_listener_without_touching_workers(make) -> None:
    gw = make()
    before = gw.pids()
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    new_port = free_port()
    edit(gw, lambda cfg: cfg["gateway"].update(port=new_port))
    assert c.next_event("shutdown", 10)["payload"]["reason"] == "gateway restarting"
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            c.ws.recv(10)
    assert info.value.code == 1012
    hello = wait_for(lambda: GatewayClient(f"ws://127.0.0.1:{new_port}", token=TOKEN).connect(), 10)
    assert hello["type"] == "hello-ok"
    assert gw.status()["supervisor"]["listen"] == f"ws://127.0.0.1:{new_port}"
    assert gw.pids() == before


def test_hot_mode_does_not_apply_a_restart_change_and_says_so(make) -> None:
    gw = make("hot")
    before = gw.pids()
    old_port = gw.port
    edit(gw, lambda c: (c["gateway"].update(port=free_port()), c["channels"]["irc"].update(nick="clawd")))
    wait_reloads(gw, 1)
    wait_for(lambda: "restart required for gateway.port (reload mode hot)" in gw.log_text(), 10)
    wait_for(lambda: gw.worker("channel:irc:default")["pid"] != before["channel:irc:default"], 10)
    assert gw.status()["supervisor"]["listen"] == f"ws://127.0.0.1:{old_port}"
    assert changed(before, gw.pids()) == {"channel:irc:default"}


def test_restart_mode_restarts_everything(make) -> None:
    gw = make("restart")
    before = gw.pids()
    edit(gw, lambda c: c["channels"]["irc"].update(nick="clawd"))
    wait_for(lambda: changed(before, gw.pids()) == ALL, 15, what="every worker restarted")
    gw.wait_all_running()


def test_off_mode_ignores_edits_and_sighup_applies(make) -> None:
    gw = make("off")
    before = gw.pids()
    edit(gw, lambda c: c["channels"]["irc"].update(nick="clawd"))
    time.sleep(1.0)
    assert reloads(gw) == [] and gw.pids() == before
    gw.signal(signal.SIGHUP)
    wait_for(lambda: gw.worker("channel:irc:default")["pid"] != before["channel:irc:default"], 10)
    assert changed(before, gw.pids()) == {"channel:irc:default"}


def test_invalid_edit_changes_nothing(make) -> None:
    gw = make()
    before = gw.pids()
    edit(gw, lambda c: c["gateway"].update(port="not a port"))
    wait_for(lambda: "config reload skipped (invalid config): gateway.port" in gw.log_text(), 10)
    (gw.state_dir / "openclaw.json").write_text("{ gateway: { mode: 'local', ")
    wait_for(lambda: gw.log_text().count("config reload skipped (invalid config)") >= 2, 10)
    assert gw.pids() == before
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    reload_state = c.request("health")["configReload"]
    assert reload_state["lastOutcome"] == "skipped" and "not valid JSON5" in reload_state["lastError"]


def test_each_editor_style_save_is_seen_once(make) -> None:
    gw = make()
    path = gw.state_dir / "openclaw.json"

    def content(nick: str) -> str:
        cfg = json.loads(path.read_text())
        cfg["channels"]["irc"]["nick"] = nick
        return json.dumps(cfg, indent=2)

    with open(path, "r+") as f:  # truncate + write in place
        text = content("one")
        f.truncate(0)
        f.write(text)
    wait_reloads(gw, 1)
    tmp = path.with_name(".openclaw.json.swp")  # write a temp file, rename over
    tmp.write_text(content("two"))
    os.replace(tmp, path)
    wait_reloads(gw, 2)
    text = content("three")  # move the old file to a backup, write a new one
    os.replace(path, path.with_name("openclaw.json~"))
    path.write_text(text)
    wait_reloads(gw, 3)
    path.write_text(path.read_text())  # a save that changes nothing
    time.sleep(1.0)
    assert len(reloads(gw)) == 3
    assert gw.worker("channel:irc:default")["restarts"] == 0


def test_config_set_hint_matches_what_the_reloader_does(make) -> None:
    gw = make()
    before = gw.pids()
    res = gw.run_cli("config", "set", "channels.irc.nick", "clawbot")
    assert res.returncode == 0 and "Change will apply without restarting the gateway." in res.stdout
    wait_reloads(gw, 1)
    wait_for(lambda: gw.worker("channel:irc:default")["pid"] != before["channel:irc:default"], 10)
    assert changed(before, gw.pids()) == {"channel:irc:default"}
    res = gw.run_cli("config", "set", "gateway.reload.debounceMs", "150")
    assert "No gateway restart needed." in res.stdout
    new_port = free_port()
    res = gw.run_cli("config", "set", "gateway.port", str(new_port))
    assert "Restart the gateway to apply." in res.stdout
    wait_for(lambda: gw.status()["supervisor"]["listen"].endswith(f":{new_port}"), 10)


def test_profiles_and_dev_side_by_side(gateway_factory, tmp_path: Path) -> None:
    blue = gateway_factory({"workers": {"w": {"kind": "sleeper"}}}, profile="blue").start()
    green = gateway_factory({"workers": {"w": {"kind": "sleeper"}}}, profile="green").start()
    dev_home = tmp_path / "devhome"
    dev_home.mkdir()
    env = {**blue.env, "HOME": str(dev_home)}
    env.pop("OPENCLAW_SUP_CONFIG")
    import subprocess

    from conftest import BIN

    dev = subprocess.Popen([str(BIN), "--dev", "gateway"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def dev_status() -> dict:
            r = subprocess.run([str(BIN), "--dev", "status", "--json"], env=env, capture_output=True, text=True)
            return json.loads(r.stdout) if r.returncode in (0, 1) else {}

        d = wait_for(lambda: dev_status().get("ok") and dev_status(), 20, what="the dev gateway")
        sups = [blue.status()["supervisor"], green.status()["supervisor"], d["supervisor"]]
        assert len({s["pid"] for s in sups}) == 3
        assert len({s["bus"] for s in sups}) == 3 and len({s["logFile"] for s in sups}) == 3
        assert len({s["listen"] for s in sups}) == 3 and d["supervisor"]["listen"].endswith(":19001")
        assert d["supervisor"]["stateDir"] == str(dev_home / ".openclaw-dev")
        assert blue.worker("w")["pid"] != green.worker("w")["pid"]
        dup = subprocess.run([str(BIN), "--dev", "gateway", "--port", str(free_port())], env=env,
                             capture_output=True, text=True, timeout=30)
        assert dup.returncode == 1 and f"gateway already running (pid {d['supervisor']['pid']})" in dup.stderr
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(20)
