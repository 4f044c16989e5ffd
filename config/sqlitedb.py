"""How every SQLite store here is opened and written (cron, agent runs, channel ingress, pairing, devices).

Each store belongs to one process; WAL lets readers (the CLI, status) look without blocking its writer.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from openclaw_sup.config import heaptrim
from openclaw_sup.config.paths import private_file

SIDE_FILES = ("-wal", "-shm", "-journal")
TEMP_IN_MEMORY = "PRAGMA temp_store=MEMORY"
"""A savepoint's or a statement's undo pages (the sub-journal) in memory, not in a temporary file: SQLite spills
them to a new file once they pass 64 KiB, and a group of turns in upstream's agent database passes that, so every
transaction created, wrote page by page (two writes a page) and deleted one (bench/agent_store.py). Only the undo
log moves; what is committed, and when, is the same."""


def wal(db: sqlite3.Connection, timeout: float) -> None:
    """WAL mode, retried for up to `timeout` seconds while another connection is switching or writing: the switch
    reads the header, then upgrades to a write, and SQLite answers an upgrade that could deadlock with SQLITE_BUSY
    at once, never calling the busy handler; two processes opening one new database at once both get there."""
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def connect(path: str | Path, *, timeout: float = 10.0) -> sqlite3.Connection:
    """Autocommit connection (transactions are explicit, see `immediate`) in WAL mode, synchronous=NORMAL: a
    SIGKILL loses at most the last commits, never consistency. The files are the owner's only (0600). Temporary
    storage in memory (`TEMP_IN_MEMORY`)."""
    on_disk = str(path) != ":memory:"
    if on_disk:
        create_private(Path(path))
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    wal(db, timeout)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(TEMP_IN_MEMORY)
    if on_disk:
        make_private(Path(path))
    return db


def create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does: SQLite gives its -wal and -shm the database's mode,
    so a file created with the umask (0644) and tightened later leaves them readable by others. Only a file that
    does not exist yet is opened (O_EXCL): closing any descriptor of a database this process has open drops every
    POSIX lock the process holds on it, among them the SHARED lock by which its WAL connections tell others they
    are there -- another process's last close would then checkpoint and delete the WAL they still write to."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def make_private(path: Path) -> None:
    """A database and its side files (-wal, -shm, -journal), each 0600 (for stores opened another way)."""
    for p in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)):
        private_file(p)


class OnUse:
    """A connection attribute opened by `opener(holder)` on first use, and again after `close_idle` closed it (kept
    in the holder's `_<name>`)."""

    def __init__(self, opener: Callable[[Any], sqlite3.Connection]) -> None:
        self.opener = opener
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, holder: Any, owner: type | None = None) -> Any:
        if holder is None:
            return self
        db = getattr(holder, self.slot, None)
        if db is None:
            db = self.opener(holder)
            setattr(holder, self.slot, db)
        return db


def close_idle(holder: object, *names: str) -> None:
    """Close the connections held in `holder`'s attributes `names` and set them to None (the holder opens one again
    on its next use); one inside a transaction is left as it is."""
    for name in names:
        db = getattr(holder, name)
        if db is not None and not db.in_transaction:
            setattr(holder, name, None)
            with contextlib.suppress(sqlite3.Error):
                db.close()


def release_heap(db: sqlite3.Connection) -> None:
    """Give back the memory building a large schema used: SQLite frees it, but the C allocator keeps it mapped, and
    a worker would carry it as private memory for its whole life."""
    db.execute("PRAGMA shrink_memory")
    heaptrim.trim()


@contextlib.contextmanager
def immediate(db: sqlite3.Connection, *, joined: bool = False) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error: a read-modify-write sees no interleaved writer, even
    from another process. `joined`: a transaction already open on `db` is taken over, its writes committed (or
    rolled back) with these."""
    if not (joined and db.in_transaction):
        db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Checkpointer:
    """Moves a database's WAL into it from a thread of its own, so a busy writer never pays for it.

    The writer's connection runs with `wal_autocheckpoint=0`; every `interval_s` this thread, on a connection of its
    own, runs a PASSIVE checkpoint once the WAL holds `threshold` bytes (PASSIVE never waits for, nor blocks, the
    writer; SQLite releases the GIL meanwhile). A database whose writes touch many pages (upstream's, with its many
    indexes) otherwise checkpoints, with its fsyncs, inside every few dozen commits. Under writes that never pause,
    PASSIVE never lets the WAL start over: once it holds four times `threshold`, a RESTART checkpoint (waiting for
    the writer's current transaction, with little left to copy) has the next commit write from its start. Once a
    checkpoint finds the whole WAL moved and nothing written for a round, the thread's connection (its schema and
    pages, ~0.4 MB for upstream's state database) is closed; no round opens one again until the WAL is written to."""

    def __init__(self, path: str | Path, *, threshold: int = 4 << 20, interval_s: float = 1.0) -> None:
        self.path, self.threshold, self.interval_s = str(path), threshold, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"checkpoint {Path(path).name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = None
        seen: int | None = None  # the WAL's mtime at the previous round
        moved_at: int | None = None  # its mtime when a checkpoint last found it all moved, with writes paused
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    wal = os.stat(f"{self.path}-wal")
                    if wal.st_size < self.threshold or wal.st_mtime_ns == moved_at:
                        continue  # small, or nothing written since all of it was moved
                    db = db or sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
                    busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if wal.st_mtime_ns != seen:  # written to since the previous round
                        if frames * 4096 >= self.threshold * 4:  # writes never paused: the WAL starts over
                            db.execute("PRAGMA wal_checkpoint(RESTART)")
                    elif not busy and copied == frames:  # all moved, nothing written for a whole round
                        moved_at = wal.st_mtime_ns
                        db.close()
                        db = None
                    seen = wal.st_mtime_ns
                except (OSError, sqlite3.Error):
                    continue  # no WAL yet, or the database is busy: the next round tries again
        finally:
            if db is not None:
                db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
