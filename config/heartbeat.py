"""Heartbeat defaults, shared by the scheduler that runs heartbeats and the gateway that reports them."""

from __future__ import annotations

DEFAULT_AGENT = "main"
DEFAULT_EVERY = "30m"
DEFAULT_TARGET = "owner"
ACK_TOKEN = "HEARTBEAT_OK"
ACK_MAX_CHARS = 300
DEFAULT_PROMPT = (
    "Follow the heartbeat monitor scratch context when provided. Recurring tasks are automations; create or "
    "change their schedules with the automations tool, not heartbeat scratch. Do not infer or repeat old tasks "
    "from prior chats. If nothing needs attention, reply HEARTBEAT_OK."
)
