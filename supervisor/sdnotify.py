"""The sd_notify protocol, spoken by the supervisor itself so that a `Type=notify` unit knows its real state.

systemd passes `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and, with `WatchdogSec=`,
`WATCHDOG_USEC` (and `WATCHDOG_PID`). Each message is one datagram of `KEY=value` lines. Outside systemd
the variables are absent and every call is a cheap no-op, so the supervisor can call it unconditionally.

`Notifier.from_env()` removes the variables from `os.environ` (as `sd_notify(unset_environment=1)`), so the
fork server and the workers forked from it never inherit the socket: only the supervisor speaks for the unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from openclaw_sup.config.restart import UNHEALTHY_STATES

ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(raw: str | None) -> str | bytes | None:
    """A `NOTIFY_SOCKET` value as `sendto` wants it; None when unset or of a kind we cannot reach."""
    if not raw:
        return None
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """`WATCHDOG_USEC` when it is meant for this process (`WATCHDOG_PID` unset or ours), as sd_watchdog_enabled."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return usec if usec > 0 else None


class Notifier:
    """One process's voice towards its service manager; silent when there is none."""

    def __init__(self, notify_socket: str | None = None, watchdog_usec: int | None = None) -> None:
        self.address = _address(notify_socket)
        self.watchdog_usec = watchdog_usec if self.address is not None else None
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._ready_sent = False
        self._watchdog_handle: asyncio.TimerHandle | None = None

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] | None = None, unset: bool = True) -> Notifier:
        """Read the service manager's variables, then (by default) drop them so children never see them."""
        env = os.environ if env is None else env
        notifier = cls(env.get("NOTIFY_SOCKET"), _watchdog_usec(env))
        if unset:
            for key in ENV_KEYS:
                env.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between `WATCHDOG=1` pings: half the deadline (sd_watchdog_enabled's advice), at most 1 s."""
        if self.watchdog_usec is None:
            return None
        return min(1.0, self.watchdog_usec / 2_000_000)

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields as one datagram; False (never an exception) when it could not be sent."""
        if self.address is None or not fields:
            return False
        payload = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """`READY=1`: the port is bound and the first workers are up (or settled); also ends a reload."""
        self._ready_sent = True
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={status}")
            self._last_status = status
        return self.send(*fields)

    @property
    def ready_sent(self) -> bool:
        """Whether the first `READY=1` went out (a reload's closing `ready()` counts too)."""
        return self._ready_sent

    def status(self, text: str) -> bool:
        """`STATUS=<one line>`; an unchanged line is not re-sent, so calling it every second costs nothing."""
        text = " ".join(text.split())
        if text == self._last_status:
            return False
        self._last_status = text
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """`WATCHDOG=1`: the supervisor's loop is alive; systemd kills and restarts the unit when these stop."""
        return self.watchdog_usec is not None and self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """`RELOADING=1` before a reload; `ready()` must follow when it is applied (or skipped)."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        """`STOPPING=1` as the stop begins, so systemd shows `deactivating` rather than a hang."""
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(f"STATUS={status}")
        return self.send(*fields)

    def extend_timeout(self, seconds: float) -> bool:
        """`EXTEND_TIMEOUT_USEC`: a slow start or stop that is still making progress asks for more time."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def start_watchdog(self, loop: asyncio.AbstractEventLoop, healthy: Callable[[], bool] | None = None) -> None:
        """Ping from the event loop itself every `watchdog_interval`: a wedged loop stops the pings.

        `healthy`, when given, is asked before each ping; returning False withholds it (systemd then
        restarts the unit when the deadline passes).
        """
        interval = self.watchdog_interval
        if interval is None or self._watchdog_handle is not None:
            return

        def tick() -> None:
            if healthy is None or healthy():
                self.watchdog()
            self._watchdog_handle = loop.call_later(interval, tick)

        tick()

    def stop_watchdog(self) -> None:
        if self._watchdog_handle is not None:
            self._watchdog_handle.cancel()
            self._watchdog_handle = None

    def close(self) -> None:
        self.stop_watchdog()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def status_line(workers: Iterable[Mapping[str, Any]], listen: str | None = None) -> str:
    """One line for `STATUS=`: e.g. `ws://127.0.0.1:18789; 5 workers: 4 running, 1 backoff (channel:irc:x)`."""
    items = list(workers)
    counts: dict[str, int] = {}
    for w in items:
        state = str(w.get("state", "unknown"))
        counts[state] = counts.get(state, 0) + 1
    if not items:
        summary = "no workers"
    else:
        order = sorted(counts, key=lambda s: (s != "running", s))
        summary = f"{len(items)} worker{'s' if len(items) != 1 else ''}: " + ", ".join(
            f"{counts[s]} {s}" for s in order)
        unhealthy = [str(w.get("name")) for w in items if w.get("state") in UNHEALTHY_STATES]
        if unhealthy:
            shown = ", ".join(unhealthy[:3]) + (", ..." if len(unhealthy) > 3 else "")
            summary += f" ({shown})"
    return f"{listen}; {summary}" if listen else summary
