"""Wire constants and error objects of the OpenClaw gateway protocol (spec/protocol.md sections 1-2)."""

from __future__ import annotations

import os
from typing import Any

PROTOCOL = 4
UPSTREAM_VERSION = "2026.9.6"
"""The upstream release this gateway is a drop-in for: the version it reports everywhere a client reads one
(hello-ok, presence, probes, `status.runtimeVersion`); clients compare it with their own. openclaw-sup's own
version is shown beside it, under names of its own (`supervisorVersion`, `buildId`)."""
MIN_PROBE_PROTOCOL = 3
PRE_AUTH_MAX_BYTES = 64 * 1024
MAX_PAYLOAD = 26_214_400
MAX_BUFFERED_BYTES = 52_428_800
TICK_INTERVAL_MS = 30_000
HANDSHAKE_TIMEOUT_S = 10.0

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 1002
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
CLOSE_TRY_LATER = 1013

CLIENT_IDS = frozenset({
    "cli", "gateway-client", "openclaw-control-ui", "webchat-ui", "webchat", "openclaw-tui", "openclaw-macos",
    "openclaw-linux", "openclaw-ios", "openclaw-watchos", "openclaw-android", "node-host", "openclaw-worker",
    "openclaw-browser-copilot", "openclaw-probe", "test", "fingerprint",
})
CLIENT_MODES = frozenset({"cli", "ui", "webchat", "backend", "node", "worker", "probe", "test"})
ROLES = frozenset({"operator", "node"})
NO_PRESENCE_MODES = frozenset({"cli", "backend", "probe"})
EVENTS_SCOPE = "operator.read"  # what a socket needs to receive the workers' events

CONNECT_KEYS = frozenset({
    "minProtocol", "maxProtocol", "client", "role", "scopes", "caps", "commands", "permissions", "pathEnv",
    "locale", "userAgent", "auth", "device", "computerUse", "workerRuns", "modelCatalog",
})
CLIENT_KEYS = frozenset({"id", "version", "platform", "mode", "displayName", "deviceFamily", "modelIdentifier",
                         "instanceId", "buildId", "timeZone"})
"""ConnectParams as upstream 2026.9.6's own Control UI sends them (its schema is closed, and so is ours)."""
AUTH_KEYS = frozenset({"token", "password", "bootstrapToken", "deviceToken", "approvalRuntimeToken",
                       "agentRuntimeIdentityToken"})
DEVICE_KEYS = frozenset({"id", "publicKey", "signature", "signedAt", "nonce"})

EVENTS = ["connect.challenge", "tick", "presence", "health", "heartbeat", "shutdown", "agent", "chat", "cron",
          "config.changed", "device.pair.requested", "device.pair.resolved", "browser", "workers",
          "node.pair.requested", "node.pair.resolved", "node.invoke.request", "node.hostStats",
          "exec.approval.requested", "exec.approval.resolved"]


class MethodError(Exception):
    """An RPC failure with a protocol error code; becomes the `error` of a `res` frame."""

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None,
                 retryable: bool | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms

    def to_error(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": str(self)}
        if self.details is not None:
            err["details"] = self.details
        if self.retryable is not None:
            err["retryable"] = self.retryable
        if self.retry_after_ms is not None:
            err["retryAfterMs"] = self.retry_after_ms
        return err


def invalid(message: str, **details: Any) -> MethodError:
    return MethodError("INVALID_REQUEST", message, details=details or None)


def missing_scope(scope: str) -> MethodError:
    return MethodError("FORBIDDEN", f"missing scope: {scope}",
                       details={"code": "MISSING_SCOPE", "missingScope": scope, "requiredScopes": [scope]})


def unavailable(message: str, **details: Any) -> MethodError:
    return MethodError("UNAVAILABLE", message, details=details or None)


def unknown_method(method: str) -> MethodError:
    return MethodError("INVALID_REQUEST", f"unknown method: {method}")


def res_ok(rid: Any, payload: Any) -> dict[str, Any]:
    return {"type": "res", "id": rid, "ok": True, "payload": payload}


def res_err(rid: Any, error: dict[str, Any]) -> dict[str, Any]:
    return {"type": "res", "id": rid, "ok": False, "error": error}


def tick_interval_from_env() -> int:
    """The `tick` interval: OPENCLAW_SUP_TICK_INTERVAL_MS when set (at least 100 ms), else upstream's."""
    try:
        return max(100, int(os.environ.get("OPENCLAW_SUP_TICK_INTERVAL_MS", TICK_INTERVAL_MS)))
    except ValueError:
        return TICK_INTERVAL_MS
