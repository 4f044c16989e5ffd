"""The state-dir lock: one gateway per state directory, whatever its port."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path


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
