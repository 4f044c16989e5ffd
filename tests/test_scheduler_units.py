"""The scheduler's parts on their own: schedule math (DST included), the failure policy, retention, heartbeat
rules, job validation, the cron.list envelope, and the command runner with real processes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
import pytest

from conftest import wait_for
from openclaw_sup.workers import procgroup
from openclaw_sup.workers.scheduler import execute, jobs, policy
from openclaw_sup.workers.scheduler import heartbeat as hb
from openclaw_sup.workers.scheduler import schedule as sched
from openclaw_sup.workers.scheduler.store import Store
from openclaw_sup.workers.scheduler.timeparse import duration_ms, parse_instant_ms

SECOND, MINUTE, HOUR = 1000, 60_000, 3_600_000


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def local(ts_ms: int, tz: str) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(tz)).isoformat()


def cron_times(expr: str, tz: str, start: datetime, n: int, job_id: str = "j") -> list[str]:
    schedule = sched.normalize({"kind": "cron", "expr": expr, "tz": tz}, ms(start))
    out, t = [], ms(start)
    for _ in range(n):
        t = sched.next_after(schedule, t, anchor_ms=0, job_id=job_id)
        out.append(local(t, tz))
    return out


# -- schedules -------------------------------------------------------------------------------------------


def test_durations_and_instants() -> None:
    assert duration_ms("30m") == 30 * MINUTE and duration_ms("500ms") == 500 and duration_ms("1h") == HOUR
    assert duration_ms("0m") == 0 and duration_ms(5) == 5 * MINUTE
    with pytest.raises(ValueError, match="use a number with a unit"):
        duration_ms("soon")
    now = ms(datetime(2026, 5, 1, 12, tzinfo=UTC))
    assert parse_instant_ms("20m", now) == now + 20 * MINUTE
    assert parse_instant_ms("2026-05-01T14:00:00Z", now) == now + 2 * HOUR
    assert parse_instant_ms("2026-05-01T14:00:00", now) == now + 2 * HOUR  # no offset, no tz: UTC
    assert parse_instant_ms("2026-05-01T14:00:00", now, "Europe/Paris") == now  # 14:00 CEST is 12:00 UTC
    assert parse_instant_ms(now + 5, now) == now + 5


def test_at_is_one_shot_and_stored_as_utc() -> None:
    now = ms(datetime(2026, 5, 1, 12, tzinfo=UTC))
    s = sched.normalize({"kind": "at", "at": "20m"}, now)
    assert s == {"kind": "at", "at": "2026-05-01T12:20:00.000Z"}
    assert sched.first_run(s, now, anchor_ms=now, job_id="j") == now + 20 * MINUTE
    assert sched.next_after(s, now + HOUR, anchor_ms=now, job_id="j") is None
    past = sched.normalize({"kind": "at", "at": "2026-05-01T11:00:00Z"}, now)
    assert sched.first_run(past, now, anchor_ms=now, job_id="j") == now - HOUR  # missed: due at once


def test_every_follows_its_anchor_and_skips_missed_slots() -> None:
    s = sched.normalize({"kind": "every", "everyMs": 500, "anchorMs": 1000}, 0)
    assert sched.next_after(s, 0, anchor_ms=0, job_id="j") == 1000
    assert sched.next_after(s, 1000, anchor_ms=0, job_id="j") == 1500
    assert sched.next_after(s, 1499, anchor_ms=0, job_id="j") == 1500
    # Ten slots missed while down: the next is the first one after now, not the first missed.
    assert sched.next_after(s, 1000 + 10 * 500 + 1, anchor_ms=0, job_id="j") == 1000 + 11 * 500
    # Without anchorMs the creation time anchors it.
    t = sched.normalize({"kind": "every", "everyMs": MINUTE}, 0)
    assert sched.first_run(t, 7_000, anchor_ms=7_000, job_id="j") == 67_000


def test_cron_in_paris_across_spring_forward_and_fall_back() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist and fires at 03:00 that day.
    assert cron_times("30 2 * * *", "Europe/Paris", datetime(2026, 3, 28, 12, tzinfo=UTC), 3) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; a fixed 02:30 fires once, in the first pass.
    assert cron_times("30 2 * * *", "Europe/Paris", datetime(2026, 10, 24, 12, tzinfo=UTC), 2) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    # An interval expression follows the wall clock through both halves of the repeated hour.
    assert cron_times("*/30 * * * *", "Europe/Paris", datetime(2026, 10, 24, 23, 15, tzinfo=UTC), 5) == [
        "2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00"]


def test_cron_in_new_york_keeps_local_time_across_dst() -> None:
    # 2026-03-08 spring forward, 2026-11-01 fall back: 09:00 stays 09:00 local, so UTC moves by an hour.
    spring = cron_times("0 9 * * *", "America/New_York", datetime(2026, 3, 7, 0, tzinfo=UTC), 2)
    assert spring == ["2026-03-07T09:00:00-05:00", "2026-03-08T09:00:00-04:00"]
    fall = cron_times("0 9 * * *", "America/New_York", datetime(2026, 10, 31, 0, tzinfo=UTC), 2)
    assert fall == ["2026-10-31T09:00:00-04:00", "2026-11-01T09:00:00-05:00"]
    assert cron_times("0 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC), 2) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]


def test_cron_fields_nicknames_seconds_and_stagger() -> None:
    start = datetime(2026, 6, 1, 0, 0, 5, tzinfo=UTC)
    assert cron_times("*/20 * * * * *", "UTC", start, 3) == [
        "2026-06-01T00:00:20+00:00", "2026-06-01T00:00:40+00:00", "2026-06-01T00:01:00+00:00"]
    assert cron_times("@hourly", "UTC", start, 1) == ["2026-06-01T01:00:00+00:00"]
    # Day of month and day of week are OR-ed when both are restricted: the 1st, or any Monday.
    assert cron_times("0 0 1 * 1", "UTC", datetime(2026, 6, 2, tzinfo=UTC), 2) == [
        "2026-06-08T00:00:00+00:00", "2026-06-15T00:00:00+00:00"]
    staggered = sched.normalize({"kind": "cron", "expr": "0 * * * *", "tz": "UTC", "staggerMs": 300_000}, 0)
    a = sched.next_after(staggered, ms(start), anchor_ms=0, job_id="alpha")
    b = sched.next_after(staggered, ms(start), anchor_ms=0, job_id="beta")
    # Each job's slot is the hour plus its own offset under 5 minutes; 00:00 + offset is still ahead of 00:00:05.
    assert a != b and all(ms(start) < t < ms(datetime(2026, 6, 1, 0, 5, tzinfo=UTC)) for t in (a, b))
    assert sched.next_after(staggered, a, anchor_ms=0, job_id="alpha") == a + HOUR


@pytest.mark.parametrize(("raw", "message"), [
    ({"kind": "cron", "expr": "61 * * * *"}, "schedule.expr '61 * * * *'"),
    ({"kind": "cron", "expr": "* * *"}, "expected 5 fields"),
    ({"kind": "cron", "expr": "0 9 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"kind": "every", "everyMs": 0}, "schedule.everyMs"),
    ({"kind": "at", "at": "someday"}, "neither an ISO time"),
    ({"kind": "on-exit", "command": "x"}, "expected at, every or cron"),
    ("0 9 * * *", "expected an object"),
])
def test_bad_schedules_say_what_to_send(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        sched.normalize(raw, 0)
    assert message in str(info.value)


# -- policy ----------------------------------------------------------------------------------------------


def recurring(**state: object) -> dict:
    return {"id": "j", "enabled": True, "createdAtMs": 0, "schedule": {"kind": "every", "everyMs": SECOND},
            "state": dict(state)}


def test_backoff_sequence_then_reset_on_success() -> None:
    assert [policy.backoff_ms(n) for n in range(1, 8)] == [30_000, 60_000, 300_000, 900_000, 3_600_000,
                                                           3_600_000, 3_600_000]
    assert policy.backoff_ms(3, scale=0.001) == 300
    job, t, gaps = recurring(), 10_000, []
    for _ in range(5):
        st = policy.settle(job, "error", started_ms=t, finished_ms=t + 100, error="boom")
        gaps.append(st.state["nextRunAtMs"] - (t + 100))
        job = {**job, "enabled": st.enabled, "state": st.state}
        t = st.state["nextRunAtMs"]
    assert gaps == [30_000, 60_000, 300_000, 900_000, 3_600_000]
    assert job["state"]["consecutiveErrors"] == 5 and job["state"]["lastError"] == "boom"
    ok = policy.settle(job, "ok", started_ms=t, finished_ms=t + 100)
    assert ok.state["consecutiveErrors"] == 0 and "lastError" not in ok.state
    assert ok.state["nextRunAtMs"] - (t + 100) <= SECOND


def test_auto_disable_after_ten_consecutive_errors() -> None:
    job, t = recurring(), 0
    for n in range(1, 11):
        st = policy.settle(job, "error", started_ms=t, finished_ms=t + 1, error=f"fail {n}", scale=0.0001)
        job = {**job, "enabled": st.enabled, "state": st.state}
        t = st.state.get("nextRunAtMs", t)
        assert st.enabled is (n < 10)
    assert job["state"]["autoDisabled"]["reason"] == "consecutive-failures"
    assert "nextRunAtMs" not in job["state"]


def test_skips_and_delivery_failures_do_not_back_off() -> None:
    job = recurring(consecutiveErrors=3)
    skipped = policy.settle(job, "skipped", started_ms=0, finished_ms=10)
    assert skipped.state["consecutiveErrors"] == 3 and skipped.state["consecutiveSkipped"] == 1
    assert skipped.state["nextRunAtMs"] == SECOND
    undelivered = policy.settle(job, "ok", started_ms=0, finished_ms=10, delivery_failed=True)
    assert undelivered.completion == "failed" and undelivered.state["nextRunAtMs"] == SECOND
    assert undelivered.state["lastRunStatus"] == "ok"


def test_one_shot_completion() -> None:
    at = {"id": "o", "enabled": True, "createdAtMs": 0, "schedule": {"kind": "at", "at": "2026-01-01T00:00:00Z"},
          "state": {}}
    assert policy.settle(at, "ok", started_ms=0, finished_ms=1).delete is True
    kept = policy.settle({**at, "deleteAfterRun": False}, "ok", started_ms=0, finished_ms=1)
    assert kept.delete is False and kept.enabled is False
    assert policy.settle(at, "ok", started_ms=0, finished_ms=1, delivery_failed=True).delete is False
    retry = policy.settle(at, "error", started_ms=0, finished_ms=1)
    assert retry.enabled and retry.state["nextRunAtMs"] == 1 + 30_000
    assert policy.settle(at, "error", started_ms=0, finished_ms=1, permanent=True).enabled is False
    assert policy.settle(at, "interrupted", started_ms=0, finished_ms=1).enabled is False


def test_missed_run_runs_once_then_follows_the_schedule() -> None:
    # Down from t=1 s to t=60.2 s: the job ran once at start-up; its next is the next slot after now.
    job = recurring(nextRunAtMs=1_000)
    st = policy.settle(job, "ok", started_ms=60_200, finished_ms=60_250)
    assert st.state["nextRunAtMs"] == 61_000


def test_schedule_errors_disable_on_the_third() -> None:
    job = recurring()
    for n in (1, 2, 3):
        state, enabled = policy.schedule_failure(job, 0, "bad expr")
        job = {**job, "state": state, "enabled": enabled}
        assert enabled is (n < 3)
    assert job["state"]["autoDisabled"]["reason"] == "schedule-errors"


# -- store -----------------------------------------------------------------------------------------------


def run_entry(job_id: str, n: int, at: int, status: str = "ok") -> dict:
    return {"ts": at + 5, "jobId": job_id, "runId": f"{job_id}-{n}", "runAtMs": at, "status": status,
            "action": "finished", "summary": f"run {n}"}


def test_retention_by_count_and_age(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "cron.sqlite", max_rows=5, max_age_ms=HOUR)
    job = recurring()
    now = 10 * HOUR
    for n in range(8):
        store.begin_run(job, run_entry("j", n, now + n))
        store.finish_run(run_entry("j", n, now + n), job, now_ms=now + n)
    entries, total = store.runs_page(job_id="j", limit=50)
    assert total == 5 and [e["runId"] for e in entries] == [f"j-{n}" for n in (7, 6, 5, 4, 3)]
    # Another job's old runs go when anything is written an hour later; a running row is never pruned.
    store.begin_run({**job, "id": "k"}, run_entry("k", 0, now))
    store.begin_run(job, run_entry("j", 9, now + 2 * HOUR))
    store.finish_run(run_entry("j", 9, now + 2 * HOUR), job, now_ms=now + 2 * HOUR)
    assert store.runs_page(job_id="j")[1] == 1
    assert [e["runId"] for e, _pgid, _t in store.running()] == ["k-0"]
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    store.close()
    db = sqlite3.connect(tmp_path / "state" / "cron.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_runs_page_filters(tmp_path: Path) -> None:
    store = Store(tmp_path / "cron.sqlite")
    job = recurring()
    for n, status in enumerate(("ok", "error", "ok", "skipped")):
        e = run_entry("j", n, 1000 + n, status)
        store.begin_run(job, e)
        store.finish_run(e, job, now_ms=2000)
    assert store.runs_page(job_id="j", statuses=["error"])[1] == 1
    assert [e["runId"] for e in store.runs_page(job_id="j", sort_dir="asc", limit=2, offset=1)[0]] == ["j-1", "j-2"]
    assert store.runs_page(query="RUN 3")[0][0]["runId"] == "j-3"
    assert store.runs_page(run_id="j-2")[1] == 1


# -- heartbeat -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "expected"), [
    ("HEARTBEAT_OK", ("ack", "")),
    ("  **HEARTBEAT_OK**  ", ("ack", "")),
    ("HEARTBEAT_OK all quiet here", ("ack", "")),
    ("Checked the inbox, nothing new. HEARTBEAT_OK.", ("ack", "")),
    ("", ("empty", "")),
    ("The disk is 97% full.", ("content", "The disk is 97% full.")),
    ("I saw HEARTBEAT_OK in the logs, but the backup failed.",
     ("content", "I saw HEARTBEAT_OK in the logs, but the backup failed.")),
    ("HEARTBEAT_OK " + "x" * 301, ("content", "x" * 301)),
    ("HEARTBEAT_OK " + "x" * 300, ("ack", "")),
])
def test_heartbeat_ack_only_at_the_edges(reply: str, expected: tuple[str, str]) -> None:
    assert hb.classify_reply(reply) == expected


def test_active_hours() -> None:
    def at(h: int, m: int = 0, tz: str = "UTC") -> int:
        return ms(datetime(2026, 6, 1, h, m, tzinfo=ZoneInfo(tz)))

    day = {"start": "09:00", "end": "17:00", "timezone": "UTC"}
    assert hb.within_active_hours(day, at(9)) and hb.within_active_hours(day, at(16, 59))
    assert not hb.within_active_hours(day, at(17)) and not hb.within_active_hours(day, at(8, 59))
    night = {"start": "22:00", "end": "06:00", "timezone": "Europe/Paris"}
    assert hb.within_active_hours(night, at(23, tz="Europe/Paris"))
    assert hb.within_active_hours(night, at(5, 59, tz="Europe/Paris"))
    assert not hb.within_active_hours(night, at(12, tz="Europe/Paris"))
    assert hb.within_active_hours({"start": "00:00", "end": "24:00", "timezone": "UTC"}, at(23, 59))
    assert not hb.within_active_hours({"start": "08:00", "end": "08:00", "timezone": "UTC"}, at(8))
    assert hb.within_active_hours(None, at(3))


def test_heartbeat_resolution_and_declaration() -> None:
    specs = hb.resolve({"every": "1h", "target": "telegram"}, {})
    assert list(specs) == ["main"] and specs["main"].every_ms == HOUR and specs["main"].timeout_s == 600
    assert hb.resolve(None, None)["main"].every == "30m"
    assert hb.resolve({"every": "0m"}, None) == {}
    per_agent = hb.resolve({"every": "1h", "prompt": "p"}, {"ops": {"every": "10m"}, "quiet": {"every": "0m"}})
    assert list(per_agent) == ["ops"] and per_agent["ops"].prompt == "p" and per_agent["ops"].timeout_s == 600
    job = hb.declare(specs["main"], None, 1000)
    assert job["declarationKey"] == "heartbeat:main" and job["displayName"] == "Heartbeat (main)"
    assert job["payload"] == {"kind": "heartbeat"} and 0 <= job["schedule"]["anchorMs"] < HOUR
    again = hb.declare(specs["main"], {**job, "state": {"nextRunAtMs": 5}}, 2000)
    assert again["id"] == job["id"] and again["state"] == {"nextRunAtMs": 5}
    changed = hb.declare(hb.resolve({"every": "2h"}, None)["main"], {**job, "state": {"nextRunAtMs": 5}}, 2000)
    assert changed["id"] == job["id"] and "nextRunAtMs" not in changed["state"]


# -- jobs ------------------------------------------------------------------------------------------------


def add(**fields: object) -> dict:
    base = {"name": "n", "schedule": {"kind": "every", "everyMs": 1000},
            "payload": {"kind": "command", "argv": ["true"]}}
    return jobs.build({**base, **fields}, now_ms=1000)


def test_job_validation_messages() -> None:
    assert add()["sessionTarget"] == "isolated" and add()["wakeMode"] == "now"
    assert add(payload={"kind": "command", "command": "echo hi"})["payload"]["argv"] == ["sh", "-lc", "echo hi"]
    assert add(payload={"kind": "systemEvent", "text": "t"})["sessionTarget"] == "main"
    cases = [
        ({"name": ""}, "name: expected a non-empty string"),
        ({"payload": {"kind": "agentTurn", "message": "m"}, "sessionTarget": "main"}, 'use "isolated"'),
        ({"payload": {"kind": "heartbeat"}}, "system-owned"),
        ({"payload": {"kind": "command", "argv": []}}, "payload.argv"),
        ({"delivery": {"mode": "webhook", "to": "ftp://x"}}, "http(s) URL"),
        ({"delivery": {"mode": "announce", "channel": "last"}}, "name the channel"),
        ({"wakeMode": "later"}, "wakeMode"),
        ({"colour": "red"}, "unknown field(s) colour"),
    ]
    for fields, message in cases:
        with pytest.raises(jobs.JobError) as info:
            add(**fields)
        assert message in str(info.value), (fields, str(info.value))


def test_patch_merges_same_kind_and_protects_heartbeats() -> None:
    job = add(payload={"kind": "command", "argv": ["true"], "timeoutSeconds": 5})
    patched = jobs.apply_patch(job, {"payload": {"argv": ["false"]}, "enabled": False}, now_ms=2000,
                               default_webhook=None)
    assert patched["payload"] == {"kind": "command", "argv": ["false"], "timeoutSeconds": 5}
    assert patched["enabled"] is False and patched["id"] == job["id"] and patched["updatedAtMs"] == 2000
    with pytest.raises(jobs.JobError, match="cannot be cleared"):
        jobs.apply_patch(job, {"name": None}, now_ms=2000, default_webhook=None)
    beat = hb.declare(hb.resolve(None, None)["main"], None, 0)
    with pytest.raises(jobs.JobError, match="system-owned heartbeat"):
        jobs.apply_patch(beat, {"enabled": False}, now_ms=0, default_webhook=None)


def test_list_page_envelope_matches_the_cli_checks() -> None:
    many = [add(name=f"job{i}") for i in range(5)]
    for i, j in enumerate(many):
        j["state"]["nextRunAtMs"] = 10_000 - i
    first = jobs.list_page(many, {"limit": 2, "offset": 0})
    assert first["total"] == 5 and first["hasMore"] is True and first["nextOffset"] == 2
    assert [j["name"] for j in first["jobs"]] == ["job4", "job3"]
    last = jobs.list_page(many, {"limit": 2, "offset": 4})
    assert last["hasMore"] is False and last["nextOffset"] is None and len(last["jobs"]) == 1
    assert first["snapshotRevision"] == last["snapshotRevision"]
    assert set(first["deliveryPreviews"]) == {j["id"] for j in first["jobs"]}
    many[0]["enabled"] = False
    assert jobs.list_page(many, {})["total"] == 4
    assert jobs.list_page(many, {"includeDisabled": True, "query": "JOB0"})["total"] == 1
    assert jobs.list_page(many, {"sortBy": "name", "sortDir": "desc"})["jobs"][0]["name"] == "job4"
    with pytest.raises(jobs.JobError, match="limit must be a whole number from 1 to 200"):
        jobs.list_page(many, {"limit": 500})


# -- the command runner, with real processes ---------------------------------------------------------------


def run(payload: dict) -> tuple[execute.Outcome, list[int]]:
    spawned: list[int] = []
    return asyncio.run(execute.run_command(payload, spawned.append)), spawned


@pytest.mark.live
def test_command_timeout_kills_the_whole_group() -> None:
    started = time.monotonic()
    outcome, spawned = run({"argv": ["sh", "-c", "sleep 30 & sleep 30; echo never"], "timeoutSeconds": 1})
    assert time.monotonic() - started < 5
    assert outcome.status == "error" and outcome.error == "command timed out after 1s; its process group was killed"
    wait_for(lambda: not [p for p in psutil.process_iter(["status"])
                          if _pgid(p.pid) == spawned[0] and p.info["status"] != psutil.STATUS_ZOMBIE], 5,
             what="every process of the timed-out command's group gone")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.live
def test_command_output_is_bounded_and_input_is_fed() -> None:
    big, _ = run({"argv": [sys.executable, "-c", "print('x' * 200000); print('tail')"]})
    assert big.status == "ok" and len(big.details["stdout"]) == procgroup.KEEP_BYTES
    assert big.details["outputTruncatedBytes"]["stdout"] == 200006 - procgroup.KEEP_BYTES
    assert big.summary is not None and big.summary.endswith("tail") and len(big.summary) <= execute.SUMMARY_CHARS
    echoed, _ = run({"argv": ["cat"], "input": "hello from stdin"})
    assert echoed.summary == "hello from stdin"
    failed, _ = run({"argv": ["sh", "-c", "echo partial; echo 'disk full' >&2; exit 4"]})
    assert failed.error == "command exited with code 4: disk full" and failed.details["exitCode"] == 4
    missing, spawned = run({"argv": ["/nonexistent/tool"]})
    assert missing.permanent and "cannot start '/nonexistent/tool'" in str(missing.error) and spawned == []
