"""The scheduler worker's RPCs (`cron.*`, `set-heartbeats`, `wake`): a thin layer that checks params, builds
jobs with `jobs.py`, hands them to the engine (`engine.py`) and shapes the answers upstream's clients expect."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from openclaw_sup.workers.runtime import RequestError, WorkerContext
from openclaw_sup.workers.scheduler import heartbeat as hb
from openclaw_sup.workers.scheduler import jobs as jobmod
from openclaw_sup.workers.scheduler import schedule as sched
from openclaw_sup.workers.scheduler.engine import Engine, now_ms


def _display(path: Path) -> str:
    home = os.environ.get("HOME")
    text = str(path)
    return "~" + text[len(home):] if home and text.startswith(home.rstrip("/") + "/") else text


def _job_id(params: dict[str, Any], method: str) -> str:
    job_id = params.get("id", params.get("jobId"))
    if not isinstance(job_id, str) or not job_id:
        raise RequestError("INVALID_REQUEST", f"invalid {method} params: missing id (pass id or jobId; list ids "
                                              "with cron.list)")
    return job_id


def _invalid(method: str, exc: Exception) -> RequestError:
    text = str(exc)
    return RequestError("INVALID_REQUEST", text if text.startswith("invalid ") else f"invalid {method} params: {text}")


class CronMethods:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _job(self, params: dict[str, Any], method: str) -> dict[str, Any]:
        job_id = _job_id(params, method)
        job = self.engine.jobs.get(job_id)
        if job is None:
            raise RequestError("INVALID_REQUEST", f"cron job not found: {job_id}. List automations (cron.list with "
                                                  "includeDisabled) and retry with a current job id.",
                               {"code": "CRON_JOB_NOT_FOUND", "jobId": job_id})
        return job

    async def rpc_status(self, params: dict[str, Any]) -> dict[str, Any]:
        path = _display(self.engine.store.path)
        return {"enabled": self.engine.enabled, "triggersEnabled": self.engine.triggers_enabled, "storePath": path,
                "storage": "sqlite", "sqlitePath": path, "jobs": len(self.engine.jobs),
                "nextWakeAtMs": self.engine.next_wake() if self.engine.enabled else None}

    async def rpc_list(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return jobmod.list_page(list(self.engine.jobs.values()), params)
        except jobmod.JobError as exc:
            raise _invalid("cron.list", exc) from None

    async def rpc_get(self, params: dict[str, Any]) -> dict[str, Any]:
        return jobmod.view(self._job(params, "cron.get"))

    async def rpc_add(self, params: dict[str, Any]) -> dict[str, Any]:
        now = now_ms()
        try:
            job = jobmod.build(params, now_ms=now, default_webhook=self.engine.default_webhook)
            if job["enabled"]:
                nxt = sched.first_run(job["schedule"], now, anchor_ms=now, job_id=job["id"])
                if nxt is not None:
                    job["state"]["nextRunAtMs"] = nxt
        except ValueError as exc:
            raise _invalid("cron.add", exc) from None
        self.engine.add(job)
        return jobmod.view(job)

    async def rpc_update(self, params: dict[str, Any]) -> dict[str, Any]:
        old = self._job(params, "cron.update")
        now = now_ms()
        try:
            job = jobmod.apply_patch(old, params.get("patch"), now_ms=now, default_webhook=self.engine.default_webhook)
            state = job["state"]
            if job["enabled"] and not old.get("enabled", True):
                for key in ("autoDisabled", "consecutiveErrors", "scheduleErrors", "nextRunAtMs"):
                    state.pop(key, None)
            if not job["enabled"]:
                state.pop("nextRunAtMs", None)
            elif job["schedule"] != old["schedule"] or state.get("nextRunAtMs") is None:
                nxt = sched.first_run(job["schedule"], now, anchor_ms=int(job["createdAtMs"]), job_id=job["id"])
                state.pop("nextRunAtMs", None)
                if nxt is not None:
                    state["nextRunAtMs"] = nxt
        except ValueError as exc:
            raise _invalid("cron.update", exc) from None
        self.engine.update(job)
        return jobmod.view(job)

    async def rpc_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        job = self._job(params, "cron.remove")
        if hb.is_heartbeat_job(job):
            raise RequestError("INVALID_REQUEST", f"invalid cron.remove params: job {job['id']} is the system-owned "
                                                  f"heartbeat of agent {job.get('agentId')}; set its every to 0m in "
                                                  "the config or turn heartbeats off with set-heartbeats")
        self.engine.remove(job)
        return {"ok": True, "removed": True}

    async def rpc_run(self, params: dict[str, Any]) -> dict[str, Any]:
        job = self._job(params, "cron.run")
        mode = params.get("mode") or "force"
        if mode not in ("force", "due", "if-enabled"):
            raise RequestError("INVALID_REQUEST", f"invalid cron.run params: mode must be force, due or if-enabled "
                                                  f"(got {mode!r})")
        if self.engine.running(job["id"]):
            return {"ok": True, "ran": False, "reason": "already-running"}
        enabled = bool(job.get("enabled", True))
        due = (job.get("state") or {}).get("nextRunAtMs")
        if mode == "due" and not (enabled and due is not None and due <= now_ms()):
            return {"ok": True, "ran": False, "reason": "not-due"}
        if mode == "if-enabled" and not enabled:
            return {"ok": True, "ran": False, "reason": "disabled"}
        run_id = self.engine.run_now(job)
        return {"ok": True, "enqueued": True, "runId": run_id}

    async def rpc_runs(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            limit, offset = jobmod.page_params(params, "cron.runs")
        except jobmod.JobError as exc:
            raise _invalid("cron.runs", exc) from None
        job_id = params.get("id", params.get("jobId"))
        run_id = params.get("runId")
        scope = params.get("scope") or ("job" if job_id is not None else "all")
        if scope == "job" and not isinstance(job_id, str):
            raise RequestError("INVALID_REQUEST", "invalid cron.runs params: missing id (pass id or jobId, or "
                                                  'scope "all")')

        def many(single: str, plural: str) -> list[str]:
            raw = params.get(plural) or ([params[single]] if params.get(single) else [])
            return [s for s in (raw if isinstance(raw, list) else [raw]) if isinstance(s, str) and s != "all"]

        entries, total = self.engine.store.runs_page(
            job_id=job_id if scope == "job" else None, run_id=run_id if isinstance(run_id, str) else None,
            statuses=many("status", "statuses"), delivery_statuses=many("deliveryStatus", "deliveryStatuses"),
            query=params.get("query") if isinstance(params.get("query"), str) else None,
            include_running=params.get("includeRunning") is True, sort_dir=params.get("sortDir") or "desc",
            limit=limit, offset=offset)
        if scope == "job" and total == 0 and job_id not in self.engine.jobs:
            _, ever = self.engine.store.runs_page(job_id=str(job_id), include_running=True, limit=1)
            if not ever:
                self._job({"id": job_id}, "cron.runs")
        offset = min(offset, total)
        nxt = offset + len(entries)
        return {"entries": entries, "total": total, "offset": offset, "limit": limit, "hasMore": nxt < total,
                "nextOffset": nxt if nxt < total else None}

    async def rpc_set_heartbeats(self, params: dict[str, Any]) -> dict[str, Any]:
        enabled = params.get("enabled")
        if not isinstance(enabled, bool):
            raise RequestError("INVALID_REQUEST", 'invalid set-heartbeats params: pass {"enabled": true} or '
                                                  '{"enabled": false}')
        self.engine.set_heartbeats(enabled)
        return {"ok": True, "enabled": enabled}

    async def rpc_wake(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode", "now")
        text = params.get("text")
        if mode not in jobmod.WAKE_MODES:
            raise RequestError("INVALID_REQUEST", f"invalid wake params: mode must be now or next-heartbeat "
                                                  f"(got {mode!r})")
        if not isinstance(text, str) or not text.strip():
            raise RequestError("INVALID_REQUEST", "invalid wake params: text must be a non-empty string")
        session_key = params.get("sessionKey")
        agent = params.get("agentId")
        if not agent and isinstance(session_key, str) and session_key.startswith("agent:"):
            agent = session_key.split(":")[1]
        self.engine.wake(agent, text.strip(), now=mode == "now")
        return {"ok": True}


def register_methods(ctx: WorkerContext, engine: Engine) -> None:
    m = CronMethods(engine)
    for method, fn in (("cron.status", m.rpc_status), ("cron.list", m.rpc_list), ("cron.get", m.rpc_get),
                       ("cron.add", m.rpc_add), ("cron.update", m.rpc_update), ("cron.remove", m.rpc_remove),
                       ("cron.run", m.rpc_run), ("cron.runs", m.rpc_runs), ("set-heartbeats", m.rpc_set_heartbeats),
                       ("wake", m.rpc_wake)):
        ctx.handle(method, fn)
