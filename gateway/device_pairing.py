"""`device.pair.list|approve|reject|remove`: the operator's side of device pairing, on the device store.

As upstream: an admin sees and manages every device; a paired device holding `operator.pairing` without admin
sees only itself, approves only requests for operator scopes it holds itself, and removes only itself. Each
decision is broadcast as `device.pair.resolved` and logged; a removed device's connections are closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openclaw_sup.gateway import authn
from openclaw_sup.gateway.hub import now_ms
from openclaw_sup.gateway.protocol import CLOSE_POLICY, invalid

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore

APPROVAL_DENIED = "device pairing approval denied"
REJECTION_DENIED = "device pairing rejection denied"
REMOVAL_DENIED = "device pairing removal denied"


def _text(params: dict[str, Any], key: str, method: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"invalid {method} params: {key} must be a non-empty string", field=key)
    return value.strip()


def _restricted(conn: Connection) -> str | None:
    """The device a non-admin caller may manage (itself), or None when it may manage every device."""
    if conn.has_scope(authn.OPERATOR_ADMIN):
        return None
    return conn.device_id or ""


class PairingMethods:
    def __init__(self, core: GatewayCore) -> None:
        self.core = core

    def _connected(self, device_id: str) -> bool:
        return any(c.device_id == device_id for c in self.core.hub.connections)

    def _resolved(self, request_id: str, device_id: str, decision: str) -> None:
        self.core.hub.broadcast("device.pair.resolved", {"requestId": request_id, "deviceId": device_id,
                                                         "decision": decision, "ts": now_ms()},
                                scope="operator.pairing")

    async def list(self, params: dict[str, Any], conn: Connection) -> dict[str, Any]:
        store, only = self.core.devices, _restricted(conn)
        pending = [r.to_wire() for r in store.list_pending(now_ms()) if only is None or r.device_id == only]
        paired = [{**d.to_wire(), "connected": self._connected(d.device_id)} for d in store.list_paired()
                  if only is None or d.device_id == only]
        return {"pending": pending, "paired": paired}

    async def approve(self, params: dict[str, Any], conn: Connection) -> dict[str, Any]:
        request_id = _text(params, "requestId", "device.pair.approve")
        store, only = self.core.devices, _restricted(conn)
        if only is not None:
            req = store.get_request(request_id, now_ms())
            if req is None or req.device_id != only or req.role != "operator" \
                    or not authn.scopes_cover("operator", req.scopes, conn.scopes):
                raise invalid(APPROVAL_DENIED)
        device = store.approve_request(request_id)
        if device is None:
            raise invalid("unknown requestId", field="requestId")
        self.core.log("info", f"device pairing approved device={device.device_id} role={device.roles[-1]} "
                              f"(by {conn.client.get('id')} at {conn.remote_ip})")
        self._resolved(request_id, device.device_id, "approved")
        return {"requestId": request_id, "device": device.to_wire()}

    async def reject(self, params: dict[str, Any], conn: Connection) -> dict[str, Any]:
        request_id = _text(params, "requestId", "device.pair.reject")
        store, only = self.core.devices, _restricted(conn)
        if only is not None:
            req = store.get_request(request_id, now_ms())
            if req is None or req.device_id != only:
                raise invalid(REJECTION_DENIED)
        rejected = store.reject_request(request_id)
        if rejected is None:
            raise invalid("unknown requestId", field="requestId")
        self.core.log("info", f"device pairing rejected device={rejected.device_id} request={request_id}")
        self._resolved(request_id, rejected.device_id, "rejected")
        return rejected.to_wire()

    async def remove(self, params: dict[str, Any], conn: Connection) -> dict[str, Any]:
        device_id = _text(params, "deviceId", "device.pair.remove")
        only = _restricted(conn)
        if only is not None and device_id != only:
            raise invalid(REMOVAL_DENIED)
        paired = self.core.devices.get_pairing(device_id)
        if paired is None or not self.core.devices.remove_device(device_id):
            raise invalid("unknown deviceId", field="deviceId")
        self.core.log("info", f"device pairing removed device={device_id}")
        for other in [c for c in self.core.hub.connections if c.device_id == device_id and c is not conn]:
            other.close(CLOSE_POLICY, "device removed")
        return {"deviceId": device_id, "removedAtMs": now_ms()}
