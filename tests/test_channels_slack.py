"""The Slack channel worker against a loopback Slack that follows the documented Socket Mode and Web API formats
(tests/slack_server.py): DM pairing, channel mention gating, envelopes acknowledged only once durable (a failed
ingress write leaves the envelope unacknowledged and Slack redelivers it), a reconnect asked by Slack and a dropped
socket, HTTP 429 storms (Retry-After honoured, nothing lost), and `missing_scope` (naming the scope),
`not_in_channel` and `invalid_auth` shown by `channels status`."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from channel_servers import channel_account, history
from slack_server import FakeSlack

from conftest import Gateway, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.workers.channels.ingress import IngressQueue
from openclaw_sup.workers.channels.policy import Inbound
from openclaw_sup.workers.channels.slack import SlackAdapter

TOKEN = "slack-test-token-0123456789abcdef"
BOT_TOKEN = "xoxb-1111-2222-slack-bot-secret"
APP_TOKEN = "xapp-1-A0001-3333-slack-app-secret"


@pytest.fixture
def slack() -> Any:
    server = FakeSlack(BOT_TOKEN, APP_TOKEN)
    yield server
    server.close()


def make_gateway(factory: Any, sl: FakeSlack, slack: dict[str, Any] | None = None) -> Gateway:
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
              "agents": {"defaults": {"model": "echo/echo"}},
              "channels": {"slack": {"botToken": BOT_TOKEN, "appToken": APP_TOKEN, **(slack or {})}}}
    return factory({"kinds": [], "restart": {"stableAfterMs": 200}}, config=config,
                   extra_env={"SLACK_API_URL": sl.api_url})


def account(gw: Gateway, probe: bool = False) -> dict[str, Any]:
    return channel_account(gw, TOKEN, "slack", probe)


def texts_to(sl: FakeSlack, channel: str) -> list[str]:
    return [t for c, t in sl.posted_texts() if c == channel]


def test_dm_pairing_mention_gating_reconnects_and_429(gateway_factory, slack: FakeSlack) -> None:
    gw = make_gateway(gateway_factory, slack, {"channels": {"C0GENERAL": {}, "C0OPEN": {"requireMention": False}}}
                      ).start()
    wait_for(lambda: account(gw)["connected"], 20, what="socket mode connected")

    slack.push_message("D0ALICE", "U0ALICE", "hello bot")
    reply = wait_for(lambda: next(iter(texts_to(slack, "D0ALICE")), None), 10, what="a pairing code")
    code = re.search(r"Pairing code: ([A-Z2-9]{8})", reply).group(1)
    assert history(gw, "agent:main:slack:direct:U0ALICE", TOKEN) == []
    assert gw.run_cli("pairing", "approve", "slack", code).returncode == 0
    slack.push_message("D0ALICE", "U0ALICE", "answer me now")
    wait_for(lambda: "answer me now" in texts_to(slack, "D0ALICE"), 10, what="the answer after approval")

    slack.push_message("C0GENERAL", "U0BOB", "idle chatter", "channel")
    wait_for(lambda: "slack: drop channel message (mention required)" in gw.log_text(), 10, what="the mention line")
    slack.push_message("C0GENERAL", "U0BOB", f"<@{slack.bot_user}> deploy status?", "channel")
    wait_for(lambda: any("deploy status?" in t for t in texts_to(slack, "C0GENERAL")), 10, what="the mentioned answer")
    slack.push_message("C0OPEN", "U0BOB", "no mention needed", "channel")
    wait_for(lambda: "no mention needed" in texts_to(slack, "C0OPEN"), 10, what="the requireMention=false answer")
    slack.push_message("C0OTHER", "U0BOB", f"<@{slack.bot_user}> hi", "channel")
    wait_for(lambda: "blocked: group not in allowlist" in gw.log_text(), 10, what="the channel allowlist line")
    assert len(texts_to(slack, "C0GENERAL")) == 1 and texts_to(slack, "C0OTHER") == []

    slack.ask_reconnect()
    wait_for(lambda: slack.connections == 2 and account(gw)["connected"], 15, what="the reconnect Slack asked for")
    slack.drop_sockets()
    slack.rate_limit(0.4, 0.3, 0.3)
    for i in range(6):
        slack.push_message("D0ALICE", "U0ALICE", f"after-{i}")
    wait_for(lambda: all(f"after-{i}" in texts_to(slack, "D0ALICE") for i in range(6)), 30,
             what="every message after the dropped socket and the 429s")
    time.sleep(0.3)
    assert slack.connections >= 3 and slack.violations == []
    counts = Counter(texts_to(slack, "D0ALICE"))
    assert max(counts.values()) == 1
    assert "rate limited (429); retrying after 0.4s" in gw.log_text()
    assert sorted(slack.acked) == sorted({e for e, _ in slack.delivered})  # every envelope acknowledged once done

    acct = account(gw, probe=True)
    assert acct["probe"]["ok"] and acct["probe"]["bot"]["id"] == slack.bot_user
    out = run_openclaw(gw, "channels", "status", "--probe", token=TOKEN)
    line = next(ln for ln in out.stdout.splitlines() if "Slack default:" in ln)
    assert out.returncode == 0 and "works" in line and "dm:pairing" in line, out.stdout
    for text in (out.stdout, json.dumps(acct), gw.log_text()):
        assert BOT_TOKEN not in text and APP_TOKEN not in text


def test_missing_scope_not_in_channel_and_invalid_auth_in_channels_status(gateway_factory) -> None:
    sl = FakeSlack(BOT_TOKEN, APP_TOKEN)
    try:
        sl.member_of = {"C0MEMBER"}
        gw = make_gateway(gateway_factory, sl, {"groupPolicy": "open", "requireMention": False}).start()
        wait_for(lambda: account(gw)["connected"], 20, what="socket mode connected")
        sl.push_message("C0NOTIN", "U0BOB", "anyone?", "channel")
        acct = wait_for(lambda: (a := account(gw))["issues"] and a, 15, what="the not_in_channel issue")
        (issue,) = acct["issues"]
        assert issue["kind"] == "permissions" and "not_in_channel" in issue["message"]
        assert "invite the bot to C0NOTIN" in issue["message"]
        assert "not_in_channel" in gw.log_text()

        sl.scopes.discard("chat:write")
        sl.push_message("C0MEMBER", "U0BOB", "hello?", "channel")
        acct = wait_for(lambda: "missing_scope" in json.dumps((a := account(gw))["issues"]) and a, 15,
                        what="the missing_scope issue")
        scope = next(i for i in acct["issues"] if "missing_scope" in i["message"])
        assert "needed: chat:write" in scope["message"] and "add the chat:write scope" in scope["message"]
        out = run_openclaw(gw, "channels", "status", token=TOKEN)
        assert "Warnings:" in out.stdout and "missing_scope" in out.stdout and "not_in_channel" in out.stdout
        gw.stop()

        gw2 = make_gateway(gateway_factory, sl, {"botToken": "xoxb-wrong-token"}).start()
        acct = wait_for(lambda: (a := account(gw2))["lastError"] and a, 15, what="invalid_auth")
        assert "invalid_auth" in acct["lastError"] and "auth error" in acct["lastError"]
        assert [i["kind"] for i in acct["issues"]] == ["auth"] and not acct["connected"]
        assert "xoxb-wrong-token" not in json.dumps(acct) + gw2.log_text()
        assert "not retrying" in gw2.log_text()
    finally:
        sl.close()


def test_envelope_acknowledged_only_after_the_ingress_write(slack: FakeSlack, tmp_path: Path) -> None:
    """The adapter alone with the real ingress queue: a failed write leaves the envelope unacknowledged, the socket
    is dropped, and Slack's redelivery is admitted (once) and acknowledged then."""
    queue = IngressQueue(tmp_path / "q.sqlite")
    failures = [sqlite3.OperationalError("disk I/O error")]
    writes: list[tuple[str, list[str]]] = []

    async def sink(msgs: list[Inbound], meta: dict[str, str] | None) -> None:
        if failures:
            raise failures.pop()
        queue.admit([(m.message_id, m.peer, {"text": m.text}) for m in msgs], meta)
        writes.append(("admitted", list(slack.acked)))

    async def scenario() -> None:
        import os
        os.environ["SLACK_API_URL"] = slack.api_url
        adapter = SlackAdapter({"botToken": BOT_TOKEN, "appToken": APP_TOKEN}, logging.getLogger("test.slack"),
                               sink, queue.get_meta)
        task = asyncio.create_task(adapter.run())
        for _ in range(200):
            if adapter.connected:
                break
            await asyncio.sleep(0.02)
        await asyncio.to_thread(slack.push_message, "D0X", "U0X", "keep me")
        for _ in range(800):
            if slack.acked:
                break
            await asyncio.sleep(0.01)
        await adapter.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        del os.environ["SLACK_API_URL"]

    asyncio.run(scenario())
    assert [r for _, r in slack.delivered] == [0, 1]  # the first delivery failed to land; Slack retried it
    assert writes == [("admitted", [])]  # when it was written, nothing had been acknowledged yet
    assert len(slack.acked) == 1
    assert [r.payload["text"] for r in queue.pending_inbound()] == ["keep me"]


def test_operator_send_and_stop_start(gateway_factory, slack: FakeSlack) -> None:
    gw = make_gateway(gateway_factory, slack).start()
    wait_for(lambda: account(gw)["connected"], 20, what="socket mode connected")
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    try:
        assert c.request("send", {"channel": "slack", "to": "C0ANN", "message": "deploy done",
                                  "idempotencyKey": "ann-1"})["ok"] is True
        assert c.request("channels.stop", {"channel": "slack"})["stopped"] is True
        assert account(gw)["connected"] is False
        assert c.request("channels.start", {"channel": "slack"})["started"] is True
        wait_for(lambda: account(gw)["connected"], 20, what="socket mode back")
    finally:
        c.close()
    assert texts_to(slack, "C0ANN") == ["deploy done"]
