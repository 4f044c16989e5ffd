"""The params of every RPC method, as one table, checked once before dispatch (`Methods.call`).

Each entry lists the fields upstream's schema gives a method and the JSON type each must have. A field of the
wrong type answers INVALID_REQUEST naming the method, the field and what it must be, so no handler or worker
ever trips over a value of the wrong type (a `timeoutMs` of "abc" used to end as an internal error). Only
types are judged here: whether a required field is present, and ranges and meanings (a cron expression, a
limit of 0), stay with the owner of the method, which names them in its own words. Unknown fields pass:
upstream adds fields faster than a table follows, and handlers ignore what they do not use.

A method served without an entry here is a test failure (tests/test_params.py enumerates them from the code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openclaw_sup.config.record import record
from openclaw_sup.gateway.protocol import invalid


@record(frozen=True)
class Kind:
    """One JSON type as a predicate, and how an error message says it."""

    what: str
    ok: Callable[[Any], bool]
    hint: str = ""

    def __or__(self, other: Kind) -> Kind:
        return Kind(f"{self.what} or {other.what}", lambda v: self.ok(v) or other.ok(v))

    def hinted(self, hint: str) -> Kind:
        return Kind(self.what, self.ok, hint)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STR = Kind("a string", lambda v: isinstance(v, str))
TEXT = Kind("a non-empty string", lambda v: isinstance(v, str) and bool(v))
INT = Kind("an integer", _int)
COUNT = Kind("a non-negative integer", lambda v: _int(v) and v >= 0)
NUM = Kind("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
BOOL = Kind("a boolean", lambda v: isinstance(v, bool))
OBJ = Kind("an object", lambda v: isinstance(v, dict))
LIST = Kind("an array", lambda v: isinstance(v, list))
STRS = Kind("an array of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
NULL = Kind("null", lambda v: v is None)


Spec = dict[str, Kind]

SESSION: Spec = {"sessionKey": STR, "agentId": TEXT}
NONE: Spec = {}

PARAMS: dict[str, Spec] = {
    # -- answered by the supervisor
    "health": {"probe": BOOL},
    "status": NONE,
    "system-presence": NONE,
    "system-event": {"text": STR, "idempotencyKey": TEXT, "sessionKey": STR, "wake": BOOL, "deviceId": STR,
                     "instanceId": STR, "host": STR, "ip": STR, "mode": STR, "version": STR, "platform": STR,
                     "deviceFamily": STR, "modelIdentifier": STR, "lastInputSeconds": NUM, "reason": STR,
                     "roles": STRS, "scopes": STRS},
    "last-heartbeat": NONE,
    "config.get": NONE,
    "config.schema.lookup": {"path": TEXT},
    "logs.tail": {"cursor": COUNT, "limit": INT, "maxBytes": INT},
    "gateway.identity.get": NONE,
    "system.info": NONE,
    "diagnostics.stability": NONE,
    "gateway.restart.request": {"reason": STR, "restartDelayMs": COUNT, "sessionKey": STR, "note": STR,
                                "threadId": STR | NUM, "deliveryContext": OBJ, "target": OBJ},
    "models.list": {"agentId": TEXT, "sessionKey": TEXT, "provider": TEXT, "includeDetails": BOOL,
                    "includeProviderCapabilities": BOOL, "includeDefaultModels": BOOL, "preparedOnly": BOOL},
    "skills.status": {"agentId": TEXT, "sessionKey": TEXT},
    "hooks.status": {"agentId": TEXT},
    "doctor.memory.status": {"agentId": TEXT},
    "device.pair.list": NONE,
    "device.pair.approve": {"requestId": TEXT},
    "device.pair.reject": {"requestId": TEXT},
    "device.pair.remove": {"deviceId": TEXT},
    "workers.list": {"history": BOOL},
    "workers.subscribe": NONE,
    "workers.unsubscribe": NONE,
    "workers.restart": {"name": TEXT},
    "workers.start": {"name": TEXT},
    "workers.stop": {"name": TEXT},
    "exec.approval.list": NONE,
    "plugin.approval.list": NONE,
    "openclaw.approval.list": NONE,
    "exec.approval.get": {"id": TEXT},
    "exec.approval.request": {"id": TEXT, "command": STR, "commandArgv": STRS, "systemRunPlan": OBJ, "env": OBJ,
                              "cwd": STR, "nodeId": STR, "host": STR, "security": STR, "ask": STR, "agentId": STR,
                              "sessionKey": STR, "sessionId": STR, "runId": STR, "toolCallId": STR,
                              "timeoutMs": COUNT, "twoPhase": BOOL, "warningText": STR, "resolvedPath": STR,
                              "unavailableDecisions": STRS},
    "exec.approval.waitDecision": {"id": TEXT},
    "exec.approval.resolve": {"id": TEXT, "decision": TEXT},
    "exec.approval.grants.list": {"limit": INT},
    "exec.approval.grants.revoke": {"grantId": TEXT},
    "approval.get": {"id": TEXT},
    "approval.resolve": {"id": TEXT, "kind": STR, "decision": TEXT},
    "exec.approvals.get": NONE,
    "exec.approvals.set": {"file": OBJ, "baseHash": STR},
    "exec.approvals.node.get": {"nodeId": TEXT},
    "exec.approvals.node.set": {"nodeId": TEXT, "file": OBJ, "baseHash": STR},
    # -- nodes (gateway/nodes.py); the node-role methods are the node's side of the relay
    "node.list": NONE,
    "node.describe": {"nodeId": TEXT},
    "node.invoke": {"nodeId": TEXT, "command": TEXT, "params": OBJ, "timeoutMs": COUNT, "idempotencyKey": TEXT},
    "node.pair.list": NONE,
    "node.pair.approve": {"requestId": TEXT},
    "node.pair.reject": {"requestId": TEXT},
    "node.pair.remove": {"nodeId": TEXT},
    "node.rename": {"nodeId": TEXT, "displayName": TEXT},
    "node.invoke.result": {"id": TEXT, "nodeId": TEXT, "ok": BOOL, "payloadJSON": STR, "error": OBJ},
    "node.event": {"event": TEXT, "payloadJSON": STR},
    "node.pluginTools.update": {"tools": LIST},
    "node.skills.update": {"skills": LIST},
    "node.runnerInventory.update": {"protocolFeatures": STRS, "workerHost": OBJ},
    # -- the channel workers
    "channels.status": {"probe": BOOL, "timeoutMs": COUNT, "channel": TEXT},
    "channels.start": {"channel": TEXT, "accountId": STR},
    "channels.stop": {"channel": TEXT, "accountId": STR},
    "channels.logout": {"channel": TEXT, "accountId": STR},
    "channels.pairing.list": {"channel": STR, "accountId": STR},
    "channels.pairing.approve": {"channel": TEXT, "requestId": TEXT, "accountId": STR, "notify": BOOL},
    "channels.pairing.dismiss": {"channel": TEXT, "requestId": TEXT, "accountId": STR},
    "send": {"to": TEXT, "message": STR, "mediaUrl": STR, "mediaUrls": STRS, "channel": STR, "accountId": STR,
             "agentId": STR, "replyToId": STR, "threadId": STR, "silent": BOOL, "idempotencyKey": TEXT,
             "sessionKey": STR},
    # -- the scheduler
    "cron.list": {"sessionKey": TEXT, "includeDisabled": BOOL, "limit": INT, "offset": INT, "query": STR,
                  "enabled": BOOL | STR, "agentId": TEXT, "compact": BOOL, "sortBy": STR, "sortDir": STR},
    "cron.status": NONE,
    "cron.get": {"id": STR, "jobId": STR},
    "cron.add": {"name": STR, "description": STR, "enabled": BOOL, "agentId": STR | NULL, "sessionKey": STR | NULL,
                 "schedule": OBJ, "sessionTarget": STR | OBJ, "wakeMode": STR, "payload": OBJ, "delivery": OBJ,
                 "deleteAfterRun": BOOL},
    "cron.update": {"id": STR, "jobId": STR, "patch": OBJ},
    "cron.remove": {"id": STR, "jobId": STR},
    "cron.run": {"id": STR, "jobId": STR, "mode": STR},
    "cron.runs": {"id": STR, "jobId": STR, "scope": STR, "runId": TEXT, "limit": INT, "offset": INT,
                  "statuses": STRS, "status": STR, "deliveryStatuses": STRS, "deliveryStatus": STR, "query": STR,
                  "sortDir": STR, "agentId": TEXT},
    "wake": {"mode": STR, "text": STR, **SESSION},
    "set-heartbeats": {"enabled": BOOL.hinted('pass {"enabled": true} or {"enabled": false}')},
    # -- the agent
    "agent": {"message": STR, "agentId": TEXT, "provider": STR, "model": STR, "to": STR, "replyTo": STR,
              "sessionId": STR, "sessionKey": STR, "thinking": STR, "deliver": BOOL, "attachments": LIST,
              "channel": STR, "replyChannel": STR, "accountId": STR, "replyAccountId": STR, "threadId": STR,
              "groupId": STR, "timeout": COUNT, "bestEffortDeliver": BOOL, "lane": STR, "extraSystemPrompt": STR,
              "idempotencyKey": TEXT, "label": STR},
    "agent.wait": {"runId": TEXT, "timeoutMs": COUNT},
    "agent.identity.get": {"agentId": TEXT, "sessionKey": STR},
    "chat.history": {"sessionKey": STR, "agentId": TEXT, "cursor": STR, "limit": INT, "maxBytes": INT,
                     "offset": INT, "sessionId": TEXT, "maxChars": INT},
    "chat.send": {"message": STR, "sessionId": TEXT, "thinking": STR, "deliver": BOOL, "attachments": LIST,
                  "timeoutMs": COUNT, "idempotencyKey": TEXT, **SESSION},
    "chat.abort": {"runId": TEXT, **SESSION},
    "chat.inject": {"message": STR, "label": STR, **SESSION},
    "sessions.list": {"limit": INT, "offset": INT, "activeMinutes": INT, "includeGlobal": BOOL,
                      "includeUnknown": BOOL, "agentId": TEXT, "search": STR},
    "usage.cost": {"days": INT, "startDate": STR, "endDate": STR, "agentId": TEXT},
    # -- the browser
    "browser.status": {"profile": STR},
    "browser.tabs": {"profile": STR},
    "browser.start": {"profile": STR},
    "browser.stop": {"profile": STR},
    "browser.open": {"url": STR, "profile": STR},
    "browser.navigate": {"url": STR, "targetId": STR, "profile": STR},
    "browser.screenshot": {"targetId": STR, "profile": STR, "fullPage": BOOL, "type": STR},
    "browser.request": {"method": STR, "path": STR, "query": OBJ, "body": Kind("any JSON value", lambda v: True),
                        "timeoutMs": COUNT},
}


def check(method: str, params: dict[str, Any]) -> None:
    """Raise INVALID_REQUEST for the first field of `params` whose type the table does not allow."""
    spec = PARAMS.get(method)
    if not spec:
        return
    for name, kind in spec.items():
        if name in params and not kind.ok(params[name]):
            got = _json_type(params[name])
            hint = f"; {kind.hint}" if kind.hint else ""
            raise invalid(f"invalid {method} params: {name} must be {kind.what} (got {got}){hint}", field=name)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer" if value >= 0 else "a negative integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    return "an array" if isinstance(value, list) else "an object"
