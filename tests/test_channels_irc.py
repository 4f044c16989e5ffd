"""The IRC channel worker end to end: a real gateway, a real ngircd on loopback, real IRC users.

DM pairing (code sent, agent not reached, `pairing approve`, then answered), group mention gating with the
log line, and reconnection after the IRC server is killed and comes back.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from channel_servers import NGIRCD, IrcClient, Ngircd, history

from conftest import Gateway, wait_for
from openclaw_sup.gateway.client import GatewayClient

pytestmark = pytest.mark.skipif(not Path(NGIRCD).exists(), reason="ngircd not installed (scripts/debian-packages.txt)")

TOKEN = "irc-test-token-0123456789abcdef"
BOT = "clawbot"


def make_gateway(factory: Any, ircd: Ngircd, irc: dict[str, Any] | None = None) -> Gateway:
    """The real agent worker with the offline echo provider: the reply is the message text."""
    config = {"gateway": {"auth": {"mode": "token", "token": TOKEN}},
              "agents": {"defaults": {"model": "echo/echo"}},
              "channels": {"irc": {"host": "127.0.0.1", "port": ircd.port, "nick": BOT, "channels": ["#room"],
                                   "groups": {"#room": {}}, **(irc or {})}}}
    return factory({"kinds": [], "restart": {"stableAfterMs": 200}}, config=config)




def channel_status(gw: Gateway, probe: bool = False) -> dict[str, Any]:
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    try:
        return c.request("channels.status", {"probe": probe, "timeoutMs": 5000})
    finally:
        c.close()


def irc_account(gw: Gateway, probe: bool = False) -> dict[str, Any]:
    return channel_status(gw, probe)["channelAccounts"]["irc"][0]


@pytest.fixture
def ircd(tmp_path: Path) -> Any:
    server = Ngircd(tmp_path / "ngircd").start()
    yield server
    server.kill()


def test_dm_pairing_then_answered_and_group_mention_gating(gateway_factory, ircd: Ngircd, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, ircd).start()
    wait_for(lambda: irc_account(gw)["connected"], 20, what="the bot connected")
    alice = IrcClient(ircd.port, "alice")
    alice.send("JOIN #room")
    alice.expect(lambda ln: (" 353 " in ln and BOT in [n.lstrip("@+") for n in ln.split(" :", 1)[-1].split()])
                 or (ln.startswith(f":{BOT}!") and " JOIN " in ln), 20, what="the bot in #room")

    alice.privmsg(BOT, "hello bot")
    reply = alice.expect(lambda ln: ln.startswith(f":{BOT}!") and "Pairing code:" in ln, what="a pairing code")
    code = re.search(r"Pairing code: ([A-Z2-9]{8})", reply).group(1)
    assert not set("01OI") & set(code)
    wait_for(lambda: "pairing request" in gw.log_text(), 5, what="the pairing request log line")
    assert history(gw, "agent:main:irc:direct:alice", TOKEN) == []

    alice.privmsg(BOT, "hello twice")  # a pending request sends no second code
    listed = gw.run_cli("pairing", "list", "irc", "--json")
    assert listed.returncode == 0, listed.stderr
    reqs = json.loads(listed.stdout)["requests"]
    assert [(r["code"], r["senderId"], r["accountId"]) for r in reqs] == [(code, "alice", "default")]
    approved = gw.run_cli("pairing", "approve", "irc", code)
    assert approved.returncode == 0, approved.stderr
    assert "alice" in approved.stdout
    assert json.loads(gw.run_cli("pairing", "list", "--json").stdout)["requests"] == []

    alice.privmsg(BOT, "are you there?")
    alice.expect(lambda ln: ln.startswith(f":{BOT}!") and ln.endswith("PRIVMSG alice :are you there?"),
                 what="the agent's answer to the approved DM")
    assert sum("Pairing code:" in t for t in alice.messages_from(BOT)) == 1
    assert "are you there?" in history(gw, "agent:main:irc:direct:alice", TOKEN)[-1]
    assert not any("hello" in m for m in history(gw, "agent:main:irc:direct:alice", TOKEN))

    alice.privmsg("#room", "just chatting, nobody in particular")
    wait_for(lambda: "mention required" in gw.log_text(), 10, what="the mention-required log line")
    alice.privmsg("#room", f"{BOT}: what is up")
    alice.expect(lambda ln: ln.startswith(f":{BOT}!") and ln.endswith("PRIVMSG #room :what is up"),
                 what="the answer in #room")
    (group_turn,) = history(gw, "agent:main:irc:group:#room", TOKEN)
    assert "what is up" in group_turn and "chatting" not in group_turn
    assert len(alice.messages_from(BOT, "#room")) == 1

    acct = irc_account(gw, probe=True)
    assert acct["connected"] and acct["running"] and acct["configured"] and acct["enabled"]
    assert acct["probe"]["ok"] is True
    alice.close()


def test_worker_reconnects_when_the_irc_server_returns(gateway_factory, ircd: Ngircd, tmp_path: Path) -> None:
    gw = make_gateway(gateway_factory, ircd, {"dmPolicy": "open", "allowFrom": ["*"]}).start()
    wait_for(lambda: irc_account(gw)["connected"], 20, what="the bot connected")
    pid = gw.worker("channel:irc:default")["pid"]
    ircd.kill()
    down = wait_for(lambda: not (a := irc_account(gw))["connected"] and a, 15, what="the bot seeing the server gone")
    assert down["lastError"]
    probe = irc_account(gw, probe=True)["probe"]
    assert probe["ok"] is False
    out = gw.run_cli("channels", "status", "--probe")
    assert out.returncode == 0 and "IRC default: enabled, configured, running, disconnected" in out.stdout

    ircd.start()
    wait_for(lambda: irc_account(gw)["connected"], 30, what="the bot reconnected")
    bob = IrcClient(ircd.port, "bob")
    bob.privmsg(BOT, "back again")
    bob.expect(lambda ln: ln.startswith(f":{BOT}!") and ln.endswith("PRIVMSG bob :back again"),
               what="an answer after the reconnect")
    assert gw.worker("channel:irc:default")["pid"] == pid  # the adapter reconnected; the worker never restarted
    out = gw.run_cli("channels", "status", "--probe")
    assert "IRC default: enabled, configured, running, connected, works" in out.stdout, out.stdout
    bob.close()
    gw.signal(signal.SIGTERM)


def test_approve_notify_and_operator_stop_start(gateway_factory, ircd: Ngircd) -> None:
    gw = make_gateway(gateway_factory, ircd).start()
    wait_for(lambda: irc_account(gw)["connected"], 20, what="the bot connected")
    carol = IrcClient(ircd.port, "carol")
    carol.send("JOIN #room")  # to see the bot's QUIT
    carol.privmsg(BOT, "let me in")
    reply = carol.expect(lambda ln: "Pairing code:" in ln, what="a pairing code")
    code = re.search(r"Pairing code: ([A-Z2-9]{8})", reply).group(1)
    out = gw.run_cli("pairing", "approve", "irc", code, "--notify")
    assert out.returncode == 0 and "Sender notified." in out.stdout, out.stdout + out.stderr
    carol.expect(lambda ln: ln.startswith(f":{BOT}!") and "approved" in ln, what="the approval notice")

    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=TOKEN)
    c.connect()
    pid = gw.worker("channel:irc:default")["pid"]
    assert c.request("channels.stop", {"channel": "irc"})["stopped"] is True
    carol.expect(lambda ln: ln.startswith(f":{BOT}!") and " QUIT " in ln, what="the bot quitting")
    acct = irc_account(gw)
    assert acct["running"] is False and acct["connected"] is False and acct["stopped"] is True
    assert c.request("channels.start", {"channel": "irc", "accountId": "default"})["started"] is True
    wait_for(lambda: irc_account(gw)["connected"], 20, what="the bot back after channels.start")
    assert gw.worker("channel:irc:default")["pid"] == pid
    sent = c.request("send", {"channel": "irc", "to": "carol", "message": "hello from the operator",
                              "idempotencyKey": "op-1"})
    assert sent["ok"] is True
    carol.expect(lambda ln: ln.endswith("PRIVMSG carol :hello from the operator"), what="the operator's send")
    c.request("send", {"channel": "irc", "to": "carol", "message": "hello from the operator",
                       "idempotencyKey": "op-1"})
    carol.privmsg(BOT, "sync")
    carol.expect(lambda ln: ln.endswith("PRIVMSG carol :sync"), what="the echo after the sends")
    assert carol.messages_from(BOT).count("hello from the operator") == 1  # same idempotencyKey: sent once
    c.close()
    carol.close()
