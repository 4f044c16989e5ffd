"""openclaw-sup's own earlier state files, from before its state was kept in upstream's format.

Earlier releases kept DM pairing in their own tables of `state/openclaw.sqlite`, transcripts and runs in their
own tables of `agents/<id>/agent/openclaw-agent.sqlite`, cron in `state/cron.sqlite` and device pairing in
`state/gateway-devices.sqlite`. At start-up (the gateway lock held, no worker running) the first two, which sit
at upstream's paths, are moved aside (`SUP_PAIRING`, `SUP_TRANSCRIPTS`) so upstream's databases can be created
there; each store then imports its old file when it opens (PairingStore, AgentStore, the scheduler's Store,
DeviceStore) and renames it `*.imported`, so nothing is lost and nothing is imported twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

SUP_PAIRING = "openclaw-sup-pairing.sqlite"  # in state/
SUP_TRANSCRIPTS = "openclaw-sup-transcripts.sqlite"  # beside each agent database
SUP_CRON = "cron.sqlite"  # in state/
SUP_DEVICES = "gateway-devices.sqlite"  # in state/
IMPORTED = ".imported"


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def is_ours(path: Path) -> bool:
    """True for a database at upstream's path written by openclaw-sup before it used upstream's format: our own
    pairing tables (a `channel` column) or transcript tables (`messages`), and no ownership metadata."""
    if not path.is_file():
        return False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_meta'").fetchone():
            return False
        return "channel" in _columns(db, "channel_pairing_requests") or "session_key" in _columns(db, "messages")
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


def move_aside(path: Path, name: str) -> Path:
    """Fold the WAL into `path` and move it (alone) to `name` beside it; returns the new path."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    target = path.with_name(name)
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    return target


def read(path: Path) -> sqlite3.Connection:
    """An earlier file opened for its import (read-only: it is renamed, never changed, once imported)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def move_earlier_layout(state_dir: Path) -> list[str]:
    """Move our earlier files off upstream's paths; returns what was moved, for the log."""
    moved = []
    targets = [(state_dir / "state" / "openclaw.sqlite", SUP_PAIRING)]
    targets += [(p, SUP_TRANSCRIPTS) for p in sorted(state_dir.glob("agents/*/agent/openclaw-agent.sqlite"))]
    for path, name in targets:
        if is_ours(path) and not path.with_name(name).exists():
            move_aside(path, name)
            moved.append(f"{path} -> {path.with_name(name)} (imported into upstream's format on first use)")
    return moved


def _has_table(path: Path, table: str) -> bool:
    try:
        db = read(path)
    except sqlite3.Error:
        return False
    try:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() \
            is not None and not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_meta'").fetchone()
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


@contextlib.contextmanager
def importing(path: Path, table: str) -> Iterator[bool]:
    """Around one store's import of an earlier file (recognised by its `table` and no upstream ownership row):
    True when this process is to import it (it exists and no other process did meanwhile); on success the file
    is renamed `*.imported`, kept for the operator and never imported again. Concurrent openers queue on a lock
    of the file; its WAL is folded in first. Closing the lock's descriptor drops this process's POSIX locks on the
    file, which is harmless only because every SQLite connection of the import is closed by then."""
    if not path.is_file() or not _has_table(path, table):
        yield False
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not path.is_file():
            yield False
            return
        if Path(f"{path}-wal").exists():
            move_aside(path, path.name)
        yield True
        os.replace(path, f"{path}{IMPORTED}")
    finally:
        os.close(fd)


def import_once(path: Path, table: str, importer: Callable[[sqlite3.Connection], None]) -> None:
    """Run `importer` on the earlier file at `path` (read-only) unless it is absent or already imported."""
    with importing(path, table) as mine:
        if mine:
            old = read(path)
            try:
                importer(old)
            finally:
                old.close()
