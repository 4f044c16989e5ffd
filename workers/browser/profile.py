"""One browser profile at run time: launch or attach, health by CDP, restart with backoff, stop.

States and the restart policy are the supervisor's own (config/restart.py), with Chromium's numbers
(RESTART_LIMITS): `stopped` -> `starting` -> `running` (shown as `attached` for cdpUrl / attachOnly); a Chromium that
crashes, is killed or stops answering CDP goes `crashed` -> `backoff` (first relaunch immediate, then 0.25 s
doubling to 30 s, reset after 30 s of health) -> `starting`; `failed` when it crash-loops or `browser.start` cannot
launch it (`browser.start` retries).
A wanted profile leaves a `wanted` marker next to its user-data dir, so the worker that replaces a crashed
one starts it again; a stop (or a clean worker stop) removes it. A Chromium that exits with code 0 was closed
on purpose (its last window, or CDP `Browser.close`): `stopped`, not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openclaw_sup.config.browser import BrowserProfile, clear_locks, find_browser, stale_locks
from openclaw_sup.config.browser_state import WANTED_FILE
from openclaw_sup.config.restart import Event, RestartPolicy, State, next_state
from openclaw_sup.config.settings import RestartLimits
from openclaw_sup.workers.browser.cdp import CdpClient, CdpError
from openclaw_sup.workers.browser.chromium import Chromium, exiting, kill_group, owners_of_port, uses_user_data_dir
from openclaw_sup.workers.runtime import RequestError

HEALTH_INTERVAL_S = 1.0
HEALTH_FAILURES = 3
RESTART_LIMITS = RestartLimits(backoff_base_ms=250, backoff_max_ms=30_000, stable_after_ms=30_000, crash_loop_max=5,
                               crash_loop_window_ms=120_000)
PORT_WAIT_S = 3.0
log = logging.getLogger("browser")


def now_ms() -> int:
    return int(time.time() * 1000)


def port_busy(port: int) -> bool:
    """A listener holds the port (SO_REUSEADDR, so TIME_WAIT leftovers of a killed Chromium do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class ProfileRunner:
    """The life of one profile's browser; every public method is safe to call in any state."""

    def __init__(self, profile: BrowserProfile, cdp: CdpClient, emit: Callable[[dict[str, Any]], None]) -> None:
        self.profile = profile
        self.cdp = cdp
        self.emit = emit
        self.state = State.STOPPED
        self.attached = False
        self.policy = RestartPolicy(RESTART_LIMITS)
        self.chromium: Chromium | None = None
        self.executable: str | None = None
        self.chosen_browser: str | None = None
        self.browser_version: str | None = None
        self.ws_url: str | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.last_exit: str | None = None
        self.started_at_ms: int | None = None
        self.ready_ms: float | None = None
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._locks_cleared = False

    # -- what the worker asks ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def wanted_marker(self) -> Path:
        return self.profile.user_data_dir.parent / WANTED_FILE

    @property
    def pid(self) -> int | None:
        return self.chromium.pid if self.chromium is not None and self.chromium.alive else None

    @property
    def active(self) -> bool:
        return self.state is State.RUNNING

    async def status(self) -> dict[str, Any]:
        ready = False
        if self.active:
            with contextlib.suppress(CdpError):
                await self.cdp.version(self.profile.cdp_url, timeout=0.5)
                ready = True
        p = self.profile
        shown = "attached" if self.attached and self.active else self.state.value
        return {"profile": p.name, "driver": p.driver, "state": shown, "running": self.active,
                "cdpReady": ready, "pid": self.pid, "cdpPort": p.cdp_port, "cdpUrl": p.cdp_url,
                "attachOnly": p.attach_only, "chosenBrowser": self.chosen_browser, "executablePath": self.executable,
                "browserVersion": self.browser_version, "userDataDir": str(p.user_data_dir) if p.managed else None,
                "headless": p.headless, "noSandbox": p.no_sandbox, "color": p.color, "restarts": self.restarts,
                "lastError": self.last_error, "lastExit": self.last_exit, "startedAtMs": self.started_at_ms,
                "cdpReadyMs": self.ready_ms}

    async def start(self) -> None:
        async with self._lock:
            if self.active and (self.chromium is None or self.chromium.alive):
                return
            self._settle_stopped()
            self._fire(Event.START)
            if not self.profile.managed:
                await self._attach()
                return
            self.wanted_marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.wanted_marker.touch()
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            if self.chromium is not None:
                await self.chromium.kill()
            self.policy.reset()
            try:
                await self._launch()
            except RequestError:
                self._fire(Event.EXIT, emit=False)
                self._fire(Event.GIVE_UP)
                raise
            self._watch = asyncio.ensure_future(self._supervise())

    async def stop(self, *, forget: bool = True) -> bool:
        """Kill a managed browser (its whole group); release an attached one. Returns whether it was up."""
        async with self._lock:
            was = self.active or self.chromium is not None
            if self._watch is not None:
                self._watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watch
                self._watch = None
            if self.chromium is not None:
                await self.chromium.stop()
                self.chromium = None
            if forget:
                with contextlib.suppress(OSError):
                    self.wanted_marker.unlink()
            self.ws_url = None
            self._settle_stopped()
            return was

    # -- attach ----------------------------------------------------------------------------------------

    async def _attach(self) -> None:
        p = self.profile
        try:
            info = await self.cdp.version(p.cdp_url, timeout=p.remote_timeout_ms / 1000)
            await self.cdp.command(info["webSocketDebuggerUrl"], "Browser.getVersion",
                                   timeout=max(p.remote_timeout_ms / 1000, 1.0))
        except (CdpError, KeyError) as exc:
            message = (f'Remote CDP for profile "{p.name}" is not reachable at {p.cdp_url}' if p.remote else
                       f'Browser attachOnly is enabled and profile "{p.name}" is not reachable at {p.cdp_url}')
            self.last_error = message
            self._settle_stopped()
            raise RequestError("UNAVAILABLE", message, {"cause": str(exc)}) from None
        self.ws_url = info["webSocketDebuggerUrl"]
        self.browser_version = info.get("Browser")
        self.last_error = None
        self.started_at_ms = now_ms()
        self.attached = True
        self._fire(Event.READY)

    # -- launch ----------------------------------------------------------------------------------------

    def _resolve_executable(self) -> str:
        p = self.profile
        if p.executable_path:
            if not (os.path.isfile(p.executable_path) and os.access(p.executable_path, os.X_OK)):
                raise RequestError("UNAVAILABLE", f"browser.executablePath not found: {p.executable_path}",
                                   {"path": p.executable_key, "fix": f"install the browser or fix {p.executable_key}"})
            self.chosen_browser = "custom"
            return p.executable_path
        found = find_browser()
        if found is None:
            raise RequestError("UNAVAILABLE", "No supported browser found (Chrome/Brave/Edge/Chromium); install "
                               "chromium or set browser.executablePath")
        self.chosen_browser = found[0]
        return found[1]

    async def _free_port(self) -> None:
        """The profile's port must be free. A leftover Chromium of this very profile (or one still dying after a
        sweep) is ours: killed and waited for, like a process on its way out; any other listener is the documented
        error."""
        p = self.profile
        assert p.cdp_port is not None
        deadline = time.monotonic() + PORT_WAIT_S
        while port_busy(p.cdp_port):
            owners = [proc for proc in owners_of_port(p.cdp_port) if not exiting(proc)]
            if not all(uses_user_data_dir(proc, p.user_data_dir) for proc in owners):
                break
            for proc in owners:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill_group(os.getpgid(proc.pid))
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        else:
            return
        raise RequestError("UNAVAILABLE", f'Port {p.cdp_port} is in use for profile "{p.name}" but not by openclaw',
                           {"fix": f"free port {p.cdp_port} or set browser.profiles.{p.name}.cdpPort"})

    def _clear_stale_locks(self) -> list[str]:
        p = self.profile
        removed = clear_locks(stale_locks(p.user_data_dir))
        if removed:
            log.info('browser: cleared stale %s for profile "%s"', ", ".join(removed), p.name)
        return removed

    async def _launch(self) -> None:
        """Start Chromium and wait for its CDP (HTTP, then a websocket round trip); raise the documented error.
        The caller has fired the start; a success fires `ready`, a failure is the caller's to record."""
        p = self.profile
        self.attached = False
        if p.headless_forced_off:
            raise self._failed(RequestError("UNAVAILABLE", f'Missing X server or $DISPLAY for profile "{p.name}"',
                                            {"reason": "no_display_for_headed_profile"}))
        try:
            exe = self._resolve_executable()
            self.executable = exe
            await self._free_port()
        except RequestError as exc:
            raise self._failed(exc) from None
        if not self._locks_cleared:
            self._locks_cleared = True
            self._clear_stale_locks()
        t0 = time.monotonic()
        for attempt in (1, 2):
            try:
                self.chromium = await Chromium.launch(exe, p)
            except OSError as exc:
                raise self._failed(RequestError(
                    "UNAVAILABLE", f'Failed to start Chrome CDP on port {p.cdp_port} for profile "{p.name}".',
                    {"cause": f"cannot run {exe}: {exc.strerror or exc}", "executablePath": exe})) from None
            info = await self._wait_cdp(self.chromium, p.launch_timeout_ms / 1000)
            if info is not None:
                break
            detail = self.chromium.last_stderr()
            await self.chromium.kill()
            self.chromium = None
            if attempt == 1 and self._clear_stale_locks():
                continue  # upstream: clear the stale Singleton* locks and retry once
            raise self._failed(RequestError(
                "UNAVAILABLE", f'Failed to start Chrome CDP on port {p.cdp_port} for profile "{p.name}".',
                {"stderr": detail, "executablePath": exe, **self._root_hint(detail)}))
        assert self.chromium is not None
        try:
            await self.cdp.command(info["webSocketDebuggerUrl"], "Browser.getVersion",
                                   timeout=p.ready_timeout_ms / 1000)
        except (CdpError, KeyError) as exc:
            await self.chromium.kill()
            self.chromium = None
            raise self._failed(RequestError(
                "UNAVAILABLE", f'Chrome CDP websocket for profile "{p.name}" is not reachable after start',
                {"cause": str(exc)})) from None
        self.ws_url = info["webSocketDebuggerUrl"]
        self.browser_version = info.get("Browser")
        self.ready_ms = round((time.monotonic() - t0) * 1000, 1)
        self.started_at_ms = now_ms()
        self.last_error = None
        self._fire(Event.READY)

    @staticmethod
    def _root_hint(stderr: str) -> dict[str, str]:
        if "without --no-sandbox" in stderr:
            return {"fix": "running as root: set browser.noSandbox true"}
        return {}

    async def _wait_cdp(self, chromium: Chromium, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and chromium.alive:
            with contextlib.suppress(CdpError):
                return await self.cdp.version(self.profile.cdp_url, timeout=0.5)
            await asyncio.sleep(0.05)
        return None

    def _failed(self, exc: RequestError) -> RequestError:
        self.last_error = str(exc)
        log.error("browser: %s", exc)
        return exc

    # -- supervision -----------------------------------------------------------------------------------

    async def _healthy(self) -> bool:
        try:
            info = await self.cdp.version(self.profile.cdp_url, timeout=1.0)
            await self.cdp.command(info["webSocketDebuggerUrl"], "Browser.getVersion", timeout=1.0)
            return True
        except (CdpError, KeyError):
            return False

    async def _watch_once(self) -> str:
        """Wait until the running Chromium exits or fails HEALTH_FAILURES probes in a row; say which."""
        chromium = self.chromium
        assert chromium is not None
        misses = 0
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(chromium.proc.wait()), HEALTH_INTERVAL_S)
                return describe_exit(chromium.proc.returncode)
            except TimeoutError:
                pass
            misses = 0 if await self._healthy() else misses + 1
            if misses >= HEALTH_FAILURES and chromium.alive:
                return f"CDP not answering ({HEALTH_FAILURES} probes)"

    async def _supervise(self) -> None:
        while True:
            up_since = time.monotonic()
            reason = await self._watch_once()
            if self.chromium is not None:
                await self.chromium.kill()
                self.chromium = None
            self.last_exit = reason
            if reason == describe_exit(0):  # closed on purpose (last window closed, CDP Browser.close): not a crash
                log.info('browser: Chromium for profile "%s" was closed (exit code 0); not restarting', self.name)
                with contextlib.suppress(OSError):
                    self.wanted_marker.unlink()
                self._fire(Event.STOP, emit=False)
                self._fire(Event.EXIT, reason=reason)
                self._watch = None
                return
            self._fire(Event.EXIT, emit=False)
            self.restarts += 1
            self.last_error = f"Chromium {reason}"
            ran_for: float | None = time.monotonic() - up_since
            while True:
                delay = self.policy.on_exit(time.monotonic(), ran_for)
                if delay is None:
                    log.error('browser: giving up on profile "%s": Chromium crash-looping (%d exits within %gs); '
                              'browser.start retries', self.name, RESTART_LIMITS.crash_loop_max,
                              RESTART_LIMITS.crash_loop_window_ms / 1000)
                    self._fire(Event.GIVE_UP, reason=reason)
                    self._watch = None
                    return
                log.warning('browser: Chromium for profile "%s" died (%s); restarting in %gs (restart %d)',
                            self.name, reason, round(delay, 2), self.restarts)
                self._fire(Event.RETRY_LATER, reason=reason, delay=delay)
                await asyncio.sleep(delay)
                try:
                    async with self._lock:
                        self._fire(Event.RETRY)
                        await self._launch()
                    break
                except RequestError as exc:
                    self._fire(Event.EXIT, emit=False)
                    reason, ran_for = str(exc), None
            log.info('browser: Chromium for profile "%s" restarted (pid %s), CDP healthy again after %.0f ms',
                     self.name, self.pid, self.ready_ms or 0)

    def _settle_stopped(self) -> None:
        """Walk the shared transitions down to `stopped` from wherever the profile is."""
        if self.state in (State.STARTING, State.RUNNING):
            self._fire(Event.STOP, emit=False)
        if self.state is State.STOPPING:
            self._fire(Event.EXIT)
        elif self.state is not State.STOPPED:
            self._fire(Event.STOP)
        self.attached = False

    def _fire(self, event: Event, *, emit: bool = True, **extra: Any) -> None:
        self.state = next_state(self.state, event)
        if emit:
            self.emit({"profile": self.name, "state": self.state.value, "pid": self.pid, **extra})
