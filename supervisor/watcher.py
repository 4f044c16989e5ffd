"""Watch the active config file and call back once per settled edit.

Editors save in many ways (truncate+write, write a temp file then rename over, rename the old file to a
backup then write a new one); all show up as events on the file's directory. Events are debounced, then the
file's bytes are hashed: a save that did not change the content, or a second event for the same content, is
not reported again. On Linux the directory is watched with inotify, read by the event loop itself (no thread,
nothing imported); elsewhere watchdog's observer thread only schedules work on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_Q_OVERFLOW = 0x4000
IN_CLOEXEC, IN_NONBLOCK = 0o2000000, 0o4000
WATCHED = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
"""Everything that changes a name's content or binding; not opens and reads (watchdog's opened/closed_no_write)."""
EVENT_HEAD = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


def content_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class InotifyDir:
    """One directory under inotify, its events read on the loop; `on_name(name)` for each event (b"" on a queue
    overflow, when the names are lost)."""

    def __init__(self, directory: Path, on_name: Callable[[bytes], None], loop: asyncio.AbstractEventLoop) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        if libc.inotify_add_watch(fd, os.fsencode(directory), WATCHED) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
        self.fd = fd
        self.on_name = on_name
        self.loop = loop
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        at = 0
        while at + EVENT_HEAD.size <= len(data):
            _wd, mask, _cookie, size = EVENT_HEAD.unpack_from(data, at)
            name = data[at + EVENT_HEAD.size:at + EVENT_HEAD.size + size].rstrip(b"\0")
            at += EVENT_HEAD.size + size
            self.on_name(b"" if mask & IN_Q_OVERFLOW else name)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


class ConfigWatcher:
    def __init__(self, path: Path, on_change: Callable[[], Any], debounce_ms: int = 200) -> None:
        self.path = path
        self._names = {os.path.abspath(path)}
        self._basename = os.fsencode(os.path.basename(os.path.abspath(path)))
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
        if sys.platform.startswith("linux"):
            self._observer = InotifyDir(self.path.parent, self._on_name, self._loop)
        else:
            self._observer = self._watchdog_observer()

    def _watchdog_observer(self) -> Any:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                paths = {os.path.abspath(str(event.src_path))}
                dest = getattr(event, "dest_path", None)
                if dest:
                    paths.add(os.path.abspath(str(dest)))
                if paths & watcher._names and event.event_type not in ("opened", "closed_no_write"):
                    watcher._loop.call_soon_threadsafe(watcher._arm)

        observer = Observer()
        observer.daemon = True
        observer.schedule(Handler(), str(self.path.parent), recursive=False)
        observer.start()
        return observer

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            if isinstance(self._observer, InotifyDir):
                self._observer.close()
            else:
                self._observer.stop()
            self._observer = None

    @property
    def running(self) -> bool:
        return self._observer is not None

    def _on_name(self, name: bytes) -> None:
        if name in (self._basename, b""):
            self._arm()

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
