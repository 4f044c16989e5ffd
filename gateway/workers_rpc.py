"""`workers.*`: the process table over the WebSocket protocol, live, and an operator's restart / stop / start.

- `workers.list {history?}` [read] -> `{ts, supervisor, workers}`: the rows of `openclaw-sup status`; with
  `history: true` each row (and the supervisor) carries `samples`, `[epoch ms, rss, cpu %]` every 10 s over
  the last 10 minutes.
- `workers.subscribe` / `workers.unsubscribe` [read]: a `workers` event with the same payload (each row with its
  latest `sample`) once a second to this connection until it unsubscribes or closes. Worker state changes
  arrive at once as `health` events, as before.
- `workers.restart|stop|start {name}` [admin] -> `{ok, name, action, state}`.

The push timer exists only while some connection is subscribed: with no dashboard open this costs nothing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from openclaw_sup.gateway.authn import OPERATOR_ADMIN, OPERATOR_READ
from openclaw_sup.gateway.hub import now_ms
from openclaw_sup.gateway.protocol import invalid

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore

PUSH_INTERVAL_S = 1.0
SCOPES = {"workers.list": OPERATOR_READ, "workers.subscribe": OPERATOR_READ, "workers.unsubscribe": OPERATOR_READ,
          "workers.restart": OPERATOR_ADMIN, "workers.stop": OPERATOR_ADMIN, "workers.start": OPERATOR_ADMIN}
PER_CONNECTION = frozenset({"workers.subscribe", "workers.unsubscribe"})
"""Methods whose handler is told which connection asked."""


class WorkersRpc:
    def __init__(self, core: GatewayCore) -> None:
        self.core = core
        self.subscribers: set[Connection] = set()
        self._timer: asyncio.TimerHandle | None = None

    def methods(self) -> dict[str, Any]:
        return {
            "workers.list": self.list,
            "workers.subscribe": self.subscribe,
            "workers.unsubscribe": self.unsubscribe,
            "workers.restart": lambda p: self.control(p, "restart"),
            "workers.stop": lambda p: self.control(p, "stop"),
            "workers.start": lambda p: self.control(p, "start"),
        }

    def snapshot(self, history: bool) -> dict[str, Any]:
        host = self.core.host
        samples = host.worker_samples()
        sup = dict(host.supervisor_view())
        own = samples.get("", [])
        sup["cpuPct"] = own[-1][2] if own else None
        rows = host.worker_view()
        for row in rows:
            mine = samples.get(row["name"], [])
            if history:
                row["samples"] = mine
            else:
                row["sample"] = mine[-1] if mine else None
        if history:
            sup["samples"] = own
        else:
            sup["sample"] = own[-1] if own else None
        return {"ts": now_ms(), "supervisor": sup, "workers": rows}

    async def list(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.snapshot(history=params.get("history") is True)

    async def subscribe(self, params: dict[str, Any], conn: Connection) -> dict[str, Any]:
        self.subscribers.add(conn)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(PUSH_INTERVAL_S, self._push)
        return {"ok": True, "subscribed": True, "intervalMs": int(PUSH_INTERVAL_S * 1000)}

    async def unsubscribe(self, params: dict[str, Any], conn: Connection) -> dict[str, Any]:
        self.subscribers.discard(conn)
        return {"ok": True, "subscribed": False}

    def _push(self) -> None:
        self._timer = None
        self.subscribers &= self.core.hub.connections
        if not self.subscribers:
            return
        payload = self.snapshot(history=False)
        for conn in list(self.subscribers):
            conn.push_event("workers", payload)
        self._timer = asyncio.get_running_loop().call_later(PUSH_INTERVAL_S, self._push)

    async def control(self, params: dict[str, Any], action: str) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"workers.{action} requires name (a worker name, e.g. agent or channel:irc:default)")
        return await self.core.host.control_worker(name, action)
