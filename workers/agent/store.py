"""One agent's durable state: sessions and transcripts in upstream's agent database, runs in a side file.

Sessions and transcripts live where upstream keeps them, in its format (`<stateDir>/agents/<id>/agent/
openclaw-agent.sqlite`, schema 23, config/statedb.py), so `openclaw sessions` and the real gateway's
`chat.history` show what our agent said, and we read what the real gateway wrote:

- a session is a `session_nodes` row (its key, canonical: `agent:<agentId>:...`, lower-cased as upstream does;
  `entry_json` the session entry with `sessionId` and `updatedAt` mirrored in the row) pointing at its current
  `session_windows` row (the transcript), validated and certified in the same transaction as upstream's own
  writers do (`entry_valid = 1`, no `session_canonical_validation_pending` row left behind);
- a transcript is `transcript_events` (seq 0 the `session` header, then `message` events chained by
  `parentId`), with `transcript_event_identities`, and the active-branch projection upstream reads
  (`session_transcript_active_events`, `session_transcript_index_state`). When upstream left the projection to
  be rebuilt, we append the events and leave it marked so. Upstream compresses large events (zstd): read here.

A turn's model context comes from the session's recent messages kept in memory (`RecentWindows`), used only
while the transcript's stamp (its session, last sequence number, projection state, rewrite generation) is
unchanged: our own appends extend them once committed; whatever another writer does changes the stamp, and the
context is read again.

The agent worker keeps its idempotency records in `openclaw-sup-runs.sqlite` beside it (a name upstream never
uses): a run is written `running` before the model is called and finished with its answer after, so a resent
key returns the stored answer instead of running again, and a run a crash cut short is found `running` at
start and closed as an error. A run started by the `agent` method is also a `task_runs` row of the shared state
database (runtime `cli`, as upstream records `openclaw agent` runs), so `openclaw tasks list` shows it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.config import sqlitedb, statedb, sup_layout
from openclaw_sup.config.paths import ensure_private_dir
from openclaw_sup.config.record import record
from openclaw_sup.config.sqlitedb import immediate

DB_NAME = statedb.AGENT_DB_NAME
RUNS_NAME = "openclaw-sup-runs.sqlite"
INTERRUPTED = "interrupted: the agent worker stopped while this run was in progress; send it again with a new " \
              "idempotencyKey to retry"
TASK_RETENTION_MS = 7 * 86_400_000

RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    idem_key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    method TEXT NOT NULL,
    session_key TEXT,
    status TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    error TEXT,
    answer BLOB,
    message TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_id ON runs(run_id);
"""
ROLES_WITH_TOOLS = ("user", "assistant", "toolResult")
CALLS_ONLY = " AND json_extract(e.event_json, '$.message.content[0].type') IS NOT 'toolCall'"  # text comes first
_TASK_STATUS = {"ok": "succeeded", "error": "failed"}
TASK_METHOD = "agent"  # the runs upstream records as tasks: `openclaw agent` through the gateway
RECENT_SESSIONS = 256  # sessions whose recent messages the worker keeps for the model's context
RECENT_CHARS = 4_000_000  # and at most this much of their text
STAMPS_KEPT = 4096  # sessions whose transcript stamp is known without reading it


def now_ms() -> int:
    return int(time.time() * 1000)


def random_uuid() -> str:
    """`str(uuid.uuid4())` at a third of its cost (no UUID object): a turn names its run and each of its events."""
    b = bytearray(os.urandom(16))
    b[6], b[8] = b[6] & 0x0F | 0x40, b[8] & 0x3F | 0x80  # version 4, RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def iso(ms: int) -> str:
    return _iso_second(ms // 1000) + f"{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    """A turn stamps its events within the same second or two: formatted once, not for every event."""
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def db_path(state_dir: Path, agent_id: str) -> Path:
    return statedb.agent_db_path(state_dir, agent_id)


def store_key(session_key: str, agent_id: str) -> str:
    """The key a session is stored under: agent-scoped and lower-cased as upstream canonicalises it (a Matrix or
    Signal peer id after its channel prefix keeps its case)."""
    key = session_key.strip()
    if not key.lower().startswith("agent:"):
        key = f"agent:{agent_id}:{key}"
    low = key.lower()
    for marker in ("matrix:", "signal:"):
        at = low.find(marker)
        if at >= 0:
            return low[:at + len(marker)] + key[at + len(marker):]
    return low


def _zstd(blob: bytes, size: int | None) -> str:
    import zstandard  # only upstream's large events are compressed

    return zstandard.ZstdDecompressor().decompress(blob, max_output_size=size or 4_194_304).decode()


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str))
    return ""


def _message(role: str, text: str, run_id: str | None, model: str | None, usage: dict[str, int] | None,
             now: int) -> dict[str, Any]:
    """A user or assistant message as upstream's transcript holds it."""
    message: dict[str, Any] = {"role": role, "timestamp": now}
    if role == "user":
        message["content"] = text
        if run_id:
            message["idempotencyKey"] = f"{run_id}:user"
        return message
    message["content"] = [{"type": "text", "text": text}]
    if model:
        provider, _, name = model.partition("/")
        message.update(provider=provider, model=name)
    if usage:
        message["usage"] = {"input": usage.get("inputTokens", 0), "output": usage.get("outputTokens", 0),
                            "totalTokens": usage.get("inputTokens", 0) + usage.get("outputTokens", 0)}
    message["stopReason"] = "stop"
    if run_id:
        message["__openclaw"] = {"runId": run_id}
    return message


Stamp = tuple[Any, ...]  # session id, last seq, projection (indexed seq, needs rebuild, leaf), rewrite generation
Event = tuple[int, dict[str, Any], str | None, int]  # seq, event, idempotency key, created_at
_TAIL_SQL = (
    "SELECT n.current_session_id, (SELECT max(seq) FROM transcript_events WHERE session_id = n.current_session_id), "
    "s.indexed_seq, s.needs_rebuild, s.leaf_event_id, (SELECT generation FROM transcript_rewrite_watermarks WHERE "
    "session_id = n.current_session_id), n.entry_json, s.active_event_count, s.active_message_count, EXISTS (SELECT 1 "
    "FROM transcript_event_identities WHERE session_id = n.current_session_id AND message_idempotency_key = ?) "
    "FROM session_nodes n LEFT JOIN session_transcript_index_state s ON s.session_id = n.current_session_id "
    "WHERE n.session_key = ?")


def _chat_message(m: dict[str, Any]) -> bool:
    """A question or an answer made of text, as `_message` writes them."""
    content, role = m.get("content"), m.get("role")
    if role == "user":
        return isinstance(content, str)
    return role == "assistant" and isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" for p in content)


def _history_row(seq: int, m: dict[str, Any], created: int) -> dict[str, Any]:
    run = (m.get("__openclaw") or {}).get("runId") if isinstance(m.get("__openclaw"), dict) else None
    idem = m.get("idempotencyKey")
    if run is None and isinstance(idem, str) and idem.endswith(":user"):
        run = idem[:-len(":user")]
    ts = m.get("timestamp") if isinstance(m.get("timestamp"), int) else created
    return {"id": seq, "role": m["role"], "text": message_text(m), "ts": ts, "runId": run}


class RecentWindows:
    """The last messages of the sessions a model was recently given, so a turn does not read and decode its
    context again: an entry serves only while its session's transcript stamp is unchanged (another writer, the
    real CLI or gateway, appending, rewriting or re-projecting it changes the stamp), and our own appends extend
    it once their transaction committed. Bounded in sessions and in characters (`size` of a row): the least
    recently used go."""

    def __init__(self, sessions: int = RECENT_SESSIONS, chars: int = RECENT_CHARS,
                 size: Callable[[dict[str, Any]], int] = lambda row: len(row["text"])) -> None:
        self.sessions, self.chars, self.size = sessions, chars, size
        self._entries: dict[str, Window] = {}
        self._held = 0

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, stamp: Stamp, limit: int) -> list[dict[str, Any]] | None:
        entry = self._entries.get(key)
        if entry is None or entry.stamp != stamp or (len(entry.rows) < limit and not entry.complete):
            return None
        self._entries[key] = self._entries.pop(key)
        return entry.rows[-limit:] if limit > 0 else []

    def put(self, key: str, stamp: Stamp, rows: list[dict[str, Any]], cap: int) -> None:
        """The last `cap` messages of the transcript stamped `stamp` (fewer when that is all of them)."""
        self._drop(key)
        kept = rows[-cap:]
        self._keep(key, Window(stamp, kept, cap, len(rows) < cap, sum(self.size(r) for r in kept)))

    def extend(self, key: str, before: Stamp | None, after: Stamp | None, rows: list[dict[str, Any]] | None) -> None:
        """Our committed append turned the transcript stamped `before` into `after` by adding `rows` (None: rows
        this window cannot tell apart, so the next context is read again). Only the rows that come and go are
        measured: a window of 40 long messages is not summed again on every turn."""
        entry = self._drop(key)
        if entry is None or before is None or after is None or entry.stamp != before or rows is None:
            return
        kept = entry.rows + rows
        gone, kept = kept[:-entry.cap], kept[-entry.cap:]
        chars = entry.chars + sum(map(self.size, rows)) - sum(map(self.size, gone))
        self._keep(key, Window(after, kept, entry.cap, entry.complete and not gone, chars))

    def _keep(self, key: str, window: Window) -> None:
        self._entries[key] = window
        self._held += window.chars
        while self._entries and (len(self._entries) > self.sessions or self._held > self.chars):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> Window | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._held -= entry.chars
        return entry


@record
class Window:
    """One session's recent messages (`rows`, oldest first, at most `cap`; `complete` when they are all of it)."""

    stamp: Stamp
    rows: list[dict[str, Any]]
    cap: int
    complete: bool
    chars: int


@record
class Tail:
    """The end of a session's transcript inside a write transaction: what the next message chains to."""

    key: str
    session_id: str
    entry: dict[str, Any]
    seq: int  # the next event's
    leaf: str | None  # the last event's id
    state: tuple[int, int, int, int] | None  # projection: indexed_seq, needs_rebuild, active events, messages
    asked: bool  # the idempotency key asked about is already in this transcript
    stamp: Stamp | None  # the transcript's before this write (None: created by it)


class AgentStore:
    side = sqlitedb.OnUse(lambda st: sqlitedb.connect(st.path.parent / RUNS_NAME,
                                                      timeout=statedb.BUSY_TIMEOUT_MS / 1000))
    """The runs' side file: closed while the agent idles, like its database."""

    def __init__(self, path: Path, agent_id: str | None = None, state_dir: Path | None = None) -> None:
        """`path` is the agent database (`db_path`); the agent and state dir default to what the path names."""
        ensure_private_dir(path.parent)
        ensure_private_dir(path.parent.parent)
        self.path = path
        self.agent_id = agent_id or path.parent.parent.name
        self.state_dir = state_dir or path.parents[3]
        self._db: statedb.StateConnection | None = statedb.open_agent_db(path, self.agent_id)
        self._side: sqlite3.Connection | None = None
        self.side.executescript(RUNS_SCHEMA)
        self._state: statedb.StateConnection | None = None
        statedb.register_agent_db(self.state, self.state_dir, self.agent_id, path)
        self.lease = self._claim_lease()
        self._committed: list[Callable[[], None]] | None = None  # inside `group`: what follows its commit
        self._recent = RecentWindows()  # history rows (`history(..., count=False)`)
        self._context = RecentWindows(size=lambda message: len(message_text(message)))  # `context`: tool rounds too
        self._stamps: dict[str, Stamp] = {}  # transcripts' stamps as of `_version` (our commits kept them current)
        self._version: int | None = None  # PRAGMA data_version when `_stamps` were known
        self.checkpointer = sqlitedb.Checkpointer(path)  # every turn writes ~40 pages: checkpoints off the hot path
        sup_layout.import_once(path.parent / sup_layout.SUP_TRANSCRIPTS, "messages", self._import)

    def _import(self, old: sqlite3.Connection) -> None:
        """Transcripts and runs of openclaw-sup's earlier agent tables (config/sup_layout.py), in order."""
        messages = old.execute("SELECT session_key, role, text, ts, run_id FROM messages ORDER BY id").fetchall()
        runs = old.execute("SELECT idem_key, run_id, method, session_key, status, started_at, ended_at, error, "
                           "answer FROM runs").fetchall()
        for session_key, role, text, ts, run_id in messages:
            self.append(session_key, role, text, run_id, ts=ts)
        with immediate(self.side):
            self.side.executemany("INSERT OR IGNORE INTO runs (idem_key, run_id, method, session_key, status, "
                                  "started_at, ended_at, error, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", runs)

    def _claim_lease(self) -> str:
        """Upstream's open-database lease (`agent_database_leases`: this process holds the file), so the real
        `openclaw doctor --fix` leaves the database alone while we use it; refused while upstream's agent
        database maintenance runs. Leases of processes that are gone are dropped on the way, as upstream does."""
        lease, pid = str(uuid.uuid4()), os.getpid()
        with self.state.write():
            busy = self.state.execute("SELECT owner FROM state_leases WHERE scope = 'core:agent-database-maintenance' "
                                      "AND lease_key = 'global' AND expires_at > ?", (now_ms(),)).fetchone()
            if busy:
                raise statedb.StateDbError(f"the agent database {self.path} is being maintained by `openclaw doctor "
                                           "--fix`; the agent worker opens it again once that completes")
            for held, owner, start in self.state.execute("SELECT lease_id, owner_pid, owner_start_time FROM "
                                                         "agent_database_leases WHERE path = ?",
                                                         (os.path.abspath(self.path),)).fetchall():
                if statedb.start_identity(owner) is None or (start is not None and
                                                             statedb.start_identity(owner) != start):
                    self.state.execute("DELETE FROM agent_database_leases WHERE lease_id = ?", (held,))
            self.state.execute("INSERT INTO agent_database_leases (lease_id, agent_id, path, owner_pid, "
                               "owner_start_time, opened_at) VALUES (?, ?, ?, ?, ?, ?)",
                               (lease, self.agent_id, os.path.abspath(self.path), pid, statedb.start_identity(pid),
                                now_ms()))
        return lease

    @property
    def state(self) -> statedb.StateConnection:
        """The shared state database (leases, task runs): closed while the agent idles (its schema alone holds
        ~250 KB of SQLite memory per connection), opened again by the next run (~4 ms)."""
        if self._state is None:
            self._state = statedb.open_state_db(statedb.state_db_path(self.state_dir))
        return self._state

    @property
    def db(self) -> statedb.StateConnection:
        """The agent database: closed while the agent idles like the state database, opened again on use. What
        was known as of the closed connection's `data_version` is not trusted after (versions are per connection)."""
        if self._db is None:
            self._db = statedb.open_agent_db(self.path, self.agent_id)
            self._version = None
            self._stamps.clear()
        return self._db

    def release_memory(self) -> None:
        """Close the three connections (each holds its schema's and pages' SQLite memory) unless one is inside a
        transaction; the next use opens each again."""
        sqlitedb.close_idle(self, "_db", "_side", "_state")

    def close(self) -> None:
        self.checkpointer.stop()
        with contextlib.suppress(sqlite3.Error), self.state.write():
            self.state.execute("DELETE FROM agent_database_leases WHERE lease_id = ?", (self.lease,))
        for db in (self._db, self._side, self._state):
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    def close_interrupted(self) -> list[tuple[str, str | None]]:
        """Runs left `running` by a crash become errors; answers their `(runId, sessionKey)`."""
        rows = self.side.execute("SELECT run_id, session_key, method, message, started_at FROM runs "
                                 "WHERE status='running'").fetchall()
        ended = now_ms()
        for run_id, key, _method, message, started in rows:
            if message is not None and key:  # its turn was to be written whole at its end: the question is kept
                self.append_turn(key, message, None, run_id, ts=started)
        self.side.execute("UPDATE runs SET status='error', error=?, ended_at=? WHERE status='running'",
                          (INTERRUPTED, ended))
        for run_id, _key, method, _message, _started in rows:
            if method == TASK_METHOD:
                self._end_task(run_id, "lost", INTERRUPTED, ended)
        return [(r[0], r[1]) for r in rows]

    # -- sessions ------------------------------------------------------------------------------------

    def _workspace(self) -> str:
        name = "workspace" if self.agent_id == "main" else f"workspace-{self.agent_id}"
        return str(self.state_dir / name)

    def _stamp(self, key: str) -> Stamp | None:
        """What identifies the session's transcript as it is now (None: no such session)."""
        row = self.db.execute(_TAIL_SQL, (None, key)).fetchone()
        return None if row is None else row[:6]

    def _known_stamp(self, key: str) -> Stamp | None:
        """`_stamp`, read only when another connection (the real CLI or gateway, or another of ours) committed to
        the database since it was last known: SQLite's `data_version` moves with every commit but this
        connection's, and this connection's commits keep the known stamps current (`_extend`)."""
        (version,) = self.db.execute("PRAGMA data_version").fetchone()
        if version != self._version:
            self._stamps.clear()
            self._version = version
        stamp = self._stamps.get(key)
        if stamp is None:
            stamp = self._stamp(key)
            if stamp is not None:
                if len(self._stamps) >= STAMPS_KEPT:
                    self._stamps.clear()
                self._stamps[key] = stamp
        return stamp

    def _tail(self, key: str, idem: str | None = None) -> Tail | None:
        """Where the session's transcript ends, read in one statement; None when there is no such session."""
        row = self.db.execute(_TAIL_SQL, (idem, key)).fetchone()
        if row is None:
            return None
        session_id, last, indexed, stale, leaf, _generation, entry_json, events, messages, asked = row
        entry = orjson.loads(entry_json) if entry_json else {}
        if not isinstance(entry, dict) or entry.get("sessionId") != session_id:
            entry = {"sessionId": session_id}
        seq = (last if last is not None else -1) + 1
        state = None if indexed is None else (indexed, stale, events, messages)
        if state is None or stale != 0 or indexed != seq - 1:
            found = self.db.execute("SELECT event_id FROM transcript_event_identities WHERE session_id = ? AND seq = ?",
                                    (session_id, seq - 1)).fetchone()
            leaf = found[0] if found else None
        return Tail(key, session_id, entry, seq, leaf, state, bool(asked), row[:6])

    def _create_session(self, key: str, now: int) -> Tail:
        """A new session (its node, window, header event and projection): the end of its empty transcript."""
        session_id = random_uuid()
        entry = {"sessionId": session_id, "updatedAt": now, "sessionStartedAt": now, "delivery": {"kind": "none"},
                 "createdVia": "run", "createdAt": now}
        self.db.execute("INSERT INTO session_nodes (session_key, current_session_id, entry_json, updated_at, "
                        "created_at, created_via) VALUES (?, ?, ?, ?, ?, 'run')",
                        (key, session_id, orjson.dumps(entry).decode(), now, now))
        self.db.execute("INSERT INTO session_windows (session_id, session_key, session_scope, created_at, "
                        "updated_at, session_entry_provenance, started_at) VALUES (?, ?, 'conversation', ?, ?, 1, ?)",
                        (session_id, key, now, now, now))
        self.db.execute("INSERT INTO transcript_rewrite_watermarks (session_id, generation, updated_at) "
                        "VALUES (?, ?, ?)", (session_id, uuid.uuid4().hex, now))
        header = {"type": "session", "version": 4, "id": session_id, "timestamp": iso(now), "cwd": self._workspace()}
        self._insert_events(session_id, [(0, header, None, now)])
        self.db.execute("INSERT INTO session_transcript_index_state (session_id, indexed_seq, leaf_event_id, "
                        "needs_rebuild, active_event_count, active_message_count, updated_at) "
                        "VALUES (?, 0, ?, 0, 0, 0, ?)", (session_id, session_id, now))
        self._certify(key)
        return Tail(key, session_id, entry, 1, session_id, (0, 0, 0, 0), False, None)

    def _insert_events(self, session_id: str, events: list[tuple[int, dict[str, Any], str | None, int]]) -> None:
        """Events `(seq, event, idempotency key, created_at)` and their identities, each table in one statement."""
        texts = [orjson.dumps(event).decode() for _seq, event, _idem, _now in events]
        self.db.executemany("INSERT INTO transcript_events (session_id, seq, event_json, created_at, event_utf8_bytes) "
                            "VALUES (?, ?, ?, ?, ?)", [(session_id, seq, text, now, len(text.encode()))
                                                       for (seq, _e, _i, now), text in zip(events, texts, strict=True)])
        self.db.executemany("INSERT INTO transcript_event_identities (session_id, event_id, seq, event_type, "
                            "parent_id, message_idempotency_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(session_id, event["id"], seq, event["type"], event.get("parentId"), idem, now)
                             for seq, event, idem, now in events])

    def _certify(self, key: str) -> None:
        """Mark the node's entry valid and settle its pending validation, as upstream's writers do in-transaction."""
        self.db.execute("UPDATE session_nodes SET entry_valid = 1 WHERE session_key = ?", (key,))
        self.db.execute("DELETE FROM session_canonical_validation_pending WHERE session_key = ?", (key,))

    def append(self, session_key: str, role: str, text: str, run_id: str | None = None, *,
               model: str | None = None, usage: dict[str, int] | None = None, ts: int | None = None) -> int:
        """Append a user or assistant message to the session's transcript; returns its sequence number."""
        now = now_ms() if ts is None else ts
        message = _message(role, text, run_id, model, usage, now)
        idem = message.get("idempotencyKey")
        key = store_key(session_key, self.agent_id)
        with self._transaction():
            tail = self._tail(key, idem) or self._create_session(key, now)
            # upstream keeps one message per key and session: a repeat is kept, unkeyed
            events = self._write(tail, [(message, None if tail.asked else idem, now)], model, turn_ends=role != "user")
            after = self._after(key, tail, events)
        self._after_commit(lambda: self._extend(key, tail.stamp, after, events))
        return events[-1][0]

    def append_turn(self, session_key: str, question: str, answer: str | None, run_id: str, *,
                    model: str | None = None, usage: dict[str, int] | None = None, ts: int | None = None) -> None:
        """A turn's question and (when there is one) its answer in one transaction: half the commits of two
        appends, each of which writes dozens of pages of upstream's indexed tables. A question already written
        for this run (a crash after the turn was stored, before its run was closed) is not written twice."""
        key, idem = store_key(session_key, self.agent_id), f"{run_id}:user"
        with self._transaction():
            tail = self._tail(key, idem)
            items = []
            if tail is None or not tail.asked:
                asked_at = now_ms() if ts is None else ts
                tail = tail or self._create_session(key, asked_at)
                items.append((_message("user", question, run_id, None, None, asked_at), idem, asked_at))
            if answer is not None:
                now = now_ms()
                items.append((_message("assistant", answer, run_id, model, usage, now), None, now))
            if not items:
                return
            events = self._write(tail, items, model, turn_ends=answer is not None)
            after = self._after(key, tail, events)
        self._after_commit(lambda: self._extend(key, tail.stamp, after, events))

    def append_message(self, session_key: str, message: dict[str, Any], run_id: str | None = None) -> int:
        """A tool round's record, already in upstream's shape: the assistant's message with its `toolCall` parts,
        or a `toolResult` message. The session entry moves on with the turn's answer, not here; the model's recent
        context is extended by it, the recent history (plain questions and answers) read again."""
        message = dict(message)
        message.setdefault("timestamp", now_ms())
        if run_id and message.get("role") == "assistant":
            message["__openclaw"] = {"runId": run_id}
        key = store_key(session_key, self.agent_id)
        with self._transaction():
            tail = self._tail(key) or self._create_session(key, message["timestamp"])
            events = self._write(tail, [(message, None, message["timestamp"])], None, turn_ends=False)
            after = self._after(key, tail, events)
        self._after_commit(lambda: self._extend(key, tail.stamp, after, events))
        return events[-1][0]

    def group(self, writes: list[Callable[[], Any]]) -> list[tuple[Any, Exception | None]]:
        """Several writes (calls of `append`, `append_turn`, `append_message`) in one transaction, so they share
        one commit and the pages of upstream's indexes they all touch: each in a savepoint of its own, a write that
        fails rolled back alone and answered with its error. Every write is on disk when this returns; a commit
        that fails raises, and none of them is."""
        self._committed = committed = []

        def alone(write: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                mark = len(committed)
                try:
                    return write()
                except BaseException:
                    del committed[mark:]  # rolled back: what its appends would have kept is not so
                    raise
            return run

        try:
            with self.db.write():
                results = _each_in_savepoint(self.db, [alone(write) for write in writes], committed.clear)
        finally:
            self._committed = None
        for action in committed:
            action()
        return results

    def group_runs(self, writes: list[Callable[[], Any]]) -> list[tuple[Any, Exception | None]]:
        """`group` for the runs' side file (calls of `finish_run`): one transaction, a savepoint each; the starts
        recorded `pending` since the last commit are committed with them."""
        with immediate(self.side, joined=True):
            return _each_in_savepoint(self.side, writes)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write's own transaction, or, inside `group`, the group's."""
        if self._committed is not None:
            yield
            return
        with self.db.write():
            yield

    def _after_commit(self, action: Callable[[], None]) -> None:
        if self._committed is not None:
            self._committed.append(action)
        else:
            action()

    def _after(self, key: str, tail: Tail, events: list[Event]) -> Stamp | None:
        """The transcript's stamp once `events` are appended after `tail`: known when the projection moved on
        with them (`_project`), else read."""
        state = tail.state
        if tail.stamp is None or state is None or state[1] != 0 or state[0] != tail.seq - 1:
            return self._stamp(key)
        last_seq, last, _idem, _at = events[-1]
        return (tail.session_id, last_seq, last_seq, 0, last["id"], tail.stamp[5])

    def _extend(self, key: str, before: Stamp | None, after: Stamp | None, events: list[Event]) -> None:
        """The recent windows after our committed append of `events`: a window extended only by messages it
        holds (a history window by plain questions and answers, a context window by any message of the roles it
        replays), else dropped."""
        if after is not None and key in self._stamps:
            self._stamps[key] = after
        else:
            self._stamps.pop(key, None)
        messages = [event["message"] for _seq, event, _idem, _at in events]
        if key in self._recent:
            self._recent.extend(key, before, after, [_history_row(seq, event["message"], at) for seq, event, _idem,
                                                     at in events] if all(map(_chat_message, messages)) else None)
        self._context.extend(key, before, after, messages if all(
            isinstance(m, dict) and m.get("role") in ROLES_WITH_TOOLS for m in messages) else None)

    def _write(self, tail: Tail, items: list[tuple[dict[str, Any], str | None, int]], model: str | None, *,
               turn_ends: bool) -> list[Event]:
        """Messages `(message, idempotency key, time)` appended after `tail`, chained by `parentId`, with the
        active-branch projection; when they end a turn, the session and its window move on (once per turn).
        Returns the events written."""
        events, parent = [], tail.leaf
        for n, (message, idem, now) in enumerate(items):
            event = {"type": "message", "id": random_uuid(), "parentId": parent, "timestamp": iso(now),
                     "message": message}
            events.append((tail.seq + n, event, idem, now))
            parent = event["id"]
        self._insert_events(tail.session_id, events)
        self._project(tail, events)
        now = events[-1][3]
        if turn_ends:
            entry = tail.entry
            entry.update(updatedAt=now, lastInteractionAt=now, lastActivityAt=now)
            if model:
                entry["modelProvider"], _, entry["model"] = model.partition("/")
            self.db.execute("UPDATE session_nodes SET entry_json = ?, updated_at = ?, last_interaction_at = ?, "
                            "last_activity_at = ? WHERE session_key = ?",
                            (orjson.dumps(entry).decode(), now, now, now, tail.key))
            self._certify(tail.key)
            self.db.execute("UPDATE session_windows SET updated_at = ?, transcript_updated_at = ?, "
                            "transcript_observed_at = ?, status = 'done', ended_at = ?, "
                            "model_provider = coalesce(?, model_provider), model = coalesce(?, model) "
                            "WHERE session_id = ?",
                            (now, now, now, now, entry.get("modelProvider") if model else None,
                             entry.get("model") if model else None, tail.session_id))
        return events

    def _project(self, tail: Tail, events: list[tuple[int, dict[str, Any], str | None, int]]) -> None:
        """Extend the active-branch projection by these messages, or leave it for upstream to rebuild when stale."""
        state = tail.state
        if state is None or state[1] != 0 or state[0] != tail.seq - 1:
            self.db.execute("INSERT INTO session_transcript_index_state (session_id, indexed_seq, needs_rebuild, "
                            "updated_at) VALUES (?, -1, 1, ?) ON CONFLICT(session_id) DO UPDATE SET needs_rebuild = 1",
                            (tail.session_id, events[0][3]))
            return
        _indexed, _stale, active, messages = state
        self.db.executemany("INSERT INTO session_transcript_active_events (session_id, active_position, event_seq, "
                            "message_position, context_eligible) VALUES (?, ?, ?, ?, 1)",
                            [(tail.session_id, active + n, seq, messages + n)
                             for n, (seq, *_rest) in enumerate(events)])
        last_seq, last, _idem, now = events[-1]
        self.db.execute("UPDATE session_transcript_index_state SET indexed_seq = ?, leaf_event_id = ?, "
                        "active_event_count = ?, active_message_count = ?, updated_at = ? WHERE session_id = ?",
                        (last_seq, last["id"], active + len(events), messages + len(events), now, tail.session_id))

    def _messages(self, session_id: str, limit: int = -1, offset: int = 0, *, count: bool = True,
                  tools: bool = False) -> tuple[list[tuple[int, dict[str, Any], int]], int]:
        """The session's user and assistant messages, oldest first: the last `limit` (all with -1) before the
        newest `offset`, and how many there are. The active branch when upstream's projection is current, else
        every message event in sequence order; only the page asked for is read and decoded. With `tools`, the tool
        rounds too (`toolResult` messages); without, an assistant message that opens with a tool call is left out."""
        state = self.db.execute("SELECT indexed_seq, needs_rebuild FROM session_transcript_index_state WHERE "
                                "session_id = ?", (session_id,)).fetchone()
        (latest,) = self.db.execute("SELECT max(seq) FROM transcript_events WHERE session_id = ?",
                                    (session_id,)).fetchone()
        roles = ROLES_WITH_TOOLS if tools else ("user", "assistant")
        chat = (f"(e.event_json IS NULL OR json_extract(e.event_json, '$.message.role') IN {roles!r}"
                f"{'' if tools else CALLS_ONLY})")
        if state is not None and state[1] == 0 and state[0] == latest:
            source = ("FROM session_transcript_active_events a JOIN transcript_events e ON e.session_id = "
                      f"a.session_id AND e.seq = a.event_seq WHERE a.session_id = ? AND a.message_position IS NOT NULL "
                      f"AND {chat}")
            order = "a.active_position"
        else:
            source = ("FROM transcript_events e JOIN transcript_event_identities i ON i.session_id = e.session_id "
                      f"AND i.seq = e.seq WHERE e.session_id = ? AND i.event_type = 'message' AND {chat}")
            order = "e.seq"
        (total,) = self.db.execute(f"SELECT count(*) {source}", (session_id,)).fetchone() if count else (-1,)
        rows = self.db.execute(f"SELECT e.seq, e.event_json, e.event_zstd, e.event_utf8_bytes, e.created_at {source} "
                               f"ORDER BY {order} DESC LIMIT ? OFFSET ?", (session_id, limit, offset)).fetchall()
        out = []
        for seq, text, blob, size, created in reversed(rows):
            with contextlib.suppress(ValueError, orjson.JSONDecodeError):
                event = orjson.loads(text if text is not None else _zstd(blob, size))
                message = event.get("message") if isinstance(event, dict) else None
                if isinstance(message, dict) and message.get("role") in roles:
                    out.append((seq, message, created))
        return out, int(total)

    def history(self, session_key: str, limit: int, offset: int = 0, *, count: bool = True
                ) -> tuple[list[dict[str, Any]], int]:
        """The last `limit` user/assistant messages before the newest `offset` ones (oldest first), and the total
        (-1 unless `count`: a model's context needs no total)."""
        key = store_key(session_key, self.agent_id)
        stamp = self._known_stamp(key)
        if stamp is None:
            return [], 0
        recent = not count and offset == 0
        if recent and (hit := self._recent.get(key, stamp, limit)) is not None:
            return hit, -1
        window, total = self._messages(stamp[0], limit, offset, count=count)
        out = [_history_row(seq, m, created) for seq, m, created in window]
        if recent and limit > 0:
            self._recent.put(key, stamp, out, limit)
        return out, total

    def context(self, session_key: str, limit: int) -> list[dict[str, Any]]:
        """The last `limit` messages of the session as upstream stores them, tool rounds included (oldest
        first): what the model is given back (workers/agent/toolloop.py replay)."""
        key = store_key(session_key, self.agent_id)
        stamp = self._known_stamp(key)
        if stamp is None:
            return []
        if (hit := self._context.get(key, stamp, limit)) is not None:
            return hit
        out = [m for _seq, m, _ts in self._messages(stamp[0], limit, count=False, tools=True)[0]]
        if limit > 0:
            self._context.put(key, stamp, out, limit)
        return out

    def sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every session of this agent, newest first: key, session id, times, model, its message count and its entry."""
        sql = ("SELECT n.session_key, n.current_session_id, n.entry_json, n.updated_at, n.created_at, "
               "w.model_provider, w.model, s.active_message_count, s.needs_rebuild FROM session_nodes n "
               "LEFT JOIN session_windows w ON w.session_id = n.current_session_id "
               "LEFT JOIN session_transcript_index_state s ON s.session_id = n.current_session_id "
               "WHERE n.entry_valid != -1 ORDER BY n.updated_at DESC, n.session_key")
        rows = self.db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
        out = []
        for key, session_id, entry_json, updated, created, provider, model, count, stale in rows:
            entry: dict[str, Any] = {}
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(entry_json) if entry_json else {}
            if stale or count is None:
                count = self._messages(session_id, 0)[1]
            out.append({"key": key, "sessionId": session_id, "updatedAt": updated,
                        "createdAt": created if created is not None else entry.get("sessionStartedAt"),
                        "modelProvider": entry.get("modelProvider", provider), "model": entry.get("model", model),
                        "messages": count, "agentId": self.agent_id, "entry": entry})
        return out

    def usage_by_day(self, since_ms: int) -> list[dict[str, Any]]:
        """Token usage of the answers recorded since `since_ms` (their `usage`), per UTC day and model."""
        rows = self.db.execute(
            "SELECT e.event_json, e.event_zstd, e.event_utf8_bytes, e.created_at FROM transcript_events e WHERE "
            "e.created_at >= ? AND (e.event_json IS NULL OR json_extract(e.event_json, '$.message.role') = "
            "'assistant')", (since_ms,)).fetchall()
        days: dict[tuple[str, str | None], dict[str, Any]] = {}
        for text, blob, size, created in rows:
            with contextlib.suppress(ValueError, orjson.JSONDecodeError):
                message = (orjson.loads(text if text is not None else _zstd(blob, size)) or {}).get("message")
                usage = message.get("usage") if isinstance(message, dict) else None
                if message.get("role") != "assistant" or not isinstance(usage, dict):
                    continue
                ts = message.get("timestamp") if isinstance(message.get("timestamp"), int) else created
                model = f"{message['provider']}/{message['model']}" if message.get("provider") and \
                    message.get("model") else None
                day = days.setdefault((iso(ts)[:10], model), {"date": iso(ts)[:10], "model": model, "input": 0,
                                                              "output": 0, "calls": 0})
                day["input"] += int(usage.get("input") or 0)
                day["output"] += int(usage.get("output") or 0)
                day["calls"] += 1
        return list(days.values())

    # -- runs ----------------------------------------------------------------------------------------

    def run(self, idem_key: str) -> dict[str, Any] | None:
        row = self.side.execute("SELECT run_id, method, session_key, status, started_at, ended_at, error, answer "
                                "FROM runs WHERE idem_key=?", (idem_key,)).fetchone()
        return _run_row(row) if row else None

    def run_by_id(self, run_id: str) -> dict[str, Any] | None:
        row = self.side.execute("SELECT run_id, method, session_key, status, started_at, ended_at, error, answer "
                                "FROM runs WHERE run_id=? ORDER BY started_at DESC LIMIT 1", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def start_run(self, idem_key: str, run_id: str, method: str, session_key: str | None, started_at: int,
                  message: str | None = None, *, pending: bool = False) -> bool:
        """Record a run as started; False when that key already has one (the caller returns the stored one).
        `message`, the run's question, is kept until the run is closed: written with its answer in one
        transaction (`append_turn`), it is written alone if a crash ends the run first (`close_interrupted`).
        With `pending`, the record joins the runs file's open transaction (begun here if there is none) and is
        committed by the next `group_runs`: the runs a burst starts in one loop pass share one commit (the worker
        calls a run's model only once it is committed)."""
        if pending and not self.side.in_transaction:
            self.side.execute("BEGIN IMMEDIATE")
        cur = self.side.execute("INSERT OR IGNORE INTO runs(idem_key, run_id, method, session_key, status, "
                                "started_at, message) VALUES (?,?,?,?, 'running', ?, ?)",
                                (idem_key, run_id, method, session_key, started_at, message))
        if cur.rowcount == 1 and method == TASK_METHOD:
            key = store_key(session_key or "main", self.agent_id)
            with contextlib.suppress(sqlite3.Error), self.state.write():
                self.state.execute(
                    "INSERT OR IGNORE INTO task_runs (task_id, runtime, source_id, requester_session_key, owner_key, "
                    "scope_kind, child_session_key, agent_id, requester_agent_id, run_id, execution_owner_host, "
                    "execution_owner_pid, execution_owner_start_identity, task, status, delivery_status, "
                    "notify_policy, created_at, started_at, last_event_at) VALUES (?, 'cli', ?, ?, ?, 'session', ?, "
                    "?, ?, ?, ?, ?, ?, ?, 'running', 'not_applicable', 'silent', ?, ?, ?)",
                    (_task_id(run_id), run_id, key, key, key, self.agent_id, self.agent_id, run_id,
                     os.uname().nodename, os.getpid(), statedb.start_identity(os.getpid()),
                     (message or run_id)[:500], started_at, started_at, started_at))
        return cur.rowcount == 1

    def finish_run(self, idem_key: str, status: str, error: str | None, answer: Any,
                   run: tuple[str, str] | None = None) -> None:
        """The run's end and its answer; `run`, its `(runId, method)` when the caller knows them."""
        ended = now_ms()
        self.side.execute("UPDATE runs SET status=?, error=?, ended_at=?, answer=? WHERE idem_key=?",
                          (status, error, ended, orjson.dumps(answer), idem_key))
        row = run or self.side.execute("SELECT run_id, method FROM runs WHERE idem_key=?", (idem_key,)).fetchone()
        if row and row[1] == TASK_METHOD:
            summary = "completed" if status == "ok" else None
            self._end_task(row[0], _TASK_STATUS.get(status, "failed"), error, ended, summary)

    def _end_task(self, run_id: str, status: str, error: str | None, ended: int, summary: str | None = None) -> None:
        with contextlib.suppress(sqlite3.Error), self.state.write():
            self.state.execute("UPDATE task_runs SET status = ?, error = ?, ended_at = ?, last_event_at = ?, "
                               "cleanup_after = ?, terminal_summary = ? WHERE task_id = ? AND status = 'running'",
                               (status, error, ended, ended, ended + TASK_RETENTION_MS, summary, _task_id(run_id)))


def _each_in_savepoint(db: sqlite3.Connection, writes: list[Callable[[], Any]],
                       undo: Callable[[], None] | None = None) -> list[tuple[Any, Exception | None]]:
    """The writes in the open transaction, one that fails rolled back alone and its error kept. They are made
    together in one savepoint (two statements for the group, not two for each write); only when one of them
    fails are they rolled back and made again, each in a savepoint of its own (`undo` first forgets what the
    first attempt left outside the database)."""
    if len(writes) > 1:
        db.execute("SAVEPOINT together")
        try:
            together: list[tuple[Any, Exception | None]] = [(write(), None) for write in writes]
        except Exception:
            db.execute("ROLLBACK TO together")
            db.execute("RELEASE together")
            if undo is not None:
                undo()
        else:
            db.execute("RELEASE together")
            return together
    results: list[tuple[Any, Exception | None]] = []
    for write in writes:
        db.execute("SAVEPOINT grouped")
        try:
            results.append((write(), None))
        except Exception as exc:  # that write's caller gets it
            db.execute("ROLLBACK TO grouped")
            results.append((None, exc))
        db.execute("RELEASE grouped")
    return results


def _task_id(run_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"openclaw-sup:agent-run:{run_id}"))


def _run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"runId": row[0], "method": row[1], "sessionKey": row[2], "status": row[3], "startedAt": row[4],
            "endedAt": row[5], "error": row[6], "answer": orjson.loads(row[7]) if row[7] else None}
