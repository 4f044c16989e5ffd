"""Who may reach the agent through a channel account: DM policy, group policy, allowlists and mention gating.

Pure functions of an account's effective config (config/plan.py `channel_accounts`) and one inbound message,
shared by every adapter (operations spec section 7). The order for groups is upstream's: groupPolicy ->
allowlists -> mention gating. Each refusal carries the log line the runbook tells operators to grep for
(`pairing request`, `blocked` / `allowlist`, `mention required`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

PROCESS, PAIR, DROP = "process", "pair", "drop"


@dataclass(frozen=True)
class Inbound:
    """One message as an adapter hands it over, normalised across networks."""

    message_id: str
    sender_id: str
    text: str
    chat_type: str = "direct"  # direct | group
    chat_id: str = ""  # the group/channel id for groups, the sender for DMs
    sender_name: str | None = None
    mentioned: bool = False  # a native mention of the bot (IRC `nick:`, Telegram @username entity)
    ts: float = 0.0
    space: str = ""  # what holds the group chat, where the network has one: a Discord guild, a Slack team
    roles: tuple[str, ...] | list[str] = ()  # the sender's roles there (Discord role ids)

    @property
    def peer(self) -> str:
        return self.chat_id if self.chat_type == "group" else self.sender_id


@dataclass(frozen=True)
class Verdict:
    action: str  # process | pair | drop
    reason: str
    log: str | None = None


def normalize_id(channel: str, raw: Any) -> str:
    """`telegram:123`, `irc:Nick` and `Nick` name the same sender; IRC nicks are case-insensitive."""
    text = str(raw).strip()
    if text.lower().startswith(f"{channel}:"):
        text = text[len(channel) + 1:]
    return text.lower() if channel == "irc" else text


def _id_list(channel: str, value: Any) -> list[str]:
    return [normalize_id(channel, v) for v in value] if isinstance(value, list) else []


def sender_matches(channel: str, entries: list[str], sender_id: str, sender_name: str | None = None) -> bool:
    """Exact id match, `*` for anyone, or an IRC-style mask (`nick!user@host`, with `*`/`?`) against the name."""
    sid = normalize_id(channel, sender_id)
    full = normalize_id(channel, sender_name) if sender_name else sid
    for entry in entries:
        if entry in ("*", sid):
            return True
        if any(c in entry for c in "*?!@") and (fnmatch.fnmatchcase(full, entry) or fnmatch.fnmatchcase(sid, entry)):
            return True
    return False


def dm_settings(cfg: dict[str, Any]) -> tuple[str, list[Any]]:
    """(dmPolicy, allowFrom) of networks that also read the legacy `dm.policy` / `dm.allowFrom` and `dm.enabled`
    (Discord, Slack); the top-level keys win."""
    dm = cfg.get("dm") if isinstance(cfg.get("dm"), dict) else {}
    policy = "disabled" if dm.get("enabled") is False else (cfg.get("dmPolicy") or dm.get("policy") or "pairing")
    allow = cfg.get("allowFrom") if cfg.get("allowFrom") is not None else dm.get("allowFrom")
    return policy, list(allow or [])


def dm_verdict(cfg: dict[str, Any], msg: Inbound, store_allowed: bool) -> Verdict:
    """dmPolicy: `pairing` (default) | `allowlist` | `open` (allowFrom must hold "*") | `disabled`."""
    channel = str(cfg.get("channel", ""))
    policy = cfg.get("dmPolicy") or "pairing"
    allow = _id_list(channel, cfg.get("allowFrom"))
    who = f"{channel}: dm from {msg.sender_id}"
    if policy == "disabled":
        return Verdict(DROP, "dm-disabled", f"{who} blocked (dmPolicy=disabled)")
    if policy == "open":
        if sender_matches(channel, allow, msg.sender_id, msg.sender_name) or store_allowed:
            return Verdict(PROCESS, "open")
        return Verdict(DROP, "not-allowlisted", f"{who} blocked: not in allowlist (dmPolicy=open without \"*\")")
    if sender_matches(channel, allow, msg.sender_id, msg.sender_name) or store_allowed:
        return Verdict(PROCESS, "allowlisted")
    if policy == "allowlist":
        return Verdict(DROP, "not-allowlisted", f"{who} blocked: not in allowlist (dmPolicy=allowlist)")
    return Verdict(PAIR, "pairing", f"{who}: pairing request")


def _group_entry(cfg: dict[str, Any], group_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the group's own entry, the `*` entry) from `groups`; group keys match case-insensitively."""
    groups = cfg.get("groups") if isinstance(cfg.get("groups"), dict) else {}
    own = next((v for k, v in groups.items() if k.lower() == group_id.lower() and isinstance(v, dict)), None)
    star = groups.get("*") if isinstance(groups.get("*"), dict) else None
    return own, star


def mentioned(cfg: dict[str, Any], msg: Inbound) -> bool:
    """A native mention, or any `mentionPatterns` regex (case-insensitive) found in the text."""
    if msg.mentioned:
        return True
    patterns = cfg.get("mentionPatterns")
    for pattern in patterns if isinstance(patterns, list) else []:
        try:
            if re.search(str(pattern), msg.text, re.IGNORECASE):
                return True
        except re.error:
            continue
    return False


def group_verdict(cfg: dict[str, Any], msg: Inbound, noun: str = "group") -> Verdict:
    """groupPolicy `allowlist` (default) | `open` | `disabled`, then allowlists, then mention gating.

    `noun` is what the network calls a group chat in the log lines (Discord's runbook line reads
    `drop guild message (mention required)`)."""
    channel = str(cfg.get("channel", ""))
    policy = cfg.get("groupPolicy") or "allowlist"
    where = f"{channel}: {noun} message in {msg.chat_id} from {msg.sender_id}"
    if policy == "disabled":
        return Verdict(DROP, "group-disabled", f"{where} blocked (groupPolicy=disabled)")
    own, star = _group_entry(cfg, msg.chat_id)
    groups = cfg.get("groups") if isinstance(cfg.get("groups"), dict) else {}
    if own is not None and own.get("enabled") is False:
        return Verdict(DROP, "group-disabled", f"{where} blocked (groups.{msg.chat_id}.enabled=false)")
    if policy == "allowlist":
        senders = _id_list(channel, cfg.get("groupAllowFrom")) or _id_list(channel, cfg.get("allowFrom"))
        if not groups and not senders:
            return Verdict(DROP, "not-allowlisted", f"{where} blocked: empty group allowlist (groupPolicy=allowlist)")
        if groups and own is None and star is None:
            return Verdict(DROP, "not-allowlisted", f"{where} blocked: group not in allowlist (groups)")
        if senders and not sender_matches(channel, senders, msg.sender_id, msg.sender_name):
            return Verdict(DROP, "not-allowlisted", f"{where} blocked: sender not in allowlist (groupAllowFrom)")
    per_group_senders = _id_list(channel, (own or {}).get("allowFrom"))
    if per_group_senders and not sender_matches(channel, per_group_senders, msg.sender_id, msg.sender_name):
        return Verdict(DROP, "not-allowlisted", f"{where} blocked: sender not in allowlist (groups.allowFrom)")
    require = (own or {}).get("requireMention", (star or {}).get("requireMention", True))
    if require is not False and not mentioned(cfg, msg):
        return Verdict(DROP, "mention-required", f"{channel}: drop {noun} message (mention required) in "
                                                 f"{msg.chat_id} from {msg.sender_id}")
    return Verdict(PROCESS, "group")


def verdict(cfg: dict[str, Any], msg: Inbound, store_allowed: bool, noun: str = "group") -> Verdict:
    return group_verdict(cfg, msg, noun) if msg.chat_type == "group" else dm_verdict(cfg, msg, store_allowed)


def session_key(agent_id: str, channel: str, msg: Inbound) -> str:
    """`agent:<agentId>:<channel>:<direct|group>:<peer id>` (the bus contract for agent.turn)."""
    return f"agent:{agent_id}:{channel}:{msg.chat_type}:{normalize_id(channel, msg.peer)}"


def pairing_text(channel: str, sender_id: str, code: str) -> str:
    return (f"OpenClaw: access not configured. Your {channel} user id: {sender_id}. Pairing code: {code}. "
            f"Ask the bot owner to approve with: openclaw pairing approve {channel} {code}")
