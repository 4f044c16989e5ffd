"""The restart state machine and policy, stated once in supervisor/restart.py."""

from __future__ import annotations

import random

import pytest

from openclaw_sup.config.settings import RestartLimits
from openclaw_sup.supervisor.restart import (
    TRANSITIONS,
    Event,
    InvalidTransition,
    RestartPolicy,
    State,
    next_state,
)


def test_documented_paths_exist() -> None:
    path = [(State.STOPPED, Event.START, State.STARTING), (State.STARTING, Event.READY, State.RUNNING),
            (State.RUNNING, Event.STOP, State.STOPPING), (State.STOPPING, Event.EXIT, State.STOPPED),
            (State.RUNNING, Event.EXIT, State.CRASHED), (State.CRASHED, Event.RETRY_LATER, State.BACKOFF),
            (State.BACKOFF, Event.RETRY, State.STARTING), (State.CRASHED, Event.GIVE_UP, State.FAILED),
            (State.FAILED, Event.RETRY, State.STARTING)]
    for src, ev, dst in path:
        assert next_state(src, ev) == dst


def test_every_state_is_reachable_and_stoppable() -> None:
    reachable = {State.STOPPED} | set(TRANSITIONS.values())
    assert reachable == set(State)
    for state in State:
        if state in (State.STOPPED, State.STOPPING):
            continue
        assert next_state(state, Event.STOP) in (State.STOPPING, State.STOPPED)


def test_invalid_transition_names_both_ends() -> None:
    with pytest.raises(InvalidTransition, match="stopped on ready"):
        next_state(State.STOPPED, Event.READY)


def test_first_restart_immediate_then_exponential_capped() -> None:
    lim = RestartLimits(backoff_base_ms=100, backoff_max_ms=1000, jitter=0.0, crash_loop_max=0)
    pol = RestartPolicy(lim)
    delays = [pol.on_exit(float(i), ran_for=0.01) for i in range(7)]
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_stays_within_bounds() -> None:
    lim = RestartLimits(backoff_base_ms=1000, backoff_max_ms=30_000, jitter=0.2, crash_loop_max=0)
    pol = RestartPolicy(lim, random.Random(7))
    pol.consecutive = 2
    samples = [pol.delay() for _ in range(200)]
    assert all(0.8 <= s <= 1.2 for s in samples)
    assert len(set(samples)) > 100


def test_stable_run_resets_backoff_and_crash_history() -> None:
    lim = RestartLimits(stable_after_ms=1000, crash_loop_max=3, crash_loop_window_ms=60_000, jitter=0)
    pol = RestartPolicy(lim)
    assert pol.on_exit(0.0, 0.1) == 0.0
    assert pol.on_exit(1.0, 0.1) == 0.1
    assert pol.on_exit(2.0, 5.0) == 0.0  # ran 5 s: stable, history cleared
    assert pol.on_exit(3.0, 0.1) == 0.1


def test_crash_loop_gives_up_within_window_only() -> None:
    lim = RestartLimits(crash_loop_max=3, crash_loop_window_ms=10_000, jitter=0)
    pol = RestartPolicy(lim)
    assert pol.on_exit(0.0, None) is not None
    assert pol.on_exit(1.0, None) is not None
    assert pol.on_exit(2.0, None) is None
    spaced = RestartPolicy(lim)
    assert all(spaced.on_exit(t, None) is not None for t in (0.0, 11.0, 22.0, 33.0))


def test_many_kills_after_stable_runs_never_fail() -> None:
    pol = RestartPolicy(RestartLimits(stable_after_ms=200, crash_loop_max=5))
    assert all(pol.on_exit(float(i), 0.25) == 0.0 for i in range(100))
