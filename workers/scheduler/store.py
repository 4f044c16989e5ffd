"""The scheduler's SQLite store (`<stateDir>/state/cron.sqlite`), owned by the scheduler worker alone.

WAL with synchronous=NORMAL: every change is one transaction, so a SIGKILL at any instant leaves either the
state before it or after it. A run is written twice: as `running` (with the job's `runningAtMs`) before it
starts, then finished together with the job's new state and the retention pass. A `running` row found at
start-up is a run a crash interrupted. Retention: 7 days and at most 2000 runs per job, pruned on write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.config.paths import ensure_private_dir
from openclaw_sup.config.sqlitedb import immediate

SCHEMA_VERSION = 1
MAX_AGE_MS = 7 * 86_400_000
MAX_ROWS_PER_JOB = 2000
MAX_EVENTS_PER_AGENT = 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    declaration_key TEXT UNIQUE,
    enabled INTEGER NOT NULL,
    next_run_at_ms INTEGER,
    updated_at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    delivery_status TEXT,
    pgid INTEGER,
    pgid_started REAL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id, started_at_ms);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at_ms);
CREATE INDEX IF NOT EXISTS runs_running ON runs (status) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS system_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    text TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Store:
    def __init__(self, path: Path, *, max_age_ms: int = MAX_AGE_MS, max_rows: int = MAX_ROWS_PER_JOB) -> None:
        self.path = path
        self.max_age_ms = max_age_ms
        self.max_rows = max_rows
        ensure_private_dir(path.parent)
        fresh = not path.exists()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if fresh:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        with self.tx():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate(self.db)

    # -- jobs -----------------------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for (body,) in self.db.execute("SELECT body FROM jobs ORDER BY rowid")]

    def _put(self, job: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO jobs (id, declaration_key, enabled, next_run_at_ms, updated_at_ms, body) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET declaration_key = excluded.declaration_key, "
            "enabled = excluded.enabled, next_run_at_ms = excluded.next_run_at_ms, "
            "updated_at_ms = excluded.updated_at_ms, body = excluded.body",
            (job["id"], job.get("declarationKey"), int(bool(job.get("enabled", True))),
             (job.get("state") or {}).get("nextRunAtMs"), int(job.get("updatedAtMs") or 0), _dumps(job)))

    def save_job(self, job: dict[str, Any]) -> None:
        with self.tx():
            self._put(job)

    def save_jobs(self, jobs: Sequence[dict[str, Any]], delete_ids: Sequence[str] = ()) -> None:
        with self.tx():
            for job in jobs:
                self._put(job)
            for job_id in delete_ids:
                self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def delete_job(self, job_id: str) -> bool:
        with self.tx():
            return self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    # -- runs -----------------------------------------------------------------------------------------

    def begin_run(self, job: dict[str, Any], entry: dict[str, Any]) -> None:
        """The run row as `running` and the job marked running, in one transaction, before the run starts."""
        with self.tx():
            self.db.execute(
                "INSERT INTO runs (run_id, job_id, status, started_at_ms, entry) VALUES (?, ?, 'running', ?, ?)",
                (entry["runId"], entry["jobId"], entry["runAtMs"], _dumps(entry)))
            self._put(job)

    def record_process(self, run_id: str, pgid: int, started: float | None) -> None:
        """The process group a command run lives in, so a restart can sweep what a crash left behind."""
        with self.tx():
            self.db.execute("UPDATE runs SET pgid = ?, pgid_started = ? WHERE run_id = ?", (pgid, started, run_id))

    def finish_run(self, entry: dict[str, Any], job: dict[str, Any] | None, *, delete_job: str | None = None,
                   now_ms: int) -> None:
        """The finished run, the job's new state (or its deletion) and the retention pass, in one transaction."""
        with self.tx():
            self.db.execute(
                "UPDATE runs SET status = ?, finished_at_ms = ?, delivery_status = ?, entry = ? WHERE run_id = ?",
                (entry["status"], entry["ts"], entry.get("deliveryStatus"), _dumps(entry), entry["runId"]))
            if job is not None:
                self._put(job)
            if delete_job:
                self.db.execute("DELETE FROM jobs WHERE id = ?", (delete_job,))
            self._prune(entry["jobId"], now_ms)

    def _prune(self, job_id: str, now_ms: int) -> None:
        self.db.execute("DELETE FROM runs WHERE started_at_ms < ? AND status != 'running'", (now_ms - self.max_age_ms,))
        (count,) = self.db.execute("SELECT count(*) FROM runs WHERE job_id = ?", (job_id,)).fetchone()
        if count > self.max_rows:
            self.db.execute(
                "DELETE FROM runs WHERE job_id = ? AND status != 'running' AND run_id NOT IN "
                "(SELECT run_id FROM runs WHERE job_id = ? ORDER BY started_at_ms DESC, rowid DESC LIMIT ?)",
                (job_id, job_id, self.max_rows))

    def prune(self, job_id: str, now_ms: int) -> None:
        with self.tx():
            self._prune(job_id, now_ms)

    def running(self) -> list[tuple[dict[str, Any], int | None, float | None]]:
        """Runs left `running`: what a crash interrupted."""
        rows = self.db.execute("SELECT entry, pgid, pgid_started FROM runs WHERE status = 'running'").fetchall()
        return [(orjson.loads(entry), pgid, started) for entry, pgid, started in rows]

    def runs_page(self, *, job_id: str | None = None, run_id: str | None = None,
                  statuses: Sequence[str] = (), delivery_statuses: Sequence[str] = (), query: str | None = None,
                  include_running: bool = False, sort_dir: str = "desc", limit: int = 50,
                  offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        where, args = [], []
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += list(statuses)
        elif not include_running:
            where.append("status != 'running'")
        if delivery_statuses:
            where.append(f"coalesce(delivery_status, 'not-requested') IN ({','.join('?' * len(delivery_statuses))})")
            args += list(delivery_statuses)
        if query:
            where.append("lower(coalesce(json_extract(entry, '$.summary'), '') || ' ' || "
                         "coalesce(json_extract(entry, '$.error'), '') || ' ' || "
                         "coalesce(json_extract(entry, '$.jobName'), '')) LIKE ?")
            args.append(f"%{query.lower()}%")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        (total,) = self.db.execute(f"SELECT count(*) FROM runs {clause}", args).fetchone()
        order = "ASC" if sort_dir == "asc" else "DESC"
        rows = self.db.execute(f"SELECT entry FROM runs {clause} ORDER BY started_at_ms {order}, rowid {order} "
                               "LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        return [orjson.loads(entry) for (entry,) in rows], int(total)

    # -- pending system events (wake, systemEvent payloads) for an agent's next heartbeat ---------------

    def add_event(self, agent_id: str, text: str, ts_ms: int) -> None:
        with self.tx():
            self.db.execute("INSERT INTO system_events (agent_id, text, ts_ms) VALUES (?, ?, ?)",
                            (agent_id, text, ts_ms))
            self.db.execute("DELETE FROM system_events WHERE agent_id = ? AND id NOT IN (SELECT id FROM system_events "
                            "WHERE agent_id = ? ORDER BY id DESC LIMIT ?)", (agent_id, agent_id, MAX_EVENTS_PER_AGENT))

    def events(self, agent_id: str) -> list[tuple[int, str, int]]:
        return self.db.execute("SELECT id, text, ts_ms FROM system_events WHERE agent_id = ? ORDER BY id",
                               (agent_id,)).fetchall()

    def drop_events(self, ids: Sequence[int]) -> None:
        if ids:
            with self.tx():
                self.db.execute(f"DELETE FROM system_events WHERE id IN ({','.join('?' * len(ids))})", list(ids))

    # -- meta -----------------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self.tx():
            self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                            "value = excluded.value", (key, _dumps(value)))
