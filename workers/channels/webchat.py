"""The `webchat` channel: operators chat through the gateway itself (`chat.send`, served by the agent worker),
so this worker has no network of its own; it exists so `channels.status` lists webchat like upstream does."""

from __future__ import annotations

import asyncio
from typing import Any

from openclaw_sup.workers.channels.adapter import Adapter, SendError


class WebchatAdapter(Adapter):
    channel = "webchat"

    async def run(self) -> None:
        self.mark_connected(True)
        await asyncio.Event().wait()

    async def send(self, target: str, text: str) -> str | None:
        raise SendError("webchat has no outbound path of its own; replies go back over chat.send",
                        retryable=False)

    def status_extra(self) -> dict[str, Any]:
        return {"mode": "gateway"}
