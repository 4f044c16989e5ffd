"""The channel policy engine (pure functions), the pairing store's rules and the ingress queue's crash rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from openclaw_sup.config.pairing_store import (
    CODE_ALPHABET,
    REQUEST_TTL_MS,
    PairingError,
    PairingStore,
    new_code,
)
from openclaw_sup.workers.channels.ingress import IngressQueue, Reply
from openclaw_sup.workers.channels.policy import DROP, PAIR, PROCESS, Inbound, session_key, verdict


def dm(sender: str = "alice", text: str = "hi") -> Inbound:
    return Inbound(message_id="m1", sender_id=sender, text=text, chat_type="direct", chat_id=sender)


def group(text: str = "hello", *, chat: str = "#room", sender: str = "bob", mentioned: bool = False) -> Inbound:
    return Inbound(message_id="g1", sender_id=sender, text=text, chat_type="group", chat_id=chat, mentioned=mentioned)


IRC = {"channel": "irc", "accountId": "default"}


# -- DM policy -------------------------------------------------------------------------------------------

def test_pairing_is_the_default_dm_policy_and_logs_pairing_request() -> None:
    v = verdict(IRC, dm(), store_allowed=False)
    assert v.action == PAIR and "pairing request" in (v.log or "")


def test_paired_or_allowlisted_senders_pass_pairing_and_allowlist() -> None:
    assert verdict(IRC, dm(), store_allowed=True).action == PROCESS
    cfg = {**IRC, "allowFrom": ["irc:Alice"]}
    assert verdict(cfg, dm("alice"), store_allowed=False).action == PROCESS
    cfg = {**IRC, "dmPolicy": "allowlist", "allowFrom": ["carol"]}
    v = verdict(cfg, dm("alice"), store_allowed=False)
    assert v.action == DROP and "blocked" in v.log and "allowlist" in v.log
    assert verdict(cfg, dm("alice"), store_allowed=True).action == PROCESS


def test_open_needs_a_star_and_a_concrete_list_still_restricts() -> None:
    assert verdict({**IRC, "dmPolicy": "open", "allowFrom": ["*"]}, dm("anyone"), False).action == PROCESS
    v = verdict({**IRC, "dmPolicy": "open", "allowFrom": ["carol"]}, dm("anyone"), False)
    assert v.action == DROP and "blocked" in v.log


def test_disabled_drops_every_dm_even_paired_ones() -> None:
    v = verdict({**IRC, "dmPolicy": "disabled"}, dm(), store_allowed=True)
    assert v.action == DROP and "blocked" in v.log


def test_irc_masks_match_the_full_prefix() -> None:
    cfg = {**IRC, "dmPolicy": "allowlist", "allowFrom": ["*!*@trusted.example"]}
    msg = Inbound("m", "eve", "x", "direct", "eve", sender_name="eve!e@trusted.example")
    assert verdict(cfg, msg, False).action == PROCESS
    other = Inbound("m", "eve", "x", "direct", "eve", sender_name="eve!e@elsewhere")
    assert verdict(cfg, other, False).action == DROP


# -- group policy ----------------------------------------------------------------------------------------

def test_groups_default_to_a_fail_closed_allowlist() -> None:
    v = verdict(IRC, group(mentioned=True), False)
    assert v.action == DROP and "blocked" in v.log and "allowlist" in v.log


def test_allowlisted_group_requires_a_mention_by_default() -> None:
    cfg = {**IRC, "groups": {"#room": {}}}
    v = verdict(cfg, group(), False)
    assert v.action == DROP and "mention required" in v.log
    assert verdict(cfg, group(mentioned=True), False).action == PROCESS
    assert verdict(cfg, group(chat="#other", mentioned=True), False).action == DROP


def test_per_group_and_star_require_mention_and_mention_patterns() -> None:
    assert verdict({**IRC, "groups": {"#ROOM": {"requireMention": False}}}, group(), False).action == PROCESS
    assert verdict({**IRC, "groups": {"*": {"requireMention": False}}}, group(chat="#x"), False).action == PROCESS
    cfg = {**IRC, "groupPolicy": "open", "mentionPatterns": [r"\bclaw\b"]}
    assert verdict(cfg, group("hey CLAW, status?"), False).action == PROCESS
    assert verdict(cfg, group("hey there"), False).log.endswith("from bob")


def test_group_sender_allowlists_and_disabled() -> None:
    cfg = {**IRC, "groupPolicy": "allowlist", "groupAllowFrom": ["bob"], "groups": {"*": {"requireMention": False}}}
    assert verdict(cfg, group(sender="bob"), False).action == PROCESS
    assert verdict(cfg, group(sender="mallory"), False).action == DROP
    cfg = {**IRC, "allowFrom": ["bob"]}  # groupAllowFrom falls back to allowFrom
    assert verdict({**cfg, "groups": {"*": {"requireMention": False}}}, group(sender="mallory"), False).action == DROP
    assert verdict({**IRC, "groupPolicy": "disabled"}, group(mentioned=True), False).action == DROP
    off = {**IRC, "groupPolicy": "open", "groups": {"#room": {"enabled": False}}}
    assert verdict(off, group(mentioned=True), False).action == DROP


def test_session_keys_follow_the_contract() -> None:
    assert session_key("main", "irc", dm("Alice")) == "agent:main:irc:direct:alice"
    assert session_key("main", "telegram", group(chat="-100")) == "agent:main:telegram:group:-100"


# -- pairing store ---------------------------------------------------------------------------------------

def test_codes_are_8_unambiguous_uppercase_characters() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(re.fullmatch(r"[A-HJ-NP-Z2-9]{8}", c) for c in codes)
    assert not set("0O1I") & set(CODE_ALPHABET)


def test_pairing_requests_expire_cap_at_three_and_stay_silent_while_pending(tmp_path: Path) -> None:
    store = PairingStore(tmp_path / "openclaw.sqlite")
    t0 = 1_000_000
    first = store.request("irc", "default", "alice", now=t0)
    assert first.status == "created" and first.request is not None
    assert store.request("irc", "default", "alice", now=t0 + 10).status == "pending"
    assert store.request("irc", "default", "bob", now=t0).status == "created"
    assert store.request("irc", "default", "carol", now=t0).status == "created"
    assert store.request("irc", "default", "dave", now=t0).status == "full"
    assert store.request("irc", "other", "dave", now=t0).status == "created"  # per account
    assert len(store.pending("irc", "default", now=t0)) == 3
    later = t0 + REQUEST_TTL_MS + 1
    again = store.request("irc", "default", "alice", now=later)
    assert again.status == "created" and again.request.code != first.request.code
    with pytest.raises(PairingError, match="No pending pairing request"):
        store.approve("irc", first.request.code, now=later)


def test_approve_moves_the_sender_to_the_allow_store_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.sqlite"
    worker, cli = PairingStore(path), PairingStore(path)
    req = worker.request("telegram", "default", "42", "alice").request
    assert req is not None and not worker.is_allowed("telegram", "default", "42")
    approved = cli.approve("telegram", req.code.lower())
    assert approved.sender_id == "42"
    assert worker.is_allowed("telegram", "default", "42") and worker.pending("telegram") == []
    with pytest.raises(PairingError):
        cli.approve("irc", req.code)


# -- ingress queue ---------------------------------------------------------------------------------------

def test_ingress_dedupes_by_message_id_and_keeps_the_cursor_with_the_messages(tmp_path: Path) -> None:
    q = IngressQueue(tmp_path / "q.sqlite")
    assert q.admit([("tg:1", "7", {"a": 1}), ("tg:2", "7", {"a": 2})], {"telegram.offset": "3"}) == 2
    assert q.admit([("tg:2", "7", {"a": 2}), ("tg:3", "7", {"a": 3})], {"telegram.offset": "4"}) == 1
    assert [r.msg_id for r in q.pending_inbound()] == ["tg:1", "tg:2", "tg:3"]
    assert q.get_meta("telegram.offset") == "4"
    q.finish_inbound("tg:1", "done", [Reply("tg:1:reply", "7", "pong")])
    q.finish_inbound("tg:1", "done", [Reply("tg:1:reply", "7", "pong")])  # a replay adds no second reply
    assert [r.out_id for r in q.pending_outbound()] == ["tg:1:reply"]
    assert [r.msg_id for r in q.pending_inbound()] == ["tg:2", "tg:3"]
    q.admit([("tg:5", "8", {"a": 5}), ("tg:6", "9", {"a": 6})])
    assert [(r.msg_id, r.payload) for r in q.pending_inbound(busy=["7"])] == [("tg:5", {"a": 5}), ("tg:6", {"a": 6})]
    assert [r.msg_id for r in q.pending_inbound(limit=2, busy=["7", "8"])] == ["tg:6"]


def test_a_send_cut_short_by_a_kill_is_not_resent(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    q = IngressQueue(path)
    q.enqueue(Reply("a", "7", "one"))
    q.enqueue(Reply("b", "7", "two"))
    q.mark_sending("a")
    q.close()  # the worker dies here
    q2 = IngressQueue(path)
    interrupted = q2.recover()
    assert [r.out_id for r in interrupted] == ["a"]
    assert [r.out_id for r in q2.pending_outbound()] == ["b"]
    assert q2.outbound_state("a")[0] == "sent"
