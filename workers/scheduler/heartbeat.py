"""Heartbeats: which agents check in and how often, when they must stay quiet, and what their reply means.

Config: `agents.defaults.heartbeat` (worker option `heartbeat`) and per-agent entries (`agentHeartbeats`,
merged over the defaults; when any agent has one, only those agents beat). `every` (default 30m; `0m` off),
`activeHours {start HH:MM inclusive, end HH:MM exclusive or 24:00, timezone IANA | local | user}` (start ==
end: always quiet; `user` has no user zone here and means the host's), `target` (owner | last | none |
<channel>), `to`, `accountId`, `prompt`, `model`, `timeoutSeconds` (default min(every, 600 s)),
`lightContext`, `isolatedSession`.

Each agent gets one system-owned job (declarationKey `heartbeat:<agentId>`, payload kind `heartbeat`, an
`every` schedule whose anchor is a stable per-agent offset, so agents do not all beat at once). The reply is
an acknowledgement when HEARTBEAT_OK opens or closes it: the token is stripped and, if 300 characters or fewer
remain, nothing is delivered. The token in the middle of a text is not an acknowledgement.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Any

from openclaw_sup.config.heartbeat import ACK_MAX_CHARS, ACK_TOKEN, DEFAULT_AGENT, DEFAULT_EVERY, DEFAULT_PROMPT
from openclaw_sup.config.record import record
from openclaw_sup.workers.scheduler.timeparse import duration_ms, hhmm_minutes, zone

MAX_TIMEOUT_S = 600
DECLARATION_PREFIX = "heartbeat:"

SKIP_REASONS = {
    "disabled": "heartbeats were turned off with set-heartbeats",
    "quiet-hours": "outside agents.*.heartbeat.activeHours",
    "requests-in-flight": "this agent's previous heartbeat or wake turn is still running",
    "cron-in-progress": "a cron agentTurn for this agent is running",
    "alerts-disabled": "the target channel's heartbeat visibility hides alerts, OK replies and indicators",
    "target-none": "target is none: the turn ran, nothing is delivered",
    "no-route": "target owner/last and the agent knows no route",
    "unknown-account": "the target channel account does not exist",
}

_END_TOKEN = re.compile(re.escape(ACK_TOKEN) + r"[^\w]{0,4}$")
_TAGS = re.compile(r"<[^>]*>")
_EDGE_MARKUP = re.compile(r"^[*`~_]+|[*`~_]+$")


@record(frozen=True)
class HeartbeatSpec:
    agent_id: str
    every: str
    every_ms: int
    active_hours: dict[str, Any] | None
    target: str
    to: str | None
    account_id: str | None
    prompt: str
    model: str | None
    timeout_s: int
    light_context: bool
    isolated: bool

    @property
    def declaration_key(self) -> str:
        return f"{DECLARATION_PREFIX}{self.agent_id}"


def _spec(agent_id: str, cfg: dict[str, Any]) -> HeartbeatSpec:
    every = str(DEFAULT_EVERY if cfg.get("every") is None else cfg["every"])
    every_ms = duration_ms(every)
    timeout = cfg.get("timeoutSeconds")
    return HeartbeatSpec(
        agent_id=agent_id, every=every, every_ms=every_ms,
        active_hours=cfg.get("activeHours") if isinstance(cfg.get("activeHours"), dict) else None,
        target=str(cfg.get("target") or "owner"), to=cfg.get("to") or None, account_id=cfg.get("accountId") or None,
        prompt=str(cfg.get("prompt") or DEFAULT_PROMPT), model=cfg.get("model") or None,
        timeout_s=int(timeout) if isinstance(timeout, int) and timeout > 0 else max(1, min(every_ms // 1000,
                                                                                         MAX_TIMEOUT_S)),
        light_context=bool(cfg.get("lightContext")), isolated=bool(cfg.get("isolatedSession")),
    )


def resolve(defaults: Any, per_agent: Any) -> dict[str, HeartbeatSpec]:
    """agentId -> its heartbeat, for the agents that beat (every > 0). Raises ValueError on a bad `every`."""
    base = defaults if isinstance(defaults, dict) else {}
    entries = {k: v for k, v in (per_agent or {}).items()
               if isinstance(v, dict) and k not in ("", "None")} if isinstance(per_agent, dict) else {}
    merged = ({agent: {**base, **cfg} for agent, cfg in entries.items()} if entries
              else {str(base.get("agentId") or DEFAULT_AGENT): base})
    specs = {agent: _spec(agent, cfg) for agent, cfg in merged.items()}
    return {agent: spec for agent, spec in specs.items() if spec.every_ms > 0}


def stagger_anchor(agent_id: str, every_ms: int) -> int:
    return int.from_bytes(hashlib.sha256(agent_id.encode()).digest()[:8], "big") % every_ms


def declare(spec: HeartbeatSpec, existing: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
    """The system-owned job for one agent's heartbeat, keeping the id, creation time and state of `existing`."""
    schedule = {"kind": "every", "everyMs": spec.every_ms, "anchorMs": stagger_anchor(spec.agent_id, spec.every_ms)}
    job = {
        "id": existing["id"] if existing else str(uuid.uuid4()),
        "declarationKey": spec.declaration_key,
        "displayName": f"Heartbeat ({spec.agent_id})",
        "agentId": spec.agent_id,
        "name": f"heartbeat-{spec.agent_id}",
        "enabled": True,
        "createdAtMs": existing["createdAtMs"] if existing else now_ms,
        "updatedAtMs": now_ms,
        "schedule": schedule,
        "sessionTarget": "main",
        "wakeMode": "next-heartbeat",
        "payload": {"kind": "heartbeat"},
        "state": dict(existing.get("state") or {}) if existing else {},
    }
    if existing and existing.get("schedule") == schedule and existing.get("enabled", True):
        job["updatedAtMs"] = existing.get("updatedAtMs", now_ms)
    else:
        job["state"].pop("nextRunAtMs", None)
    return job


def is_heartbeat_job(job: dict[str, Any]) -> bool:
    return str(job.get("declarationKey") or "").startswith(DECLARATION_PREFIX)


def within_active_hours(active: dict[str, Any] | None, now_ms: int) -> bool:
    """True inside the window (or without one). Raises ValueError on a malformed window."""
    if not active:
        return True
    start = hhmm_minutes(active.get("start", "00:00"))
    end = hhmm_minutes(active.get("end", "24:00"), allow_24=True)
    tz_name = active.get("timezone")
    local = datetime.fromtimestamp(now_ms / 1000, zone(None if tz_name in (None, "", "user") else tz_name))
    minute = local.hour * 60 + local.minute
    if start == end:
        return False
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def _strip_edges(text: str) -> tuple[str, bool]:
    stripped = False
    while True:
        text = text.strip()
        if text.startswith(ACK_TOKEN):
            text, stripped = text[len(ACK_TOKEN):], True
        elif _END_TOKEN.search(text):
            text, stripped = text[:text.rfind(ACK_TOKEN)], True
        else:
            return text, stripped


def classify_reply(raw: str | None, max_chars: int = ACK_MAX_CHARS) -> tuple[str, str]:
    """("empty", ""), ("ack", "") or ("content", what to deliver) for an agent's heartbeat reply."""
    trimmed = (raw or "").strip()
    if not trimmed:
        return "empty", ""
    if ACK_TOKEN not in trimmed:
        return "content", trimmed
    text, stripped = _strip_edges(trimmed)
    if not stripped or not text:
        plain = _EDGE_MARKUP.sub("", _TAGS.sub(" ", trimmed).replace("&nbsp;", " ").strip())
        alt, alt_stripped = _strip_edges(plain)
        if alt_stripped:
            text, stripped = alt, True
    if not stripped:
        return "content", trimmed
    return ("ack", "") if len(text) <= max_chars else ("content", text)
