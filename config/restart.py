"""Lifecycle states, their transitions and the restart policy, stated once for every restarting thing:
the supervisor's workers, the browser worker's Chromium, and channel connections (one `Backoff` rule).

    stopped --start--> starting --ready--> running
    idle    --start--> starting               (an on-demand worker: declared, forked by its first request)
    idle    --stop---> stopped
    starting|running --stop--> stopping --exit--> stopped
    starting|running --exit--> crashed --retry_later--> backoff --retry--> starting
                                crashed --give_up-----> failed  --retry--> starting   (slow retries)
    crashed|backoff|failed --stop--> stopped

`running` means the thing said it is ready (a worker's `ready` on the bus, Chromium's CDP answering), not that a
pid exists. A kill decided by the owner (missed heartbeats, start timeout, RSS ceiling, CDP silent) is not a
transition: the exit that follows is.

Policy (Erlang's intensity/period, with PM2-style backoff): the first restart after a stable run is
immediate; each further crash before the thing has run `stable_after` doubles the delay from
`backoff_base` up to `backoff_max`, with +-`jitter`. `crash_loop_max` exits inside `crash_loop_window`
without a stable run between them mean a crash loop: `failed`, retried every `failed_retry` by those that
retry (the supervisor) or on demand (`browser.start`). A connection's reconnects use the same delay rule
(`Backoff`) without the immediate first retry and without giving up.

Lives in `config/` so that workers may import it (DESIGN.md's import arrows); standard library only.
"""

from __future__ import annotations

import random
from collections import deque
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openclaw_sup.config.settings import RestartLimits


class State(StrEnum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"
    BACKOFF = "backoff"
    FAILED = "failed"


class Event(StrEnum):
    START = "start"
    READY = "ready"
    STOP = "stop"
    EXIT = "exit"
    RETRY_LATER = "retry_later"
    GIVE_UP = "give_up"
    RETRY = "retry"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.STOPPED, Event.START): State.STARTING,
    (State.IDLE, Event.START): State.STARTING,
    (State.IDLE, Event.STOP): State.STOPPED,
    (State.STARTING, Event.READY): State.RUNNING,
    (State.STARTING, Event.EXIT): State.CRASHED,
    (State.RUNNING, Event.EXIT): State.CRASHED,
    (State.STARTING, Event.STOP): State.STOPPING,
    (State.RUNNING, Event.STOP): State.STOPPING,
    (State.STOPPING, Event.EXIT): State.STOPPED,
    (State.CRASHED, Event.RETRY_LATER): State.BACKOFF,
    (State.CRASHED, Event.GIVE_UP): State.FAILED,
    (State.BACKOFF, Event.RETRY): State.STARTING,
    (State.FAILED, Event.RETRY): State.STARTING,
    (State.CRASHED, Event.STOP): State.STOPPED,
    (State.BACKOFF, Event.STOP): State.STOPPED,
    (State.FAILED, Event.STOP): State.STOPPED,
}

INITIAL_STATES = frozenset({State.STOPPED, State.IDLE})
"""Where a record begins: stopped until started, or idle for an on-demand worker."""

LIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
"""States in which a process exists."""

UNHEALTHY_STATES = frozenset({State.CRASHED, State.BACKOFF, State.FAILED})
"""States in which no process exists but one is wanted."""

SERVING_STATES = frozenset({State.RUNNING, State.IDLE})
"""States that count as ready: running, or idle until a request starts it."""

WAKING_STATES = frozenset({State.STARTING, State.CRASHED, State.BACKOFF})
"""States of a worker on its way up: a request for an on-demand one waits through them (bounded)."""

RETRY_STATES = frozenset(src for src, event in TRANSITIONS if event is Event.RETRY)
"""States waiting for their next start (backoff, failed)."""


class InvalidTransition(RuntimeError):
    pass


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"no transition from {state} on {event}") from None


class Backoff:
    """The one delay rule: `base` doubling per consecutive failure up to `cap`, +-`jitter`; with
    `immediate_first` the first retry waits nothing and the doubling starts at the second."""

    def __init__(self, base: float, cap: float, jitter: float = 0.2, *, immediate_first: bool = False,
                 rng: random.Random | None = None) -> None:
        self.base, self.cap, self.jitter, self.immediate_first = base, cap, jitter, immediate_first
        self._rng = rng or random.Random()
        self.consecutive = 0

    def delay(self) -> float:
        """The delay for the failure count as it stands."""
        steps = self.consecutive - (2 if self.immediate_first else 1)
        if steps < 0:
            return 0.0
        base = min(self.cap, self.base * 2 ** steps)
        spread = base * self.jitter
        return max(0.0, min(self.cap, base + self._rng.uniform(-spread, spread)))

    def next(self) -> float:
        """Count one more failure; return how long to wait before the next try."""
        self.consecutive += 1
        return self.delay()

    def reset(self) -> None:
        """The last try held: the next failure starts the sequence again."""
        self.consecutive = 0


class RestartPolicy:
    """Decides, after each crash, how long to wait or whether the thing is crash-looping."""

    def __init__(self, limits: RestartLimits, rng: random.Random | None = None) -> None:
        self.limits = limits
        self.backoff = Backoff(limits.backoff_base_ms / 1000, limits.backoff_max_ms / 1000, limits.jitter,
                               immediate_first=True, rng=rng)
        self._exits: deque[float] = deque()

    @property
    def consecutive(self) -> int:
        return self.backoff.consecutive

    @consecutive.setter
    def consecutive(self, n: int) -> None:
        self.backoff.consecutive = n

    def on_exit(self, now: float, ran_for: float | None) -> float | None:
        """Record a crash; return the delay before the next start, or None for a crash loop."""
        lim = self.limits
        if ran_for is not None and ran_for * 1000 >= lim.stable_after_ms:
            self.reset()
        self._exits.append(now)
        window = lim.crash_loop_window_ms / 1000
        while self._exits and now - self._exits[0] > window:
            self._exits.popleft()
        delay = self.backoff.next()
        if lim.crash_loop_max and len(self._exits) >= lim.crash_loop_max:
            return None
        return delay

    def delay(self) -> float:
        return self.backoff.delay()

    @property
    def failed_retry(self) -> float:
        return self.limits.failed_retry_ms / 1000

    def reset(self) -> None:
        self._exits.clear()
        self.backoff.reset()
