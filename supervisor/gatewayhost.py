"""The thin facade between the supervisor and the gateway core it runs, both ways.

The core asks through `SupervisorHost` (the `GatewayHost` protocol of gateway/host.py) about workers, the
running config and restarts; the supervisor hands worker events to the core's clients through it. Neither
side touches the other's private members: the facade uses the supervisor's public attributes and methods,
and the core's hub and methods through theirs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openclaw_sup.config.restart import State
from openclaw_sup.gateway.host import Partial
from openclaw_sup.gateway.protocol import EVENTS_SCOPE, MethodError
from openclaw_sup.ipc.envelope import Kind
from openclaw_sup.supervisor.table import WorkerRecord

if TYPE_CHECKING:
    from openclaw_sup.supervisor.arbiter import Supervisor


class SupervisorHost:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    # -- what the gateway asks -----------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        return self.sup.readiness()

    def worker_view(self) -> list[dict[str, Any]]:
        return self.sup.worker_view()

    def has_worker(self, name: str) -> bool:
        return name in self.sup.table.records

    def worker_methods(self, name: str) -> frozenset[str]:
        rec = self.sup.table.get(name)
        return rec.methods if rec is not None else frozenset()

    def workers_of_kind(self, kind_prefix: str) -> list[str]:
        return [r.name for r in self.sup.table if r.spec.kind.startswith(kind_prefix)]

    async def call_worker(self, name: str, method: str, params: dict[str, Any], *, timeout: float,
                          partial: Partial | None = None) -> Any:
        await self.sup.restart_settled()
        await self.sup.wake(name, method)
        return await self.sup.router.call_worker(name, method, params, timeout=timeout, partial=partial)

    def gateway_config(self) -> dict[str, Any]:
        return self.sup.gateway_cfg

    def config_path(self) -> Path:
        return self.sup.paths.config_path

    def log_file(self) -> Path | None:
        return self.sup.sink.path

    def supervisor_view(self) -> dict[str, Any]:
        return self.sup.snapshot()["supervisor"]

    def restart_target(self) -> dict[str, Any] | None:
        """`{pid, ownerId, port}` of the upstream lock this gateway holds (what `gateway restart` targets)."""
        lock = self.sup.gateway_lock
        if lock is None:
            return None
        return {"pid": os.getpid(), "ownerId": lock.owner_id, "port": lock.port}

    def request_restart(self, reason: str, delay_ms: int) -> dict[str, Any]:
        return self.sup.request_restart(reason, delay_ms)

    def worker_samples(self) -> dict[str, list[list[Any]]]:
        samples = {r.name: list(r.history.samples) for r in self.sup.table}
        samples[""] = list(self.sup.self_history.samples)
        return samples

    async def control_worker(self, name: str, action: str) -> dict[str, Any]:
        return await self.sup.control_worker(name, action)

    def log(self, level: str, message: str, subsystem: str = "supervisor") -> None:
        self.sup.log(level, message, subsystem)

    # -- what the supervisor tells the gateway -------------------------------------------------------

    def worker_event(self, rec: WorkerRecord, msg: dict[str, Any]) -> None:
        """Fan a worker's event out to the WebSocket clients allowed to see it."""
        core = self.sup.core
        event = msg.get("event")
        if not isinstance(event, str) or core is None:
            return
        payload = msg.get("payload")
        if event == "heartbeat" and isinstance(payload, dict):
            core.methods.heartbeat_seen(payload)
        core.hub.broadcast(event, payload, scope=EVENTS_SCOPE)

    def listeners_changed(self, on: bool) -> None:
        """Every running worker learns whether any client receives its events now; ordered on the bus before any
        request that client sends, so nothing it asks for goes unheard."""
        for rec in self.sup.table:
            if rec.state == State.RUNNING:
                self.tell_listeners(rec.name, on)

    def tell_listeners(self, name: str, on: bool | None = None) -> None:
        """Worker `name` (just ready) learns whether any client receives its events."""
        if on is None:
            on = self.sup.core is not None and self.sup.core.hub.readers > 0
        self.sup.router.send(name, {"kind": Kind.LISTENERS, "on": on})

    def serve_worker(self, name: str, msg: dict[str, Any]) -> bool:
        """A worker's request to `gateway`, answered on the bus by the core; False where none runs (a node host)."""
        if self.sup.core is None:
            return False
        self.sup.spawn_task(self._serve(name, msg), f"{msg.get('method')} for {name}")
        return True

    async def _serve(self, name: str, msg: dict[str, Any]) -> None:
        core = self.sup.core
        assert core is not None
        reply: dict[str, Any] = {"kind": Kind.RES, "id": msg.get("id")}
        try:
            reply.update(ok=True, payload=await core.worker_call(name, str(msg.get("method")), msg.get("params") or {}))
        except MethodError as exc:
            reply.update(ok=False, error=exc.to_error())
        if name in self.sup.table.records:
            self.sup.router.send(name, reply)

    def worker_gone(self, name: str) -> None:
        """A worker exited: what the core holds waiting on it (e.g. its approval requests) is cancelled."""
        if self.sup.core is not None:
            self.sup.core.worker_gone(name)
