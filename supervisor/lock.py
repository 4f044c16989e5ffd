"""The state-dir locks: ours (one gateway per state directory, whatever its port) and upstream's beside it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class LockHeld(RuntimeError):
    pass


class StateLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, path: Path, timeout_ms: int = 5000) -> StateLock:
        """Take the lock, retrying up to `timeout_ms` in case the previous owner is just exiting."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    owner = cls.owner(path)
                    os.close(fd)
                    who = f"pid {owner}" if owner else "pid unknown"
                    raise LockHeld(f"gateway already running ({who}); lock timeout after {timeout_ms}ms") \
                        from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    @staticmethod
    def owner(path: Path) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().split()[0])
        return None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.close(self.fd)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot): with the pid, a process identity that survives
    pid reuse. Upstream records it in its lock and compares it before trusting the pid."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    return None


class UpstreamLock:
    """Upstream's gateway lock, held beside ours, in its format.

    The real `openclaw` CLI finds a running gateway by reading `<stateDir>/tmp/openclaw-<uid>/gateway.<hash>.lock`
    (hash: the first 8 hex digits of the SHA-256 of the config path) or `gateway.state.lock` there: JSON with
    `pid`, `ownerId`, `port`, `startTime` (the pid is trusted only while its start time matches). `gateway
    restart` targets that pid, owner id and port, then waits for a new owner id: an in-place restart renews it.
    Each file has a SQLite coordinator beside it (`<lock>.sqlite`, held in an EXCLUSIVE transaction for the
    gateway's lifetime, as upstream does), so a real gateway refuses to start on a state dir we hold and we
    refuse one it holds.
    """

    def __init__(self, state_dir: Path, config_path: Path, port: int) -> None:
        real_state = Path(os.path.realpath(state_dir))
        self.dir = real_state / "tmp" / f"openclaw-{os.getuid()}"
        self.config_path = str(Path(config_path).absolute())
        digest = hashlib.sha256(self.config_path.encode()).hexdigest()[:8]
        self.paths = (self.dir / f"gateway.{digest}.lock", self.dir / "gateway.state.lock")
        self.state_dir = str(real_state)
        self.port = port
        self.owner_id = ""
        self.created_at = ""
        self._coordinators: list[sqlite3.Connection] = []

    @classmethod
    def acquire(cls, state_dir: Path, config_path: Path, port: int, timeout_ms: int = 5000) -> UpstreamLock:
        lock = cls(state_dir, config_path, port)
        lock.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        deadline = time.monotonic() + timeout_ms / 1000
        for path in lock.paths:
            while True:
                held = lock._coordinate(path)
                if held is not None:
                    lock._coordinators.append(held)
                    break
                if time.monotonic() >= deadline:
                    lock.release()
                    owner = lock.read(path)
                    who = f"pid {owner['pid']}" if owner and isinstance(owner.get("pid"), int) else "pid unknown"
                    raise LockHeld(f"gateway already running ({who}, holding {path}); lock timeout after "
                                   f"{timeout_ms}ms")
                time.sleep(0.1)
        lock.renew()
        return lock

    @staticmethod
    def _coordinate(path: Path) -> sqlite3.Connection | None:
        """Upstream's coordinator: an EXCLUSIVE transaction on `<lock>.sqlite`; None while another holds it."""
        db = sqlite3.connect(f"{path}.sqlite", timeout=0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA journal_mode = MEMORY")
            db.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError:
            db.close()
            return None
        return db

    @staticmethod
    def read(path: Path) -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else None
        return None

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": os.getpid(), "ownerId": self.owner_id, "createdAt": self.created_at,
                               "configPath": self.config_path, "stateDir": self.state_dir, "port": self.port}
        start = process_start_time(os.getpid())
        if start is not None:
            out["startTime"] = start
        return out

    def renew(self, port: int | None = None) -> dict[str, Any]:
        """Write both files with a new owner id (a new gateway generation: start, in-place restart) and the
        current port; returns the payload."""
        if port is not None:
            self.port = port
        self.owner_id = str(uuid.uuid4())
        self.created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = json.dumps(self.payload(), indent=2).encode() + b"\n"
        for path in self.paths:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        return self.payload()

    def fds(self) -> tuple[int, ...]:
        """The descriptors of the coordinators (a forked child must close them)."""
        names = {f"{p}.sqlite" for p in self.paths}
        found = []
        with contextlib.suppress(OSError):
            for fd in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/self/fd/{fd}") in names:
                        found.append(int(fd))
        return tuple(found)

    def release(self) -> None:
        for path in self.paths:
            current = self.read(path)
            if current is not None and current.get("ownerId") == self.owner_id and current.get("pid") == os.getpid():
                with contextlib.suppress(OSError):
                    path.unlink()
        for db in self._coordinators:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._coordinators = []
