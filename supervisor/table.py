"""The process table: one record per wanted worker, one incarnation per process it has had."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import field
from typing import Any

from openclaw_sup.config.record import record
from openclaw_sup.config.restart import Event, RestartPolicy, State, next_state
from openclaw_sup.config.settings import WorkerSpec

ERROR_LINES = 20
SAMPLE_EVERY_S = 10.0
SAMPLES_KEPT = 60
"""RSS and CPU history for the dashboard's sparklines: one sample per 10 s for 10 minutes, a fixed-size ring."""


class SampleRing:
    """`[epoch ms, rss bytes, cpu %]` at most every SAMPLE_EVERY_S, fed from heartbeats that arrive anyway."""

    __slots__ = ("_last", "samples")

    def __init__(self) -> None:
        self.samples: deque[list[Any]] = deque(maxlen=SAMPLES_KEPT)
        self._last = 0.0

    def due(self, now: float) -> bool:
        return now - self._last >= SAMPLE_EVERY_S

    def offer(self, now: float, rss: Any, cpu: Any) -> None:
        if not self.due(now):
            return
        self._last = now
        self.samples.append([int(time.time() * 1000), rss if isinstance(rss, int) else None,
                             cpu if isinstance(cpu, (int, float)) else None])


@record
class Incarnation:
    """One process of a worker, from spawn to reaped exit."""

    pid: int
    started: float
    ready_at: float | None = None
    last_hb: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    cpu_pct: float | None = None
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=ERROR_LINES))
    kill_reason: str | None = None
    exit: dict[str, Any] | None = None
    pipes: list[Any] = field(default_factory=list)
    done: Any = None

    @property
    def last_error(self) -> str | None:
        return self.kill_reason or (self.errors[-1] if self.errors else None)


@record
class WorkerRecord:
    spec: WorkerSpec
    policy: RestartPolicy
    state: State = State.STOPPED
    since: float = field(default_factory=time.monotonic)
    current: Incarnation | None = None
    previous: Incarnation | None = None
    restarts: int = 0
    retry_at: float | None = None
    spawn_error: str | None = None
    timer: Any = None
    spawn: asyncio.Future[None] | None = None  # the fork in flight; done once it is recorded or failed
    wanted: bool = True
    listener: Any = None
    ever_ready: bool = False
    settled: bool = False  # its first start ended one way or the other (ready, exited, spawn failed)
    blocked_on: str | None = None  # why the last spawn failed, when it is a cause that can go away
    early: list[dict[str, Any]] = field(default_factory=list)
    methods: frozenset[str] = frozenset()  # what the worker said it serves when it became ready
    history: SampleRing = field(default_factory=SampleRing)
    watchers: list[asyncio.Future[None]] = field(default_factory=list)  # `until` callers, woken on every transition

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def spawning(self) -> bool:
        return self.spawn is not None and not self.spawn.done()

    def begin_spawn(self) -> None:
        self.spawn = asyncio.get_running_loop().create_future()

    def end_spawn(self) -> None:
        if self.spawn is not None and not self.spawn.done():
            self.spawn.set_result(None)

    async def spawn_settled(self, bound: float) -> None:
        """Wait (at most `bound` seconds) for a fork in flight to be recorded or to fail."""
        if self.spawning:
            assert self.spawn is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.spawn), bound)

    def fire(self, event: Event) -> State:
        self.state = next_state(self.state, event)
        self.since = time.monotonic()
        for fut in self.watchers:
            if not fut.done():
                fut.set_result(None)
        self.watchers.clear()
        if self.listener is not None:
            self.listener()
        return self.state

    async def until(self, done: Callable[[State], bool], bound: float) -> bool:
        """Wait (at most `bound` seconds) for a state that satisfies `done`; whether one came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        while not done(self.state):
            left = deadline - loop.time()
            if left <= 0:
                return False
            fut = loop.create_future()
            self.watchers.append(fut)
            try:
                await asyncio.wait_for(fut, left)
            except TimeoutError:
                return done(self.state)
        return True

    @property
    def pid(self) -> int | None:
        return self.current.pid if self.current else None

    @property
    def last_exit(self) -> dict[str, Any] | None:
        inc = self.current if self.current and self.current.exit else self.previous
        return inc.exit if inc else None

    @property
    def last_error(self) -> str | None:
        if self.spawn_error:
            return self.spawn_error
        for inc in (self.current, self.previous):
            if inc is not None and inc.last_error:
                return inc.last_error
        return None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def snapshot(self, now: float) -> dict[str, Any]:
        inc = self.current
        alive = inc is not None and inc.exit is None
        hb_age = round(now - inc.last_hb, 3) if alive and inc and inc.last_hb else None
        return {
            "name": self.name,
            "kind": self.spec.kind,
            "state": self.state.value,
            "pid": inc.pid if alive and inc else None,
            "uptimeS": round(now - inc.started, 3) if alive and inc else None,
            "readyS": round(now - inc.ready_at, 3) if alive and inc and inc.ready_at else None,
            "restarts": self.restarts,
            "lastExit": self.last_exit,
            "rss": inc.stats.get("rss") if alive and inc else None,
            "cpuPct": inc.cpu_pct if alive and inc else None,
            "heartbeatAgeS": hb_age,
            "busSent": inc.stats.get("sent") if alive and inc else None,  # messages it put on the bus, as of its hb
            "lastError": self.last_error,
            "retryInS": round(max(0.0, self.retry_at - now), 3) if self.retry_at else None,
            "digest": self.spec.digest(),
            "onDemand": self.spec.on_demand,
        }


class ProcessTable:
    def __init__(self, on_change: Any = None) -> None:
        self.records: dict[str, WorkerRecord] = {}
        self.by_pid: dict[int, WorkerRecord] = {}
        self.on_change = on_change

    def add(self, spec: WorkerSpec) -> WorkerRecord:
        rec = WorkerRecord(spec=spec, policy=RestartPolicy(spec.restart), listener=self.on_change,
                           state=State.IDLE if spec.on_demand else State.STOPPED)
        self.records[spec.name] = rec
        return rec

    def get(self, name: str) -> WorkerRecord | None:
        return self.records.get(name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self.records.values()))

    def live_pids(self) -> list[int]:
        return list(self.by_pid)
