"""The scheduler's store: jobs and run history in upstream's tables of the shared state database.

Jobs are rows of `cron_jobs` (`<stateDir>/state/openclaw.sqlite`, config/statedb.py) under upstream's store key
(the absolute path of `cron.store`, by default `<stateDir>/cron/jobs.json`): the job object in `job_json` with
an empty `state`, its state in `state_json`, and the columns upstream queries (name, enabled, agent, payload
kind, schedule identity, sort order). A run is a `task_runs` row (runtime `cron`, kind `automation_run`, source
the job id, run id `cron:<jobId>:<startedAt>:<receiptId>:<runId>`) whose `detail_json` is the run-history entry
(`kind: "cron-run"`, `storeKey`), plus a `cron_run_receipts` row naming the owning process (pid and start
identity), as the real gateway writes them: `openclaw cron list|runs`, `openclaw tasks list` and the real
gateway read our jobs and runs, and we read theirs.

What upstream has no place for lives in `<stateDir>/state/openclaw-sup-scheduler.sqlite`, a name upstream never
uses: the process group of a running command (swept after a crash), pending system events and our settings.

Every change is one transaction (WAL, synchronous=NORMAL): a SIGKILL leaves the state before or after it. A run
is written `running` (with the job's `runningAtMs`) before it starts, then finished together with the job's new
state and the retention pass; a `running` row of ours found at start-up is a run a crash interrupted.
Retention: 7 days and at most 2000 runs per job, pruned on write (`cleanup_after` says the same to upstream): the
count with every finished run, the age (a scan of the store's runs) at most once a minute.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.config import dbtemplate, sqlitedb, statedb, sup_layout
from openclaw_sup.config.paths import ensure_private_dir
from openclaw_sup.config.sqlitedb import immediate
from openclaw_sup.workers.scheduler.jobs import config_revision

MAX_AGE_MS = 7 * 86_400_000
MAX_ROWS_PER_JOB = 2000
AGE_PASS_EVERY_MS = 60_000  # the age pass scans every cron run of the store (upstream indexes no start time)
MAX_EVENTS_PER_AGENT = 20
SIDE_NAME = "openclaw-sup-scheduler.sqlite"
RUN_IDS = uuid.UUID("6f1d3c52-8a4b-4f0e-9a57-2c1b5d7e9f31")  # namespace: task and receipt ids from our run ids

SIDE_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_processes (
    run_id TEXT PRIMARY KEY,
    pgid INTEGER NOT NULL,
    pgid_started REAL
);
CREATE TABLE IF NOT EXISTS system_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    text TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def create_side(path: Path) -> None:
    """A new side file is a copy of a template of its schema (config/dbtemplate.py): one fsync of the whole copy,
    where creating it with its DDL costs six, on the path of a cold start. An existing file is left as it is;
    where no template can be had or copied, the store's `executescript` creates the tables."""
    if not path.exists():
        dbtemplate.create(path, SIDE_NAME.removesuffix(".sqlite"), f"BEGIN IMMEDIATE;{SIDE_SCHEMA}", sqlitedb.connect)


_TASK_STATUS = {"succeeded": "succeeded", "failed": "failed"}
_ENTRY_COLUMNS = ("kind", "storeKey")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def default_store_key(state_dir: Path) -> str:
    """Upstream's key for the default cron store: the path of its legacy `cron/jobs.json`."""
    return os.path.abspath(state_dir / "cron" / "jobs.json")


def task_id(run_id: str) -> str:
    return str(uuid.uuid5(RUN_IDS, f"task:{run_id}"))


def receipt_id(run_id: str) -> str:
    return str(uuid.uuid5(RUN_IDS, f"receipt:{run_id}"))


def task_run_id(entry: dict[str, Any]) -> str:
    return f"cron:{entry['jobId']}:{entry['runAtMs']}:{receipt_id(entry['runId'])}:{entry['runId']}"


def _task_status(entry: dict[str, Any]) -> str:
    if entry.get("interrupted"):
        return "lost"
    return _TASK_STATUS.get(str(entry.get("completionStatus")), "failed" if entry.get("status") == "error"
                            else "succeeded")


def _job_row(job: dict[str, Any]) -> tuple[Any, ...]:
    definition = {k: v for k, v in job.items() if k != "state"}
    schedule = job.get("schedule") or {}
    identity = {"version": 2, "enabled": bool(job.get("enabled", True)), "schedule": schedule,
                "hasTrigger": bool(job.get("trigger"))}
    return (job.get("declarationKey"), job.get("name") or job["id"], job.get("description"),
            int(bool(job.get("enabled", True))), job.get("agentId"), (job.get("payload") or {}).get("kind", ""),
            _dumps({**definition, "state": {}}), _dumps(job.get("state") or {}), _dumps(identity),
            int(job.get("updatedAtMs") or job.get("createdAtMs") or 0))


class Store:
    db = sqlitedb.OnUse(lambda store: statedb.open_state_db(store.path))
    """The shared state database: closed while the scheduler idles (its schema alone holds ~250 KB of SQLite memory
    per connection), opened again by the next use (a few ms)."""
    side = sqlitedb.OnUse(lambda store: sqlitedb.connect(store.side_path, timeout=statedb.BUSY_TIMEOUT_MS / 1000))
    """The side file (system events, settings): closed while the scheduler idles, like the state database."""

    def __init__(self, path: Path, *, store_key: str | None = None, max_age_ms: int = MAX_AGE_MS,
                 max_rows: int = MAX_ROWS_PER_JOB) -> None:
        """`path` is the shared state database; `store_key` upstream's key for this cron store."""
        self.path = path
        self.store_key = store_key or default_store_key(path.parent.parent)
        self.max_age_ms = max_age_ms
        self.max_rows = max_rows
        self._aged_at: int | None = None  # when the last age pass ran
        ensure_private_dir(path.parent)
        self._db: statedb.StateConnection | None = statedb.open_state_db(path)  # at once: a bad file fails the start
        self.side_path = path.parent / SIDE_NAME
        self._side: sqlite3.Connection | None = None
        try:
            create_side(self.side_path)
            self.side.executescript(SIDE_SCHEMA)
        except BaseException:
            self.close()
            raise
        self.pid = os.getpid()
        self.pid_start = statedb.start_identity(self.pid)
        sup_layout.import_once(path.parent / sup_layout.SUP_CRON, "jobs", self._import)

    def _import(self, old: sqlite3.Connection) -> None:
        """Jobs, runs, pending events and settings of openclaw-sup's earlier `state/cron.sqlite`."""
        jobs = [orjson.loads(b) for (b,) in old.execute("SELECT body FROM jobs ORDER BY rowid")]
        runs = [(orjson.loads(e), status, pgid, started) for e, status, pgid, started in old.execute(
            "SELECT entry, status, pgid, pgid_started FROM runs ORDER BY started_at_ms, rowid")]
        events = old.execute("SELECT agent_id, text, ts_ms FROM system_events ORDER BY id").fetchall()
        meta = old.execute("SELECT key, value FROM meta").fetchall()
        by_id = {j["id"]: j for j in jobs if isinstance(j, dict) and isinstance(j.get("id"), str)}
        with self.tx():
            for job in by_id.values():
                self._put(job)
            for entry, status, _pgid, _started in runs:
                job = by_id.get(entry.get("jobId")) or {"id": entry.get("jobId"), "name": entry.get("jobName")}
                self._insert_run(job, {**entry, "status": "running"}, owner=None)
                if status != "running":
                    self._finish(entry)
        for entry, status, pgid, started in runs:
            if status == "running" and pgid:
                self.record_process(entry["runId"], pgid, started)
        with immediate(self.side):
            self.side.executemany("INSERT INTO system_events (agent_id, text, ts_ms) VALUES (?, ?, ?)", events)
            self.side.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", meta)

    def release_memory(self) -> None:
        """Close both connections unless one is inside a transaction; the next use opens each again."""
        sqlitedb.close_idle(self, "_db", "_side")

    def close(self) -> None:
        for db in (self._db, self._side):
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    def tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self.db.write()

    # -- jobs -----------------------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        """Every job of this store, in upstream's order; a row whose JSON is unreadable comes back as its text."""
        out: list[Any] = []
        for job_json, state_json, updated in self.db.execute(
                "SELECT job_json, state_json, updated_at FROM cron_jobs WHERE store_key = ? "
                "ORDER BY sort_order, updated_at, job_id", (self.store_key,)):
            try:
                job = orjson.loads(job_json)
                state = orjson.loads(state_json or "{}")
            except orjson.JSONDecodeError:
                out.append(job_json)
                continue
            if isinstance(job, dict):
                job["state"] = state if isinstance(state, dict) else {}
                job.setdefault("updatedAtMs", updated)
            out.append(job)
        return out

    def _put(self, job: dict[str, Any]) -> None:
        (declaration, name, description, enabled, agent, kind, job_json, state_json, identity,
         updated) = _job_row(job)
        now = statedb.now_ms()
        self.db.execute(
            "INSERT INTO cron_jobs (store_key, job_id, declaration_key, name, description, enabled, agent_id, "
            "payload_kind, job_json, state_json, runtime_updated_at_ms, schedule_identity, sort_order, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT coalesce(max(sort_order) + 1, 0) FROM cron_jobs "
            "WHERE store_key = ?), ?) ON CONFLICT(store_key, job_id) DO UPDATE SET "
            "declaration_key = excluded.declaration_key, name = excluded.name, description = excluded.description, "
            "enabled = excluded.enabled, agent_id = excluded.agent_id, payload_kind = excluded.payload_kind, "
            "job_json = excluded.job_json, state_json = excluded.state_json, "
            "runtime_updated_at_ms = excluded.runtime_updated_at_ms, schedule_identity = excluded.schedule_identity, "
            "updated_at = excluded.updated_at",
            (self.store_key, job["id"], declaration, name, description, enabled, agent, kind, job_json, state_json,
             now, identity, self.store_key, updated))

    def _delete(self, job_id: str) -> int:
        self.db.execute("DELETE FROM cron_job_scratch WHERE store_key = ? AND job_id = ?", (self.store_key, job_id))
        return self.db.execute("DELETE FROM cron_jobs WHERE store_key = ? AND job_id = ?",
                               (self.store_key, job_id)).rowcount

    def save_job(self, job: dict[str, Any]) -> None:
        with self.tx():
            self._put(job)

    def save_jobs(self, jobs: Sequence[dict[str, Any]], delete_ids: Sequence[str] = ()) -> None:
        with self.tx():
            for job in jobs:
                self._put(job)
            for job_id in delete_ids:
                self._delete(job_id)

    def delete_job(self, job_id: str) -> bool:
        with self.tx():
            return self._delete(job_id) > 0

    # -- runs -----------------------------------------------------------------------------------------

    def begin_run(self, job: dict[str, Any], entry: dict[str, Any]) -> None:
        """The run as `running` (task and receipt) and the job marked running, in one transaction."""
        with self.tx():
            self._insert_run(job, entry, owner=self.pid)
            self._put(job)

    def _insert_run(self, job: dict[str, Any], entry: dict[str, Any], *, owner: int | None) -> None:
        run_id, started = entry["runId"], int(entry["runAtMs"])
        owner_start = self.pid_start if owner == self.pid else None
        detail = {"storeKey": self.store_key, **{k: v for k, v in entry.items() if k not in ("status", "action")}}
        self.db.execute("UPDATE cron_run_receipts SET status = 'superseded', finished_at_ms = ? WHERE store_key = ? "
                        "AND job_id = ? AND status = 'running'", (started, self.store_key, entry["jobId"]))
        self.db.execute(
            "INSERT OR IGNORE INTO cron_run_receipts (receipt_id, store_key, job_id, config_revision, agent_id, "
            "request_run_id, status, owner_pid, owner_start_time, started_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
            (receipt_id(run_id), self.store_key, entry["jobId"], config_revision(job), job.get("agentId") or "main",
             run_id, owner or 0, owner_start, started))
        self.db.execute(
            "INSERT OR IGNORE INTO task_runs (task_id, runtime, task_kind, source_id, requester_session_key, "
            "owner_key, scope_kind, child_session_key, agent_id, run_id, execution_owner_host, execution_owner_pid, "
            "execution_owner_start_identity, label, task, status, delivery_status, notify_policy, created_at, "
            "started_at, last_event_at, progress_summary, detail_json) VALUES (?, 'cron', 'automation_run', ?, "
            "'', '', 'system', ?, ?, ?, ?, ?, ?, ?, ?, 'running', 'not_applicable', 'silent', ?, ?, ?, "
            "'Running automation.', ?)",
            (task_id(run_id), entry["jobId"], entry.get("sessionKey"), job.get("agentId") or "main",
             task_run_id(entry), os.uname().nodename if owner else None, owner, owner_start,
             job.get("name"), job.get("name") or entry["jobId"], started, started, started, _dumps(detail)))

    def record_process(self, run_id: str, pgid: int, started: float | None) -> None:
        """The process group a command run lives in, so a restart can sweep what a crash left behind."""
        with immediate(self.side):
            self.side.execute("INSERT OR REPLACE INTO run_processes (run_id, pgid, pgid_started) VALUES (?, ?, ?)",
                              (run_id, pgid, started))

    def finish_run(self, entry: dict[str, Any], job: dict[str, Any] | None, *, delete_job: str | None = None,
                   now_ms: int) -> None:
        """The finished run, the job's new state (or its deletion) and the retention pass, in one transaction."""
        with self.tx():
            self._finish(entry)
            if job is not None:
                self._put(job)
            if delete_job:
                self._delete(delete_job)
            self._prune(entry["jobId"], now_ms)
        with immediate(self.side):
            self.side.execute("DELETE FROM run_processes WHERE run_id = ?", (entry["runId"],))

    def _finish(self, entry: dict[str, Any]) -> None:
        run_id, ended = entry["runId"], int(entry["ts"])
        status = _task_status(entry)
        self.db.execute(
            "UPDATE task_runs SET status = ?, ended_at = ?, last_event_at = ?, cleanup_after = ?, error = ?, "
            "progress_summary = NULL, terminal_summary = ?, detail_json = ? WHERE task_id = ?",
            (status, ended, ended, ended + self.max_age_ms, entry.get("error"), entry.get("summary"),
             _dumps({"kind": "cron-run", "storeKey": self.store_key, **entry}), task_id(run_id)))
        receipt = "skipped" if entry.get("status") == "skipped" else \
            {"lost": "interrupted", "succeeded": "ok"}.get(status, "error")
        self.db.execute("UPDATE cron_run_receipts SET status = ?, finished_at_ms = ?, error_text = ? "
                        "WHERE receipt_id = ? AND status = 'running'", (receipt, ended, entry.get("error"),
                                                                       receipt_id(run_id)))

    def _prune(self, job_id: str, now_ms: int) -> None:
        if self._aged_at is None or not 0 <= now_ms - self._aged_at < AGE_PASS_EVERY_MS:
            self._aged_at = now_ms
            self._prune_old(now_ms)
        (count,) = self.db.execute("SELECT count(*) FROM task_runs WHERE runtime = 'cron' AND source_id = ?",
                                   (job_id,)).fetchone()
        if count > self.max_rows:
            self.db.execute(
                "DELETE FROM task_runs WHERE runtime = 'cron' AND source_id = ? AND status != 'running' AND "
                "task_id NOT IN (SELECT task_id FROM task_runs WHERE runtime = 'cron' AND source_id = ? "
                "ORDER BY coalesce(started_at, created_at) DESC, rowid DESC LIMIT ?)", (job_id, job_id, self.max_rows))

    def _prune_old(self, now_ms: int) -> None:
        """The store's finished runs and receipts older than `max_age_ms`."""
        self.db.execute("DELETE FROM task_runs WHERE runtime = 'cron' AND status != 'running' AND "
                        "coalesce(started_at, created_at) < ? AND json_extract(detail_json, '$.storeKey') = ?",
                        (now_ms - self.max_age_ms, self.store_key))
        self.db.execute("DELETE FROM cron_run_receipts WHERE store_key = ? AND status != 'running' AND "
                        "started_at_ms < ?", (self.store_key, now_ms - self.max_age_ms))

    def prune(self, job_id: str, now_ms: int) -> None:
        with self.tx():
            self._prune(job_id, now_ms)

    def running(self) -> list[tuple[dict[str, Any], int | None, float | None]]:
        """Runs this store left `running` under a process that is gone: what a crash interrupted.

        A run owned by a live process other than ours (the real gateway sharing the store) is not ours to close.
        """
        out = []
        rows = self.db.execute(
            "SELECT detail_json, source_id, started_at, child_session_key, execution_owner_pid, "
            "execution_owner_start_identity FROM task_runs WHERE runtime = 'cron' AND status = 'running' AND "
            "json_extract(detail_json, '$.storeKey') = ?", (self.store_key,)).fetchall()
        for detail_json, job_id, started, session_key, owner, owner_start in rows:
            if owner and owner != self.pid and owner_start is not None and \
                    statedb.start_identity(owner) == owner_start:
                continue
            detail = orjson.loads(detail_json or "{}")
            run_id = detail.get("runId")
            if not isinstance(run_id, str):
                continue
            entry = {k: v for k, v in detail.items() if k not in _ENTRY_COLUMNS}
            entry.update(jobId=job_id, runAtMs=started, status="running", action="started")
            if session_key:
                entry["sessionKey"] = session_key
            proc = self.side.execute("SELECT pgid, pgid_started FROM run_processes WHERE run_id = ?",
                                     (run_id,)).fetchone()
            out.append((entry, proc[0] if proc else None, proc[1] if proc else None))
        return out

    def runs_page(self, *, job_id: str | None = None, run_id: str | None = None,
                  statuses: Sequence[str] = (), delivery_statuses: Sequence[str] = (), query: str | None = None,
                  include_running: bool = False, sort_dir: str = "desc", limit: int = 50,
                  offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        where = ["runtime = 'cron'", "json_extract(detail_json, '$.storeKey') = ?"]
        args: list[Any] = [self.store_key]
        if job_id is not None:
            where.append("source_id = ?")
            args.append(job_id)
        if run_id is not None:
            where.append("json_extract(detail_json, '$.runId') = ?")
            args.append(run_id)
        run_status = "CASE WHEN status = 'running' THEN 'running' ELSE json_extract(detail_json, '$.status') END"
        if statuses:
            where.append(f"{run_status} IN ({','.join('?' * len(statuses))})")
            args += list(statuses)
        elif not include_running:
            where.append("status != 'running'")
        if delivery_statuses:
            where.append("coalesce(json_extract(detail_json, '$.deliveryStatus'), 'not-requested') IN "
                         f"({','.join('?' * len(delivery_statuses))})")
            args += list(delivery_statuses)
        if query:
            where.append("lower(coalesce(terminal_summary, '') || ' ' || coalesce(error, '') || ' ' || "
                         "coalesce(label, '')) LIKE ?")
            args.append(f"%{query.lower()}%")
        clause = " AND ".join(where)
        (total,) = self.db.execute(f"SELECT count(*) FROM task_runs WHERE {clause}", args).fetchone()
        order = "ASC" if sort_dir == "asc" else "DESC"
        rows = self.db.execute(
            f"SELECT detail_json, source_id, status, started_at, ended_at, child_session_key, error, "
            f"terminal_summary, label FROM task_runs WHERE {clause} ORDER BY coalesce(started_at, created_at) "
            f"{order}, rowid {order} LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        return [_entry(*row) for row in rows], int(total)

    # -- pending system events (wake, systemEvent payloads) for an agent's next heartbeat ---------------

    def add_event(self, agent_id: str, text: str, ts_ms: int) -> None:
        with immediate(self.side):
            self.side.execute("INSERT INTO system_events (agent_id, text, ts_ms) VALUES (?, ?, ?)",
                              (agent_id, text, ts_ms))
            self.side.execute("DELETE FROM system_events WHERE agent_id = ? AND id NOT IN (SELECT id FROM "
                              "system_events WHERE agent_id = ? ORDER BY id DESC LIMIT ?)",
                              (agent_id, agent_id, MAX_EVENTS_PER_AGENT))

    def events(self, agent_id: str) -> list[tuple[int, str, int]]:
        return self.side.execute("SELECT id, text, ts_ms FROM system_events WHERE agent_id = ? ORDER BY id",
                                 (agent_id,)).fetchall()

    def drop_events(self, ids: Sequence[int]) -> None:
        if ids:
            with immediate(self.side):
                self.side.execute(f"DELETE FROM system_events WHERE id IN ({','.join('?' * len(ids))})", list(ids))

    # -- meta -----------------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.side.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with immediate(self.side):
            self.side.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                              "value = excluded.value", (key, _dumps(value)))


def _entry(detail_json: str | None, job_id: str, status: str, started: int | None, ended: int | None,
           session_key: str | None, error: str | None, summary: str | None, label: str | None) -> dict[str, Any]:
    """A task row as the run-history entry `cron.runs` returns (upstream's reading of the same row)."""
    detail = orjson.loads(detail_json or "{}")
    entry: dict[str, Any] = {k: v for k, v in detail.items() if k not in _ENTRY_COLUMNS}
    if error and "error" not in entry:
        entry["error"] = error
    if summary and "summary" not in entry:
        entry["summary"] = summary
    entry.update(jobId=job_id, runAtMs=entry.get("runAtMs", started))
    if status == "running":
        entry.update(status="running", action="started", ts=started)
    else:
        entry.update(action="finished", ts=ended if ended is not None else entry.get("ts"))
    if session_key and not entry.get("sessionKey"):
        entry["sessionKey"] = session_key
    if label and not entry.get("jobName"):
        entry["jobName"] = label
    return entry
