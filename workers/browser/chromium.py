"""One Chromium process tree: its command line, its launch in its own process group, and its end.

Chromium runs as its own session (its pid is the group id, and its zygote, GPU and renderer children join
that group) with PR_SET_PDEATHSIG=SIGKILL, so it dies with the worker; stop kills the whole group. Each launch
records `{pgid, started}` in `<stateDir>/browser/<profile>/chromium.json` so that, after a SIGKILLed worker,
the next one sweeps whatever that group left (`sweep_group`, as the scheduler does for its commands). A stop
asks nicely first (SIGTERM, 1.5 s) so the profile is flushed; a crash or a hang gets SIGKILL straight away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from openclaw_sup.config.browser import BrowserProfile, clear_locks, stale_locks
from openclaw_sup.config.browser_state import RECORD_FILE
from openclaw_sup.workers.forkserver import set_parent_death_signal
from openclaw_sup.workers.procgroup import Tail, process_started, sweep_group

if TYPE_CHECKING:
    import psutil

STDERR_KEEP = 8 * 1024
STOP_GRACE_S = 1.5


def chromium_argv(exe: str, profile: BrowserProfile) -> list[str]:
    """The launch line: upstream's flags for a managed profile, then `extraArgs` (which can override)."""
    argv = [exe, f"--remote-debugging-port={profile.cdp_port}", "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile.user_data_dir}", "--no-first-run", "--no-default-browser-check",
            "--disable-sync", "--disable-background-networking", "--disable-component-update",
            "--disable-features=Translate,MediaRouter", "--disable-session-crashed-bubble",
            "--hide-crash-restore-bubble", "--password-store=basic", "--disable-dev-shm-usage"]
    if profile.headless:
        argv += ["--headless=new", "--disable-gpu"]
    if profile.no_sandbox:
        argv += ["--no-sandbox", "--disable-setuid-sandbox"]
    return [*argv, *profile.extra_args, "about:blank"]


def _die_with_worker() -> None:
    set_parent_death_signal(signal.SIGKILL)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def record_path(profile: BrowserProfile) -> Path:
    return profile.user_data_dir.parent / RECORD_FILE


def sweep_recorded(profile: BrowserProfile) -> int:
    """Kill what a previous worker's Chromium left for this profile; returns how many processes."""
    path = record_path(profile)
    try:
        rec = orjson.loads(path.read_bytes())
        pgid, started = int(rec["pgid"]), rec.get("started")
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return 0
    killed = sweep_group(pgid, started if isinstance(started, (int, float)) else None)
    with contextlib.suppress(OSError):
        path.unlink()
    return killed


def owners_of_port(port: int) -> list[psutil.Process]:
    """The processes listening on a loopback TCP port (empty when none, or when the table is not readable)."""
    import psutil  # here, not at import: only a profile's start needs it, and the fork server preloads this module

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return []
    out = []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(c.pid))
    return out


def uses_user_data_dir(proc: psutil.Process, user_data_dir: Path) -> bool:
    import psutil

    with contextlib.suppress(psutil.Error):
        return f"--user-data-dir={user_data_dir}" in proc.cmdline()
    return False


def exiting(proc: psutil.Process) -> bool:
    """Whether `proc` is on its way out: gone, a zombie, or past the release of its memory (its command line reads
    empty) while its descriptors, a listening socket among them, are still being closed. A SIGKILLed Chromium
    spends milliseconds there, and its CDP port is not free yet."""
    import psutil

    try:
        return proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) or not proc.cmdline()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


class Chromium:
    """A launched Chromium: the process, its group, and the tail of its stderr."""

    def __init__(self, proc: asyncio.subprocess.Process, profile: BrowserProfile, argv: list[str]) -> None:
        self.proc = proc
        self.profile = profile
        self.argv = argv
        self.pid = proc.pid
        self.stderr = Tail(STDERR_KEEP)
        self._pump = asyncio.ensure_future(self._read_stderr())

    @classmethod
    async def launch(cls, exe: str, profile: BrowserProfile) -> Chromium:
        profile.user_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = chromium_argv(exe, profile)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_worker)
        rec: dict[str, Any] = {"pgid": proc.pid, "started": process_started(proc.pid), "argv": argv}
        tmp = record_path(profile).with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(rec))
        tmp.replace(record_path(profile))
        return cls(proc, profile, argv)

    async def _read_stderr(self) -> None:
        stream = self.proc.stderr
        if stream is None:
            return
        with contextlib.suppress(Exception):
            while chunk := await stream.read(65536):
                self.stderr.feed(chunk)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def last_stderr(self, lines: int = 3) -> str:
        """Chromium's last meaningful stderr lines (its error on a failed start, e.g. the root sandbox one)."""
        keep = [ln.strip() for ln in self.stderr.text().splitlines() if ln.strip() and "DevTools listening" not in ln]
        return " | ".join(keep[-lines:])

    async def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM first, so Chromium flushes its profile and removes its Singleton* locks; then `kill`."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        return await self.kill()

    async def kill(self) -> int | None:
        """SIGKILL the whole group, reap the leader, forget the record."""
        kill_group(self.pid)
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pump, 1.0)
        kill_group(self.pid)  # children that were still being forked when the leader died
        with contextlib.suppress(OSError):
            record_path(self.profile).unlink()
        clear_locks(stale_locks(self.profile.user_data_dir))  # their owner is dead: ours to clean
        return self.proc.returncode
