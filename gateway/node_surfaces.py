"""The durable side of nodes: each node's approved command surface, its pending surface request, and what it
last reported (name, platform, version, host stats, last connection).

Upstream keeps these on the node's paired-device record (`node_surface_json`, `pending_node_surface_json`);
the JSON documents here have the same shape. One SQLite file, WAL, each change one transaction, so a crash at
any instant keeps either the old or the new surface.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openclaw_sup.config import sqlitedb
from openclaw_sup.config.record import record
from openclaw_sup.config.sqlitedb import immediate

_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_surfaces (
    device_id TEXT PRIMARY KEY,
    node_surface_json TEXT,
    pending_node_surface_json TEXT,
    meta_json TEXT NOT NULL DEFAULT '{}',
    last_connected_at_ms INTEGER,
    last_seen_at_ms INTEGER,
    last_seen_reason TEXT
);
"""
_COLUMNS = ("device_id, node_surface_json, pending_node_surface_json, meta_json, last_connected_at_ms, "
            "last_seen_at_ms, last_seen_reason")


@record(frozen=True)
class NodeRecord:
    node_id: str
    approved: dict[str, Any] | None
    pending: dict[str, Any] | None
    meta: dict[str, Any]
    last_connected_ms: int | None
    last_seen_ms: int | None
    last_seen_reason: str | None

    @property
    def display_name(self) -> str | None:
        return self.meta.get("displayName") or (self.approved or {}).get("displayName")


def _load(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _dump(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class NodeSurfaceStore:
    """Opened on first use (a node's connect or a node.* call), not at the gateway's start: creating its
    database cost ~2.3 ms on the way to `gateway listening` of every fresh start, for a feature most hosts
    never use."""

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlitedb.connect(self.path, timeout=5.0)
        db.executescript(_SCHEMA)
        return db

    db = sqlitedb.OnUse(_open)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self.db):
            yield self.db

    @staticmethod
    def _record(row: tuple[Any, ...]) -> NodeRecord:
        return NodeRecord(row[0], _load(row[1]), _load(row[2]), _load(row[3]) or {}, row[4], row[5], row[6])

    def _row(self, db: sqlite3.Connection, node_id: str) -> NodeRecord | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM node_surfaces WHERE device_id = ?", (node_id,)).fetchone()
        return self._record(row) if row else None

    def get(self, node_id: str) -> NodeRecord | None:
        with self._lock:
            return self._row(self.db, node_id)

    def all(self) -> list[NodeRecord]:
        with self._lock:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM node_surfaces ORDER BY device_id").fetchall()
        return [self._record(r) for r in rows]

    def by_request(self, request_id: str) -> NodeRecord | None:
        for rec in self.all():
            if rec.pending and rec.pending.get("requestId") == request_id:
                return rec
        return None

    def _ensure(self, db: sqlite3.Connection, node_id: str) -> None:
        db.execute("INSERT OR IGNORE INTO node_surfaces (device_id) VALUES (?)", (node_id,))

    def note_connect(self, node_id: str, meta: dict[str, Any], now_ms: int) -> None:
        """Remember what a connecting node reported; a name the operator set (`node.rename`) is kept."""
        with self._tx() as db:
            self._ensure(db, node_id)
            old = self._row(db, node_id)
            merged = {**meta, **({"displayName": old.meta["displayName"]}
                                 if old and old.meta.get("renamed") else {}),
                      "renamed": bool(old and old.meta.get("renamed"))}
            db.execute("UPDATE node_surfaces SET meta_json = ?, last_connected_at_ms = ?, last_seen_at_ms = ?, "
                       "last_seen_reason = 'connect' WHERE device_id = ?", (_dump(merged), now_ms, now_ms, node_id))

    def note_seen(self, node_id: str, now_ms: int, reason: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE node_surfaces SET last_seen_at_ms = ?, last_seen_reason = ? WHERE device_id = ?",
                       (now_ms, reason, node_id))

    def request(self, node_id: str, surface: dict[str, Any], now_ms: int) -> tuple[dict[str, Any], bool]:
        """Record a surface awaiting approval; the same caps and commands keep the pending request (and its id),
        anything else supersedes it. Returns the pending request and whether it is new."""
        with self._tx() as db:
            self._ensure(db, node_id)
            old = self._row(db, node_id)
            current = old.pending if old else None
            if current and sorted(current.get("commands") or []) == sorted(surface.get("commands") or []) \
                    and sorted(current.get("caps") or []) == sorted(surface.get("caps") or []):
                refreshed = {**current, **{k: v for k, v in surface.items() if k not in ("commands", "caps")}}
                db.execute("UPDATE node_surfaces SET pending_node_surface_json = ? WHERE device_id = ?",
                           (_dump(refreshed), node_id))
                return refreshed, False
            pending = {"requestId": str(uuid.uuid4()), "revision": str(uuid.uuid4()), **surface, "ts": now_ms}
            db.execute("UPDATE node_surfaces SET pending_node_surface_json = ? WHERE device_id = ?",
                       (_dump(pending), node_id))
            return pending, True

    def clear_pending(self, node_id: str) -> dict[str, Any] | None:
        with self._tx() as db:
            old = self._row(db, node_id)
            db.execute("UPDATE node_surfaces SET pending_node_surface_json = NULL WHERE device_id = ?", (node_id,))
        return old.pending if old else None

    def approve(self, request_id: str, now_ms: int) -> NodeRecord | None:
        """Turn the pending request into the approved surface; None when no such request is pending."""
        with self._tx() as db:
            rec = next((r for r in (self._record(row) for row in db.execute(
                f"SELECT {_COLUMNS} FROM node_surfaces WHERE pending_node_surface_json IS NOT NULL").fetchall())
                if (r.pending or {}).get("requestId") == request_id), None)
            if rec is None or rec.pending is None:
                return None
            approved = {k: rec.pending[k] for k in ("displayName", "version", "caps", "commands") if k in rec.pending}
            approved.update(createdAtMs=now_ms, approvedAtMs=now_ms, sessionHost=False)
            if rec.approved and rec.approved.get("lastHostStats"):
                approved["lastHostStats"] = rec.approved["lastHostStats"]
            db.execute("UPDATE node_surfaces SET node_surface_json = ?, pending_node_surface_json = NULL "
                       "WHERE device_id = ?", (_dump(approved), rec.node_id))
            return self._row(db, rec.node_id)

    def reject(self, request_id: str) -> NodeRecord | None:
        with self._tx() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM node_surfaces WHERE pending_node_surface_json IS NOT NULL")
            rec = next((r for r in map(self._record, rows.fetchall())
                        if (r.pending or {}).get("requestId") == request_id), None)
            if rec is None:
                return None
            db.execute("UPDATE node_surfaces SET pending_node_surface_json = NULL WHERE device_id = ?",
                       (rec.node_id,))
            return rec

    def remove(self, node_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM node_surfaces WHERE device_id = ?", (node_id,)).rowcount > 0

    def rename(self, node_id: str, name: str) -> bool:
        with self._tx() as db:
            rec = self._row(db, node_id)
            if rec is None:
                return False
            db.execute("UPDATE node_surfaces SET meta_json = ? WHERE device_id = ?",
                       (_dump({**rec.meta, "displayName": name, "renamed": True}), node_id))
            return True

    def host_stats(self, node_id: str, stats: dict[str, Any]) -> None:
        """Keep the last host stats on the approved surface, so an offline node still shows them."""
        with self._tx() as db:
            rec = self._row(db, node_id)
            if rec is None or rec.approved is None:
                return
            db.execute("UPDATE node_surfaces SET node_surface_json = ? WHERE device_id = ?",
                       (_dump({**rec.approved, "lastHostStats": stats}), node_id))
