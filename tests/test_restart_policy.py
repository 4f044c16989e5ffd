"""The restart state machine and policy, stated once in config/restart.py."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from openclaw_sup.config.restart import (
    INITIAL_STATES,
    LIVE_STATES,
    RETRY_STATES,
    TRANSITIONS,
    UNHEALTHY_STATES,
    Backoff,
    Event,
    InvalidTransition,
    RestartPolicy,
    State,
    next_state,
)
from openclaw_sup.config.settings import RestartLimits


def test_documented_paths_exist() -> None:
    path = [(State.STOPPED, Event.START, State.STARTING), (State.STARTING, Event.READY, State.RUNNING),
            (State.RUNNING, Event.STOP, State.STOPPING), (State.STOPPING, Event.EXIT, State.STOPPED),
            (State.RUNNING, Event.EXIT, State.CRASHED), (State.CRASHED, Event.RETRY_LATER, State.BACKOFF),
            (State.BACKOFF, Event.RETRY, State.STARTING), (State.CRASHED, Event.GIVE_UP, State.FAILED),
            (State.FAILED, Event.RETRY, State.STARTING)]
    for src, ev, dst in path:
        assert next_state(src, ev) == dst


def test_every_state_is_reachable_and_stoppable() -> None:
    reachable = set(INITIAL_STATES) | set(TRANSITIONS.values())
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


def test_backoff_without_immediate_first_doubles_from_base_to_cap_and_resets() -> None:
    b = Backoff(0.5, 4.0, jitter=0.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def test_backoff_jitter_stays_within_bounds_and_under_the_cap() -> None:
    b = Backoff(1.0, 3.0, jitter=0.2, rng=random.Random(3))
    firsts = []
    for _ in range(200):
        b.reset()
        firsts.append(b.next())
    assert all(0.8 <= d <= 1.2 for d in firsts) and len(set(firsts)) > 100
    b.consecutive = 10
    assert all(2.4 <= b.delay() <= 3.0 for _ in range(200))


def test_policy_and_backoff_share_one_delay_rule() -> None:
    lim = RestartLimits(backoff_base_ms=250, backoff_max_ms=2000, jitter=0.0, crash_loop_max=0)
    pol, plain = RestartPolicy(lim), Backoff(0.25, 2.0, jitter=0.0)
    assert pol.on_exit(0.0, None) == 0.0  # the policy's first restart is immediate, then the same sequence
    assert [pol.on_exit(float(i), None) for i in range(1, 6)] == [plain.next() for _ in range(5)]


def test_named_state_sets_follow_the_transitions() -> None:
    assert {State.BACKOFF, State.FAILED} == RETRY_STATES
    assert all(next_state(s, Event.STOP) == State.STOPPING for s in LIVE_STATES - {State.STOPPING})
    assert all(next_state(s, Event.STOP) == State.STOPPED for s in UNHEALTHY_STATES)
    assert not LIVE_STATES & UNHEALTHY_STATES and State.STOPPED not in LIVE_STATES | UNHEALTHY_STATES


RETYPED = re.compile(r"""["'](crashed|backoff|failed)["'],\s*["'](crashed|backoff|failed)["']"""
                     r"|class \w*Backoff\b")


def test_no_module_retypes_the_state_sets_or_a_backoff_table() -> None:
    """The states and the restart delay rule are stated once: no other module lists the unhealthy states by
    hand or defines its own backoff."""
    root = Path(__file__).resolve().parent.parent
    offenders = []
    packages = [d for d in root.iterdir() if (d / "__init__.py").exists() and d.name not in ("tests", "bench")]
    for path in (p for d in packages for p in d.rglob("*.py")):
        if path.name == "restart.py":
            continue
        text = path.read_text()
        if RETYPED.search(text):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
