"""Exec approvals on the gateway: the hosts' approvals documents and the live approval requests.

`exec.approvals.get|set` read and replace the gateway host's document (config/exec_approvals.py);
`exec.approvals.node.get|set` relay to a node's `system.execApprovals.get|set`. An exec that needs an
operator's word files a request (`exec.approval.request`): it is broadcast as `exec.approval.requested` to
operators holding `operator.approvals`, listed by `exec.approval.list` (what `openclaw approvals pending`
shows), answered by `approval.resolve` / `exec.approval.resolve` with allow-once, allow-always or deny
(`exec.approval.resolved`), or expires. Its waiter (`exec.approval.waitDecision`) learns the decision; an
approved node run presents the approval id, which is checked against what was approved (argv, cwd, agent,
session) and, for allow-once, spent once.

A request stays pending until its expiry even when no approval client is connected, so the CLI can answer it
(upstream denies at once when nothing could show it). Requests are rows in `operator_approvals`; those a
previous gateway left pending are cancelled at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import field
from typing import TYPE_CHECKING, Any

from openclaw_sup.config import exec_approvals
from openclaw_sup.config.record import record
from openclaw_sup.gateway.approval_records import ApprovalRecords
from openclaw_sup.gateway.hub import now_ms
from openclaw_sup.gateway.protocol import MethodError, invalid

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore
    from openclaw_sup.gateway.host import Partial

ADMIN, APPROVALS = "operator.admin", "operator.approvals"
SCOPES: dict[str, str] = {
    **dict.fromkeys(["exec.approvals.get", "exec.approvals.set", "exec.approvals.node.get",
                     "exec.approvals.node.set"], ADMIN),
    **dict.fromkeys(["exec.approval.get", "exec.approval.list", "exec.approval.request",
                     "exec.approval.waitDecision", "exec.approval.resolve", "exec.approval.grants.list",
                     "exec.approval.grants.revoke", "approval.get", "approval.resolve", "plugin.approval.list",
                     "openclaw.approval.list"], APPROVALS),
}
DEFAULT_TIMEOUT_MS = 120_000
MAX_TIMEOUT_MS = 24 * 3600_000
DECISIONS = ("allow-once", "allow-always", "deny")
DONE_KEPT = 1000
STATUS_OF = {"allow-once": "allowed", "allow-always": "allowed", "deny": "denied", None: "expired"}

Handler = Callable[["Connection | None", dict[str, Any]], Awaitable[Any]]


@record
class Approval:
    id: str
    request: dict[str, Any]
    created_ms: int
    expires_ms: int
    requester: str
    future: asyncio.Future[str | None]
    timer: asyncio.TimerHandle | None = None
    resolved_ms: int | None = None
    resolver: dict[str, str] = field(default_factory=dict)
    reason: str | None = None

    @property
    def decision(self) -> str | None:
        return self.future.result() if self.future.done() and not self.future.cancelled() else None

    def presentation(self) -> dict[str, Any]:
        req = self.request
        plan = req.get("systemRunPlan") or {}
        return {"kind": "exec", "commandText": req.get("command"),
                "commandPreview": plan.get("commandPreview") or req.get("commandPreview"),
                "warningText": req.get("warningText"), "host": req.get("host"), "nodeId": req.get("nodeId"),
                "agentId": req.get("agentId"), "allowedDecisions": req.get("allowedDecisions")}

    def record(self) -> dict[str, Any]:
        """The unified `approval.get|resolve` view."""
        out: dict[str, Any] = {"id": self.id, "status": "pending" if not self.future.done()
                               else STATUS_OF.get(self.decision, "cancelled") if self.reason != "run-aborted"
                               else "cancelled",
                               "presentation": self.presentation(), "urlPath": f"/approve/{self.id}",
                               "createdAtMs": self.created_ms, "expiresAtMs": self.expires_ms}
        if self.future.done():
            out.update(resolvedAtMs=self.resolved_ms, reason=self.reason, decision=self.decision,
                       source={"agentId": self.request.get("agentId"), "sessionKey": self.request.get("sessionKey")},
                       resolver=self.resolver)
        return out


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def system_run_binding(argv: list[str], cwd: Any, agent_id: Any, session_key: Any) -> dict[str, Any]:
    return {"argv": list(argv), "cwd": _text(cwd), "agentId": _text(agent_id), "sessionKey": _text(session_key),
            "envHash": None}


class Approvals:
    def __init__(self, core: GatewayCore) -> None:
        self.core = core
        self.records = ApprovalRecords(core.state_dir, core.boot_id)
        with contextlib.suppress(Exception):
            self.records.cancel_stale(now_ms())
        self.pending: dict[str, Approval] = {}
        self.done: OrderedDict[str, Approval] = OrderedDict()
        self.handlers: dict[str, Handler] = {
            "exec.approvals.get": self.approvals_get, "exec.approvals.set": self.approvals_set,
            "exec.approvals.node.get": self.node_get, "exec.approvals.node.set": self.node_set,
            "exec.approval.list": self.list_exec, "exec.approval.get": self.get_exec,
            "exec.approval.waitDecision": self.wait_decision, "exec.approval.resolve": self.resolve_exec,
            "approval.get": self.approval_get, "approval.resolve": self.approval_resolve,
            "exec.approval.grants.list": self.grants_list, "exec.approval.grants.revoke": self.grants_revoke,
            "plugin.approval.list": self.no_plugin_approvals, "openclaw.approval.list": self.no_plugin_approvals,
        }
        self.streaming = {"exec.approval.request": self.request_method}
        self.worker_methods = {"exec.approval.request": self.worker_request,
                               "exec.approval.waitDecision": self.worker_wait,
                               "exec.approval.cancel": self.worker_cancel}

    @functools.cached_property
    def store(self) -> exec_approvals.ApprovalsStore:
        """The host's approvals document, opened on first use (the gateway's first clients do without it)."""
        return exec_approvals.ApprovalsStore(self.core.state_dir)

    # -- host documents ------------------------------------------------------------------------------

    def _payload(self, snap: exec_approvals.Snapshot) -> dict[str, Any]:
        return {**snap.payload(), "resolvedDefaults": exec_approvals.resolved_defaults(snap.file)}

    async def approvals_get(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        return self._payload(self.store.ensure())

    async def approvals_set(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(params.get("file"), dict):
            raise invalid("exec approvals file is required")
        try:
            snap = self.store.replace(params["file"], params.get("baseHash"))
        except exec_approvals.ApprovalsError as exc:
            raise invalid(str(exc)) from None
        self.core.log("info", f"exec approvals of the gateway host replaced (hash {snap.hash[:12]})")
        return self._payload(snap)

    async def node_get(self, conn: Connection | None, params: dict[str, Any]) -> Any:
        node_id = self.core.nodes.resolve_id(params.get("nodeId"))
        res = await self.core.nodes.invoke(node_id, "system.execApprovals.get", {})
        return res.get("payload")

    async def node_set(self, conn: Connection | None, params: dict[str, Any]) -> Any:
        node_id = self.core.nodes.resolve_id(params.get("nodeId"))
        if not isinstance(params.get("file"), dict):
            raise invalid("exec approvals file is required")
        res = await self.core.nodes.invoke(node_id, "system.execApprovals.set",
                                           {"file": params["file"], "baseHash": params.get("baseHash")})
        return res.get("payload")

    # -- requests ------------------------------------------------------------------------------------

    def _build(self, params: dict[str, Any]) -> dict[str, Any]:
        from openclaw_sup.config.exec_policy import analyse  # the shell parser: loaded by the first request

        host = _text(params.get("host")) or "gateway"
        plan = params.get("systemRunPlan") if isinstance(params.get("systemRunPlan"), dict) else None
        argv = plan.get("argv") if plan else params.get("commandArgv")
        argv = [a for a in argv if isinstance(a, str)] if isinstance(argv, list) else None
        command = _text((plan or {}).get("commandText")) or _text(params.get("command")) \
            or (" ".join(argv) if argv else None)
        if command is None:
            raise invalid("command is required")
        node_id = _text(params.get("nodeId"))
        if host == "node" and not node_id:
            raise invalid("nodeId is required for host=node")
        if host == "node" and not plan:
            raise invalid("systemRunPlan is required for host=node")
        if host == "node" and not argv:
            raise invalid("commandArgv is required for host=node")
        agent_id = _text((plan or {}).get("agentId")) or _text(params.get("agentId"))
        session_key = _text((plan or {}).get("sessionKey")) or _text(params.get("sessionKey"))
        cwd = _text((plan or {}).get("cwd")) or _text(params.get("cwd"))
        ask = _text(params.get("ask"))
        unavailable = [d for d in params.get("unavailableDecisions") or [] if d in DECISIONS]
        if ask == "always":
            unavailable.append("allow-always")
        return {
            "command": command,
            "commandPreview": None if host == "node" else _text(params.get("commandPreview")),
            "commandArgv": None if host == "node" else argv,
            "systemRunBinding": system_run_binding(argv or [], cwd, agent_id, session_key) if host == "node"
            else None,
            "systemRunPlan": plan,
            "cwd": cwd, "nodeId": node_id if host == "node" else None, "host": host,
            "security": _text(params.get("security")), "ask": ask, "warningText": _text(params.get("warningText")),
            "scope": None,
            "commandAnalysis": {"commandCount": max(1, len(analyse(command).segments)), "nestedCommandCount": 0,
                                "riskKinds": [], "warningLines": []},
            "allowedDecisions": [d for d in DECISIONS if d not in unavailable],
            "agentId": agent_id, "resolvedPath": _text(params.get("resolvedPath")), "sessionKey": session_key,
            "sessionId": _text(params.get("sessionId")), "runId": _text(params.get("runId")),
            "toolCallId": _text(params.get("toolCallId")), "turnSourceChannel": None, "turnSourceTo": None,
            "turnSourceAccountId": None, "turnSourceThreadId": None, "cronExecutionSource": None,
            "cronOperationBinding": None,
        }

    def open(self, params: dict[str, Any], requester: str) -> Approval:
        """File a request and tell the operators; it ends by a decision, its expiry or its requester's end."""
        request = self._build(params)
        timeout = params.get("timeoutMs", DEFAULT_TIMEOUT_MS)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise invalid("timeoutMs must be a positive number of milliseconds")
        approval_id = _text(params.get("id")) or str(uuid.uuid4())
        if approval_id in self.pending or approval_id in self.done:
            raise invalid("approval id already pending")
        created = now_ms()
        expires = created + int(min(timeout, MAX_TIMEOUT_MS))
        loop = asyncio.get_running_loop()
        item = Approval(approval_id, request, created, expires, requester, loop.create_future())
        self.records.insert(approval_id, item.presentation(),
                            {**{k: request.get(k) for k in ("agentId", "sessionKey", "sessionId", "runId",
                                                            "toolCallId")}, "toolName": "exec"},
                            {"clientId": requester}, created, expires)
        self.pending[approval_id] = item
        item.timer = loop.call_later((expires - created) / 1000, self._finish, item, None, "timeout",
                                     {"kind": "system", "id": "timeout"})
        where = f"node {request['nodeId']}" if request.get("nodeId") else request["host"]
        self.core.log("info", f"exec approval {approval_id} pending ({where}): {request['command'][:200]}")
        self.core.hub.broadcast("exec.approval.requested", self._event(item), scope=APPROVALS)
        return item

    def _event(self, item: Approval) -> dict[str, Any]:
        return {"approvalKind": "exec", "id": item.id, "request": item.request, "createdAtMs": item.created_ms,
                "expiresAtMs": item.expires_ms}

    def _finish(self, item: Approval, decision: str | None, outcome: str, resolver: dict[str, str]) -> None:
        if item.future.done():
            return
        if item.timer is not None:
            item.timer.cancel()
        now = now_ms()
        try:
            self.records.end(item.id, outcome, resolver["kind"], resolver["id"], now)
        except Exception as exc:  # the decision still reaches its waiter; the row is only the record of it
            self.core.log("error", f"exec approval {item.id}: could not record {outcome}: {exc}")
        item.resolved_ms, item.resolver = now, resolver
        item.reason = "user" if outcome in DECISIONS else outcome
        item.future.set_result(decision)
        self.pending.pop(item.id, None)
        self.done[item.id] = item
        while len(self.done) > DONE_KEPT:
            self.done.popitem(last=False)
        self.core.log("info", f"exec approval {item.id}: {decision or outcome} (by {resolver['id']})")
        self.core.hub.broadcast("exec.approval.resolved", {
            "id": item.id, "decision": decision, "resolvedBy": resolver["id"], "ts": now, "request": item.request,
            **({} if outcome in DECISIONS else {"terminalReason": outcome})}, scope=APPROVALS)

    def resolve(self, approval_id: str, decision: str, resolver: dict[str, str]) -> tuple[Approval, bool]:
        """Apply an operator's decision; (approval, applied). Repeating the same decision is not an error."""
        if decision not in DECISIONS:
            raise invalid(f"invalid decision {decision!r}: use allow-once, allow-always or deny")
        item = self._find(approval_id)
        if item.future.done():
            if item.decision == decision:
                return item, False
            raise invalid("approval already resolved", code="APPROVAL_ALREADY_RESOLVED")
        if decision not in item.request["allowedDecisions"]:
            raise invalid("allow-always is unavailable for this command", code="ALLOW_ALWAYS_UNAVAILABLE")
        self._finish(item, decision, decision, resolver)
        return item, True

    def cancel_for(self, requester: str) -> None:
        """The worker that asked is gone: its requests can no longer be acted on."""
        for item in [i for i in self.pending.values() if i.requester == requester]:
            self._finish(item, None, "run-aborted", {"kind": "system", "id": "run-aborted"})

    def _find(self, approval_id: Any) -> Approval:
        key = _text(approval_id)
        if key is None:
            raise invalid("id is required")
        item = self.pending.get(key) or self.done.get(key)
        if item is None:
            matches = [i for i in (*self.pending.values(), *self.done.values()) if i.id.startswith(key)]
            if len(matches) == 1 and len(key) >= 8:
                return matches[0]
            raise MethodError("APPROVAL_NOT_FOUND", "unknown or expired approval id",
                              details={"code": "APPROVAL_NOT_FOUND"})
        return item

    async def waiter(self, item: Approval) -> dict[str, Any]:
        decision = await asyncio.shield(item.future)
        out = {"id": item.id, "decision": decision, "createdAtMs": item.created_ms, "expiresAtMs": item.expires_ms}
        if item.reason:
            out["terminalReason"] = item.reason
        return out

    # -- the node run an approval allows --------------------------------------------------------------

    def authorize_node_run(self, node_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Check an approved `system.run` against its approval and spend an allow-once; the params to forward."""
        if not (params.get("approved") is True or params.get("approvalDecision") in ("allow-once", "allow-always")):
            return params
        run_id = _text(params.get("runId"))
        if run_id is None:
            raise invalid("approval override requires params.runId", code="MISSING_RUN_ID")
        item = self.done.get(run_id)
        if item is None or item.decision not in ("allow-once", "allow-always"):
            raise invalid("approval required", code="APPROVAL_REQUIRED", runId=run_id)
        req = item.request
        argv = params.get("command") if isinstance(params.get("command"), list) else []
        actual = system_run_binding(argv, params.get("cwd"), params.get("agentId"), params.get("sessionKey"))
        if req.get("host") != "node" or req.get("nodeId") != node_id or req.get("systemRunBinding") != actual:
            raise invalid("approval id does not match request", code="APPROVAL_REQUEST_MISMATCH")
        if item.decision == "allow-once" and not self.records.consume(item.id, node_id, now_ms()):
            raise invalid("approval already used", code="APPROVAL_CONSUMED")
        return {**params, "approved": True, "approvalDecision": item.decision}

    # -- for workers (the agent's exec tool) ---------------------------------------------------------

    async def worker_request(self, worker: str, params: dict[str, Any]) -> dict[str, Any]:
        item = self.open(params, worker)
        return {"status": "accepted", "id": item.id, "createdAtMs": item.created_ms, "expiresAtMs": item.expires_ms}

    async def worker_wait(self, worker: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.waiter(self._find(params.get("id")))

    async def worker_cancel(self, worker: str, params: dict[str, Any]) -> dict[str, Any]:
        item = self._find(params.get("id"))
        self._finish(item, None, "run-aborted", {"kind": "system", "id": "run-aborted"})
        return {"ok": True}

    # -- methods -------------------------------------------------------------------------------------

    async def request_method(self, conn: Connection | None, params: dict[str, Any], partial: Partial) -> Any:
        item = self.open(params, conn.client.get("id", "operator") if conn is not None else "gateway")
        if params.get("twoPhase") is True:
            await partial({"status": "accepted", "id": item.id, "deliveryRoute": "approval-client",
                           "createdAtMs": item.created_ms, "expiresAtMs": item.expires_ms})
        return await self.waiter(item)

    def _entry(self, item: Approval) -> dict[str, Any]:
        return {"id": item.id, "request": item.request, "createdAtMs": item.created_ms,
                "expiresAtMs": item.expires_ms, "approvalKind": "exec"}

    async def list_exec(self, conn: Connection | None, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._entry(i) for i in sorted(self.pending.values(), key=lambda i: i.created_ms)]

    async def no_plugin_approvals(self, conn: Connection | None, params: dict[str, Any]) -> list[Any]:
        return []  # this gateway runs no plugins, so none of their approvals can exist

    async def get_exec(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        item = self._find(params.get("id"))
        if item.future.done():
            raise MethodError("APPROVAL_NOT_FOUND", "unknown or expired approval id",
                              details={"code": "APPROVAL_NOT_FOUND"})
        plan = item.request.get("systemRunPlan") or {}
        return {"id": item.id, "commandText": item.request["command"],
                "commandPreview": plan.get("commandPreview") or item.request.get("commandPreview"),
                "allowedDecisions": item.request["allowedDecisions"], "host": item.request.get("host"),
                "nodeId": item.request.get("nodeId"), "agentId": item.request.get("agentId"),
                "expiresAtMs": item.expires_ms}

    async def wait_decision(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        return await self.waiter(self._find(params.get("id")))

    def _resolver(self, conn: Connection | None) -> dict[str, str]:
        if conn is None:
            return {"kind": "runtime", "id": "gateway"}
        if conn.device_id and conn.client.get("id") not in ("cli", "gateway-client"):
            return {"kind": "device", "id": conn.device_id}
        return {"kind": "runtime", "id": str(conn.client.get("id") or "operator")}

    async def resolve_exec(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        self.resolve(str(params.get("id") or ""), str(params.get("decision") or ""), self._resolver(conn))
        return {"ok": True}

    async def approval_get(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        return {"approval": self._find(params.get("id")).record()}

    async def approval_resolve(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        kind = params.get("kind", "exec")
        if kind != "exec":
            raise invalid(f"approval kind {kind!r} is not supported by this gateway (only exec approvals exist)")
        item, applied = self.resolve(str(params.get("id") or ""), str(params.get("decision") or ""),
                                     self._resolver(conn))
        return {"applied": applied, "approval": item.record()}

    async def grants_list(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        return {"grants": []}

    async def grants_revoke(self, conn: Connection | None, params: dict[str, Any]) -> dict[str, Any]:
        raise invalid("unknown grantId")

    def close(self) -> None:
        for item in list(self.pending.values()):
            if item.timer is not None:
                item.timer.cancel()
        self.records.close()
        if "store" in self.__dict__:
            self.__dict__.pop("store").close()
