"""One agent's durable state (SQLite, WAL): session transcripts and runs keyed by idempotency key.

The agent worker is the only process that opens it. A run is written `running` before the model is called
and finished with its answer after, so a resent request with the same key returns the stored answer instead
of running again, and a run that a crash cut short is found `running` at start and closed as an error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.config import sqlitedb
from openclaw_sup.config.paths import ensure_private_dir

DB_NAME = "openclaw-agent.sqlite"
INTERRUPTED = "interrupted: the agent worker stopped while this run was in progress; send it again with a new " \
              "idempotencyKey to retry"

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_key TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    ts INTEGER NOT NULL,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session_key, id);
CREATE TABLE IF NOT EXISTS runs (
    idem_key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    method TEXT NOT NULL,
    session_key TEXT,
    status TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    error TEXT,
    answer BLOB
);
CREATE INDEX IF NOT EXISTS runs_by_id ON runs(run_id);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def db_path(state_dir: Path, agent_id: str) -> Path:
    return state_dir / "agents" / agent_id / "agent" / DB_NAME


class AgentStore:
    def __init__(self, path: Path) -> None:
        ensure_private_dir(path.parent)
        self.path = path
        self.db = sqlitedb.connect(path, timeout=5.0)
        self.db.executescript(SCHEMA)
        path.chmod(0o600)

    def close(self) -> None:
        self.db.close()

    def close_interrupted(self) -> list[tuple[str, str | None]]:
        """Runs left `running` by a crash become errors; answers their `(runId, sessionKey)`."""
        rows = self.db.execute("SELECT run_id, session_key FROM runs WHERE status='running'").fetchall()
        self.db.execute("UPDATE runs SET status='error', error=?, ended_at=? WHERE status='running'",
                        (INTERRUPTED, now_ms()))
        return [(r[0], r[1]) for r in rows]

    # -- transcript ----------------------------------------------------------------------------------

    def append(self, session_key: str, role: str, text: str, run_id: str | None = None) -> int:
        cur = self.db.execute("INSERT INTO messages(session_key, role, text, ts, run_id) VALUES (?,?,?,?,?)",
                              (session_key, role, text, now_ms(), run_id))
        return int(cur.lastrowid or 0)

    def append_message(self, session_key: str, message: dict[str, Any], run_id: str | None = None) -> int:
        """A tool round's record (the assistant's tool calls, a tool result), kept as its JSON."""
        role = "toolCall" if message.get("role") == "assistant" else str(message.get("role"))
        return self.append(session_key, role, orjson.dumps(message).decode(), run_id)

    def history(self, session_key: str, limit: int, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The last `limit` messages before the newest `offset` ones (oldest first), and the total count."""
        total = self.db.execute("SELECT COUNT(*) FROM messages WHERE session_key=?", (session_key,)).fetchone()[0]
        rows = self.db.execute(
            "SELECT id, role, text, ts, run_id FROM messages WHERE session_key=? ORDER BY id DESC LIMIT ? OFFSET ?",
            (session_key, limit, offset)).fetchall()
        return [{"id": r[0], "role": r[1], "text": r[2], "ts": r[3], "runId": r[4]} for r in reversed(rows)], total

    # -- runs ----------------------------------------------------------------------------------------

    def run(self, idem_key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT run_id, method, session_key, status, started_at, ended_at, error, answer "
                              "FROM runs WHERE idem_key=?", (idem_key,)).fetchone()
        return _run_row(row) if row else None

    def run_by_id(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT run_id, method, session_key, status, started_at, ended_at, error, answer "
                              "FROM runs WHERE run_id=? ORDER BY started_at DESC LIMIT 1", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def start_run(self, idem_key: str, run_id: str, method: str, session_key: str | None, started_at: int) -> bool:
        """Record a run as started; False when that key already has one (the caller returns the stored one)."""
        cur = self.db.execute("INSERT OR IGNORE INTO runs(idem_key, run_id, method, session_key, status, started_at)"
                              " VALUES (?,?,?,?, 'running', ?)", (idem_key, run_id, method, session_key, started_at))
        return cur.rowcount == 1

    def finish_run(self, idem_key: str, status: str, error: str | None, answer: Any) -> None:
        self.db.execute("UPDATE runs SET status=?, error=?, ended_at=?, answer=? WHERE idem_key=?",
                        (status, error, now_ms(), orjson.dumps(answer), idem_key))


def _run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"runId": row[0], "method": row[1], "sessionKey": row[2], "status": row[3], "startedAt": row[4],
            "endedAt": row[5], "error": row[6], "answer": orjson.loads(row[7]) if row[7] else None}
