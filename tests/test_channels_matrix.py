"""The Matrix channel worker end to end: a real gateway, a real Synapse on loopback, real Matrix users (matrix-nio).

DM pairing (code sent, agent not reached, `pairing approve`, then answered), room mention gating with its log line,
the probe (`whoami`), invites per `autoJoin`, an encrypted room named in `channels status` instead of dropped
silently, `channels logout`, and the chaos test: messages flowing while the worker is SIGKILLed three times, every
one answered exactly once (a reply cut short by a kill is resent under the same transaction id, which the
homeserver deduplicates, so nothing is even in doubt).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from channel_servers import channel_account, history
from synapse_server import MatrixUser, Synapse, wait_until_joined

from conftest import Gateway, run_openclaw, wait_for
from openclaw_sup.gateway.client import GatewayClient
from openclaw_sup.workers.channels.ingress import RESENT_SEND

TOKEN = "matrix-test-token-0123456789abcdef"
BOT_PASSWORD = "bot-secret-password-42"


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    hs = Synapse(tmp_path_factory.mktemp("synapse")).start()
    yield hs
    hs.kill()


_names = iter(range(10_000))


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}{os.getpid()}"


def make_gateway(factory: Any, hs: Synapse, bot: str, matrix: dict[str, Any] | None = None) -> Gateway:
    """The real agent worker with the offline echo provider (the reply is the message text)."""
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
              "agents": {"defaults": {"model": "echo/echo"}},
              "channels": {"matrix": {"homeserver": hs.url, "userId": f"@{bot}:localhost", "password": BOT_PASSWORD,
                                      "network": {"dangerouslyAllowPrivateNetwork": True}, "autoJoin": "always",
                                      **(matrix or {})}}}
    return factory({"kinds": [], "restart": {"stableAfterMs": 200}}, config=config)


def start_bot(factory: Any, hs: Synapse, prefix: str, matrix: dict[str, Any]) -> tuple[Gateway, str, str]:
    """A fresh bot user, and a gateway whose Matrix account logs in as it and is syncing."""
    bot = unique(prefix)
    hs.register(bot, BOT_PASSWORD)
    gw = make_gateway(factory, hs, bot, matrix).start()
    wait_for(lambda: account(gw)["connected"], 30, what="the bot syncing")
    return gw, bot, f"@{bot}:localhost"


def as_cli_shows(text: str) -> str:
    """The real CLI masks a bounded run of exactly 40 base64 characters holding an upper and a lower case letter, a
    digit (or / + =) and a letter past F, as a possible AWS secret key: first 6, "…", last 4. A room id of room
    version 12 is a 43-character hash that holds such a run by chance."""
    def mask(m: re.Match[str]) -> str:
        run = m[0]
        looks_secret = all(re.search(c, run) for c in ("[A-Z]", "[a-z]", "[0-9/+=]", "[G-Zg-z/+=]"))
        return f"{run[:6]}…{run[-4:]}" if looks_secret else run
    return re.sub(r"(?<![A-Za-z0-9/+=_])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=_])", mask, text)


def account(gw: Gateway, probe: bool = False) -> dict[str, Any]:
    return channel_account(gw, TOKEN, "matrix", probe)


def test_dm_pairing_approval_answer_and_room_mention_gating(gateway_factory, synapse: Synapse) -> None:
    gw, bot, bot_id = start_bot(gateway_factory, synapse, "clawbot", {"groupPolicy": "open"})
    alice, bob = MatrixUser(synapse, unique("alice")), MatrixUser(synapse, unique("bob"))
    try:
        dm = alice.create_room(invite=[bot_id], direct=True)
        wait_until_joined(alice, dm, bot_id)
        alice.send(dm, "hello bot")
        reply = alice.expect(bot_id, lambda b: "Pairing code:" in b, dm, what="a pairing code in the DM")
        code = re.search(r"Pairing code: ([A-Z2-9]{8})", reply).group(1)
        assert alice.user_id in reply
        wait_for(lambda: "pairing request" in gw.log_text(), 5, what="the pairing request log line")
        assert history(gw, f"agent:main:matrix:direct:{alice.user_id}", TOKEN) == []

        alice.send(dm, "hello twice")  # a pending request sends no second code
        listed = json.loads(gw.run_cli("pairing", "list", "matrix", "--json").stdout)["requests"]
        assert [(r["code"], r["senderId"]) for r in listed] == [(code, alice.user_id)]
        approved = gw.run_cli("pairing", "approve", "matrix", code)
        assert approved.returncode == 0, approved.stderr

        alice.send(dm, "are you there?")
        alice.expect(bot_id, lambda b: b == "are you there?", dm, what="the agent's answer in the DM")
        assert sum("Pairing code:" in b for b in alice.messages_from(bot_id, dm)) == 1
        turns = history(gw, f"agent:main:matrix:direct:{alice.user_id}", TOKEN)
        assert any("are you there?" in t for t in turns) and not any("hello" in t for t in turns)

        room = alice.create_room(invite=[bot_id, bob.user_id], name="ops")
        wait_until_joined(alice, room, bot_id)
        wait_until_joined(alice, room, bob.user_id)
        bob.send(room, "just chatting, nobody in particular")
        wait_for(lambda: "drop room message (mention required)" in gw.log_text(), 15,
                 what="the mention-required log line")
        bob.send(room, f"{bot}: what is up", mentions=[bot_id])
        bob.expect(bot_id, lambda b: b == f"{bot}: what is up", room, what="the answer in the room")
        (turn,) = history(gw, f"agent:main:matrix:group:{room}", TOKEN)
        assert "what is up" in turn and "chatting" not in turn
        assert len(bob.messages_from(bot_id, room)) == 1

        acct = account(gw, probe=True)
        assert acct["connected"] and acct["probe"]["ok"] is True and acct["probe"]["bot"]["id"] == bot_id
        assert acct["dmPolicy"] == "pairing" and acct["tokenSource"] == "login"
        out = run_openclaw(gw, "channels", "status", "--probe", token=TOKEN)
        assert out.returncode == 0, out.stdout + out.stderr
        line = next(ln for ln in out.stdout.splitlines() if "Matrix default:" in ln)
        assert "connected" in line and "works" in line and f"bot:{bot_id}" in line, line
        for text in (out.stdout, json.dumps(acct), gw.log_text()):
            assert BOT_PASSWORD not in text and "syt_" not in text
    finally:
        alice.close()
        bob.close()


def test_invites_per_autojoin_encrypted_room_reported_and_logout(gateway_factory, synapse: Synapse) -> None:
    bot = unique("inviteebot")
    synapse.register(bot, BOT_PASSWORD)
    bot_id = f"@{bot}:localhost"
    carol = MatrixUser(synapse, unique("carol"))
    try:
        allowed = carol.create_room(name="allowed")
        gw = make_gateway(gateway_factory, synapse, bot, {
            "autoJoin": "allowlist", "autoJoinAllowlist": [allowed], "dm": {"policy": "open", "allowFrom": ["*"]},
            "groupPolicy": "open", "groups": {"*": {"autoReply": True}}}).start()
        wait_for(lambda: account(gw)["connected"], 30, what="the bot syncing")
        other = carol.create_room(invite=[bot_id], name="not allowed")
        carol.invite(allowed, bot_id)
        wait_until_joined(carol, allowed, bot_id)
        wait_for(lambda: f"invite to {other}" in gw.log_text() and "ignored (autoJoin=allowlist)" in gw.log_text(),
                 15, what="the ignored invite logged")
        assert bot_id not in carol.members(other)

        carol.call(carol.client.room_put_state(allowed, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}))
        carol.call(carol.client.room_send(allowed, "m.room.encrypted", {
            "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAC", "sender_key": "k", "device_id": "D",
            "session_id": "s"}))
        acct = wait_for(lambda: "1 message(s)" in json.dumps(a := account(gw)) and a, 20,
                        what="the encrypted room reported with its unread message")
        issue = next(i for i in acct["issues"] if allowed in i["message"])
        assert acct["encryptedRooms"] == [allowed] and "end-to-end encryption is not supported yet" in issue["message"]
        assert "not read: the room is encrypted" in gw.log_text()
        out = run_openclaw(gw, "channels", "status", token=TOKEN)
        assert out.returncode == 0 and "Warnings:" in out.stdout and as_cli_shows(allowed) in out.stdout, out.stdout

        c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
        c.connect()
        try:
            res = c.request("channels.logout", {"channel": "matrix"})
            assert res["loggedOut"] is True and res["cleared"] is True
            assert account(gw)["connected"] is False
            assert c.request("channels.start", {"channel": "matrix"})["started"] is True
        finally:
            c.close()
        wait_for(lambda: account(gw)["connected"], 30, what="the bot back after logout and start")
        assert gw.log_text().count("logged in as") == 2  # the cached token was forgotten: a fresh login
    finally:
        carol.close()


def test_chaos_three_sigkills_while_messages_flow_none_lost_none_twice(gateway_factory, synapse: Synapse) -> None:
    gw, _, bot_id = start_bot(gateway_factory, synapse, "chaosbot", {"dm": {"policy": "open", "allowFrom": ["*"]}})
    users = [MatrixUser(synapse, unique("crowd")) for _ in range(4)]
    try:
        rooms = []
        for u in users:
            rooms.append(u.create_room(invite=[bot_id], direct=True))
        for u, r in zip(users, rooms, strict=True):
            wait_until_joined(u, r, bot_id)
        per_user = 60
        total = per_user * len(users)
        expected = {f"msg-{i}" for i in range(total)}

        def flood(k: int) -> None:
            for j in range(per_user):
                users[k].send(rooms[k], f"msg-{j * len(users) + k}")

        senders = [threading.Thread(target=flood, args=(k,)) for k in range(len(users))]
        for t in senders:
            t.start()

        def answered() -> Counter[str]:
            return Counter(b for u, r in zip(users, rooms, strict=True) for b in u.messages_from(bot_id, r))

        kills = 0
        for threshold in (40, 110, 180):
            wait_for(lambda t=threshold: sum(answered().values()) >= t, 60, what=f"{threshold} answers")
            pid = gw.worker("channel:matrix:default")["pid"]
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_for(lambda p=pid: (w := gw.worker("channel:matrix:default"))["state"] == "running"
                     and w["pid"] != p, 30, what="the matrix worker back")
        for t in senders:
            t.join(60)
        try:
            wait_for(lambda: expected <= set(answered()), 90, what="every message answered")
        except AssertionError:
            missing = sorted(expected - set(answered()))
            raise AssertionError(f"missing {missing[:10]} (of {len(missing)}); log tail {gw.log_text()[-1500:]}"
                                 ) from None
        time.sleep(1.5)  # a duplicate would have arrived by now
        counts = answered()
        assert kills == 3 and set(counts) == expected
        assert [t for t, n in counts.items() if n > 1] == []  # never twice, even for replies cut short by a kill
        db = gw.state_dir / "state" / "channels" / "matrix-default.sqlite"
        with sqlite3.connect(db) as conn:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM inbound GROUP BY state").fetchall())
            resent = conn.execute("SELECT COUNT(*) FROM outbound WHERE note = ?", (RESENT_SEND,)).fetchone()[0]
        assert states == {"done": total}
        assert resent <= kills
        assert gw.log_text().count("logged in as") == 1  # restarts reuse the cached token (same device)
    finally:
        for u in users:
            u.close()


def test_not_configured_and_private_homeserver_refused(gateway_factory, synapse: Synapse) -> None:
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
              "channels": {"matrix": {"homeserver": synapse.url, "accessToken": "syt_not_a_real_token_value"}}}
    gw = gateway_factory({"kinds": []}, config=config).start()
    acct = wait_for(lambda: (a := account(gw))["lastError"] and a, 15, what="the refusal")
    assert "private or loopback" in acct["lastError"] and "dangerouslyAllowPrivateNetwork" in acct["lastError"]
    assert not acct["connected"] and "syt_not_a_real_token_value" not in json.dumps(acct)
    assert Path(gw.log_file).exists()
