"""Each new network's upstream config keys, read into the policy engine's shape, and validated by the schema:
Matrix `dm.*` and `groups.*.autoReply/users`, Discord `guilds.*.channels` allowlists with users/roles, Slack
`channels.*` with the channel-level `requireMention`, and the reload plan respawning only the edited account."""

from __future__ import annotations

import logging
from typing import Any

from openclaw_sup.config.plan import ReloadPlan, worker_specs
from openclaw_sup.config.schema import validate
from openclaw_sup.workers.channels.discord import RESET_MARGIN_S, DiscordAdapter, RateLimits
from openclaw_sup.workers.channels.matrix import MatrixAdapter, env_prefix
from openclaw_sup.workers.channels.policy import Inbound
from openclaw_sup.workers.channels.slack import SlackAdapter


async def _sink(msgs: list[Inbound], meta: dict[str, str] | None) -> None:
    return None


def adapter(cls: Any, cfg: dict[str, Any]) -> Any:
    return cls({"accountId": "default", **cfg}, logging.getLogger("t"), _sink, lambda k: None)


def group(chat: str, sender: str = "u1", text: str = "hi", mentioned: bool = False, space: str = "",
          roles: tuple[str, ...] = ()) -> Inbound:
    return Inbound(message_id="m", sender_id=sender, text=text, chat_type="group", chat_id=chat, mentioned=mentioned,
                   space=space, roles=roles)


def test_matrix_keys_become_the_policy_shape() -> None:
    view = MatrixAdapter.policy_config({"channel": "matrix", "dm": {"policy": "open", "allowFrom": ["*"]},
                                        "rooms": {"!a:hs": {"autoReply": True, "users": ["@x:hs"]},
                                                  "!b:hs": {"account": "other"}},
                                        "mentionPatterns": {"mode": "allow"}})
    assert view["dmPolicy"] == "open" and view["allowFrom"] == ["*"] and view["mentionPatterns"] == []
    assert view["groups"] == {"!a:hs": {"requireMention": False, "allowFrom": ["@x:hs"]}}
    assert MatrixAdapter.policy_config({"dm": {"enabled": False}})["dmPolicy"] == "disabled"
    locked = MatrixAdapter.policy_config({"allowlistOnly": True, "groupPolicy": "open"})
    assert locked["dmPolicy"] == "allowlist" and locked["groupPolicy"] == "allowlist"
    assert env_prefix("default") == "MATRIX_" and env_prefix("ops-prod") == "MATRIX_OPS_X2D_PROD_"


def test_discord_guild_and_channel_allowlists() -> None:
    cfg = {"channel": "discord", "guilds": {"g1": {"users": ["u1"], "roles": ["r9"], "channels": {
        "general": {"enabled": True}, "c-open": {"requireMention": False}}}}}
    dc = adapter(DiscordAdapter, {**cfg, "token": "t"})
    dc.channel_names.update({"c-gen": "general", "c-other": "random"})
    view = DiscordAdapter.policy_config(cfg)
    assert dc.judge(view, group("c-gen", space="g1"), False).log.startswith(
        "discord: drop guild message (mention required)")
    assert dc.judge(view, group("c-gen", space="g1", mentioned=True), False).action == "process"
    assert dc.judge(view, group("c-open", space="g1"), False).action == "process"
    assert "channel not in allowlist" in dc.judge(view, group("c-other", space="g1", mentioned=True), False).log
    assert "guild not in allowlist" in dc.judge(view, group("c-gen", space="g2", mentioned=True), False).log
    assert "sender not in allowlist" in dc.judge(view, group("c-open", "u2", space="g1"), False).log
    assert dc.judge(view, group("c-open", "u2", space="g1", roles=("r9",)), False).action == "process"
    assert DiscordAdapter.policy_config({"dm": {"policy": "open", "allowFrom": ["*"]}})["dmPolicy"] == "open"


def test_discord_rate_limit_routes_keep_the_major_parameter() -> None:
    assert RateLimits.route("POST", "/channels/123/messages") == ("POST /channels/123/messages", "123")
    assert RateLimits.route("GET", "/users/@me") == ("GET /users/@me", "")
    rl = RateLimits()
    rl.update("POST /channels/1/messages", "1", {"x-ratelimit-bucket": "b", "x-ratelimit-remaining": "0",
                                                 "x-ratelimit-reset-after": "5"})
    assert 4.5 < rl.wait_for("POST /channels/1/messages", "1") <= 5 + RESET_MARGIN_S
    assert rl.wait_for("POST /channels/2/messages", "2") == 0
    rl.limited("GET /users/@me", "", 2.0, global_=True)
    assert rl.wait_for("POST /channels/2/messages", "2") > 1.5


def test_slack_channel_level_require_mention() -> None:
    sl = adapter(SlackAdapter, {"botToken": "b", "appToken": "a"})
    view = SlackAdapter.policy_config({"channel": "slack", "requireMention": False, "channels": {"C1": {}}})
    assert sl.judge(view, group("C1"), False).action == "process"
    assert "group not in allowlist" in sl.judge(view, group("C2", mentioned=True), False).log
    strict = SlackAdapter.policy_config({"channel": "slack", "channels": {"C1": {"users": ["U1"]}}})
    assert "mention required" in sl.judge(strict, group("C1", "U1"), False).log
    assert "sender not in allowlist" in sl.judge(strict, group("C1", "U2", mentioned=True), False).log


def test_schema_and_reload_plan_for_the_new_channels() -> None:
    assert validate({"channels": {"matrix": {"homeserver": "https://m.example", "dmPolicy": "open"}}}).errors
    assert validate({"channels": {"discord": {"token": "t", "guilds": {"1": {"chanels": {}}}}}}).errors
    assert validate({"channels": {"slack": {"botToken": "b", "appToken": "a", "mode": "webhook"}}}).errors
    cfg = {"channels": {"discord": {"token": "t", "accounts": {"a": {}, "b": {}}},
                        "slack": {"botToken": "x", "appToken": "y"},
                        "matrix": {"homeserver": "https://m.example", "accessToken": "z"}}}
    assert validate(cfg).ok
    edited = {**cfg, "channels": {**cfg["channels"], "discord": {"token": "t", "accounts": {"a": {}, "b": {
        "dmPolicy": "disabled"}}}}}
    plan = ReloadPlan.between(worker_specs(cfg, env={}), worker_specs(edited, env={}))
    assert [s.name for s in plan.respawn] == ["channel:discord:b"] and not plan.start and not plan.stop
    assert {"channel:slack:default", "channel:matrix:default", "channel:discord:a"} <= set(plan.keep)
