"""Approval records where upstream keeps them: `<stateDir>/state/openclaw.sqlite`, table `operator_approvals`.

One row per approval request, with upstream's exact schema and its state constraints (pending, then allowed /
denied / expired / cancelled, each with its decision, terminal reason and resolver; an allow-once is consumed
once). The row is what survives a restart: requests left pending by a gateway that stopped are cancelled with
`gateway-restart` on the next start, as upstream does, so nobody can resolve a request whose waiter is gone.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openclaw_sup.config import statedb
from openclaw_sup.config.exec_approvals import db_path

TERMINAL = {  # how a request ended -> (status, decision, terminal reason)
    "allow-once": ("allowed", "allow-once", "user"),
    "allow-always": ("allowed", "allow-always", "user"),
    "deny": ("denied", "deny", "user"),
    "timeout": ("expired", "deny", "timeout"),
    "run-aborted": ("cancelled", "deny", "run-aborted"),
    "gateway-restart": ("cancelled", "deny", "gateway-restart"),
}


class ApprovalRecords:
    def __init__(self, state_dir: Path, runtime_epoch: str) -> None:
        path = db_path(state_dir)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.epoch = runtime_epoch
        self._lock = threading.Lock()
        self._state = statedb.OnFirstUse(path)
        self._state.open_if_there()

    @property
    def _db(self) -> statedb.StateConnection:
        return self._state.get()

    def release_idle(self, idle_s: float) -> bool:
        with self._lock:  # not between a transaction's statements
            return self._state.release_idle(idle_s)

    def close(self) -> None:
        with self._lock:
            self._state.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db.write():
            yield self._db

    def cancel_stale(self, now_ms: int) -> int:
        """Requests a previous gateway left pending can never be answered to their waiter: cancel them (none when
        the state database was not there: this gateway's workers are creating it)."""
        if not self._state.opened:
            return 0
        return self._end_where("status = 'pending' AND runtime_epoch != ?", (self.epoch,), "gateway-restart",
                               "system", "gateway-restart", now_ms)

    def insert(self, approval_id: str, presentation: dict[str, Any], source: dict[str, Any],
               requester: dict[str, Any], created_ms: int, expires_ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO operator_approvals (approval_id, resolution_ref, kind, status, presentation_json, "
                "requested_by_device_id, requested_by_client_id, requested_by_device_token_auth, "
                "reviewer_device_ids_json, source_agent_id, source_session_key, source_session_id, source_run_id, "
                "source_tool_call_id, source_tool_name, audience_session_keys_json, runtime_epoch, created_at_ms, "
                "expires_at_ms, updated_at_ms) VALUES (?, ?, 'exec', 'pending', ?, ?, ?, 0, '[]', ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?, ?)",
                (approval_id, secrets.token_urlsafe(32), json.dumps(presentation, separators=(",", ":")),
                 requester.get("deviceId"), requester.get("clientId"), source.get("agentId"),
                 source.get("sessionKey"), source.get("sessionId"), source.get("runId"), source.get("toolCallId"),
                 source.get("toolName"),
                 json.dumps([source["sessionKey"]] if source.get("sessionKey") else []), self.epoch, created_ms,
                 expires_ms, created_ms))

    def end(self, approval_id: str, outcome: str, resolver_kind: str, resolver_id: str, now_ms: int) -> bool:
        """Record how a pending request ended; False when it was no longer pending."""
        return self._end_where("approval_id = ? AND status = 'pending'", (approval_id,), outcome, resolver_kind,
                               resolver_id, now_ms) > 0

    def _end_where(self, where: str, args: tuple[Any, ...], outcome: str, resolver_kind: str, resolver_id: str,
                   now_ms: int) -> int:
        status, decision, reason = TERMINAL[outcome]
        with self._tx() as db:
            return db.execute(
                "UPDATE operator_approvals SET status = ?, decision = ?, terminal_reason = ?, "
                "resolved_at_ms = max(?, created_at_ms), updated_at_ms = max(?, created_at_ms), resolver_kind = ?, "
                f"resolver_id = ? WHERE {where}",
                (status, decision, reason, now_ms, now_ms, resolver_kind, resolver_id, *args)).rowcount

    def consume(self, approval_id: str, by: str, now_ms: int) -> bool:
        """Spend an allow-once; False when it is not an unspent allow-once."""
        with self._tx() as db:
            return db.execute(
                "UPDATE operator_approvals SET consumed_at_ms = max(?, resolved_at_ms), consumed_by = ?, "
                "updated_at_ms = max(?, resolved_at_ms) WHERE approval_id = ? AND status = 'allowed' "
                "AND decision = 'allow-once' AND consumed_at_ms IS NULL", (now_ms, by, now_ms, approval_id)
            ).rowcount > 0

    def get(self, approval_id: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._db.execute("SELECT * FROM operator_approvals WHERE approval_id = ?", (approval_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        return dict(zip(names, row, strict=True)) if row else None
