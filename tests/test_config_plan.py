"""From two configs to the supervisor's decision: changed paths, effects, touched workers, modes, hints."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from openclaw_sup.config.plan import (
    Effect,
    ReloadPlan,
    changed_paths,
    classify,
    decide,
    restart_hint,
    worker_specs,
)
from openclaw_sup.config.settings import SupervisorSettings, WorkerSpec

NO_SKIP: dict[str, str] = {}

BASE: dict[str, Any] = {
    "gateway": {"mode": "local", "port": 18789, "reload": {"mode": "hybrid"}},
    "logging": {"level": "info"},
    "hooks": {"enabled": True, "token": "h"},
    "cron": {"enabled": True},
    "agents": {"defaults": {"heartbeat": {"every": "30m"}, "model": "a/b"}},
    "models": {"providers": {}},
    "browser": {"enabled": True, "headless": True},
    "channels": {
        "telegram": {"botToken": "1:a", "dmPolicy": "pairing",
                     "accounts": {"main": {"botToken": "2:b"}, "alerts": {"botToken": "3:c"}}},
        "irc": {"host": "irc.example", "nick": "claw"},
    },
}


def edit(path: list[str], value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(base or BASE)
    node = cfg
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return cfg


def names(specs: list[WorkerSpec]) -> list[str]:
    return [s.name for s in specs]


def test_worker_specs_from_config() -> None:
    specs = {s.name: s for s in worker_specs(BASE, env=NO_SKIP)}
    assert set(specs) == {"scheduler", "agent", "browser", "channel:telegram:main", "channel:telegram:alerts",
                          "channel:irc:default"}
    assert specs["channel:telegram:main"].kind == "channel.telegram"
    assert specs["channel:telegram:main"].options["botToken"] == "2:b"
    assert specs["channel:telegram:main"].options["dmPolicy"] == "pairing"
    assert specs["scheduler"].options["heartbeat"] == {"every": "30m"}
    assert "heartbeat" not in specs["agent"].options["agents"]["defaults"]
    assert specs["browser"].options == {"enabled": True, "headless": True}


def test_worker_specs_switches() -> None:
    off = edit(["cron", "enabled"], False, edit(["browser", "enabled"], False))
    off["channels"]["telegram"]["accounts"]["alerts"]["enabled"] = False
    off_specs = {s.name: s for s in worker_specs(off, env=NO_SKIP)}
    assert list(off_specs) == ["scheduler", "agent", "channel:telegram:main", "channel:irc:default"]
    assert off_specs["scheduler"].options["cron"]["enabled"] is False  # started idle: serves cron.*, runs nothing
    no_browser = {k: v for k, v in BASE.items() if k != "browser"}
    assert "browser" in names(worker_specs(no_browser, env=NO_SKIP))  # on by default, as upstream's
    skipped = names(worker_specs(BASE, env={"OPENCLAW_SKIP_CHANNELS": "1", "OPENCLAW_SKIP_CRON": "1"}))
    assert skipped == ["agent", "browser"]


def test_side_file_workers_are_added_and_can_override() -> None:
    extra = WorkerSpec(name="echo", kind="test.echo")
    agent = WorkerSpec(name="agent", kind="test.agent")
    specs = worker_specs(BASE, SupervisorSettings(workers=(extra, agent)), env=NO_SKIP)
    by_name = {s.name: s for s in specs}
    assert by_name["echo"] is extra and by_name["agent"] is agent


def test_untouched_workers_keep_their_digest() -> None:
    new = edit(["channels", "telegram", "accounts", "main", "botToken"], "9:z")
    new["gateway"]["port"] = 19000
    new["logging"]["level"] = "debug"
    before = {s.name: s.digest() for s in worker_specs(BASE, env=NO_SKIP)}
    after = {s.name: s.digest() for s in worker_specs(new, env=NO_SKIP)}
    assert [n for n in before if before[n] != after[n]] == ["channel:telegram:main"]


def test_changed_paths() -> None:
    new = edit(["gateway", "auth"], {"mode": "token", "token": "x"})
    new["channels"]["irc"]["channels"] = ["#a"]
    assert changed_paths(BASE, new) == ["gateway.auth.mode", "gateway.auth.token", "channels.irc.channels"]
    assert changed_paths({"a": 1}, {"a": True}) == ["a"]
    assert changed_paths(BASE, copy.deepcopy(BASE)) == []


def test_one_channel_account_respawns_exactly_that_worker() -> None:
    new = edit(["channels", "telegram", "accounts", "main", "botToken"], "9:z")
    cs = classify(BASE, new, env=NO_SKIP)
    [change] = cs.changes
    assert change.effect is Effect.RESPAWN and change.workers == ("channel:telegram:main",)
    decision = decide("hybrid", cs)
    assert decision.respawn == ("channel:telegram:main",)
    assert not (decision.rebind_listener or decision.full_restart or decision.apply_in_place)
    assert "channel:irc:default" in decision.workers.keep and "channel:telegram:alerts" in decision.workers.keep
    assert restart_hint(decision) == "Change will apply without restarting the gateway."


def test_channel_base_change_respawns_all_accounts_of_that_channel() -> None:
    cs = classify(BASE, edit(["channels", "telegram", "dmPolicy"], "disabled"), env=NO_SKIP)
    assert set(cs.changes[0].workers) == {"channel:telegram:main", "channel:telegram:alerts"}
    assert set(decide("hybrid", cs).respawn) == {"channel:telegram:main", "channel:telegram:alerts"}


def test_new_and_removed_accounts_start_and_stop() -> None:
    new = edit(["channels", "telegram", "accounts", "extra"], {"botToken": "4:d"})
    del new["channels"]["irc"]
    decision = decide("hybrid", classify(BASE, new, env=NO_SKIP))
    assert decision.start == ("channel:telegram:extra",) and decision.stop == ("channel:irc:default",)
    assert decision.respawn == ()


def test_cron_and_heartbeat_touch_only_the_scheduler() -> None:
    for path, value in ((["cron", "maxConcurrentRuns"], 2), (["agents", "defaults", "heartbeat", "every"], "1h")):
        cs = classify(BASE, edit(path, value), env=NO_SKIP)
        decision = decide("hybrid", cs)
        assert decision.respawn == ("scheduler",), path
        assert cs.changes[0].workers == ("scheduler",)


def test_agents_and_models_touch_the_agent_and_browser_its_worker() -> None:
    assert decide("hybrid", classify(BASE, edit(["models", "mode"], "merge"), env=NO_SKIP)).respawn == ("agent",)
    model = classify(BASE, edit(["agents", "defaults", "model"], "c/d"), env=NO_SKIP)
    assert decide("hybrid", model).respawn == ("agent",)
    browser = decide("hybrid", classify(BASE, edit(["browser", "headless"], False), env=NO_SKIP))
    assert browser.respawn == ("browser",) and not browser.full_restart


def test_gateway_port_rebinds_and_touches_no_worker() -> None:
    cs = classify(BASE, edit(["gateway", "port"], 19000), env=NO_SKIP)
    assert cs.changes[0].effect is Effect.REBIND
    decision = decide("hybrid", cs)
    assert decision.rebind_listener and decision.workers.empty and not decision.full_restart
    assert restart_hint(decision) == "Restart the gateway to apply."


def test_hooks_and_logging_apply_in_place() -> None:
    new = edit(["hooks", "enabled"], False)
    new["logging"]["level"] = "debug"
    decision = decide("hybrid", classify(BASE, new, env=NO_SKIP))
    assert decision.apply_in_place == ("logging", "hooks") and decision.workers.empty
    assert restart_hint(decision) == "Change will apply without restarting the gateway."


def test_reload_and_remote_and_unknown_sections_do_nothing() -> None:
    new = edit(["gateway", "reload", "mode"], "hot")
    new["gateway"]["remote"] = {"url": "ws://x"}
    new["skills"] = {"a": 1}
    cs = classify(BASE, new, env=NO_SKIP)
    assert {c.effect for c in cs.changes} == {Effect.NONE}
    decision = decide("hybrid", cs)
    assert not decision.applies_anything
    assert restart_hint(decision) == "No gateway restart needed."


def test_plugin_entries_always_hint_restart() -> None:
    decision = decide("hybrid", classify(BASE, edit(["plugins", "entries", "x"], {"enabled": True}), env=NO_SKIP))
    assert restart_hint(decision) == "Restart the gateway to apply."


def test_hot_mode_lists_what_it_does_not_apply() -> None:
    new = edit(["gateway", "port"], 19000)
    new["channels"]["irc"]["nick"] = "claw2"
    decision = decide("hot", classify(BASE, new, env=NO_SKIP))
    assert decision.not_applied == ("gateway.port",)
    assert not decision.rebind_listener and not decision.full_restart
    assert decision.respawn == ("channel:irc:default",)
    assert "restart required for gateway.port" in (decision.restart_required_line() or "")
    assert restart_hint(decision) == "Restart the gateway to apply."


def test_restart_mode_restarts_on_any_effective_change() -> None:
    decision = decide("restart", classify(BASE, edit(["channels", "irc", "nick"], "x"), env=NO_SKIP))
    assert decision.full_restart and decision.workers.empty
    assert restart_hint(decision) == "Restart the gateway to apply."
    quiet = decide("restart", classify(BASE, edit(["gateway", "reload", "mode"], "restart"), env=NO_SKIP))
    assert not quiet.full_restart


def test_off_mode_applies_nothing() -> None:
    decision = decide("off", classify(BASE, edit(["channels", "irc", "nick"], "x"), env=NO_SKIP))
    assert not decision.applies_anything and decision.not_applied == ("channels.irc.nick",)
    assert restart_hint(decision) == "Restart the gateway to apply."
    with pytest.raises(ValueError, match="unknown reload mode"):
        decide("sometimes", decision.changes)


def test_reload_plan_between_is_unchanged() -> None:
    a, b = WorkerSpec("a", "k", {"x": 1}), WorkerSpec("b", "k")
    plan = ReloadPlan.between([a, b], [WorkerSpec("a", "k", {"x": 2}), WorkerSpec("c", "k")])
    assert [s.name for s in plan.respawn] == ["a"] and plan.stop == ("b",) and [s.name for s in plan.start] == ["c"]
    assert plan.summary() == "start c; stop b; respawn a"
