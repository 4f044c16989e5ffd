"""The gateway's shared state: auth, device store, hub, methods and the `hello-ok` it builds."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openclaw_sup import __version__
from openclaw_sup.config import sqlitedb, statedb
from openclaw_sup.gateway import authn, device
from openclaw_sup.gateway.approvals import Approvals
from openclaw_sup.gateway.device_pairing import PairingMethods
from openclaw_sup.gateway.hub import Hub
from openclaw_sup.gateway.loop_health import LoopHealth
from openclaw_sup.gateway.methods import Methods
from openclaw_sup.gateway.node_surfaces import NodeSurfaceStore
from openclaw_sup.gateway.nodes import Nodes
from openclaw_sup.gateway.protocol import (
    EVENTS,
    MAX_BUFFERED_BYTES,
    MAX_PAYLOAD,
    PROTOCOL,
    UPSTREAM_VERSION,
    MethodError,
)
from openclaw_sup.gateway.stability import StabilityLog

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.host import GatewayHost

ATTACHMENT_MAX = 20 * 1024 * 1024
IMAGE_MAX = 6 * 1024 * 1024
CAPABILITIES = ["gateway-restart-target-safe-v1", "published-model-catalog"]
"""Upstream's server capabilities this gateway honours (the real CLI checks them before some calls)."""
STATE_IDLE_S = 2.0
"""A state database connection unused this long is closed (the workers settle after the same quiet spell)."""


class GatewayCore:
    def __init__(self, host: GatewayHost, state_dir: Path, auth: authn.AuthConfig, *, tick_interval_ms: int,
                 auto_approve_local: bool | None = None) -> None:
        self.host = host
        self.state_dir = state_dir
        self.auth = auth
        self.limiter = authn.FailedAuthLimiter(auth)
        data = state_dir / "state"
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.devices = device.DeviceStore(statedb.state_db_path(state_dir))
        self.state_checkpointer = sqlitedb.Checkpointer(statedb.state_db_path(state_dir))
        self.nonces = device.NonceRegistry()
        self._auto_approve_local = auto_approve_local
        self.hub = Hub(tick_interval_ms)
        self.hub.on_readers = host.listeners_changed
        self.stability = StabilityLog()
        self.loop_health = LoopHealth()
        self.pairing = PairingMethods(self)
        self.boot_id = str(uuid.uuid4())
        self.nodes = Nodes(self, NodeSurfaceStore(data / "openclaw-sup-nodes.sqlite"))
        self.approvals = Approvals(self)
        self.handlers = {**self.nodes.handlers, **self.approvals.handlers}
        self.streaming = dict(self.approvals.streaming)
        self.worker_methods = {**self.nodes.worker_methods, **self.approvals.worker_methods}
        self.methods = Methods(self)
        self.started = time.monotonic()
        self.reload: dict[str, Any] = {"hotReloadStatus": "active"}
        self._held: set[Connection] = set()

    def hold_until_started(self, conn: Connection) -> None:
        """A connect that came while the gateway was starting waits (bounded by the connection) for `release_held`."""
        self._held.add(conn)

    def unhold(self, conn: Connection) -> None:
        self._held.discard(conn)

    def release_held(self) -> None:
        """The gateway has started: the connects held meanwhile are answered now."""
        held, self._held = self._held, set()
        for conn in held:
            conn.resume_connect()

    @property
    def auto_approve_local(self) -> bool:
        """`gateway.nodes.pairing.autoApproveLocal` (default true): silent pairing for direct loopback devices."""
        if self._auto_approve_local is not None:
            return self._auto_approve_local
        gw = self.host.gateway_config().get("gateway") or {}
        pairing = ((gw.get("nodes") or {}) if isinstance(gw, dict) else {}).get("pairing") or {}
        return not (isinstance(pairing, dict) and pairing.get("autoApproveLocal") is False)

    def set_auth(self, auth: authn.AuthConfig) -> None:
        """New credentials after a reload; the failed-auth history starts over with the new limits."""
        if auth != self.auth:
            self.auth = auth
            self.limiter = authn.FailedAuthLimiter(auth)

    async def worker_call(self, worker: str, method: str, params: dict[str, Any]) -> Any:
        """What a worker may ask of the gateway over the bus (the agent's exec tool: nodes and approvals)."""
        handler = self.worker_methods.get(method)
        if handler is None:
            raise MethodError("INVALID_REQUEST", f"unknown method: {method} (not served to workers)")
        return await handler(worker, params if isinstance(params, dict) else {})

    def worker_gone(self, worker: str) -> None:
        """A worker exited: what it was waiting for can no longer be acted on."""
        self.approvals.cancel_for(worker)

    def log(self, level: str, message: str) -> None:
        self.host.log(level, message, subsystem="gateway")

    def set_reload_status(self, status: dict[str, Any]) -> None:
        """What the config reloader last did (`health.configReload`)."""
        self.reload = dict(status)
        self.methods.invalidate_health()

    def reload_status(self) -> dict[str, Any]:
        return dict(self.reload)

    def hello_ok(self, conn: Connection, method: str) -> dict[str, Any]:
        health = self.methods.health_snapshot()
        return {
            "type": "hello-ok",
            "protocol": PROTOCOL,
            "server": {"version": UPSTREAM_VERSION, "buildId": f"openclaw-sup-{__version__}", "bootId": self.boot_id,
                       "connId": conn.id},
            "features": {"methods": self.methods.served(), "events": EVENTS, "capabilities": CAPABILITIES},
            "snapshot": {
                "presence": self.hub.presence_list(),
                "health": health,
                "stateVersion": dict(self.hub.state_version),
                "uptimeMs": int((time.monotonic() - self.started) * 1000),
                "configPath": str(self.host.config_path()),
                "stateDir": str(self.state_dir),
                "authMode": self.auth.mode,
                "sessionDefaults": {"defaultAgentId": "main", "mainKey": "main",
                                    "mainSessionKey": "agent:main:main", "scope": "per-sender"},
            },
            "auth": {"method": method, "role": conn.role, "scopes": list(conn.scopes)},
            "policy": {"maxPayload": MAX_PAYLOAD, "maxBufferedBytes": MAX_BUFFERED_BYTES,
                       "tickIntervalMs": self.hub.tick_interval_ms,
                       "attachments": {"maxBytes": ATTACHMENT_MAX, "maxImageBytes": IMAGE_MAX}},
        }

    def start(self) -> None:
        """Begin what runs on the event loop: ticks and the loop-health sampler."""
        self.hub.start()
        self.loop_health.start()

    def release_idle(self) -> bool:
        """Close the state database connections no client used for `STATE_IDLE_S`: an idle gateway need not hold
        their SQLite memory (~0.5 MB with the heap trimmed after); the next use opens them again. True if one was."""
        closed = self.devices.release_idle(STATE_IDLE_S)
        return self.approvals.records.release_idle(STATE_IDLE_S) or closed

    def close(self) -> None:
        self.approvals.close()
        self.nodes.close()
        self.loop_health.stop()
        self.state_checkpointer.stop()
        self.devices.close()
