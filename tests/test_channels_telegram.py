"""The Telegram channel worker against a local Bot API server: pairing, mention gating through entities, offsets
that confirm only admitted updates, 429 retry_after on both directions, 401 reported as an auth error, and the
chaos test (500 messages, the worker SIGKILLed three times, every message answered exactly once)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from channel_servers import NGIRCD, FakeTelegram, Ngircd, history

from conftest import Gateway, wait_for
from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.workers.channels.ingress import INTERRUPTED_SEND, IngressQueue
from openclaw_sup.workers.channels.policy import Inbound
from openclaw_sup.workers.channels.telegram import TelegramAdapter

TOKEN = "tg-test-token-0123456789abcdef"
BOT_TOKEN = "123456:ABC-secret-bot-token"


@pytest.fixture
def telegram() -> Any:
    server = FakeTelegram(BOT_TOKEN)
    yield server
    server.close()


def make_gateway(factory: Any, tg: FakeTelegram, *, telegram: dict[str, Any] | None = None,
                 channels: dict[str, Any] | None = None) -> Gateway:
    """The real agent worker with the offline echo provider (the reply is the message text)."""
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
              "agents": {"defaults": {"model": "echo/echo"}},
              "channels": {"telegram": {"botToken": BOT_TOKEN, "apiBaseUrl": tg.base_url, **(telegram or {})},
                           **(channels or {})}}
    return factory({"kinds": [], "restart": {"stableAfterMs": 200}}, config=config)


def account(gw: Gateway, probe: bool = False) -> dict[str, Any]:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    try:
        return c.request("channels.status", {"probe": probe, "timeoutMs": 5000})["channelAccounts"]["telegram"][0]
    finally:
        c.close()




def test_pairing_mentions_offsets_and_429(gateway_factory, telegram: FakeTelegram, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, telegram, telegram={"groupPolicy": "open"}).start()
    wait_for(lambda: account(gw)["connected"], 15, what="telegram polling")

    first = telegram.push_text(42, "hi")
    reply = wait_for(lambda: next((t for c, t in telegram.sent_texts() if c == "42"), None), 10, what="a code")
    code = re.search(r"Pairing code: ([A-Z2-9]{8})", reply).group(1)
    assert history(gw, "agent:main:telegram:direct:42", TOKEN) == []
    assert telegram.confirmed > first  # the offset moved past the update only after it was admitted
    assert gw.run_cli("pairing", "approve", code).returncode == 0  # the only channel with requests

    telegram.fail("sendMessage", 429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry "
                                       "after 1", "parameters": {"retry_after": 1}})
    telegram.fail("getUpdates", 429, {"ok": False, "error_code": 429, "description": "Too Many Requests",
                                      "parameters": {"retry_after": 1}})
    t0 = time.monotonic()
    telegram.push_text(42, "second try")
    wait_for(lambda: ("42", "second try") in telegram.sent_texts(), 15, what="the answer after the 429s")
    assert time.monotonic() - t0 >= 1.0
    tries = [b for m, b in telegram.calls if m == "sendMessage" and b.get("text") == "second try"]
    assert len(tries) == 2
    assert "rate limited (429)" in gw.log_text() and "retrying in 1.0s" in gw.log_text()

    telegram.push_text(-100, "chatter", sender_id=7, chat_type="supergroup")
    wait_for(lambda: "mention required" in gw.log_text(), 10, what="the mention-required line")
    telegram.push_text(-100, "@claw_bot status?", sender_id=7, chat_type="supergroup",
                       entities=[{"type": "mention", "offset": 0, "length": 9}])
    wait_for(lambda: ("-100", "@claw_bot status?") in telegram.sent_texts(), 10, what="the group answer")
    (direct,) = history(gw, "agent:main:telegram:direct:42", TOKEN)
    (grouped,) = history(gw, "agent:main:telegram:group:-100", TOKEN)
    assert "second try" in direct and "status?" in grouped and "chatter" not in grouped
    acct = account(gw, probe=True)
    assert acct["probe"]["ok"] and acct["probe"]["bot"]["username"] == "claw_bot"
    assert BOT_TOKEN not in json.dumps(acct)


def test_401_is_reported_as_an_auth_error_without_the_token(gateway_factory, telegram: FakeTelegram,
                                                            tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, telegram, telegram={"botToken": "999:wrong-token-value"}).start()
    acct = wait_for(lambda: (a := account(gw))["lastError"] and a, 15, what="the auth error")
    assert "401" in acct["lastError"] and "auth error" in acct["lastError"] and not acct["connected"]
    probe = account(gw, probe=True)["probe"]
    assert probe["ok"] is False and probe["status"] == 401 and probe["auth"] is True
    out = gw.run_cli("channels", "status", "--probe", "--json")
    assert out.returncode == 0 and "wrong-token-value" not in out.stdout
    assert "401" in gw.log_text() and "wrong-token-value" not in gw.log_text()


@pytest.mark.skipif(not Path(NGIRCD).exists(), reason="ngircd not installed")
def test_chaos_500_messages_three_sigkills_none_lost_none_twice(gateway_factory, telegram: FakeTelegram,
                                                              tmp_path: Path) -> None:
    ircd = Ngircd(tmp_path / "ngircd").start()
    try:
        gw = make_gateway(gateway_factory, telegram, telegram={"dmPolicy": "open", "allowFrom": ["*"]},
                          channels={"irc": {"host": "127.0.0.1", "port": ircd.port, "nick": "chaosbot"}}).start()
        wait_for(lambda: account(gw)["connected"], 15, what="telegram polling")
        irc_pid = gw.worker("channel:irc:default")["pid"]
        total = 500
        for i in range(total):
            telegram.push_text(1000 + i % 50, f"msg-{i}")
        kills = 0
        for threshold in (100, 220, 340):
            wait_for(lambda t=threshold: len(telegram.sent) >= t, 30, what=f"{threshold} answers")
            pid = gw.worker("channel:telegram:default")["pid"]
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_for(lambda p=pid: (w := gw.worker("channel:telegram:default"))["state"] == "running"
                     and w["pid"] != p, 20, what="the telegram worker back")
        db = gw.state_dir / "state" / "channels" / "telegram-default.sqlite"
        expected = {f"msg-{i}" for i in range(total)}

        def in_doubt() -> set[str]:
            """Replies a kill caught after `sending` was committed but before the worker saw the answer. The Bot
            API has no idempotency key, so nobody can tell whether such a reply left: the worker reports it
            (INTERRUPTED_SEND) and never sends it again. At most one per crash."""
            with sqlite3.connect(db) as conn:
                return {t for (t,) in conn.execute("SELECT text FROM outbound WHERE note = ?", (INTERRUPTED_SEND,))}

        try:
            wait_for(lambda: expected <= {t for _, t in telegram.sent_texts()} | in_doubt(), 30,
                     what="every message answered (or reported in doubt)")
        except AssertionError:
            missing = expected - {t for _, t in telegram.sent_texts()}
            with sqlite3.connect(db) as conn:
                rows = conn.execute("SELECT out_id, state, note FROM outbound WHERE state != 'sent' OR note IS NOT NULL"
                                    ).fetchall()
                pending = conn.execute("SELECT msg_id, state, note FROM inbound WHERE state != 'done'").fetchall()
            raise AssertionError(f"missing answers {sorted(missing)[:10]}; outbound {rows[:10]}; inbound "
                                 f"{pending[:10]}; log tail {gw.log_text()[-1500:]}") from None
        time.sleep(0.5)  # anything duplicated would have been sent by now
        counts = Counter(t for _, t in telegram.sent_texts())
        doubtful = in_doubt()
        assert kills == 3
        assert set(counts) <= expected and [t for t, n in counts.items() if n > 1] == []  # never twice
        assert expected - set(counts) <= doubtful and len(doubtful) <= kills  # none lost without a word
        for text in doubtful:
            assert "(it may not have been delivered)" in gw.log_text(), text
        assert gw.worker("channel:telegram:default")["restarts"] >= 3
        assert gw.worker("channel:irc:default")["pid"] == irc_pid
        with sqlite3.connect(db) as conn:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM inbound GROUP BY state").fetchall())
        assert states == {"done": total}
    finally:
        ircd.kill()


def test_offset_confirms_only_updates_already_in_the_ingress_queue(telegram: FakeTelegram, tmp_path: Path) -> None:
    """The adapter alone, with the real ingress queue: a failed ingress write leaves the offset where it was, so
    Telegram redelivers; the offset that follows a write covers exactly what was written."""
    queue = IngressQueue(tmp_path / "q.sqlite")
    failures = [sqlite3.OperationalError("disk I/O error")]

    async def sink(msgs: list[Inbound], meta: dict[str, str] | None) -> None:
        if failures:
            raise failures.pop()
        queue.admit([(m.message_id, m.peer, {"text": m.text}) for m in msgs], meta)

    async def scenario() -> None:
        adapter = TelegramAdapter({"botToken": BOT_TOKEN, "apiBaseUrl": telegram.base_url},
                                  logging.getLogger("test.telegram"), sink, queue.get_meta)
        task = asyncio.create_task(adapter.run())
        for _ in range(400):
            if len(queue.pending_inbound()) == 2 and telegram.confirmed == 3:
                break
            await asyncio.sleep(0.01)
        await adapter.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    telegram.push_text(5, "one")
    telegram.push_text(5, "two")
    asyncio.run(scenario())
    offsets = [body.get("offset") for method, body in telegram.calls if method == "getUpdates"]
    assert offsets[:2] == [None, None]  # the write failed: no offset confirmed anything
    assert offsets[2] == 3 and queue.get_meta("telegram.offset") == "3"
    assert [r.payload["text"] for r in queue.pending_inbound()] == ["one", "two"]
