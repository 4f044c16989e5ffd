"""What the channel runtime needs from a network adapter (IRC, Telegram, ...), and the errors it raises.

An adapter owns the connection to its network: `run()` connects, reads and reconnects until it is cancelled
(delays from config/restart.py's `Backoff`, the one retry rule), handing every inbound message to `sink` (which
returns only once the messages are durable, so the adapter may then acknowledge them upstream). `send()` writes one
reply; the runtime has already marked it `sending` in the outbox, so `send` must put the bytes on the wire
promptly (any flood-control wait belongs in `before_send`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from openclaw_sup.workers.channels.policy import Inbound, Verdict, verdict

Sink = Callable[[list[Inbound], dict[str, str] | None], Awaitable[None]]
MetaGetter = Callable[[str], str | None]


class SendError(Exception):
    """A reply that did not go out. `retryable` ones stay queued (after `retry_after` seconds when given)."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None,
                 auth: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.auth = auth


class Adapter:
    channel = ""
    group_noun = "group"  # what the network calls a chat with several people, for the policy's log lines
    idempotent_send = False  # True when a resent reply is deduplicated upstream (a transaction id, a nonce)

    def __init__(self, cfg: dict[str, Any], log: logging.Logger, sink: Sink, meta: MetaGetter) -> None:
        self.cfg = cfg
        self.log = log
        self.sink = sink
        self.meta = meta
        self.account_id = str(cfg.get("accountId", "default"))
        self.connected = False
        self.last_error: str | None = None
        self.last_connected_at: int | None = None
        self.last_inbound_at: int | None = None
        self.last_outbound_at: int | None = None
        self.on_connected: Callable[[], None] = lambda: None
        self.closed = False  # set by close(): run() returns instead of reconnecting

    @property
    def configured(self) -> bool:
        return True

    @classmethod
    def policy_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """The account's config in the policy engine's shape (dmPolicy, allowFrom, groups...): networks whose
        upstream keys differ (Matrix `dm.policy`, Discord `guilds`) translate here."""
        return cfg

    def judge(self, policy_cfg: dict[str, Any], msg: Inbound, store_allowed: bool) -> Verdict:
        return verdict(policy_cfg, msg, store_allowed, self.group_noun)

    def reply_target(self, msg: Inbound) -> str:
        """Where the answer to `msg` goes: the group, or for a DM the sender (networks with DM rooms override)."""
        return msg.chat_id if msg.chat_type == "group" else msg.sender_id

    def turn_started(self, msg: Inbound) -> None:
        """The agent is now answering `msg` (networks with a typing notice show it here); must not block."""

    async def logout(self) -> bool:
        """Forget any session the adapter holds upstream (after `close`); True when something was cleared."""
        return False

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or a status answer."""
        return []

    def redact(self, text: str) -> str:
        for s in self.secrets():
            if s:
                text = text.replace(s, "***")
        return text

    def set_error(self, text: str | None) -> None:
        self.last_error = self.redact(text) if text else None

    def mark_connected(self, up: bool) -> None:
        self.connected = up
        if up:
            self.last_connected_at = int(time.time() * 1000)
            self.last_error = None
            self.on_connected()

    async def run(self) -> None:
        raise NotImplementedError

    async def before_send(self, target: str, text: str) -> None:
        """Wait for flood control; default none."""

    async def send(self, target: str, text: str) -> str | None:
        raise NotImplementedError

    async def send_keyed(self, key: str, target: str, text: str) -> str | None:
        """`send` with the outbox row's id, for networks that deduplicate by a client-chosen id."""
        return await self.send(target, text)

    async def probe(self, timeout: float) -> dict[str, Any]:
        return {"ok": self.connected}

    async def close(self) -> None:
        """Drop the connection and stop `run` (the runtime also cancels it)."""
        self.closed = True

    def status_extra(self) -> dict[str, Any]:
        return {}
