"""The scheduler worker's engine: one timer armed for the earliest due job, runs, and heartbeats.

No polling tick: after every change the timer is re-armed for the earliest `nextRunAtMs` (capped at five
minutes, so a wall-clock jump is noticed). A job due while the worker was down runs once at start (its next
time is then computed from now, never once per missed slot); a run found `running` at start was interrupted
by a crash: it is finished as an error with `interrupted: true`, what is left of its command's process group
is killed, and the schedule goes on. Runs of cron jobs share `cron.maxConcurrentRuns` slots (default 1);
heartbeats do not take a slot. The RPCs (`workers/scheduler/rpc.py`) read its jobs and change them only
through the public methods at the end of `Engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from typing import Any

from openclaw_sup.config.plan import CRON_DISABLED_LINE
from openclaw_sup.workers.procgroup import process_started, sweep_group
from openclaw_sup.workers.runtime import RequestError, WorkerContext
from openclaw_sup.workers.scheduler import heartbeat as hb
from openclaw_sup.workers.scheduler import policy
from openclaw_sup.workers.scheduler import schedule as sched
from openclaw_sup.workers.scheduler.delivery import (
    NOT_REQUESTED,
    Delivered,
    announce,
    channel_worker,
    is_missing_worker,
    webhook,
)
from openclaw_sup.workers.scheduler.execute import AGENT_DEFAULT_TIMEOUT_S, Outcome, run_agent_turn, run_command
from openclaw_sup.workers.scheduler.store import Store

DISABLED_LINE = CRON_DISABLED_LINE
TICK_FAILED = "cron: timer tick failed"
MAX_SLEEP_S = 300.0
PROBE_TIMEOUT_S = 5.0
PREVIEW_CHARS = 200
EVENT_SUMMARY_CHARS = 500
INTERRUPTED = "interrupted: the scheduler stopped while this run was in progress"
DEFAULT_VISIBILITY = {"showOk": False, "showAlerts": True, "useIndicator": True}


def now_ms() -> int:
    return int(time.time() * 1000)



UPSTREAM_DECLARATIONS = ("memory-core:", "skill-collection-review:", "heartbeat-task:", "claw:",
                         "openclaw-backup-scheduled")


def upstream_owned(job: dict[str, Any]) -> bool:
    """A job upstream's runtime declares for itself (memory dreaming, skill reviews, backups, ...): its message is
    an instruction to a part of upstream openclaw-sup does not have. Kept and listed as it is; never run here."""
    key = job.get("declarationKey")
    return isinstance(key, str) and key.startswith(UPSTREAM_DECLARATIONS)


class Engine:
    """Jobs, their timer, their runs and the heartbeats of one scheduler worker."""

    def __init__(self, ctx: WorkerContext, store: Store) -> None:
        options = ctx.options
        cron = options.get("cron") if isinstance(options.get("cron"), dict) else {}
        self.ctx = ctx
        self.log = ctx.log
        self.store = store
        self.enabled = cron.get("enabled") is not False
        self.triggers_enabled = (cron.get("triggers") or {}).get("enabled") is not False
        token = cron.get("webhookToken")
        self.webhook_token = token if isinstance(token, str) and token else None
        self.default_webhook = cron.get("webhook") if isinstance(cron.get("webhook"), str) else None
        self.scale = float(options.get("testTimeScale") or 1.0)
        self.slots = asyncio.Semaphore(max(1, int(cron.get("maxConcurrentRuns") or 1)))
        self.hb_defaults = options.get("heartbeat")
        self.hb_agents = options.get("agentHeartbeats")
        self.heartbeats: dict[str, hb.HeartbeatSpec] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.active: dict[str, asyncio.Task[None]] = {}
        self.extra: set[asyncio.Task[Any]] = set()
        self.agent_turns: Counter[str] = Counter()
        self.cron_turns: Counter[str] = Counter()
        self.timer: asyncio.TimerHandle | None = None
        self.hold_until = 0
        self.failures = 0
        self.stopped = False
        self.hb_enabled = bool(store.get_meta("heartbeatsEnabled", True))

    # ================================================================ lifecycle

    async def start(self) -> None:
        for job in self.store.jobs():
            if isinstance(job, dict) and isinstance(job.get("id"), str) and isinstance(job.get("state", {}), dict):
                self.jobs[job["id"]] = job
            else:
                self.log.error("cron: a stored job is unreadable and was left out: %s", str(job)[:200])
        self._recover_interrupted()
        self._declare_heartbeats()
        for job in self.jobs.values():
            if upstream_owned(job):
                self.log.info("cron: job %s (%s) was declared by upstream's %s, which openclaw-sup does not run: "
                              "kept as it is, not scheduled", job["id"], job.get("name"),
                              str(job["declarationKey"]).split(":", 1)[0])
        if not self.enabled:
            self.log.warning(DISABLED_LINE)
        self._arm()

    async def stop(self) -> None:
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
        tasks = [*self.active.values(), *self.extra]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _recover_interrupted(self) -> None:
        for entry, pgid, leader_started in self.store.running():
            now = now_ms()
            if pgid:
                killed = sweep_group(pgid, leader_started)
                if killed:
                    self.log.warning("cron: killed %d leftover process(es) of interrupted run %s (process group %d)",
                                     killed, entry["runId"], pgid)
            job = self.jobs.get(entry["jobId"])
            self.log.warning("cron: run %s of job %s was interrupted by a scheduler restart; recorded as an error",
                             entry["runId"], job.get("name") if job else entry["jobId"])
            self._finish(entry, Outcome("error", error=INTERRUPTED), Delivered("unknown"), finished=now,
                         interrupted=True)
        for job in list(self.jobs.values()):
            if (job.get("state") or {}).get("runningAtMs"):
                state = {k: v for k, v in job["state"].items() if k not in ("runningAtMs", "runningRunId")}
                self._save({**job, "state": state})

    def _declare_heartbeats(self) -> None:
        try:
            self.heartbeats = hb.resolve(self.hb_defaults, self.hb_agents)
        except ValueError as exc:
            self.log.error("heartbeat: config refused, no heartbeats scheduled: %s", exc)
            self.heartbeats = {}
        now = now_ms()
        existing = {j["declarationKey"]: j for j in self.jobs.values() if hb.is_heartbeat_job(j)}
        keep = [hb.declare(spec, existing.get(spec.declaration_key), now) for spec in self.heartbeats.values()]
        wanted = {s.declaration_key for s in self.heartbeats.values()}
        gone = [j["id"] for key, j in existing.items() if key not in wanted]
        for job in keep:
            if (job.get("state") or {}).get("nextRunAtMs") is None:
                job["state"]["nextRunAtMs"] = sched.first_run(job["schedule"], now, anchor_ms=0, job_id=job["id"])
        changed = [j for j in keep if j != existing.get(j["declarationKey"])]
        if changed or gone:
            self.store.save_jobs(changed, gone)
        for job_id in gone:
            self.jobs.pop(job_id, None)
        self.jobs.update({j["id"]: j for j in keep})

    # ================================================================ the timer

    def next_wake(self) -> int | None:
        """The earliest due time; a running heartbeat still counts (its next beat is skipped as in flight)."""
        due = [(j.get("state") or {}).get("nextRunAtMs") for j in self.jobs.values()
               if j.get("enabled", True) and not upstream_owned(j)
               and (j["id"] not in self.active or hb.is_heartbeat_job(j))]
        return min((d for d in due if d is not None), default=None)

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.enabled or self.stopped:
            return
        due = self.next_wake()
        unscheduled = any(j.get("enabled", True) and (j.get("state") or {}).get("nextRunAtMs") is None
                          and j["id"] not in self.active and not upstream_owned(j) for j in self.jobs.values())
        if due is None and not unscheduled:
            return
        now = now_ms()
        at = max(now if unscheduled or due is None else due, self.hold_until)
        delay = min(MAX_SLEEP_S, max(0.0, (at - now) / 1000))
        self.timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def release_memory(self) -> None:
        """What the store keeps, given back once the worker settled; not while a run still uses it."""
        if not self.active:
            self.store.release_memory()

    def _tick(self) -> None:
        """Start what is due; a job that cannot be handled is logged and skipped, never stopping the others."""
        self.timer = None
        now = now_ms()
        failed = False
        for job in list(self.jobs.values()):
            try:
                self._tick_job(job, now)
            except Exception as exc:
                failed = True
                self._tick_failed(exc, job)
        if not failed:
            self.failures = 0
        self._arm()
        self.ctx.busy()  # work done outside a request: settle again (close the idle state connection) once quiet

    def _tick_job(self, job: dict[str, Any], now: int) -> None:
        due = (job.get("state") or {}).get("nextRunAtMs")
        if not job.get("enabled", True) or upstream_owned(job):
            return
        if job["id"] in self.active:
            if hb.is_heartbeat_job(job) and due is not None and due <= now:
                self._beat_in_flight(job, now)
        elif due is None:
            self._schedule(job, now)
        elif due <= now:
            self._launch(job, "due")

    def _tick_failed(self, exc: BaseException, job: dict[str, Any] | None = None) -> None:
        """Log the signature line with its cause and hold the timer back (1 s, 2 s, ... 60 s) so it cannot spin."""
        self.failures += 1
        self.hold_until = now_ms() + int(min(60.0, 2.0 ** (self.failures - 1)) * 1000)
        where = f"job {job.get('id')} ({job.get('name')}): " if isinstance(job, dict) else ""
        self.log.error("%s: %s%s: %s", TICK_FAILED, where, type(exc).__name__, exc)

    def _schedule(self, job: dict[str, Any], now: int) -> None:
        """Give an enabled job without a due time its first one; a schedule that cannot be evaluated counts."""
        try:
            nxt = sched.first_run(job["schedule"], now, anchor_ms=int(job.get("createdAtMs") or now), job_id=job["id"])
            state = {**(job.get("state") or {}), "scheduleErrors": 0}
            enabled = nxt is not None
            if nxt is None:
                state.pop("nextRunAtMs", None)
            else:
                state["nextRunAtMs"] = nxt
        except Exception as exc:
            self.log.error("%s: job %s (%s): cannot compute its next run: %s", TICK_FAILED, job["id"],
                           job.get("name"), exc)
            state, enabled = policy.schedule_failure(job, now, str(exc), self.scale)
            if not enabled:
                self.log.warning("cron: job %s (%s) disabled after %d schedule errors (schedule-errors)", job["id"],
                                 job.get("name"), policy.MAX_SCHEDULE_ERRORS)
        self._save({**job, "enabled": enabled and bool(job.get("enabled", True)), "state": state})

    def _beat_in_flight(self, job: dict[str, Any], now: int) -> None:
        """A heartbeat falls due while the previous one's turn is still running: skipped, next slot armed."""
        spec = self.heartbeats.get(str(job.get("agentId")))
        if spec is not None:
            self._skip(spec, "requests-in-flight", now)
        nxt = sched.next_after(job["schedule"], now, anchor_ms=0, job_id=job["id"])
        self._save({**job, "state": {**(job.get("state") or {}), "nextRunAtMs": nxt}})

    def _save(self, job: dict[str, Any]) -> None:
        self.store.save_job(job)
        self.jobs[job["id"]] = job

    # ================================================================ runs

    def _launch(self, job: dict[str, Any], trigger: str, run_id: str | None = None) -> str:
        run_id = run_id or str(uuid.uuid4())
        job_id = job["id"]
        task = asyncio.get_running_loop().create_task(self._run(job_id, run_id, trigger))
        self.active[job_id] = task
        task.add_done_callback(lambda t: self._run_done(job_id, t))
        return run_id

    def _run_done(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self.active.get(job_id) is task:
            del self.active[job_id]
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._tick_failed(exc, self.jobs.get(job_id))
        with contextlib.suppress(RuntimeError):
            self._arm()
            self.ctx.busy()

    def _session_key(self, job: dict[str, Any]) -> str:
        if job.get("sessionKey"):
            return str(job["sessionKey"])
        target = str(job.get("sessionTarget") or "isolated")
        if target == "isolated":
            return f"cron:{job['id']}"
        if target.startswith("session:"):
            return target[len("session:"):]
        return f"agent:{job.get('agentId') or hb.DEFAULT_AGENT}:main"

    async def _run(self, job_id: str, run_id: str, trigger: str) -> None:
        if hb.is_heartbeat_job(self.jobs.get(job_id) or {}):
            await self._heartbeat_run(job_id, run_id, trigger)
            return
        async with self.slots:
            job = self.jobs.get(job_id)
            if job is None:
                return
            entry = self._begin(job, run_id, trigger)
            try:
                outcome = await self._execute(job, run_id)
                delivered = await self._deliver(job, run_id, outcome)
            except asyncio.CancelledError:
                self._finish(entry, Outcome("error", error=INTERRUPTED), Delivered("unknown"), finished=now_ms(),
                             interrupted=True)
                raise
            except Exception as exc:
                self.log.exception("cron: job %s (%s) run %s failed inside the scheduler", job_id, job.get("name"),
                                   run_id)
                outcome, delivered = Outcome("error", error=f"{type(exc).__name__}: {exc}"), NOT_REQUESTED
            self._finish(entry, outcome, delivered, finished=now_ms())

    def _begin(self, job: dict[str, Any], run_id: str, trigger: str) -> dict[str, Any]:
        started = now_ms()
        due = (job.get("state") or {}).get("nextRunAtMs")
        state = {**(job.get("state") or {}), "runningAtMs": started, "runningRunId": run_id}
        if job["schedule"].get("kind") != "at":
            with contextlib.suppress(Exception):
                nxt = sched.next_after(job["schedule"], started, anchor_ms=int(job.get("createdAtMs") or 0),
                                       job_id=job["id"])
                if nxt is not None:
                    state["nextRunAtMs"] = nxt
        entry = {"ts": started, "jobId": job["id"], "jobName": job.get("displayName") or job.get("name"),
                 "action": "started", "status": "running", "runId": run_id, "runAtMs": started, "trigger": trigger,
                 "sessionKey": self._session_key(job)}
        if trigger == "due" and due is not None:
            entry["dueAtMs"] = due
        job = {**job, "state": state}
        self.store.begin_run(job, entry)
        self.jobs[job["id"]] = job
        self.ctx.emit("cron", {"jobId": job["id"], "action": "started", "runId": run_id, "runAtMs": started})
        return entry

    def _finish(self, entry: dict[str, Any], outcome: Outcome, delivered: Delivered, *, finished: int,
                interrupted: bool = False) -> dict[str, Any]:
        """Settle the job and store the finished run in one transaction; returns the run entry."""
        job_id = entry["jobId"]
        job = self.jobs.get(job_id)
        started = int(entry["runAtMs"])
        best_effort = bool(((job or {}).get("delivery") or {}).get("bestEffort"))
        fin: dict[str, Any] = {**entry, "ts": finished, "action": "finished",
                               "status": policy.RUN_STATUS["interrupted" if interrupted else outcome.status],
                               "durationMs": max(0, finished - started), "deliveryStatus": delivered.status,
                               "delivered": delivered.status == "delivered"}
        for key, value in (("summary", outcome.summary), ("error", outcome.error), ("reason", outcome.reason),
                           ("deliveryError", delivered.error)):
            if value:
                fin[key] = value
        fin.update(outcome.details)
        if interrupted:
            fin["interrupted"] = True
        delete = None
        if job is None:
            fin["completionStatus"] = policy.OUTCOMES["interrupted" if interrupted else outcome.status].completion
        else:
            system_owned = hb.is_heartbeat_job(job)
            was_enabled = bool(job.get("enabled", True))
            try:
                st = policy.settle(job, "interrupted" if interrupted else outcome.status, started_ms=started,
                                   finished_ms=finished, delivery_failed=delivered.failed and not best_effort,
                                   permanent=outcome.permanent, error=outcome.error, system_owned=system_owned,
                                   scale=self.scale)
                job = {**job, "enabled": st.enabled, "state": st.state}
                fin["completionStatus"] = st.completion
                delete = job_id if st.delete else None
            except Exception as exc:
                self.log.error("%s: job %s (%s): cannot compute its next run: %s", TICK_FAILED, job_id,
                               job.get("name"), exc)
                state, enabled = policy.schedule_failure(job, finished, str(exc), self.scale)
                state = {k: v for k, v in state.items() if k not in ("runningAtMs", "runningRunId")}
                job = {**job, "enabled": enabled, "state": state}
                fin["completionStatus"] = "unknown"
            if was_enabled and not job["enabled"] and (job["state"].get("autoDisabled") or {}).get("reason"):
                reason = job["state"]["autoDisabled"]["reason"]
                self.log.warning("cron: job %s (%s) disabled (%s) after %s; last error: %s", job_id, job.get("name"),
                                 reason, "10 consecutive errors" if reason == "consecutive-failures"
                                 else "3 schedule errors", job["state"].get("lastError"))
            if delivered.status != "not-requested":
                job["state"]["lastDeliveryStatus"] = delivered.status
            fin["nextRunAtMs"] = job["state"].get("nextRunAtMs")
        self.store.finish_run(fin, None if delete else job, delete_job=delete, now_ms=finished)
        if delete:
            self.jobs.pop(job_id, None)
        elif job is not None:
            self.jobs[job_id] = job
        event = {"jobId": job_id, "action": "finished", "runId": fin["runId"], "status": fin["status"],
                 "runAtMs": started, "durationMs": fin["durationMs"], "nextRunAtMs": fin.get("nextRunAtMs"),
                 "deliveryStatus": delivered.status}
        for key in ("error", "summary"):
            if fin.get(key):
                event[key] = str(fin[key])[:EVENT_SUMMARY_CHARS]
        self.ctx.emit("cron", event)
        if delete:
            self.ctx.emit("cron", {"jobId": job_id, "action": "removed", "reason": "deleteAfterRun"})
        return fin

    async def _execute(self, job: dict[str, Any], run_id: str) -> Outcome:
        payload = job["payload"]
        kind = payload.get("kind")
        agent = str(job.get("agentId") or hb.DEFAULT_AGENT)
        if kind == "command":
            def spawned(pid: int) -> None:
                self.store.record_process(run_id, pid, process_started(pid))

            return await run_command(payload, spawned)
        if kind == "agentTurn":
            timeout = float(payload.get("timeoutSeconds") or AGENT_DEFAULT_TIMEOUT_S)
            params = {"agentId": agent, "sessionKey": self._session_key(job), "message": payload["message"],
                      "timeoutSeconds": int(timeout),
                      "source": {"kind": "cron", "jobId": job["id"], "jobName": job.get("name"), "runId": run_id}}
            for key in ("model", "thinking", "fallbacks", "lightContext", "toolsAllow"):
                if payload.get(key) is not None:
                    params[key] = payload[key]
            self.cron_turns[agent] += 1
            try:
                return await run_agent_turn(self.ctx, params, timeout)
            finally:
                self.cron_turns[agent] -= 1
        if kind == "systemEvent":
            self.store.add_event(agent, payload["text"], now_ms())
            if job.get("wakeMode", "now") == "now":
                self._wake_now(agent)
            return Outcome("ok", summary=payload["text"])
        return Outcome("error", error=f"payload kind {kind!r} cannot run here", permanent=True)

    async def _deliver(self, job: dict[str, Any], run_id: str, outcome: Outcome) -> Delivered:
        spec = job.get("delivery") or {}
        mode = spec.get("mode", "none")
        if mode == "none" or outcome.status == "skipped":
            return NOT_REQUESTED
        source = {"kind": "cron", "jobId": job["id"], "jobName": job.get("name"), "runId": run_id}
        if mode == "announce":
            if outcome.status != "ok" or not outcome.summary:
                return NOT_REQUESTED
            result = await announce(self.ctx, channel=spec["channel"], account_id=spec.get("accountId"),
                                    to=spec.get("to"), thread_id=spec.get("threadId"), text=outcome.summary,
                                    source=source)
        else:
            body = {**source, "status": outcome.status, "summary": outcome.summary, "error": outcome.error,
                    "ts": now_ms()}
            result = await webhook(spec["to"], body, self.webhook_token)
        if result.failed:
            self.log.warning("cron: delivery (%s) of job %s (%s) run %s failed: %s", mode, job["id"], job.get("name"),
                             run_id, result.error)
        return result

    # ================================================================ heartbeats

    async def _heartbeat_run(self, job_id: str, run_id: str, trigger: str) -> None:
        job = self.jobs[job_id]
        entry = self._begin(job, run_id, trigger)
        spec = self.heartbeats.get(str(job.get("agentId")))
        try:
            result = await self._beat(spec, run_id, trigger) if spec else {"status": "skipped", "reason": "disabled"}
        except asyncio.CancelledError:
            self._finish(entry, Outcome("error", error=INTERRUPTED), Delivered("unknown"), finished=now_ms(),
                         interrupted=True)
            raise
        status = {"skipped": "skipped", "failed": "error"}.get(result["status"], "ok")
        reason = result.get("reason")
        outcome = Outcome(status, summary=result.get("preview"), reason=reason,
                          error=(f"heartbeat skipped: {reason}" if status == "skipped" else
                                 reason if status == "error" else None))
        outcome.details["heartbeatStatus"] = result["status"]
        self._finish(entry, outcome, NOT_REQUESTED, finished=now_ms())

    def _wake_now(self, agent: str) -> None:
        job = next((j for j in self.jobs.values() if j.get("declarationKey") == f"{hb.DECLARATION_PREFIX}{agent}"),
                   None)
        if job is not None:
            if job["id"] not in self.active:
                self._launch(job, "wake")
            return
        try:
            spec = hb.resolve({**(self.hb_defaults or {}), "every": "30m", "agentId": agent}, None)[agent]
        except (ValueError, KeyError) as exc:
            self.log.warning("heartbeat: cannot wake agent %s: %s", agent, exc)
            return
        task = asyncio.get_running_loop().create_task(self._beat(spec, None, "wake"))
        self.extra.add(task)
        task.add_done_callback(self.extra.discard)

    def _skip(self, spec: hb.HeartbeatSpec, reason: str, started: int, **extra: Any) -> dict[str, Any]:
        self.log.info("heartbeat skipped reason=%s agent=%s", reason, spec.agent_id)
        return self._beat_event(spec, started, status="skipped", reason=reason, **extra)

    def _beat_event(self, spec: hb.HeartbeatSpec, started: int, **fields: Any) -> dict[str, Any]:
        payload = {"ts": now_ms(), "agentId": spec.agent_id, "durationMs": max(0, now_ms() - started),
                   **{k: v for k, v in fields.items() if v is not None}}
        self.ctx.emit("heartbeat", payload)
        return payload

    async def _probe_account(self, channel: str, account_id: str | None) -> tuple[bool, dict[str, Any]]:
        """Whether the channel account has a worker, and its heartbeat visibility (`channel.describe`)."""
        try:
            answer = await self.ctx.request("channel.describe", {}, to=channel_worker(channel, account_id),
                                            timeout=PROBE_TIMEOUT_S)
        except RequestError as exc:
            return not is_missing_worker(exc), dict(DEFAULT_VISIBILITY)
        except TimeoutError:
            return True, dict(DEFAULT_VISIBILITY)
        seen = answer.get("heartbeatVisibility") if isinstance(answer, dict) else None
        return True, {**DEFAULT_VISIBILITY, **(seen if isinstance(seen, dict) else {})}

    async def _beat(self, spec: hb.HeartbeatSpec, run_id: str | None, trigger: str) -> dict[str, Any]:
        """One heartbeat: the skip checks in upstream's order, the agent turn, then the reply's delivery."""
        started = now_ms()
        agent = spec.agent_id
        manual = trigger in ("manual", "wake")
        if not self.hb_enabled and not manual:
            return self._skip(spec, "disabled", started)
        if not manual:
            try:
                active = hb.within_active_hours(spec.active_hours, started)
            except ValueError as exc:
                self.log.warning("heartbeat: activeHours ignored for agent %s: %s", agent, exc)
                active = True
            if not active:
                return self._skip(spec, "quiet-hours", started)
        if self.agent_turns[agent]:
            return self._skip(spec, "requests-in-flight", started)
        if not manual and self.cron_turns[agent]:
            return self._skip(spec, "cron-in-progress", started)
        channel = None if spec.target in ("owner", "last", "none") else spec.target
        account_ok, visibility = True, dict(DEFAULT_VISIBILITY)
        if channel:
            account_ok, visibility = await self._probe_account(channel, spec.account_id)
            if not account_ok:
                self.log.warning("heartbeat: unknown accountId accountId=%s target=%s (no channel worker %s; "
                                 "delivery skipped)", spec.account_id or "default", spec.target,
                                 channel_worker(channel, spec.account_id))
        if not (visibility["showAlerts"] or visibility["showOk"] or visibility["useIndicator"]):
            return self._skip(spec, "alerts-disabled", started, channel=channel, accountId=spec.account_id)
        pending = self.store.events(agent)
        params: dict[str, Any] = {
            "agentId": agent, "kind": "heartbeat", "message": spec.prompt,
            "sessionKey": f"heartbeat:{agent}:{run_id or uuid.uuid4()}" if spec.isolated else f"agent:{agent}:main",
            "timeoutSeconds": spec.timeout_s, "lightContext": spec.light_context,
            "systemEvents": [{"text": text, "ts": ts} for _id, text, ts in pending],
            "source": {"kind": "heartbeat", "trigger": trigger, "runId": run_id, "target": spec.target},
        }
        if spec.model:
            params["model"] = spec.model
        self.agent_turns[agent] += 1
        try:
            outcome = await run_agent_turn(self.ctx, params, spec.timeout_s)
        finally:
            self.agent_turns[agent] -= 1
        if outcome.status == "skipped":
            return self._skip(spec, outcome.reason or "agent-skipped", started)
        if outcome.status == "error":
            self.log.error("heartbeat failed: %s", outcome.error)
            return self._beat_event(spec, started, status="failed", reason=outcome.error)
        self.store.drop_events([i for i, _t, _ts in pending])
        kind, text = hb.classify_reply(outcome.summary)
        route = outcome.details.get("route") if isinstance(outcome.details.get("route"), dict) else None
        target = ({"channel": channel, "accountId": spec.account_id, "to": spec.to} if channel
                  else route if spec.target in ("owner", "last") and route else None)
        if kind != "content":
            status = "ok-token" if kind == "ack" else "ok-empty"
            if kind == "ack" and visibility["showOk"] and target and account_ok:
                await self._send_beat(spec, target, hb.ACK_TOKEN, run_id)
            return self._beat_event(spec, started, status=status)
        preview = text[:PREVIEW_CHARS]
        if not account_ok:
            return self._beat_event(spec, started, status="skipped", reason="unknown-account", preview=preview,
                                    channel=channel, accountId=spec.account_id)
        if target is None:
            return self._skip(spec, "target-none" if spec.target == "none" else "no-route", started, preview=preview)
        if not visibility["showAlerts"]:
            return self._skip(spec, "alerts-disabled", started, preview=preview, channel=target.get("channel"))
        sent = await self._send_beat(spec, target, text, run_id)
        fields = {"preview": preview, "channel": target.get("channel"), "accountId": target.get("accountId"),
                  "to": target.get("to")}
        if sent.failed:
            self.log.warning("heartbeat: delivery failed: %s", sent.error)
            return self._beat_event(spec, started, status="failed", reason=sent.error, **fields)
        return self._beat_event(spec, started, status="sent", **fields)

    async def _send_beat(self, spec: hb.HeartbeatSpec, target: dict[str, Any], text: str,
                         run_id: str | None) -> Delivered:
        return await announce(self.ctx, channel=str(target.get("channel")), account_id=target.get("accountId"),
                              to=target.get("to"), thread_id=target.get("threadId"), text=text,
                              source={"kind": "heartbeat", "agentId": spec.agent_id, "runId": run_id})

    # ================================================================ what the RPCs change

    def running(self, job_id: str) -> bool:
        return job_id in self.active

    def run_now(self, job: dict[str, Any]) -> str:
        return self._launch(job, "manual")

    def add(self, job: dict[str, Any]) -> None:
        self._save(job)
        self.log.info("cron: job added %s (%s)", job["id"], job["name"])
        self.ctx.emit("cron", {"jobId": job["id"], "action": "added", "nextRunAtMs": job["state"].get("nextRunAtMs")})
        self._arm()

    def update(self, job: dict[str, Any]) -> None:
        self._save(job)
        self.ctx.emit("cron", {"jobId": job["id"], "action": "updated",
                               "nextRunAtMs": job["state"].get("nextRunAtMs")})
        self._arm()

    def remove(self, job: dict[str, Any]) -> None:
        self.store.delete_job(job["id"])
        self.jobs.pop(job["id"], None)
        self.log.info("cron: job removed %s (%s)", job["id"], job.get("name"))
        self.ctx.emit("cron", {"jobId": job["id"], "action": "removed"})
        self._arm()

    def set_heartbeats(self, enabled: bool) -> None:
        self.hb_enabled = enabled
        self.store.set_meta("heartbeatsEnabled", enabled)
        self.log.info("heartbeat: %s by set-heartbeats", "enabled" if enabled else "disabled")

    def wake(self, agent: str | None, text: str, now: bool) -> None:
        """Queue `text` as a system event for `agent` (default: the first with a heartbeat); `now` beats at once."""
        agent = str(agent or next(iter(self.heartbeats), hb.DEFAULT_AGENT))
        self.store.add_event(agent, text, now_ms())
        if now:
            self._wake_now(agent)
