"""Upstream's SQLite files: the shared state database and each agent's database, opened or created in its format.

`<stateDir>/state/openclaw.sqlite` (schema 18, role `global`) and `<stateDir>/agents/<id>/agent/
openclaw-agent.sqlite` (schema 23, role `agent`) belong to upstream: the real CLI and gateway read them with
strict checks (PRAGMA user_version, a `schema_meta` row naming the owner, the whole canonical schema). A file we
create is therefore created whole, from the DDL the real CLI 2026.9.6 writes on a fresh state dir (shipped in
`upstream_schema/`; tests/test_state_schema.py compares it with what the real CLI creates; a new file is a copy of
a template built from that DDL, config/dbtemplate.py), with the same ownership row and pragmas (WAL,
incremental auto-vacuum, foreign keys, 5 s busy timeout). A file at another version is never migrated here: an
older one is refused naming `openclaw doctor --fix` (upstream's migration), a newer one naming the version we
understand. The files and their `-wal`/`-shm` are 0600, their directory 0700.
Writes go through `StateConnection.write()`: upstream's cross-process write coordinator (for the shared database)
around one BEGIN IMMEDIATE transaction, as upstream's own writers do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from openclaw_sup.config import dbtemplate, sqlitedb

STATE_SCHEMA_VERSION = 18
AGENT_SCHEMA_VERSION = 23
APP_VERSION = "2026.9.6"  # the upstream release whose schemas these are
BUSY_TIMEOUT_MS = 5000  # upstream's OPENCLAW_SQLITE_BUSY_TIMEOUT_MS
WAL_SIZE_LIMIT = 64 << 20  # upstream's DEFAULT_SQLITE_WAL_JOURNAL_SIZE_LIMIT_BYTES
AGENT_DB_NAME = "openclaw-agent.sqlite"
FIX = "run `openclaw doctor --fix` (the real CLI migrates it), then start the gateway again"


class StateDbError(RuntimeError):
    """A database at upstream's path we must not write: the message names the file and the fix."""


def state_db_path(state_dir: Path) -> Path:
    return state_dir / "state" / "openclaw.sqlite"


def agent_db_path(state_dir: Path, agent_id: str) -> Path:
    return state_dir / "agents" / agent_id / "agent" / AGENT_DB_NAME


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _octet_length(value: object) -> int | None:
    """SQLite 3.43's octet_length(), which upstream's agent schema uses in a CHECK; older SQLite lacks it."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return len(value)
    return len(str(value).encode())


def _ddl(name: str) -> str:
    """A shipped DDL file (package data beside this module; `importlib.resources` costs a worker 2 MB)."""
    return (Path(__file__).parent / "upstream_schema" / name).read_text()


class WriteGate:
    """Upstream's cross-process write coordinator for one database: an EXCLUSIVE transaction on
    `/tmp/openclaw-state-locks-<uid>/state-lifecycle.<first 8 hex of sha256(realpath)>.lock.sqlite`, held around
    each write transaction, so our writes queue with the real CLI's and gateway's exactly as theirs queue with
    each other (a database write lock alone would still be correct; this keeps upstream's own ordering)."""

    def __init__(self, db_path: Path) -> None:
        digest = hashlib.sha256(os.path.realpath(db_path).encode()).hexdigest()[:8]
        directory = Path(os.path.realpath("/tmp")) / f"openclaw-state-locks-{os.getuid()}"
        self.path = directory / f"state-lifecycle.{digest}.lock.sqlite"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=MEMORY")
        return self._db

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            try:
                gate = self._open()
                gate.execute("BEGIN EXCLUSIVE")
            except (OSError, sqlite3.Error):
                gate = None  # no coordinator (read-only /tmp, another owner): SQLite's own lock still serialises
            try:
                yield
            finally:
                if gate is not None:
                    gate.execute("ROLLBACK")

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


class StateConnection(sqlite3.Connection):
    """A connection to one of upstream's databases; `write()` is the only way our stores write to it."""

    gate: WriteGate | None = None

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Upstream's write coordinator (the shared state database has one), then BEGIN IMMEDIATE ... COMMIT
        (ROLLBACK on any error)."""
        with self.gate.held() if self.gate else contextlib.nullcontext(), sqlitedb.immediate(self):
            yield self

    def close(self) -> None:
        if self.gate:
            self.gate.close()
        super().close()


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o700)


def _functions(db: sqlite3.Connection) -> None:
    """The SQL functions upstream's schemas name."""
    db.create_function("octet_length", 1, _octet_length, deterministic=True)


def _plain(path: Path) -> sqlite3.Connection:
    """An autocommit connection with upstream's SQL functions (a template's or a copy's)."""
    db = sqlite3.connect(str(path), isolation_level=None)
    _functions(db)
    return db


def _connect(path: Path, gated: bool) -> StateConnection:
    _private_dir(path.parent)
    sqlitedb.create_private(path)
    db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False,
                         factory=StateConnection)
    db.gate = WriteGate(path) if gated else None
    _functions(db)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.execute(sqlitedb.TEMP_IN_MEMORY)
    return db


def _meta(db: sqlite3.Connection) -> tuple[str, int, str | None] | None:
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_meta'").fetchone():
        return None
    row = db.execute("SELECT role, schema_version, agent_id FROM schema_meta WHERE meta_key='primary'").fetchone()
    return (str(row[0]), int(row[1]), row[2]) if row else None


def _has_tables(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' LIMIT 1").fetchone() is not None


def _owner(role: str, agent_id: str | None) -> str:
    return "the shared state" if role == "global" else f"agent {agent_id}" if agent_id else f"role {role}"


def problem(db: sqlite3.Connection, path: Path, role: str, version: int, agent_id: str | None = None) -> str | None:
    """Why `db` is not a database of `role` at `version` we may use as it is; None when it is (or is empty)."""
    user_version = db.execute("PRAGMA user_version").fetchone()[0]
    meta = _meta(db)
    if user_version == 0 and meta is None and not _has_tables(db):
        return None
    what = "state database" if role == "global" else "agent database"
    if user_version > version:
        return (f"the {what} {path} uses schema version {user_version}, newer than {version} (OpenClaw "
                f"{APP_VERSION}) which this gateway reads; run the OpenClaw release that wrote it, or restore a "
                "backup made before the upgrade")
    if meta is None:
        return f"the {what} {path} has no schema ownership metadata (schema version {user_version}); {FIX}"
    if meta[0] != role or (agent_id is not None and meta[2] != agent_id):
        return (f"the {what} {path} belongs to {_owner(meta[0], meta[2])}, not {_owner(role, agent_id)}; move it "
                "back where it belongs")
    if user_version < version or meta[1] != user_version:
        return f"the {what} {path} uses schema version {user_version}, older than {version}; {FIX}"
    return None


def _script(ddl_name: str, version: int) -> str:
    """The schema and its version as one script (`executescript` commits an open transaction before it runs, so
    BEGIN IMMEDIATE is its first line)."""
    return f"BEGIN IMMEDIATE;\n{_ddl(ddl_name)}\nPRAGMA user_version={version};"


def _own(db: sqlite3.Connection, role: str, version: int, agent_id: str | None) -> None:
    """The ownership row (and, for an agent, the session-key contract row) a new database gets with its schema."""
    now = now_ms()
    db.execute("INSERT INTO schema_meta (meta_key, role, schema_version, agent_id, app_version, created_at, "
               "updated_at) VALUES ('primary', ?, ?, ?, ?, ?, ?)", (role, version, agent_id, APP_VERSION, now, now))
    if role == "agent":
        db.execute("INSERT INTO session_key_contract (id, main_key, canonical_ready, updated_at) "
                   "VALUES (1, 'main', NULL, 0)")


def _create(db: StateConnection, ddl_name: str, role: str, version: int, agent_id: str | None) -> bool:
    """The whole schema, its version and ownership row in one transaction, the DDL in one `executescript` (no
    statement prepared and cached one by one); a racing creator wins cleanly. True when this call created it."""
    if db.execute("PRAGMA page_count").fetchone()[0] == 0:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    sqlitedb.wal(db, BUSY_TIMEOUT_MS / 1000)
    with db.gate.held() if db.gate else contextlib.nullcontext():
        try:
            db.executescript(_script(ddl_name, version))
            _own(db, role, version, agent_id)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if _has_tables(db):
                return False  # another process created it between our check and our write lock
            raise
    return True


def _from_template(path: Path, ddl_name: str, role: str, version: int, agent_id: str | None) -> None:
    """Create the absent database at `path` as a copy of its schema's template (config/dbtemplate.py) with its
    ownership rows; where no template can be had or copied, `_ready` runs the DDL instead."""
    def finish(copy: Path) -> None:
        db = _plain(copy)
        try:
            db.execute("PRAGMA synchronous=OFF")  # the copy is fsynced once, whole, before it appears
            with sqlitedb.immediate(db):
                _own(db, role, version, agent_id)
        finally:
            db.close()

    dbtemplate.create(path, Path(ddl_name).stem, _script(ddl_name, version), _plain, finish)


def build_templates() -> list[Path]:
    """Both schemas' templates, built now when absent (at install, so that no gateway start builds one)."""
    built = (dbtemplate.template(Path(name).stem, _script(name, version), _plain)
             for name, version in ((STATE_SCHEMA[0], STATE_SCHEMA_VERSION), (AGENT_SCHEMA[0], AGENT_SCHEMA_VERSION)))
    return [p for p in built if p is not None]


def _open(path: Path, ddl_name: str, role: str, version: int, agent_id: str | None) -> StateConnection:
    if not path.exists():
        _private_dir(path.parent)  # `_connect` makes it too; the copy is placed in it first
        _from_template(path, ddl_name, role, version, agent_id)
    db = _connect(path, gated=role == "global")
    _ready(db, path, ddl_name, role, version, agent_id)
    return db


def _ready(db: StateConnection, path: Path, ddl_name: str, role: str, version: int, agent_id: str | None,
           create: bool = True) -> bool:
    """Check `db` and create its schema when absent; closed on any error. With `create` False, a database with no
    schema yet is left as it is (and open): False."""
    try:
        _check(db, path, role, version, agent_id)
        db.execute("PRAGMA synchronous=NORMAL")  # before the schema's commit too: WAL and NORMAL never lose consistency
        # Ours when just created (one check, no reopen: executescript keeps no statement prepared); an existing
        # file was checked above; one a racing creator just wrote is checked again.
        if not _has_tables(db):
            if not create:
                return False
            if not _create(db, ddl_name, role, version, agent_id):
                _check(db, path, role, version, agent_id)
        sqlitedb.wal(db, BUSY_TIMEOUT_MS / 1000)
        db.execute("PRAGMA foreign_keys=ON")
        # Every write here touches dozens of index pages: checkpoints run on the owner's thread (sqlitedb.Checkpointer:
        # the gateway's for the shared database, the agent worker's for its own), and at the last close.
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")  # upstream's: a WAL a burst grew is cut back
    except BaseException:
        db.close()
        raise
    sqlitedb.make_private(path)
    sqlitedb.release_heap(db)  # parsing (or creating) a schema this size leaves a megabyte or two of freed heap
    return True


def _check(db: sqlite3.Connection, path: Path, role: str, version: int, agent_id: str | None) -> None:
    reason = problem(db, path, role, version, agent_id)
    if reason:
        raise StateDbError(reason)


STATE_SCHEMA = (f"state-v{STATE_SCHEMA_VERSION}.sql", "global", STATE_SCHEMA_VERSION, None)
"""The shared state database's DDL file, role, version and agent id, as `_open` takes them."""


def open_state_db(path: Path) -> StateConnection:
    """The shared state database at `path`, created at schema 18 when absent; StateDbError when unusable."""
    return _open(path, *STATE_SCHEMA)


class OnFirstUse:
    """One store's connection to the shared state database: opened (and checked) by `open_if_there` when the file,
    or one of `eager_if`, already exists, so what is there is served from the start; on a fresh state dir only when
    the store is first used. Nothing is there to check or serve before, and the gateway's workers create the file
    meanwhile: its creation stays off the supervisor's way to its first answer. A file that exists with no schema
    yet (a worker is creating it) is read, never written, until first use: joining that creation's race for the
    write gate would wait out SQLite's busy back-off on the caller's thread (the gateway's event loop). `on_open`
    runs once, right after opening."""

    def __init__(self, path: Path, on_open: Callable[[], None] | None = None, eager_if: tuple[Path, ...] = ()) -> None:
        self.path = path
        self._db: StateConnection | None = None
        self._unready: StateConnection | None = None
        """Opened by `open_if_there` before the schema was there; kept (closing one of a process's descriptors of
        a database drops its POSIX locks on it), and made ready by the first use."""
        self._lock = threading.Lock()
        self._on_open = on_open
        self._eager_if = eager_if
        self._used_at = 0.0

    def open_if_there(self) -> None:
        if any(p.exists() for p in self._eager_if):
            self.get()
        elif self.path.exists():
            with self._lock:
                if self._db is None and self._unready is None:
                    db = _connect(self.path, gated=True)
                    if _ready(db, self.path, *STATE_SCHEMA, create=False):
                        self._opened(db)
                    else:
                        self._unready = db

    @property
    def opened(self) -> bool:
        return self._db is not None

    def get(self) -> StateConnection:
        self._used_at = time.monotonic()
        db = self._db
        if db is None:
            with self._lock:
                if self._db is None:
                    if self._unready is not None:
                        unready, self._unready = self._unready, None
                        _ready(unready, self.path, *STATE_SCHEMA)
                        self._opened(unready)
                    else:
                        self._opened(open_state_db(self.path))
                db = self._db
                assert db is not None
        return db

    def _opened(self, db: StateConnection) -> None:
        self._db = db
        on_open, self._on_open = self._on_open, None  # once: a connection opened again finds it done
        if on_open is not None:
            on_open()

    def release_idle(self, idle_s: float) -> bool:
        """Close the connection once unused for `idle_s` (its schema alone holds ~250 KB of SQLite memory); the next
        `get` opens it again (~4 ms). Only for a store used from one thread: another may still hold the connection."""
        with self._lock:
            db = self._db
            if db is None or time.monotonic() - self._used_at < idle_s or db.in_transaction:
                return False
            self._db = None
        with contextlib.suppress(sqlite3.Error):
            db.close()
        return True

    def close(self) -> None:
        with self._lock:
            for db in (self._db, self._unready):
                if db is not None:
                    db.close()


AGENT_SCHEMA = (f"agent-v{AGENT_SCHEMA_VERSION}.sql", "agent", AGENT_SCHEMA_VERSION)
"""An agent database's DDL file, role and version, as `_open` takes them before the agent id."""


def open_agent_db(path: Path, agent_id: str) -> StateConnection:
    """Agent `agent_id`'s database at `path`, created at schema 23 when absent; StateDbError when unusable."""
    return _open(path, *AGENT_SCHEMA, agent_id)


def register_agent_db(state: StateConnection, state_dir: Path, agent_id: str, path: Path) -> None:
    """Record the agent database in upstream's registry (`agent_databases`), as upstream does on first open."""
    try:
        rel = str(path.relative_to(state_dir))
    except ValueError:
        rel = str(path)
    size = path.stat().st_size if path.exists() else None
    with state.write():
        state.execute("INSERT INTO agent_databases (agent_id, path, schema_version, last_seen_at, size_bytes) "
                      "VALUES (?, ?, ?, ?, ?) ON CONFLICT(agent_id, path) DO UPDATE SET "
                      "schema_version = excluded.schema_version, last_seen_at = excluded.last_seen_at, "
                      "size_bytes = excluded.size_bytes", (agent_id, rel, AGENT_SCHEMA_VERSION, now_ms(), size))


def inspect(path: Path, role: str, agent_id: str | None = None) -> str | None:
    """Read-only check for `doctor`: None when the file is absent or usable, else what is wrong and the fix."""
    if not path.exists():
        return None
    version = STATE_SCHEMA_VERSION if role == "global" else AGENT_SCHEMA_VERSION
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        return f"cannot open {path}: {exc}"
    try:
        return problem(db, path, role, version, agent_id)
    except sqlite3.DatabaseError as exc:
        return f"{path} is not a readable SQLite database ({exc}); restore it from a backup"
    finally:
        db.close()


def start_identity(pid: int) -> int | None:
    """A process's start time in clock ticks (`/proc/<pid>/stat` field 22): with the pid, the identity upstream
    records for the owner of a lease or a running receipt, so a reused pid is never mistaken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 1:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def prepare(state_dir: Path, notice: Callable[[str], None]) -> str | None:
    """Start-up check of a state dir: openclaw-sup's earlier files moved off upstream's paths (`notice` says
    which), the shared database (when there is one) and every agent database usable, no legacy state of an older
    upstream left unimported. None when the gateway may start, else why not and the fix."""
    from openclaw_sup.config import legacy_state, sup_layout

    legacy = legacy_state.problem(state_dir)
    if legacy:
        return legacy
    try:
        for line in sup_layout.move_earlier_layout(state_dir):
            notice(f"state: moved openclaw-sup's earlier file {line}")
    except (OSError, sqlite3.Error) as exc:
        return f"cannot move openclaw-sup's earlier state files in {state_dir} aside: {exc}"
    for path in sorted(state_dir.glob(f"agents/*/agent/{AGENT_DB_NAME}")):
        reason = inspect(path, "agent", path.parent.parent.name)
        if reason:
            return reason
    if not state_db_path(state_dir).exists():
        return None  # nothing to check: the gateway creates it once, with the connection it keeps (no close, reopen)
    try:
        open_state_db(state_db_path(state_dir)).close()
    except StateDbError as exc:
        return str(exc)
    except sqlite3.DatabaseError as exc:
        return f"cannot use {state_db_path(state_dir)}: {exc}; restore it from a backup"
    return None
