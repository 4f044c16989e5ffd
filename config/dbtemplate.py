"""Upstream's databases created by copying a template of their schema instead of running its DDL again.

Running the shared state database's DDL (104 tables, 107 indexes) costs ~17 ms of SQLite CPU, an agent
database's ~10 ms, in the workers a cold start waits for. The same DDL always builds the same empty file, so it
is built once per DDL text (at install, `python -m openclaw_sup.config.dbtemplate`, or on first need) and a new
database is a copy of it. The copy is whole before it appears at its path: written beside it, completed (its
ownership rows), fsynced, then hard-linked in, and a link never replaces a file. A concurrent creator (another
worker, the real CLI) therefore finds either no file or the whole database, and whoever comes second opens the
winner's file.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from openclaw_sup.config.paths import pid_alive

FORMAT = 1  # part of a template's name: a change to how one is built here never reuses an older build


def template_dirs() -> Iterator[Path]:
    """Beside the shipped DDL (an install's own, or a checkout's), else the user's cache."""
    yield Path(__file__).parent / "upstream_schema"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if os.path.isabs(cache):  # `~` stays unexpanded where no home directory is known
        yield Path(cache) / "openclaw-sup" / "db-templates"


def template(name: str, script: str, connect: Callable[[Path], sqlite3.Connection]) -> Path | None:
    """The template file built by `script` (its first statement BEGIN IMMEDIATE) on a connection from `connect`
    (autocommit; with the functions the schema names), built now when absent; None when no directory can hold one
    (the caller runs the DDL itself)."""
    digest = hashlib.sha256(f"{FORMAT}\n{script}".encode()).hexdigest()[:16]
    for directory in template_dirs():
        path = directory / f"{name}.{digest}.sqlite"
        if path.exists():
            return path
        with contextlib.suppress(OSError, sqlite3.Error):
            build(path, script, connect)
            _drop_others(path, name)
            return path
    return None


def _drop_others(path: Path, name: str) -> None:
    """Templates of an earlier DDL text or build (an upgrade in place) are not used again. One being copied
    meanwhile is still read whole; a copy that finds it gone runs the DDL instead."""
    for old in path.parent.glob(f"{name}.*.sqlite"):
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()


def build(path: Path, script: str, connect: Callable[[Path], sqlite3.Connection]) -> None:
    """Run `script` in a new WAL file with incremental auto-vacuum (upstream's, as statedb creates a database), then
    move it to `path` whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path)
    try:
        db = connect(tmp)
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(f"{script}\nCOMMIT;")
        finally:
            db.close()  # the last close moves the WAL into the file and removes it
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def create(path: Path, name: str, script: str, connect: Callable[[Path], sqlite3.Connection],
           finish: Callable[[Path], None] = lambda _copy: None) -> None:
    """Create the absent database at `path` as a copy of the template `script` builds, completed by `finish`;
    nothing where no template can be had or copied (the caller runs the DDL instead)."""
    built = template(name, script, connect)
    if built is not None:
        with contextlib.suppress(OSError, sqlite3.Error):
            place(path, built, finish)


def place(path: Path, template_path: Path, finish: Callable[[Path], None]) -> bool:
    """Put a copy of `template_path`, completed by `finish(copy)`, at `path` (0600) unless a file is there. True
    when this call placed it, False when one was there; OSError or sqlite3.Error when it could not copy (nothing
    is left behind)."""
    tmp = _beside(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            out.write(template_path.read_bytes())
        finish(tmp)
        _fsync(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        _remove(tmp)


def _beside(path: Path) -> Path:
    """A new private name beside `path`; copies left there by processes that are gone (killed mid-copy) are
    removed on the way."""
    for stale in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 1:].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            _remove(stale)
    return path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


if __name__ == "__main__":
    from openclaw_sup.config import statedb

    for built in statedb.build_templates():
        print(built)
