"""Worker states, their transitions and the restart policy, stated once.

    stopped --start--> starting --ready--> running
    starting|running --stop--> stopping --exit--> stopped
    starting|running --exit--> crashed --retry_later--> backoff --retry--> starting
                                crashed --give_up-----> failed  --retry--> starting   (slow retries)
    crashed|backoff|failed --stop--> stopped

`running` means the worker said `ready` on the bus, not that its pid exists. A kill decided by the
supervisor (missed heartbeats, start timeout, RSS ceiling) is not a transition: the exit that follows is.

Policy (Erlang's intensity/period, with PM2-style backoff): the first restart after a stable run is
immediate; each further crash before the worker has run `stable_after` doubles the delay from
`backoff_base` up to `backoff_max`, with +-`jitter`. `crash_loop_max` exits inside `crash_loop_window`
without a stable run between them mean a crash loop: the worker is `failed` and retried every
`failed_retry`, and the gateway stays up.
"""

from __future__ import annotations

import random
from collections import deque
from enum import StrEnum

from openclaw_sup.config.settings import RestartLimits


class State(StrEnum):
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

LIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
"""States in which a process exists."""

UNHEALTHY_STATES = frozenset({State.CRASHED, State.BACKOFF, State.FAILED})


class InvalidTransition(RuntimeError):
    pass


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"no transition from {state} on {event}") from None


class RestartPolicy:
    """Decides, after each crash, how long to wait or whether the worker is crash-looping."""

    def __init__(self, limits: RestartLimits, rng: random.Random | None = None) -> None:
        self.limits = limits
        self._rng = rng or random.Random()
        self._exits: deque[float] = deque()
        self.consecutive = 0

    def on_ready(self) -> None:
        """Nothing to do at ready: stability is judged by how long the run lasted, at its exit."""

    def on_exit(self, now: float, ran_for: float | None) -> float | None:
        """Record a crash; return the delay before the next start, or None for a crash loop."""
        lim = self.limits
        if ran_for is not None and ran_for * 1000 >= lim.stable_after_ms:
            self._exits.clear()
            self.consecutive = 0
        self.consecutive += 1
        self._exits.append(now)
        window = lim.crash_loop_window_ms / 1000
        while self._exits and now - self._exits[0] > window:
            self._exits.popleft()
        if lim.crash_loop_max and len(self._exits) >= lim.crash_loop_max:
            return None
        return self.delay()

    def delay(self) -> float:
        if self.consecutive <= 1:
            return 0.0
        lim = self.limits
        base = min(lim.backoff_max_ms, lim.backoff_base_ms * 2 ** (self.consecutive - 2)) / 1000
        spread = base * lim.jitter
        return max(0.0, min(lim.backoff_max_ms / 1000, base + self._rng.uniform(-spread, spread)))

    @property
    def failed_retry(self) -> float:
        return self.limits.failed_retry_ms / 1000

    def reset(self) -> None:
        self._exits.clear()
        self.consecutive = 0
