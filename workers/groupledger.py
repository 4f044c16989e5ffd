"""A worker's ledger of the process groups it started, so a crash leaves no command running.

A command runs as its own process group; its leader dies with the worker (PR_SET_PDEATHSIG), but what the
leader started does not. Each group is written here (pgid and the leader's start time) while it runs; the
next incarnation of the worker sweeps whatever is listed, killing a group only if its pgid still names the
group that run started (workers/procgroup.py `sweep_group`). The file is rewritten atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path


class GroupLedger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, float | None]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, groups: dict[str, float | None]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(groups, f)
        os.replace(tmp, self.path)

    def add(self, pgid: int) -> None:
        from openclaw_sup.workers.procgroup import process_started  # psutil: only once a command runs

        with self._lock:
            groups = self._read()
            groups[str(pgid)] = process_started(pgid)
            self._write(groups)

    def remove(self, pgid: int) -> None:
        with self._lock:
            groups = self._read()
            groups.pop(str(pgid), None)
            if groups:
                self._write(groups)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    def sweep(self) -> int:
        """Kill what a previous incarnation left running; returns how many processes were signalled."""
        from openclaw_sup.workers.procgroup import sweep_group

        with self._lock:
            groups = self._read()
            killed = sum(sweep_group(int(pgid), started) for pgid, started in groups.items() if pgid.isdigit())
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        return killed
