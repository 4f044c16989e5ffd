"""Watch the active config file and call back once per settled edit.

Editors save in many ways (truncate+write, write a temp file then rename over, rename the old file to a
backup then write a new one); all show up as events on the file's directory. Events are debounced, then the
file's bytes are hashed: a save that did not change the content, or a second event for the same content, is
not reported again. watchdog's observer thread only schedules work on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


def content_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ConfigWatcher(FileSystemEventHandler):
    def __init__(self, path: Path, on_change: Callable[[], Any], debounce_ms: int = 200) -> None:
        self.path = path
        self._names = {os.path.abspath(path)}
        self.on_change = on_change
        self.debounce = debounce_ms / 1000
        self.last_hash = content_hash(path)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._observer: Any = None

    def start(self) -> None:
        if self._observer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        observer.daemon = True
        observer.schedule(self, str(self.path.parent), recursive=False)
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer = None

    @property
    def running(self) -> bool:
        return self._observer is not None

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {os.path.abspath(str(event.src_path))}
        dest = getattr(event, "dest_path", None)
        if dest:
            paths.add(os.path.abspath(str(dest)))
        if paths & self._names and event.event_type not in ("opened", "closed_no_write"):
            self._loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.debounce, self._settled)

    def _settled(self) -> None:
        self._timer = None
        digest = content_hash(self.path)
        if digest is None or digest == self.last_hash:
            return
        self.last_hash = digest
        self.on_change()
