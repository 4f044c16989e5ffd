"""The Discord channel worker against a loopback Discord that follows the documented Gateway and REST formats
(tests/discord_server.py): DM pairing, guild and channel allowlists, the runbook's `drop guild message (mention
required)` line, a 429 storm (every back-off honoured, nothing lost), a resume after a dropped socket and after a
SIGKILL of the worker (Discord replays what was sent meanwhile; nothing answered twice), and each documented auth or
permission error shown by `channels status` (4004, 4014 naming the intent, 403 Missing Permissions)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections import Counter
from typing import Any

import pytest
from channel_servers import channel_account, history
from discord_server import FakeDiscord
from test_channel_networks_units import adapter

from conftest import Gateway, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.workers.channels.discord import DiscordAdapter

TOKEN = "discord-test-token-0123456789abcdef"
BOT_TOKEN = "MTA5.discord-bot-secret.token-value"
GUILD, GENERAL, RANDOM, OPEN = "700000000000000001", "710000000000000001", "710000000000000002", "710000000000000003"


@pytest.fixture
def discord() -> Any:
    server = FakeDiscord(BOT_TOKEN)
    server.add_guild(GUILD, "Claw Lab", {GENERAL: "general", RANDOM: "random", OPEN: "open-room"})
    yield server
    server.close()


def make_gateway(factory: Any, dc: FakeDiscord, discord: dict[str, Any] | None = None) -> Gateway:
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
              "agents": {"defaults": {"model": "echo/echo"}},
              "channels": {"discord": {"token": BOT_TOKEN, **(discord or {})}}}
    return factory({"kinds": [], "restart": {"stableAfterMs": 200}}, config=config,
                   extra_env={"DISCORD_API_URL": dc.api_url})


def account(gw: Gateway, probe: bool = False) -> dict[str, Any]:
    return channel_account(gw, TOKEN, "discord", probe)


def texts_to(dc: FakeDiscord, channel_id: str) -> list[str]:
    return [t for c, t in dc.posted_texts() if c == channel_id]


def test_dm_pairing_guild_allowlists_and_mention_gating(gateway_factory, discord: FakeDiscord) -> None:
    gw = make_gateway(gateway_factory, discord, {"guilds": {GUILD: {"requireMention": True, "channels": {
        "general": {"enabled": True}, OPEN: {"requireMention": False}}}}}).start()
    wait_for(lambda: account(gw)["connected"], 20, what="the bot on the gateway")

    discord.push_dm("555", "hi there")
    dm = discord.dm_channel("555")
    reply = wait_for(lambda: next(iter(texts_to(discord, dm)), None), 10, what="a pairing code")
    code = re.search(r"Pairing code: ([A-Z2-9]{8})", reply).group(1)
    assert history(gw, "agent:main:discord:direct:555", TOKEN) == []
    assert gw.run_cli("pairing", "approve", "discord", code).returncode == 0
    discord.push_dm("555", "now answer me")
    wait_for(lambda: "now answer me" in texts_to(discord, dm), 10, what="the answer after approval")

    discord.push_guild(GUILD, GENERAL, "556", "chatter without a mention")
    wait_for(lambda: "discord: drop guild message (mention required)" in gw.log_text(), 10,
             what="the runbook's mention line")
    discord.push_guild(GUILD, RANDOM, "556", "in a channel not listed", mention_bot=True)
    wait_for(lambda: "blocked: channel not in allowlist" in gw.log_text(), 10, what="the channel allowlist line")
    discord.push_guild("799", "798", "556", "another guild", mention_bot=True)
    wait_for(lambda: "blocked: guild not in allowlist" in gw.log_text(), 10, what="the guild allowlist line")
    discord.push_guild(GUILD, GENERAL, "556", "status please", mention_bot=True)
    wait_for(lambda: any("status please" in t for t in texts_to(discord, GENERAL)), 10, what="the mentioned answer")
    discord.push_guild(GUILD, OPEN, "556", "no mention needed here")
    wait_for(lambda: "no mention needed here" in texts_to(discord, OPEN), 10, what="the requireMention=false answer")
    assert texts_to(discord, RANDOM) == [] and len(texts_to(discord, GENERAL)) == 1
    (turn,) = history(gw, f"agent:main:discord:group:{GENERAL}", TOKEN)
    assert "status please" in turn

    acct = account(gw, probe=True)
    assert acct["probe"]["ok"] and acct["probe"]["bot"]["username"] == "clawbot"
    assert acct["application"]["intents"]["messageContent"] == "enabled"
    out = run_openclaw(gw, "channels", "status", "--probe", token=TOKEN)
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "Discord default:" in ln)
    assert "works" in line and "bot:@clawbot" in line and "dm:pairing" in line, line
    for text in (out.stdout, json.dumps(acct), gw.log_text()):
        assert BOT_TOKEN not in text


def test_429_storm_backoff_honoured_nothing_lost(gateway_factory) -> None:
    dc = FakeDiscord(BOT_TOKEN, bucket_limit=3, bucket_window=0.5)
    try:
        gw = make_gateway(gateway_factory, dc, {"dmPolicy": "open", "allowFrom": ["*"]}).start()
        wait_for(lambda: account(gw)["connected"], 20, what="the bot on the gateway")
        dc.storm(4, 0.3)
        dc.storm(1, 0.6, global_=True)
        dc.storm(3, 0.2)
        total = 40
        t0 = time.monotonic()
        for i in range(total):
            dc.push_dm(str(900 + i % 4), f"m-{i}")
        expected = {f"m-{i}" for i in range(total)}
        wait_for(lambda: expected <= {t for _, t in dc.posted_texts()}, 60, what="every DM answered")
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        counts = Counter(t for _, t in dc.posted_texts())
        assert [t for t, n in counts.items() if n > 1] == []
        assert dc.violations == []  # no post inside an announced back-off or past X-RateLimit-Remaining 0
        assert "rate limited (429, global)" in gw.log_text() and "rate limited (429)" in gw.log_text()
        # 4 DM channels, 3 posts per 0.5 s each, plus the scripted 1.0 s of per-route and 0.6 s of global waits
        assert elapsed > 1.5
    finally:
        dc.close()


def test_concurrent_posts_to_one_channel_share_its_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nine posts to one channel at once through the adapter's REST client: each waits for the headers of the one
    before (none goes past X-RateLimit-Remaining 0, none before the reset, whose timer may fire a little early),
    and they land in the order they were made."""
    dc = FakeDiscord(BOT_TOKEN, bucket_limit=3, bucket_window=0.5)
    monkeypatch.setenv("DISCORD_API_URL", dc.api_url)

    async def post_all() -> None:
        dc_adapter = adapter(DiscordAdapter, {"token": BOT_TOKEN})
        try:
            await asyncio.gather(*(dc_adapter.call("POST", f"/channels/{GENERAL}/messages", {"content": f"c-{i}"})
                                   for i in range(9)))
        finally:
            await dc_adapter.close()

    try:
        asyncio.run(post_all())
        assert dc.violations == []  # the fake answers a post past Remaining 0 with a 429 and records it
        assert [t for _, t in dc.posted_texts()] == [f"c-{i}" for i in range(9)]
    finally:
        dc.close()


def test_resume_after_dropped_socket_and_after_sigkill(gateway_factory, discord: FakeDiscord) -> None:
    gw = make_gateway(gateway_factory, discord, {"dmPolicy": "open", "allowFrom": ["*"]}).start()
    wait_for(lambda: account(gw)["connected"], 20, what="the bot on the gateway")

    def answered() -> Counter[str]:
        return Counter(t for _, t in discord.posted_texts())

    def identifies() -> int:
        return sum(1 for op, _ in discord.ops if op == 2)

    def resumes() -> int:
        return sum(1 for op, _ in discord.ops if op == 6)

    for i in range(10):
        discord.push_dm("42", f"before-{i}")
    wait_for(lambda: sum(answered().values()) >= 10, 15, what="the first answers")
    assert discord.drop_sockets() == 1
    for i in range(10):
        discord.push_dm("42", f"dropped-{i}")  # sent while the bot has no socket: replayed on RESUME
    wait_for(lambda: resumes() == 1, 20, what="a RESUME after the dropped socket")
    wait_for(lambda: all(answered()[f"dropped-{i}"] for i in range(10)), 20, what="the replayed messages answered")
    assert "resumed session" in gw.log_text()

    pid = gw.worker("channel:discord:default")["pid"]
    os.kill(pid, signal.SIGKILL)
    for i in range(10):
        discord.push_dm("42", f"killed-{i}")
    wait_for(lambda: (w := gw.worker("channel:discord:default"))["state"] == "running" and w["pid"] != pid, 20,
             what="the worker back")
    wait_for(lambda: all(answered()[f"killed-{i}"] for i in range(10)), 30, what="messages sent while it was dead")
    time.sleep(0.5)
    counts = answered()
    assert resumes() == 2 and identifies() == 1  # both times the same session went on
    assert sum(counts.values()) == 30 and max(counts.values()) == 1


def test_auth_intent_and_permission_errors_in_channels_status(gateway_factory) -> None:
    bad = FakeDiscord(BOT_TOKEN)
    no_intents = FakeDiscord(BOT_TOKEN, privileged_enabled=0)
    try:
        gw = make_gateway(gateway_factory, bad, {"token": "MTA5.wrong-token.value"}).start()
        acct = wait_for(lambda: (a := account(gw))["lastError"] and a, 20, what="the 4004 error")
        assert "4004" in acct["lastError"] and "auth error" in acct["lastError"] and not acct["connected"]
        assert [i["kind"] for i in acct["issues"]] == ["auth"]
        assert "wrong-token" not in json.dumps(acct) and "wrong-token" not in gw.log_text()
        probe = account(gw, probe=True)["probe"]
        assert probe["ok"] is False and probe["status"] == 401
        gw.stop()

        gw2 = make_gateway(gateway_factory, no_intents).start()
        acct = wait_for(lambda: (a := account(gw2))["lastError"] and a, 20, what="the 4014 error")
        (issue,) = acct["issues"]
        assert issue["kind"] == "intent" and "4014" in issue["message"] and "Message Content Intent" in issue["message"]
        out = run_openclaw(gw2, "channels", "status", token=TOKEN)
        assert out.returncode == 0 and "Warnings:" in out.stdout and "Message Content Intent" in out.stdout, out.stdout
        ours = gw2.run_cli("channels", "status")
        assert "intent: discord: gateway closed 4014" in ours.stdout, ours.stdout
        gw2.stop()

        bad.deny(RANDOM)
        gw3 = make_gateway(gateway_factory, bad).start()
        wait_for(lambda: account(gw3)["connected"], 20, what="the bot on the gateway")
        c = GatewayClient(f"ws://127.0.0.1:{gw3.port}", token=TOKEN)
        c.connect()
        try:
            with pytest.raises(Exception, match="Missing Permissions"):
                c.request("send", {"channel": "discord", "to": f"channel:{RANDOM}", "message": "hello",
                                   "idempotencyKey": "perm-1"})
        finally:
            c.close()
        (issue,) = account(gw3)["issues"]
        assert issue["kind"] == "permissions" and "50013" in issue["message"] and "Send Messages" in issue["message"]
    finally:
        bad.close()
        no_intents.close()
