"""Registers the channel worker kinds (the fork server imports this module for the first channel worker it forks,
see registry.BUILTIN_KINDS)."""

from __future__ import annotations

from openclaw_sup.workers.channels.adapter import Adapter
from openclaw_sup.workers.channels.discord import DiscordAdapter
from openclaw_sup.workers.channels.irc import IrcAdapter
from openclaw_sup.workers.channels.matrix import MatrixAdapter
from openclaw_sup.workers.channels.service import run_channel
from openclaw_sup.workers.channels.slack import SlackAdapter
from openclaw_sup.workers.channels.telegram import TelegramAdapter
from openclaw_sup.workers.channels.webchat import WebchatAdapter
from openclaw_sup.workers.registry import register
from openclaw_sup.workers.runtime import WorkerContext

SHARED_IMPORTS: dict[str, tuple[str, ...]] = {
    f"channel.{name}": ("aiohttp",) for name in ("telegram", "matrix", "discord", "slack")
}
"""What every worker of a kind needs as soon as it starts (its HTTP client): the fork server imports it before
forking the first one, so all of them share it."""


def _kind(adapter_cls: type[Adapter]) -> None:
    async def main(ctx: WorkerContext) -> None:
        await run_channel(ctx, adapter_cls)

    register(f"channel.{adapter_cls.channel}")(main)


for _cls in (IrcAdapter, TelegramAdapter, WebchatAdapter, MatrixAdapter, DiscordAdapter, SlackAdapter):
    _kind(_cls)
