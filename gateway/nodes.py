"""Nodes on the gateway port: live `role: "node"` sessions, their command surface, and the `node.invoke` relay.

Node routing lives here, in the process that owns the port, because that is where node sockets end: an invoke
is one event out to the node and one `node.invoke.result` back, with no bus hop. What must outlive a crash
(approved and pending surfaces, names, last stats) is in SQLite (`node_surfaces`); what lives here is only what
dies with the sockets anyway. A worker that asked for an invoke and died meanwhile costs nothing but a late
result, which is dropped; the node stays connected.

Each invoke carries its own deadline (`timeoutMs`), and an invoke whose node disconnects fails at once with
upstream's `DISCONNECTED: node disconnected (<command>)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from openclaw_sup.gateway import node_policy
from openclaw_sup.gateway.authn import has_scope
from openclaw_sup.gateway.hub import now_ms
from openclaw_sup.gateway.node_surfaces import NodeRecord, NodeSurfaceStore
from openclaw_sup.gateway.protocol import MethodError, invalid, missing_scope

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore

READ, WRITE, ADMIN, PAIRING = "operator.read", "operator.write", "operator.admin", "operator.pairing"

SCOPES: dict[str, str] = {
    "node.list": READ, "node.describe": READ, "node.invoke": WRITE, "node.pair.list": PAIRING,
    "node.pair.approve": PAIRING, "node.pair.reject": PAIRING, "node.pair.remove": PAIRING, "node.rename": PAIRING,
}
NODE_ROLE_METHODS = frozenset({
    "node.invoke.result", "node.event", "node.pluginTools.update", "node.skills.update",
    "node.runnerInventory.update",
})
DEFAULT_INVOKE_TIMEOUT_MS = 30_000
MAX_INVOKE_TIMEOUT_MS = 30 * 60_000
PRIVATE_COMMANDS = {"system.execApprovals.get", "system.execApprovals.set"}

Handler = Callable[["Connection", dict[str, Any]], Awaitable[Any]]


class NodeSession:
    """One connected node: the socket and what it declared when it connected."""

    __slots__ = ("caps", "client", "conn", "connected_ms", "declared", "node_id", "path_env", "permissions",
                 "stats")

    def __init__(self, conn: Connection, node_id: str, params: dict[str, Any]) -> None:
        self.conn = conn
        self.node_id = node_id
        self.client: dict[str, Any] = params.get("client") or {}
        self.caps = sorted({c for c in params.get("caps") or () if isinstance(c, str)})
        self.declared = sorted({c for c in params.get("commands") or () if isinstance(c, str)})
        perms = params.get("permissions")
        self.permissions = {k: v for k, v in perms.items() if isinstance(v, bool)} if isinstance(perms, dict) else {}
        self.path_env = params.get("pathEnv") if isinstance(params.get("pathEnv"), str) else None
        self.connected_ms = now_ms()
        self.stats: dict[str, Any] | None = None


class PendingInvoke:
    __slots__ = ("command", "conn", "future", "node_id")

    def __init__(self, conn: Connection, node_id: str, command: str, future: asyncio.Future[dict[str, Any]]) -> None:
        self.conn, self.node_id, self.command, self.future = conn, node_id, command, future


def node_error(code: str, message: str, *, dispatched: bool, **extra: Any) -> MethodError:
    """Upstream's shape for a failed invoke: `UNAVAILABLE "<CODE>: <message>"` with the node's error inside."""
    details = {**extra, "nodeError": {"code": code, "message": message}, "nodeCommandDispatched": dispatched}
    return MethodError("UNAVAILABLE", f"{code}: {message}", details=details)


def not_connected() -> MethodError:
    return MethodError("UNAVAILABLE", "node not connected",
                       details={"code": "NOT_CONNECTED", "nodeError": {"code": "NOT_CONNECTED",
                                                                        "message": "node not connected"},
                                "nodeCommandDispatched": False})


def _json_params(params: dict[str, Any], key: str) -> Any:
    """`payload` or `payloadJSON` (a JSON text) of a node frame, whichever is present."""
    if f"{key}JSON" in params and isinstance(params[f"{key}JSON"], str):
        try:
            return orjson.loads(params[f"{key}JSON"])
        except orjson.JSONDecodeError:
            raise invalid(f"{key}JSON is not valid JSON") from None
    return params.get(key)


class Nodes:
    def __init__(self, core: GatewayCore, store: NodeSurfaceStore) -> None:
        self.core = core
        self.store = store
        self.sessions: dict[str, NodeSession] = {}
        self.invokes: dict[str, PendingInvoke] = {}
        self.handlers: dict[str, Handler] = {
            "node.list": self.node_list, "node.describe": self.node_describe, "node.invoke": self.node_invoke,
            "node.pair.list": self.pair_list, "node.pair.approve": self.pair_approve,
            "node.pair.reject": self.pair_reject, "node.pair.remove": self.pair_remove, "node.rename": self.rename,
            "node.invoke.result": self.invoke_result, "node.event": self.node_event,
            "node.pluginTools.update": self.plugin_tools_update, "node.skills.update": self.skills_update,
            "node.runnerInventory.update": self.runner_inventory_update,
        }
        self.worker_methods = {"node.invoke": self.worker_invoke, "node.list": self.worker_list}

    def _nodes_cfg(self) -> dict[str, Any]:
        gw = self.core.host.gateway_config().get("gateway") or {}
        nodes = gw.get("nodes") if isinstance(gw, dict) else None
        return nodes if isinstance(nodes, dict) else {}

    # -- connections ---------------------------------------------------------------------------------

    def attach(self, conn: Connection, params: dict[str, Any]) -> None:
        """A node finished its handshake: register it and file a surface request when it asks for more than
        it was approved for (a first connection always does, unless it declares nothing)."""
        node_id = conn.device_id or conn.client.get("instanceId") or conn.id
        old = self.sessions.get(node_id)
        sess = NodeSession(conn, node_id, params)
        self.sessions[node_id] = sess
        if old is not None and old.conn is not conn:
            self.core.log("info", f"node {node_id} reconnected; closing its previous connection")
            old.conn.close(1000, "replaced by a newer connection")
        now = now_ms()
        meta = {k: sess.client.get(k) for k in ("displayName", "platform", "deviceFamily", "version", "id", "mode",
                                                  "modelIdentifier") if sess.client.get(k)}
        meta["remoteIp"] = conn.remote_ip
        if sess.path_env:
            meta["pathEnv"] = sess.path_env
        self.store.note_connect(node_id, meta, now)
        rec = self.store.get(node_id)
        wanted = node_policy.surface_commands(sess.declared, sess.client.get("platform"), sess.caps,
                                              self._nodes_cfg())
        approved = (rec.approved if rec else None) or None
        covered = approved is not None and set(wanted) <= set(approved.get("commands") or []) \
            and set(sess.caps) <= set(approved.get("caps") or [])
        if covered:
            if rec is not None and rec.pending is not None:
                self.store.clear_pending(node_id)
            return
        surface = {"displayName": sess.client.get("displayName"), "platform": sess.client.get("platform"),
                   "version": sess.client.get("version"), "deviceFamily": sess.client.get("deviceFamily"),
                   "caps": sess.caps, "commands": wanted, "silent": conn.loopback_direct}
        pending, created = self.store.request(node_id, {k: v for k, v in surface.items() if v is not None}, now)
        if created:
            self.core.log("info", f"node {node_id} asks for command surface approval (request "
                                  f"{pending['requestId']}); approve with: openclaw nodes approve "
                                  f"{pending['requestId']}")
            self.core.hub.broadcast("node.pair.requested", self._pending_wire(node_id, pending), scope=PAIRING)

    def detach(self, conn: Connection) -> None:
        """A node socket closed: its invokes fail now, not at their deadline."""
        for sess_id, sess in list(self.sessions.items()):
            if sess.conn is conn:
                del self.sessions[sess_id]
                with contextlib.suppress(Exception):
                    self.store.note_seen(sess_id, now_ms(), "disconnect")
        for inv in list(self.invokes.values()):
            if inv.conn is conn and not inv.future.done():
                inv.future.set_exception(node_error("DISCONNECTED", f"node disconnected ({inv.command})",
                                                    dispatched=True))

    # -- views ---------------------------------------------------------------------------------------

    def _effective(self, sess: NodeSession | None, rec: NodeRecord | None) -> list[str]:
        if sess is None or rec is None or rec.approved is None:
            return []
        ceiling = node_policy.allowlist(sess.client.get("platform"), sess.caps, self._nodes_cfg())
        return sorted(set(sess.declared) & set(rec.approved.get("commands") or []) & ceiling)

    def _entry(self, node_id: str, rec: NodeRecord | None) -> dict[str, Any]:
        sess = self.sessions.get(node_id)
        meta = rec.meta if rec else {}
        paired = self.core.devices.get_pairing(node_id)
        approved = rec.approved if rec else None
        entry: dict[str, Any] = {
            "nodeId": node_id,
            "displayName": (rec.display_name if rec else None) or (sess.client.get("displayName") if sess else None),
            "platform": meta.get("platform"), "version": meta.get("version"), "clientId": meta.get("id"),
            "clientMode": meta.get("mode"), "deviceFamily": meta.get("deviceFamily"),
            "modelIdentifier": meta.get("modelIdentifier"),
            "caps": [c for c in (sess.caps if sess else []) if c in set((approved or {}).get("caps") or [])]
            if approved else [],
            "commands": self._effective(sess, rec),
            "sessionHost": False,
            "nodePluginTools": [],
            "pathEnv": meta.get("pathEnv"),
            "remoteIp": meta.get("remoteIp"),
            "approvalState": "pending-approval" if rec and rec.pending else "approved" if approved else "unapproved",
            "lastConnectedAtMs": rec.last_connected_ms if rec else None,
            "lastSeenAtMs": rec.last_seen_ms if rec else None,
            "lastSeenReason": rec.last_seen_reason if rec else None,
            "approvedAtMs": (approved or {}).get("approvedAtMs") or (paired.updated_ms if paired else None),
            "paired": paired is not None and "node" in paired.roles,
            "connected": sess is not None,
        }
        stats = (sess.stats if sess else None) or (approved or {}).get("lastHostStats")
        if stats:
            entry["hostStats"] = stats
        if sess is not None:
            entry["connectedAtMs"] = sess.connected_ms
            if sess.permissions:
                entry["permissions"] = sess.permissions
        return {k: v for k, v in entry.items() if v is not None}

    def _known_ids(self) -> list[str]:
        ids = {r.node_id for r in self.store.all()} | set(self.sessions)
        return sorted(ids)

    def _pending_wire(self, node_id: str, pending: dict[str, Any]) -> dict[str, Any]:
        rec = self.store.get(node_id)
        meta = rec.meta if rec else {}
        out = {"requestId": pending["requestId"], "nodeId": node_id, "clientId": meta.get("id"),
               "clientMode": meta.get("mode"), "displayName": pending.get("displayName"),
               "platform": pending.get("platform"), "version": pending.get("version"),
               "deviceFamily": pending.get("deviceFamily"), "caps": pending.get("caps") or [],
               "commands": pending.get("commands") or [],
               "requiredApproveScopes": node_policy.required_approve_scopes(pending.get("commands") or []),
               "silent": bool(pending.get("silent")), "ts": pending.get("ts")}
        return {k: v for k, v in out.items() if v is not None}

    def _paired_wire(self, rec: NodeRecord) -> dict[str, Any]:
        approved = rec.approved or {}
        out = {"nodeId": rec.node_id, "clientId": rec.meta.get("id"), "clientMode": rec.meta.get("mode"),
               "displayName": rec.display_name, "platform": rec.meta.get("platform"),
               "version": approved.get("version") or rec.meta.get("version"),
               "deviceFamily": rec.meta.get("deviceFamily"), "caps": approved.get("caps") or [],
               "commands": approved.get("commands") or [], "createdAtMs": approved.get("createdAtMs"),
               "approvedAtMs": approved.get("approvedAtMs"), "lastSeenAtMs": rec.last_seen_ms,
               "lastSeenReason": rec.last_seen_reason}
        return {k: v for k, v in out.items() if v is not None}

    def resolve_id(self, ref: Any) -> str:
        """A node id from an exact id, a display name, an IP or an id prefix of six or more characters."""
        if not isinstance(ref, str) or not ref.strip():
            raise invalid("nodeId required")
        ref = ref.strip()
        ids = self._known_ids()
        if ref in ids:
            return ref
        recs = {r.node_id: r for r in self.store.all()}
        by_ip = [i for i in ids if (recs.get(i).meta if recs.get(i) else {}).get("remoteIp") == ref]
        named = [i for i in ids if recs.get(i) and recs[i].display_name == ref]
        prefixed = [i for i in ids if len(ref) >= 6 and i.startswith(ref)]
        for found in (by_ip, named, prefixed):
            live = [i for i in found if i in self.sessions] or found
            if len(live) == 1:
                return live[0]
            if len(live) > 1:
                raise invalid(f"node {ref!r} is ambiguous ({len(live)} nodes match); use the exact node id")
        raise invalid("unknown nodeId")

    # -- operator methods ----------------------------------------------------------------------------

    async def node_list(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        recs = {r.node_id: r for r in self.store.all()}
        nodes = [self._entry(i, recs.get(i)) for i in self._known_ids()]
        return {"ts": now_ms(), "nodes": [n for n in nodes if n.get("paired") or n.get("connected")]}

    async def node_describe(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        node_id = self.resolve_id(params.get("nodeId"))
        return {"ts": now_ms(), **self._entry(node_id, self.store.get(node_id))}

    async def node_invoke(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        node_id, command = params.get("nodeId"), params.get("command")
        if not isinstance(node_id, str) or not node_id.strip() or not isinstance(command, str) or not command:
            raise invalid("nodeId and command required")
        if command in PRIVATE_COMMANDS:
            raise invalid("node.invoke does not allow system.execApprovals.*; use exec.approvals.node.*",
                          command=command)
        if command in node_policy.SHELL_COMMANDS:
            raise invalid(f'command "{command}" is reserved for shell execution; use the exec tool with '
                          "host=node instead", command=command)
        return await self.invoke(self.resolve_id(node_id), command, params.get("params"), params.get("timeoutMs"),
                                 params.get("idempotencyKey"))

    async def invoke(self, node_id: str, command: str, args: Any, timeout_ms: Any = None,
                     idempotency_key: Any = None) -> dict[str, Any]:
        """Relay one command to a node and wait for its result, its deadline or its disconnection.

        Also the agent's way to run `system.run` on a node (through the bus, never from a client)."""
        if timeout_ms is None:
            timeout_ms = DEFAULT_INVOKE_TIMEOUT_MS
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or timeout_ms <= 0:
            raise invalid("timeoutMs must be a positive number of milliseconds")
        timeout_ms = int(min(timeout_ms, MAX_INVOKE_TIMEOUT_MS))
        sess = self.sessions.get(node_id)
        if sess is None:
            if node_id not in self._known_ids():
                raise invalid("unknown nodeId")
            raise not_connected()
        rec = self.store.get(node_id)
        why = node_policy.rejection(command, declared=sess.declared, effective=self._effective(sess, rec),
                                    platform=sess.client.get("platform"), caps=sess.caps, nodes_cfg=self._nodes_cfg())
        if why is not None:
            raise invalid(why, reason="command not allowed", command=command)
        invoke_id = str(uuid.uuid4())
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.invokes[invoke_id] = PendingInvoke(sess.conn, node_id, command, fut)
        request: dict[str, Any] = {"id": invoke_id, "nodeId": node_id, "command": command, "timeoutMs": timeout_ms}
        if args is not None:
            request["paramsJSON"] = orjson.dumps(args).decode()
        if isinstance(idempotency_key, str) and idempotency_key:
            request["idempotencyKey"] = idempotency_key
        try:
            if not sess.conn.push_event("node.invoke.request", request):
                raise not_connected()
            try:
                result = await asyncio.wait_for(asyncio.shield(fut), timeout_ms / 1000)
            except TimeoutError:
                raise node_error("TIMEOUT", "node invoke timed out", dispatched=True) from None
        finally:
            self.invokes.pop(invoke_id, None)
        if result.get("ok"):
            payload = _json_params(result, "payload")
            out: dict[str, Any] = {"ok": True, "nodeId": node_id, "command": command, "payload": payload}
            out["payloadJSON"] = result["payloadJSON"] if isinstance(result.get("payloadJSON"), str) \
                else orjson.dumps(payload).decode()
            return out
        err = result.get("error") if isinstance(result.get("error"), dict) else {}
        raise node_error(str(err.get("code") or "UNAVAILABLE"), str(err.get("message") or "node command failed"),
                         dispatched=True)

    async def worker_invoke(self, worker: str, params: dict[str, Any]) -> dict[str, Any]:
        """A worker's invoke (the exec tool's `system.run.prepare` / `system.run`): an approved run must present
        the approval it was granted (checked and, for allow-once, spent by the gateway)."""
        node_id = self.resolve_id(params.get("nodeId"))
        command = params.get("command")
        if not isinstance(command, str) or not command:
            raise invalid("command required")
        args = params.get("params") if isinstance(params.get("params"), dict) else {}
        if command == "system.run":
            args = self.core.approvals.authorize_node_run(node_id, args)
        return await self.invoke(node_id, command, args, params.get("timeoutMs"), params.get("idempotencyKey"))

    async def worker_list(self, worker: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.node_list(None, params)

    def _check_approver(self, conn: Connection | None, scopes: list[str]) -> None:
        if conn is None:
            return
        for scope in scopes:
            if not has_scope(conn.scopes, scope):
                raise missing_scope(scope)

    async def pair_list(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        recs = self.store.all()
        return {"pending": [self._pending_wire(r.node_id, r.pending) for r in recs if r.pending],
                "paired": [self._paired_wire(r) for r in recs if r.approved]}

    async def pair_approve(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        request_id = params.get("requestId")
        rec = self.store.by_request(request_id) if isinstance(request_id, str) else None
        if rec is None or rec.pending is None:
            raise invalid("unknown requestId")
        self._check_approver(conn, node_policy.required_approve_scopes(rec.pending.get("commands") or []))
        approved = self.store.approve(str(request_id), now_ms())
        if approved is None:
            raise invalid("unknown requestId")
        self._resolved(str(request_id), approved.node_id, "approved")
        self.core.log("info", f"node {approved.node_id}: command surface approved "
                              f"({', '.join((approved.approved or {}).get('commands') or []) or 'no commands'})")
        return {"requestId": request_id, "node": self._paired_wire(approved)}

    async def pair_reject(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        request_id = params.get("requestId")
        rec = self.store.reject(request_id) if isinstance(request_id, str) else None
        if rec is None:
            raise invalid("unknown requestId")
        self._resolved(str(request_id), rec.node_id, "rejected")
        return {"requestId": request_id, "nodeId": rec.node_id}

    def _resolved(self, request_id: str, node_id: str, decision: str) -> None:
        payload = {"requestId": request_id, "nodeId": node_id, "decision": decision, "ts": now_ms()}
        self.core.hub.broadcast("node.pair.resolved", payload, scope=PAIRING)
        sess = self.sessions.get(node_id)
        if sess is not None:
            sess.conn.push_event("node.pair.resolved", payload)

    async def pair_remove(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        node_id = self.resolve_id(params.get("nodeId"))
        devices = self.core.devices
        paired = devices.get_pairing(node_id)
        if paired is not None and paired.roles == ["node"]:
            devices.remove_device(node_id)
        elif paired is not None:
            devices.revoke(node_id, "node")
        sess = self.sessions.get(node_id)
        if sess is not None:
            self.detach(sess.conn)
            sess.conn.close(1008, "node pairing removed")
        self.store.remove(node_id)
        self.core.log("info", f"node {node_id} removed")
        return {"nodeId": node_id, "removed": True}

    async def rename(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        node_id = self.resolve_id(params.get("nodeId"))
        name = params.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise invalid("displayName required")
        if not self.store.rename(node_id, name.strip()):
            raise invalid("unknown nodeId")
        return {"nodeId": node_id, "displayName": name.strip()}

    # -- node methods --------------------------------------------------------------------------------

    def _own_id(self, conn: Connection | None, params: dict[str, Any]) -> str:
        sess = next((s for s in self.sessions.values() if conn is not None and s.conn is conn), None)
        if sess is None:
            raise MethodError("UNAVAILABLE", "this node connection is not registered; reconnect", retryable=True)
        claimed = params.get("nodeId")
        if claimed is not None and claimed != sess.node_id:
            raise invalid("nodeId mismatch")
        return sess.node_id

    async def invoke_result(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        node_id = self._own_id(conn, params)
        inv = self.invokes.get(str(params.get("id")))
        if inv is None or inv.node_id != node_id or inv.future.done():
            return {"ok": True, "ignored": True}
        inv.future.set_result(params)
        return {"ok": True}

    async def node_event(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        node_id = self._own_id(conn, {})
        event = params.get("event")
        if not isinstance(event, str) or not event:
            raise invalid("event required")
        payload = _json_params(params, "payload")
        if event == "node.host.stats" and isinstance(payload, dict):
            stats = {**payload, "updatedAtMs": now_ms()}
            sess = self.sessions.get(node_id)
            if sess is not None:
                sess.stats = stats
            self.store.host_stats(node_id, stats)
            self.core.hub.broadcast("node.hostStats", {"nodeId": node_id, "hostStats": stats}, scope=READ)
            return {"ok": True, "event": event, "handled": True, "reason": "updated"}
        if event.startswith("exec.") and isinstance(payload, dict):
            self.core.log("info", f"node {node_id}: {event} {str(payload.get('command') or '')[:200]} "
                                  f"exit={payload.get('exitCode')}")
        return {"ok": True}

    async def plugin_tools_update(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        return {"nodeId": self._own_id(conn, {}), "tools": []}

    async def skills_update(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        skills = params.get("skills") if isinstance(params.get("skills"), list) else []
        return {"nodeId": self._own_id(conn, {}), "skills": skills}

    async def runner_inventory_update(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        node_id = self._own_id(conn, {})
        rec = self.store.get(node_id)
        if rec is not None and rec.approved is None and rec.pending is not None:
            rid = rec.pending["requestId"]
            raise MethodError("UNAVAILABLE", f"node capability surface is awaiting operator approval; run "
                                             f"`openclaw nodes approve {rid}` (see `openclaw nodes pending`), then "
                                             "this node retries automatically")
        return {"nodeId": node_id}

    def close(self) -> None:
        for inv in list(self.invokes.values()):
            if not inv.future.done():
                inv.future.set_exception(node_error("DISCONNECTED", "gateway stopping", dispatched=True))
        self.store.close()
