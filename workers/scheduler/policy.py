"""What a run's outcome does to its job: error and skip counters, backoff, auto-disable, one-shot completion.

`OUTCOMES` says once, per outcome, how the counters move and what the completion is; `settle` applies it
and computes the next due time. Upstream's numbers: recurring backoff 30 s, 1 m, 5 m, 15 m, 60 m after
consecutive errors (reset by a success), auto-disable after 10 consecutive execution errors or 3 consecutive
schedule errors. Skips are counted apart and never back off. A delivery failure leaves the run `ok` but its
completion `failed` (no backoff; a one-shot is not deleted). A test shrinks the backoff unit with the worker
option `testTimeScale` (0.001 turns 30 s into 30 ms); nothing else reads it.
"""

from __future__ import annotations

from typing import Any, Literal

from openclaw_sup.config.record import record
from openclaw_sup.workers.scheduler import schedule as sched

BACKOFF_MS = (30_000, 60_000, 300_000, 900_000, 3_600_000)
MAX_CONSECUTIVE_ERRORS = 10
MAX_SCHEDULE_ERRORS = 3

Counter = Literal["reset", "add", "keep"]


@record(frozen=True)
class Rule:
    errors: Counter
    skips: Counter
    completion: str
    backs_off: bool = False


OUTCOMES: dict[str, Rule] = {
    "ok": Rule(errors="reset", skips="reset", completion="succeeded"),
    "error": Rule(errors="add", skips="reset", completion="failed", backs_off=True),
    "skipped": Rule(errors="keep", skips="add", completion="unknown"),
    "interrupted": Rule(errors="keep", skips="keep", completion="unknown"),
}

RUN_STATUS = {"ok": "ok", "error": "error", "skipped": "skipped", "interrupted": "error"}


def backoff_ms(consecutive_errors: int, scale: float = 1.0) -> int:
    step = BACKOFF_MS[max(0, min(consecutive_errors, len(BACKOFF_MS)) - 1)]
    return max(1, int(step * scale))


def _count(value: int, how: Counter) -> int:
    return {"reset": 0, "add": value + 1, "keep": value}[how]


@record(frozen=True)
class Settlement:
    state: dict[str, Any]
    enabled: bool
    delete: bool
    completion: str


def settle(job: dict[str, Any], outcome: str, *, started_ms: int, finished_ms: int, delivery_failed: bool = False,
           permanent: bool = False, error: str | None = None, system_owned: bool = False,
           scale: float = 1.0) -> Settlement:
    """The job after one finished (or interrupted) run. Raises ValueError when the schedule cannot be evaluated
    (the caller counts it as a schedule error)."""
    rule = OUTCOMES[outcome]
    state = {k: v for k, v in (job.get("state") or {}).items() if k not in ("runningAtMs", "runningRunId")}
    errors = _count(int(state.get("consecutiveErrors") or 0), rule.errors)
    skips = _count(int(state.get("consecutiveSkipped") or 0), rule.skips)
    state.update(lastRunAtMs=started_ms, lastDurationMs=max(0, finished_ms - started_ms),
                 lastRunStatus=RUN_STATUS[outcome], consecutiveErrors=errors, consecutiveSkipped=skips,
                 scheduleErrors=0)
    if error:
        state["lastError"] = error
    elif outcome == "ok":
        state.pop("lastError", None)
    completion = "failed" if outcome == "ok" and delivery_failed else rule.completion
    schedule = job["schedule"]
    enabled, delete = bool(job.get("enabled", True)), False
    if schedule.get("kind") == "at":
        retry = rule.backs_off and not permanent and not system_owned and errors < MAX_CONSECUTIVE_ERRORS
        if completion == "succeeded" and job.get("deleteAfterRun", True):
            delete = True
        if retry:
            state["nextRunAtMs"] = finished_ms + backoff_ms(errors, scale)
        else:
            enabled = False
            state.pop("nextRunAtMs", None)
        return Settlement(state, enabled, delete, completion)
    natural = sched.next_after(schedule, finished_ms, anchor_ms=int(job.get("createdAtMs") or 0), job_id=job["id"])
    nxt = natural
    if rule.backs_off and not system_owned and natural is not None:
        nxt = max(natural, finished_ms + backoff_ms(errors, scale))
    if not system_owned and errors >= MAX_CONSECUTIVE_ERRORS:
        enabled = False
        state["autoDisabled"] = {"reason": "consecutive-failures", "atMs": finished_ms, "consecutiveErrors": errors}
    if enabled and nxt is not None:
        state["nextRunAtMs"] = nxt
    else:
        state.pop("nextRunAtMs", None)
    return Settlement(state, enabled, delete, completion)


def schedule_failure(job: dict[str, Any], now_ms: int, reason: str, scale: float = 1.0) -> tuple[dict[str, Any], bool]:
    """A due time that could not be computed: retry after a backoff; the third in a row disables the job."""
    state = dict(job.get("state") or {})
    count = int(state.get("scheduleErrors") or 0) + 1
    state.update(scheduleErrors=count, lastError=f"schedule error: {reason}")
    if count >= MAX_SCHEDULE_ERRORS:
        state.pop("nextRunAtMs", None)
        state["autoDisabled"] = {"reason": "schedule-errors", "atMs": now_ms, "scheduleErrors": count}
        return state, False
    state["nextRunAtMs"] = now_ms + backoff_ms(count, scale)
    return state, bool(job.get("enabled", True))


def list_status(job: dict[str, Any]) -> str:
    """Upstream's list status: disabled | running | ok | error | skipped | idle."""
    state = job.get("state") or {}
    if not job.get("enabled", True):
        return "disabled"
    if state.get("runningAtMs"):
        return "running"
    return str(state.get("lastRunStatus") or "idle")
