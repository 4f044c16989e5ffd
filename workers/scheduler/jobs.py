"""Jobs as the RPCs see them: checking `cron.add` and `cron.update`, and the views `cron.list`/`cron.get` return.

A stored job is the upstream job object (`id, name, enabled, createdAtMs, updatedAtMs, schedule,
sessionTarget, wakeMode, payload, delivery?, state{...}`); views add `nextRunAtMs`, `effectiveAgentId` and
`configRevision` as the real server does. Every refusal is a `JobError` whose message names the field, what
is wrong and what to send instead.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson

from openclaw_sup.workers.scheduler import schedule as sched
from openclaw_sup.workers.scheduler.heartbeat import DEFAULT_AGENT, is_heartbeat_job

SESSION_TARGETS = ("main", "isolated", "current")
WAKE_MODES = ("now", "next-heartbeat")
DELIVERY_MODES = ("none", "announce", "webhook")
PAYLOAD_KINDS = ("systemEvent", "agentTurn", "command")
MAX_COMMAND_TIMEOUT_S = 86_400
DEFAULT_COMMAND_TIMEOUT_S = 600
DEFINITION_KEYS = ("name", "displayName", "description", "agentId", "sessionKey", "enabled", "schedule",
                   "sessionTarget", "wakeMode", "payload", "delivery", "deleteAfterRun", "failureAlert")
LIST_SORT = ("nextRunAtMs", "updatedAtMs", "name")
MAX_LIST_LIMIT = 200


class JobError(ValueError):
    """A request the scheduler refuses; the message says what to change."""


def _text(value: Any, where: str, *, required: bool = False, max_len: int = 200) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise JobError(f"{where}: expected a non-empty string")
    if len(value) > max_len:
        raise JobError(f"{where}: at most {max_len} characters (got {len(value)})")
    return value.strip()


def _bool(value: Any, where: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise JobError(f"{where}: expected true or false (got {value!r})")
    return value


def _seconds(value: Any, where: str, maximum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or not 1 <= value <= maximum:
        raise JobError(f"{where}: expected whole seconds between 1 and {maximum} (got {value!r})")
    return int(value)


def _strings(value: Any, where: str, *, allow_empty: bool = True) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (not value and not allow_empty):
        raise JobError(f"{where}: expected a{' non-empty' if not allow_empty else 'n'} array of strings")
    return list(value)


def payload_of(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise JobError('payload: expected an object such as {"kind": "agentTurn", "message": "..."} or '
                       '{"kind": "command", "argv": ["echo", "hi"]}')
    kind = raw.get("kind")
    if kind == "systemEvent":
        return {"kind": kind, "text": _text(raw.get("text"), "payload.text", required=True, max_len=20_000)}
    if kind == "agentTurn":
        out: dict[str, Any] = {"kind": kind,
                               "message": _text(raw.get("message"), "payload.message", required=True,
                                                max_len=100_000)}
        for key in ("model", "thinking"):
            if raw.get(key) is not None:
                out[key] = _text(raw[key], f"payload.{key}")
        for key in ("fallbacks", "toolsAllow"):
            if raw.get(key) is not None:
                out[key] = _strings(raw[key], f"payload.{key}")
        if raw.get("timeoutSeconds") is not None:
            out["timeoutSeconds"] = _seconds(raw["timeoutSeconds"], "payload.timeoutSeconds", MAX_COMMAND_TIMEOUT_S)
        if raw.get("lightContext") is not None:
            out["lightContext"] = _bool(raw["lightContext"], "payload.lightContext")
        return out
    if kind == "command":
        argv = raw.get("argv")
        if argv is None and isinstance(raw.get("command"), str):
            argv = ["sh", "-lc", raw["command"]]
        out = {"kind": kind, "argv": _strings(argv, "payload.argv", allow_empty=False)}
        if raw.get("cwd") is not None:
            out["cwd"] = _text(raw["cwd"], "payload.cwd", max_len=4096)
        env = raw.get("env")
        if env is not None:
            if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
                raise JobError("payload.env: expected an object of string -> string")
            out["env"] = dict(env)
        if raw.get("input") is not None:
            if not isinstance(raw["input"], str):
                raise JobError("payload.input: expected a string (written to the command's stdin)")
            out["input"] = raw["input"]
        if raw.get("timeoutSeconds") is not None:
            out["timeoutSeconds"] = _seconds(raw["timeoutSeconds"], "payload.timeoutSeconds", MAX_COMMAND_TIMEOUT_S)
        return out
    if kind == "heartbeat":
        raise JobError("payload.kind heartbeat is system-owned: configure agents.defaults.heartbeat instead")
    raise JobError(f"payload.kind: expected systemEvent, agentTurn or command (got {kind!r})")


def delivery_of(raw: Any, default_webhook: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise JobError('delivery: expected an object such as {"mode": "announce", "channel": "telegram", "to": "..."}')
    mode = raw.get("mode", "announce")
    if mode not in DELIVERY_MODES:
        raise JobError(f"delivery.mode: expected none, announce or webhook (got {mode!r})")
    out: dict[str, Any] = {"mode": mode}
    if mode == "announce":
        channel = _text(raw.get("channel"), "delivery.channel", required=True, max_len=64)
        if channel == "last":
            raise JobError('delivery.channel "last" needs a route this scheduler does not know: name the channel, '
                           'e.g. "telegram", with accountId and to')
        out["channel"] = channel
        for key in ("to", "threadId", "accountId"):
            if raw.get(key) is not None:
                out[key] = _text(str(raw[key]) if isinstance(raw[key], int) else raw[key], f"delivery.{key}",
                                 max_len=512)
    elif mode == "webhook":
        url = raw.get("to") or default_webhook
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise JobError("delivery.to: a webhook needs an http(s) URL (or set cron.webhook as the default)")
        out["to"] = url
    if raw.get("bestEffort") is not None:
        out["bestEffort"] = _bool(raw["bestEffort"], "delivery.bestEffort")
    return out


def _session_target(value: Any, payload_kind: str) -> str:
    target = value if value is not None else ("main" if payload_kind == "systemEvent" else "isolated")
    if not isinstance(target, str) or not (target in SESSION_TARGETS or (target.startswith("session:")
                                                                          and len(target) > 8)):
        raise JobError(f'sessionTarget: expected main, isolated, current or "session:<key>" (got {target!r})')
    if payload_kind == "systemEvent" and target != "main":
        raise JobError('sessionTarget: a systemEvent payload goes to the main session; use "main" (or an agentTurn '
                       "payload for an isolated run)")
    if payload_kind == "agentTurn" and target == "main":
        raise JobError('sessionTarget "main" takes a systemEvent payload; use "isolated" for an agentTurn')
    return target


def build(fields: dict[str, Any], *, now_ms: int, default_webhook: str | None = None,
          existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """A whole job from its definition fields (an add, or an existing job with a patch applied)."""
    unknown = sorted(set(fields) - set(DEFINITION_KEYS) - {"id", "jobId", "createdAtMs", "updatedAtMs", "state",
                                                           "declarationKey"})
    if unknown:
        raise JobError(f"unknown field(s) {', '.join(unknown)}; a job has {', '.join(DEFINITION_KEYS)}")
    name = _text(fields.get("name"), "name", required=True)
    payload = payload_of(fields.get("payload"))
    try:
        schedule = sched.normalize(fields.get("schedule"), now_ms)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    wake = fields.get("wakeMode", "now")
    if wake not in WAKE_MODES:
        raise JobError(f"wakeMode: expected now or next-heartbeat (got {wake!r})")
    job: dict[str, Any] = {
        "id": existing["id"] if existing else str(uuid.uuid4()),
        "name": name,
        "enabled": _bool(fields.get("enabled"), "enabled") is not False,
        "createdAtMs": existing["createdAtMs"] if existing else now_ms,
        "updatedAtMs": now_ms,
        "schedule": schedule,
        "sessionTarget": _session_target(fields.get("sessionTarget"), payload["kind"]),
        "wakeMode": wake,
        "payload": payload,
    }
    for key in ("displayName", "agentId", "sessionKey"):
        if fields.get(key) is not None:
            job[key] = _text(fields[key], key, max_len=256)
    if fields.get("description") is not None:
        job["description"] = _text(fields["description"], "description", max_len=4000)
    delivery = delivery_of(fields.get("delivery"), default_webhook)
    if delivery is not None:
        job["delivery"] = delivery
    if fields.get("deleteAfterRun") is not None:
        job["deleteAfterRun"] = _bool(fields["deleteAfterRun"], "deleteAfterRun")
    alert = fields.get("failureAlert")
    if alert is not None:
        if alert is not False and not isinstance(alert, dict):
            raise JobError("failureAlert: expected false or an object")
        job["failureAlert"] = alert
    job["state"] = dict(existing.get("state") or {}) if existing else {}
    return job


def _merge(old: Any, new: Any) -> Any:
    """A patched sub-object: merged into the old one while its kind/mode is unchanged, else replaced."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    tag = "mode" if "mode" in old or "mode" in new else "kind"
    if new.get(tag, old.get(tag)) != old.get(tag):
        return new
    return {k: v for k, v in {**old, **new}.items() if v is not None}


def apply_patch(job: dict[str, Any], patch: Any, *, now_ms: int, default_webhook: str | None) -> dict[str, Any]:
    if not isinstance(patch, dict) or not patch:
        raise JobError('patch: expected an object with the fields to change, e.g. {"enabled": false}')
    if is_heartbeat_job(job):
        raise JobError(f"job {job['id']} is the system-owned heartbeat of agent {job.get('agentId')}: change "
                       "agents.*.heartbeat in the config, or turn heartbeats off with set-heartbeats")
    bad = sorted(set(patch) - set(DEFINITION_KEYS))
    if bad:
        raise JobError(f"patch: unknown field(s) {', '.join(bad)}; patchable: {', '.join(DEFINITION_KEYS)}")
    fields = {k: job[k] for k in DEFINITION_KEYS if k in job}
    for key, value in patch.items():
        if value is None:
            if key in ("name", "schedule", "payload"):
                raise JobError(f"patch.{key}: cannot be cleared")
            fields.pop(key, None)
        elif key in ("schedule", "payload", "delivery"):
            fields[key] = _merge(fields.get(key), value)
        else:
            fields[key] = value
    return build(fields, now_ms=now_ms, default_webhook=default_webhook, existing=job)


def _revision(value: Any) -> str:
    digest = hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).digest()
    return "sha256:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def config_revision(job: dict[str, Any]) -> str:
    """A digest of the job's definition (everything but its state), as the real server's `configRevision`."""
    return _revision({k: v for k, v in job.items() if k not in ("state", "updatedAtMs")})


def view(job: dict[str, Any]) -> dict[str, Any]:
    """The wire shape of one job, as the real server's cron.list/cron.get."""
    state = dict(job.get("state") or {})
    state.pop("runningRunId", None)
    out = {**job, "state": state, "configRevision": config_revision(job),
           "effectiveAgentId": job.get("agentId") or DEFAULT_AGENT}
    if state.get("nextRunAtMs") is not None:
        out["nextRunAtMs"] = state["nextRunAtMs"]
    return out


def delivery_preview(job: dict[str, Any]) -> dict[str, str]:
    delivery = job.get("delivery") or {}
    mode = delivery.get("mode", "none")
    if mode == "announce":
        target = f"{delivery.get('channel')}:{delivery.get('accountId') or 'default'}"
        return {"label": f"announce via {delivery.get('channel')}",
                "detail": f"{target} -> {delivery.get('to') or 'the account default recipient'}"}
    if mode == "webhook":
        parts = urlsplit(str(delivery.get("to")))
        return {"label": "webhook", "detail": f"POST {parts.scheme}://{parts.netloc}{parts.path}"}
    return {"label": "not requested", "detail": "not requested"}


def _int_param(params: dict[str, Any], key: str, default: int, lo: int, hi: int, method: str) -> int:
    value = params.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise JobError(f"invalid {method} params: {key} must be a whole number from {lo} to {hi} (got {value!r})")
    return value


def page_params(params: dict[str, Any], method: str, default_limit: int = 50) -> tuple[int, int]:
    return (_int_param(params, "limit", default_limit, 1, MAX_LIST_LIMIT, method),
            _int_param(params, "offset", 0, 0, 1 << 53, method))


def list_page(all_jobs: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """cron.list: filter, sort and page the jobs; the envelope the real CLI checks (snapshotRevision, nextOffset)."""
    limit, offset = page_params(params, "cron.list")
    include_disabled = params.get("includeDisabled") is True
    enabled = params.get("enabled")
    if enabled not in (None, True, False, "all", "enabled", "disabled"):
        raise JobError(f"invalid cron.list params: enabled must be true, false, all, enabled or disabled "
                       f"(got {enabled!r})")
    sort_by = params.get("sortBy") or "nextRunAtMs"
    sort_dir = params.get("sortDir") or "asc"
    if sort_by not in LIST_SORT or sort_dir not in ("asc", "desc"):
        raise JobError(f"invalid cron.list params: sortBy is one of {', '.join(LIST_SORT)} and sortDir asc or desc")
    query = str(params.get("query") or "").strip().lower()

    def keep(job: dict[str, Any]) -> bool:
        on = bool(job.get("enabled", True))
        if (enabled in (True, "enabled") and not on) or (enabled in (False, "disabled") and on):
            return False
        if enabled is None and not include_disabled and not on:
            return False
        if params.get("scheduleKind") and job["schedule"].get("kind") != params["scheduleKind"]:
            return False
        if params.get("lastRunStatus") and (job.get("state") or {}).get("lastRunStatus") != params["lastRunStatus"]:
            return False
        if params.get("agentId") and (job.get("agentId") or DEFAULT_AGENT) != params["agentId"]:
            return False
        if query:
            hay = " ".join(str(job.get(k) or "") for k in ("id", "name", "displayName", "description")).lower()
            return query in hay
        return True

    jobs = [j for j in all_jobs if keep(j)]

    def key(job: dict[str, Any]) -> tuple[Any, ...]:
        if sort_by == "name":
            return (str(job.get("displayName") or job.get("name") or "").lower(), job["id"])
        value = job.get("updatedAtMs") if sort_by == "updatedAtMs" else (job.get("state") or {}).get("nextRunAtMs")
        return (value is None, value or 0, job["id"])

    jobs.sort(key=key, reverse=sort_dir == "desc")
    if sort_dir == "desc" and sort_by == "nextRunAtMs":
        jobs.sort(key=lambda j: (j.get("state") or {}).get("nextRunAtMs") is None)
    total = len(jobs)
    offset = min(offset, total)
    page = jobs[offset:offset + limit]
    nxt = offset + len(page)
    return {
        "jobs": [view(j) for j in page],
        "snapshotRevision": _revision([(j["id"], j.get("updatedAtMs"), j.get("enabled", True)) for j in jobs]),
        "total": total,
        "offset": offset,
        "limit": limit,
        "hasMore": nxt < total,
        "nextOffset": nxt if nxt < total else None,
        "deliveryPreviews": {j["id"]: delivery_preview(j) for j in page},
    }
