"""A channel account's durable ingress queue and outbox: SQLite in WAL mode, owned by that account's worker.

`<stateDir>/state/channels/<channel>-<accountId>.sqlite`. An adapter writes inbound messages here (with any
upstream cursor, e.g. Telegram's next `offset`, in the same transaction) before it acknowledges them upstream;
a message id is its primary key, so a redelivery is a no-op. A processed message and the replies it produced
are recorded in one transaction, so a turn is never answered twice after a crash.

Outbound rows go `pending -> sending -> sent` (or `failed`). `sending` is committed right before the bytes
leave (after any flood-control wait), so a worker killed mid-send finds the row in `sending` on restart and
counts it as sent instead of sending it again: a reply is never duplicated; the one reply that was being
written at the instant of the kill may be lost, and that is logged. A commit survives SIGKILL (it is in the
WAL); `synchronous=NORMAL` trades only power-loss durability of the last commits for speed. Automatic WAL
checkpoints are off (they would run inside whichever commit crossed the threshold, possibly the `sending` one,
widening the gap before the write); the runtime checkpoints between sends.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from openclaw_sup.config import sqlitedb
from openclaw_sup.config.sqlitedb import immediate

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    peer TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    finished_at REAL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS inbound_pending ON inbound (state, seq);
CREATE TABLE IF NOT EXISTS outbound (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    out_id TEXT NOT NULL UNIQUE,
    msg_id TEXT,
    target TEXT NOT NULL,
    text TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    sent_at REAL,
    upstream_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS outbound_pending ON outbound (state, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

KEEP_FINISHED_S = 7 * 86400
INTERRUPTED_SEND = "the worker stopped while sending this reply; not resent (it may not have been delivered)"
RESENT_SEND = "the worker stopped while sending this reply; resent (the network drops the duplicate)"


class InboundRow(NamedTuple):
    """A pending message as the dispatcher reads it (a tuple: it reads dozens per wake in a burst)."""

    msg_id: str
    peer: str
    raw: bytes
    attempts: int

    @property
    def payload(self) -> dict[str, Any]:
        """Decoded when asked: the dispatcher looks at many more pending rows than it starts (a burst's
        messages wait behind the ones in flight), and decodes only those it starts."""
        return orjson.loads(self.raw)


class OutboundRow(NamedTuple):
    out_id: str
    msg_id: str | None
    target: str
    text: str
    attempts: int


@dataclass(frozen=True)
class Reply:
    out_id: str
    target: str
    text: str


def queue_path(state_dir: Path, channel: str, account_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{channel}-{account_id}")
    return state_dir / "state" / "channels" / f"{safe}.sqlite"


class IngressQueue:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.db = sqlitedb.connect(path)
        # No checkpoint inside a commit: the `sending` commit must return at once so the bytes leave right after
        # it; the runtime checkpoints at its own safe moments (`checkpoint`).
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.executescript(_SCHEMA)
        self._writes_since_checkpoint = 0
        self._checkpointed_at = time.monotonic()

    def close(self) -> None:
        self.db.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate(self.db)

    def recover(self, now: float | None = None, resend: bool = False) -> list[OutboundRow]:
        """At start-up: sends cut short by a kill count as sent (never duplicated), or, with `resend` (a network
        that deduplicates a repeated send by its id), go out again; old finished rows go."""
        now = time.time() if now is None else now
        with self._tx():
            rows = [OutboundRow(*r) for r in self.db.execute(
                "SELECT out_id, msg_id, target, text, attempts FROM outbound WHERE state='sending'")]
            if resend:
                self.db.execute("UPDATE outbound SET state='pending', next_at=0, note=? WHERE state='sending'",
                                (RESENT_SEND,))
            else:
                self.db.execute("UPDATE outbound SET state='sent', sent_at=?, note=? WHERE state='sending'",
                                (now, INTERRUPTED_SEND))
            self.db.execute("DELETE FROM inbound WHERE state!='pending' AND finished_at < ?",
                            (now - KEEP_FINISHED_S,))
            self.db.execute("DELETE FROM outbound WHERE state IN ('sent','failed') AND created_at < ?",
                            (now - KEEP_FINISHED_S,))
        return rows

    # -- inbound -------------------------------------------------------------------------------------

    def admit(self, items: list[tuple[str, str, dict[str, Any]]], meta: dict[str, str] | None = None,
              now: float | None = None) -> int:
        """Store (msg_id, peer, payload) items and cursor values in one transaction; return how many were new."""
        now = time.time() if now is None else now
        with self._tx():
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO inbound (msg_id, peer, payload, received_at) VALUES (?,?,?,?)",
                [(mid, peer, orjson.dumps(p), now) for mid, peer, p in items])
            added = self.db.total_changes - before
            for k, v in (meta or {}).items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (k, v))
        return added

    def pending_inbound(self, now: float | None = None, limit: int = 200,
                        busy: Collection[str] = ()) -> list[InboundRow]:
        """Due messages in arrival order, but none from a peer in `busy` (one with a message in flight)."""
        now = time.time() if now is None else now
        skip = f" AND peer NOT IN ({','.join('?' * len(busy))})" if busy else ""
        return [InboundRow(*row) for row in self.db.execute(
            f"SELECT msg_id, peer, payload, attempts FROM inbound WHERE state='pending' AND next_at<=?{skip} "
            "ORDER BY seq LIMIT ?", (now, *busy, limit))]

    def next_inbound_due(self) -> float | None:
        row = self.db.execute("SELECT MIN(next_at) FROM inbound WHERE state='pending'").fetchone()
        return row[0] if row else None

    def finish_inbound(self, msg_id: str, state: str, replies: list[Reply] = (), note: str | None = None,
                       now: float | None = None) -> None:
        """Mark a message done/dropped/failed and queue its replies, atomically."""
        now = time.time() if now is None else now
        with self._tx():
            self.db.execute("UPDATE inbound SET state=?, finished_at=?, note=? WHERE msg_id=?",
                            (state, now, note, msg_id))
            self.db.executemany(
                "INSERT OR IGNORE INTO outbound (out_id, msg_id, target, text, created_at) VALUES (?,?,?,?,?)",
                [(r.out_id, msg_id, r.target, r.text, now) for r in replies])

    def retry_inbound(self, msg_id: str, delay: float, note: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.db.execute("UPDATE inbound SET attempts=attempts+1, next_at=?, note=? WHERE msg_id=?",
                        (now + delay, note, msg_id))

    # -- outbound ------------------------------------------------------------------------------------

    def enqueue(self, reply: Reply, now: float | None = None) -> bool:
        """Queue a reply that answers no inbound message (channel.send); False when out_id was queued before."""
        now = time.time() if now is None else now
        cur = self.db.execute(
            "INSERT OR IGNORE INTO outbound (out_id, msg_id, target, text, created_at) VALUES (?,?,?,?,?)",
            (reply.out_id, None, reply.target, reply.text, now))
        return cur.rowcount > 0

    def pending_outbound(self, now: float | None = None, limit: int = 100) -> list[OutboundRow]:
        now = time.time() if now is None else now
        return [OutboundRow(*r) for r in self.db.execute(
            "SELECT out_id, msg_id, target, text, attempts FROM outbound WHERE state='pending' AND next_at<=? "
            "ORDER BY seq LIMIT ?", (now, limit))]

    def next_outbound_due(self) -> float | None:
        row = self.db.execute("SELECT MIN(next_at) FROM outbound WHERE state='pending'").fetchone()
        return row[0] if row else None

    def mark_sending(self, out_id: str) -> None:
        self.db.execute("UPDATE outbound SET state='sending', attempts=attempts+1 WHERE out_id=?", (out_id,))
        self._writes_since_checkpoint += 1

    def checkpoint(self, every: int = 100, max_age_s: float = 10.0) -> None:
        """Fold the WAL back into the database after `every` sends, or `max_age_s` after the last time."""
        now = time.monotonic()
        if self._writes_since_checkpoint >= every or now - self._checkpointed_at >= max_age_s:
            self._writes_since_checkpoint = 0
            self._checkpointed_at = now
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def mark_sent(self, out_id: str, upstream_id: str | None, now: float | None = None) -> None:
        self.db.execute("UPDATE outbound SET state='sent', sent_at=?, upstream_id=? WHERE out_id=?",
                        (time.time() if now is None else now, upstream_id, out_id))

    def retry_outbound(self, out_id: str, delay: float, note: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.db.execute("UPDATE outbound SET state='pending', next_at=?, note=? WHERE out_id=?",
                        (now + delay, note, out_id))

    def fail_outbound(self, out_id: str, note: str) -> None:
        self.db.execute("UPDATE outbound SET state='failed', note=? WHERE out_id=?", (note, out_id))

    def outbound_state(self, out_id: str) -> tuple[str, str | None, str | None] | None:
        row = self.db.execute("SELECT state, upstream_id, note FROM outbound WHERE out_id=?", (out_id,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    # -- cursor and counters -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def counts(self) -> dict[str, int]:
        out = {"inboundPending": 0, "outboundPending": 0}
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM inbound GROUP BY state"):
            out[f"inbound{state.capitalize()}"] = n
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM outbound GROUP BY state"):
            out[f"outbound{state.capitalize()}"] = n
        return out

