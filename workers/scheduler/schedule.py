"""When a job runs: checking a schedule once at `cron.add`/`cron.update`, then computing its due times.

Kinds: `at` (one instant: ISO time, epoch ms or a delay such as `20m`, stored as ISO UTC), `every`
(`everyMs` from `anchorMs`, default the job's creation), `cron` (`expr` with 5 fields, or 6 with seconds
first as croner; `tz` IANA, default the host's zone; optional `staggerMs`, a stable per-job offset).
Cron expressions are evaluated by cronsim in the job's zone, so DST behaves as Debian cron: a wall time
skipped by spring-forward fires at the first instant after the gap, a fixed time inside the repeated
fall-back hour fires once, and interval expressions (`*/30 * * * *`) follow the wall clock through both halves.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from cronsim import CronSim, CronSimError

from openclaw_sup.workers.scheduler.timeparse import duration_ms, iso_utc, parse_instant_ms, zone

KINDS = ("at", "every", "cron")
MIN_EVERY_MS = 10
NICKNAMES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
EXAMPLE = ('use {"kind": "every", "everyMs": 60000}, {"kind": "cron", "expr": "0 9 * * 1-5", "tz": "Europe/Paris"} '
           'or {"kind": "at", "at": "20m"}')


class ScheduleError(ValueError):
    """A schedule that cannot be stored or evaluated; the message says what to change."""


def _expr(schedule: dict[str, Any]) -> str:
    expr = str(schedule["expr"]).strip()
    return NICKNAMES.get(expr.lower(), expr)


def _stagger_ms(schedule: dict[str, Any], job_id: str) -> int:
    stagger = int(schedule.get("staggerMs") or 0)
    if stagger <= 1:
        return 0
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") % stagger


def _cron_next(schedule: dict[str, Any], after_ms: int, job_id: str) -> int:
    offset = _stagger_ms(schedule, job_id)
    tz = zone(schedule.get("tz"))
    start = datetime.fromtimestamp((after_ms - offset) / 1000, tz)
    try:
        nxt = next(CronSim(_expr(schedule), start))
    except (CronSimError, StopIteration) as exc:
        raise ScheduleError(f"schedule.expr {schedule.get('expr')!r}: {exc or 'no future match'}") from None
    return int(nxt.timestamp() * 1000) + offset


def _int_field(raw: dict[str, Any], key: str, minimum: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise ScheduleError(f"schedule.{key}: expected a whole number of milliseconds >= {minimum} (got {value!r})")
    return int(value)


def normalize(raw: Any, now_ms: int) -> dict[str, Any]:
    """The stored form of a schedule from an RPC, or ScheduleError saying what is wrong and how to fix it."""
    if not isinstance(raw, dict):
        raise ScheduleError(f"schedule: expected an object; {EXAMPLE}")
    kind = raw.get("kind")
    if kind == "at":
        try:
            at_ms = parse_instant_ms(raw.get("at", raw.get("atMs")), now_ms, raw.get("tz"))
        except ValueError as exc:
            raise ScheduleError(str(exc)) from None
        return {"kind": "at", "at": iso_utc(at_ms)}
    if kind == "every":
        every = _int_field(raw, "everyMs", MIN_EVERY_MS)
        if every is None and raw.get("every") is not None:
            try:
                every = duration_ms(raw["every"], default_unit=None)
            except ValueError as exc:
                raise ScheduleError(f"schedule.every: {exc}") from None
        if every is None or every < MIN_EVERY_MS:
            raise ScheduleError(f"schedule.everyMs: expected milliseconds >= {MIN_EVERY_MS}, e.g. 60000 for a minute")
        out: dict[str, Any] = {"kind": "every", "everyMs": every}
        anchor = _int_field(raw, "anchorMs", 0)
        if anchor is not None:
            out["anchorMs"] = anchor
        return out
    if kind == "cron":
        expr = raw.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            raise ScheduleError('schedule.expr: expected a cron expression such as "0 9 * * 1-5" (5 fields, or 6 '
                                "with seconds first)")
        out = {"kind": "cron", "expr": expr.strip()}
        if raw.get("tz") not in (None, ""):
            try:
                zone(raw["tz"])
            except ValueError as exc:
                raise ScheduleError(f"schedule.tz: {exc}") from None
            out["tz"] = raw["tz"]
        stagger = _int_field(raw, "staggerMs", 0)
        if stagger:
            out["staggerMs"] = stagger
        if len(_expr(out).split()) not in (5, 6):
            raise ScheduleError(f"schedule.expr {expr!r}: expected 5 fields (minute hour day month weekday) or 6 "
                                "(seconds first)")
        _cron_next(out, now_ms, "")
        return out
    raise ScheduleError(f"schedule.kind: expected at, every or cron (got {kind!r}); {EXAMPLE}")


def at_ms(schedule: dict[str, Any]) -> int:
    return parse_instant_ms(schedule["at"], 0)


def next_after(schedule: dict[str, Any], after_ms: int, *, anchor_ms: int, job_id: str) -> int | None:
    """The first due time strictly after `after_ms`; None for a one-shot (it has no next)."""
    kind = schedule.get("kind")
    if kind == "every":
        every = int(schedule["everyMs"])
        anchor = int(schedule.get("anchorMs", anchor_ms))
        if after_ms < anchor:
            return anchor
        return anchor + ((after_ms - anchor) // every + 1) * every
    if kind == "cron":
        return _cron_next(schedule, after_ms, job_id)
    if kind == "at":
        return None
    raise ScheduleError(f"schedule.kind {kind!r} cannot be evaluated; {EXAMPLE}")


def first_run(schedule: dict[str, Any], now_ms: int, *, anchor_ms: int, job_id: str) -> int | None:
    """The first due time of a new or re-enabled job; a one-shot in the past is due at once."""
    if schedule.get("kind") == "at":
        return at_ms(schedule)
    return next_after(schedule, now_ms, anchor_ms=anchor_ms, job_id=job_id)
