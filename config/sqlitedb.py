"""How every SQLite store here is opened and written (cron, agent runs, channel ingress, pairing, devices).

Each store belongs to one process; WAL lets readers (the CLI, status) look without blocking its writer.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def connect(path: str | Path, *, timeout: float = 10.0) -> sqlite3.Connection:
    """Autocommit connection (transactions are explicit, see `immediate`) in WAL mode, synchronous=NORMAL: a
    SIGKILL loses at most the last commits, never consistency."""
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def restrict(path: str | Path) -> None:
    """Owner-only modes on a database and the side files SQLite keeps beside it (`-wal`, `-shm`, `-journal`):
    SQLite creates those with the process umask, and they hold the same data as the database."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error: a read-modify-write sees no interleaved writer, even
    from another process."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
