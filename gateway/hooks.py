"""Webhooks under `hooks.path` (default `/hooks`): `POST <path>/wake` and `POST <path>/agent`, as upstream.

On only with `hooks.enabled: true`, which needs `hooks.token` (the config check refuses one without the other).
The token comes as `Authorization: Bearer <token>` or `X-OpenClaw-Token: <token>`; a `?token=` query is refused
(400). Failed tokens are limited per client address: 20 in 60 s, then 60 s of `429 Too Many Requests` with
`Retry-After` (loopback is not exempt); a right token always passes and clears the count. Bodies are JSON, at
most `hooks.maxBodyBytes` (256 KiB by default). Errors are `{ok: false, error}` with upstream's texts.

- `wake {text, mode?: now|next-heartbeat, agentId?, sessionKey?}` queues a system event for the agent's next
  heartbeat through the scheduler's `wake` (mode `now` runs that heartbeat now): `200 {ok: true, mode,
  eventOutcome: "queued"}`.
- `agent {message, name?, agentId?, sessionKey?, sessionMode?, idempotencyKey?, wakeMode?, deliver?, channel?,
  to?, accountId?, model?, thinking?, timeoutSeconds?, waitForCompletion?}` starts an agent turn (`agent.turn`
  on the agent worker, `source.kind: "hook"`) once the agent worker is admitted (running; waited for at most
  15 s, else 503): `200 {ok: true, runId}`; with `waitForCompletion: true` the answer waits for the turn and
  adds `completion: {status, summary?, error?}`. A reply is delivered (`channel.send` to the channel worker) when
  the request names `channel` + `to`, or, with the default `channel: "last"`, to the `route` the agent reports.
  The same idempotency key (header `Idempotency-Key` / `X-OpenClaw-Idempotency-Key`, or the body's) within 5
  minutes answers the first run's `runId` instead of starting another (and is passed on to `agent.turn` as
  `idempotencyKey`, so the agent worker does not run it twice either).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from openclaw_sup.config.restart import SERVING_STATES
from openclaw_sup.gateway import agent_http as ah
from openclaw_sup.gateway import authn
from openclaw_sup.gateway import http_common as hc
from openclaw_sup.gateway.protocol import MethodError

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

DEFAULT_PATH = "/hooks"
DEFAULT_BODY_MAX = 256 * 1024
AUTH_FAILURES = 20
AUTH_WINDOW_MS = 60_000
LIMIT_CLASS = "hook-auth"
ADMISSION_S = 15.0
DEFAULT_TURN_TIMEOUT_S = 600
IDEMPOTENCY_TTL_S = 300.0
IDEMPOTENCY_MAX = 1000
CHANNEL_SEND_TIMEOUT_S = 30.0


def hooks_config(cfg: dict[str, Any]) -> dict[str, Any] | None:
    hooks = cfg.get("hooks")
    if not isinstance(hooks, dict) or hooks.get("enabled") is not True:
        return None
    return hooks


def base_path(hooks: dict[str, Any]) -> str:
    raw = hooks.get("path") if isinstance(hooks.get("path"), str) and hooks["path"].strip() else DEFAULT_PATH
    raw = raw.strip()
    raw = raw if raw.startswith("/") else "/" + raw
    return raw.rstrip("/") or DEFAULT_PATH


def _same_secret(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return authn.digest_equal(given, expected)


def hook_token(request: web.Request) -> str | None:
    bearer = hc.bearer_token(request)
    if bearer:
        return bearer
    return (request.headers.get("X-OpenClaw-Token") or "").strip() or None


def _fail(status: int, error: str, **extra: Any) -> web.Response:
    return hc.json_response(status, {"ok": False, "error": error, **extra})


def _opt_str(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value.strip() or None if isinstance(value, str) else None


def _idempotency_key(request: web.Request, payload: dict[str, Any]) -> str | None:
    for raw in (request.headers.get("Idempotency-Key"), request.headers.get("X-OpenClaw-Idempotency-Key"),
                payload.get("idempotencyKey")):
        if isinstance(raw, str) and raw.strip() and len(raw.strip()) <= 256:
            return raw.strip()
    return None


class Hooks:
    """The webhook endpoints of one gateway: limiter, replay cache and the turns running in the background."""

    def __init__(self, core: GatewayCore) -> None:
        self.core = core
        self.limiter = authn.FailedAuthLimiter(max_attempts=AUTH_FAILURES, window_ms=AUTH_WINDOW_MS,
                                               lockout_ms=AUTH_WINDOW_MS, exempt_loopback=False)
        self.replays: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.running: set[asyncio.Task[Any]] = set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Claims `<hooks.path>` and everything under it while hooks are enabled (the path is configurable)."""
        hooks = hooks_config(self.core.host.gateway_config())
        if hooks is not None:
            base = base_path(hooks)
            if request.path == base or request.path.startswith(base + "/"):
                return await self.handle(request, hooks, request.path[len(base):].strip("/"))
        return await handler(request)

    async def handle(self, request: web.Request, hooks: dict[str, Any], sub: str) -> web.StreamResponse:
        if "token" in request.query:
            return hc.plain(400, "Hook token must be provided via Authorization: Bearer <token> or X-OpenClaw-Token "
                                 "header (query parameters are not allowed).")
        if request.method != "POST":
            return hc.method_not_allowed("POST")
        ip = request.remote or ""
        token = hook_token(request)
        expected = hooks.get("token") if isinstance(hooks.get("token"), str) else ""
        if not expected.strip() or not _same_secret(token, expected):
            now = hc.now_ms()
            wait = self.limiter.check(ip, LIMIT_CLASS, now)
            if wait is not None:
                retry = max(1, -(-wait // 1000))
                self.core.log("warning", f"hook auth throttled for {ip}; retry-after={retry}s")
                return hc.plain(429, "Too Many Requests", {"Retry-After": str(retry)})
            self.limiter.fail(ip, LIMIT_CLASS, now)
            return hc.plain(401, "Unauthorized")
        self.limiter.succeed(ip, LIMIT_CLASS)
        if not sub:
            return hc.not_found()
        limit = hooks.get("maxBodyBytes") if isinstance(hooks.get("maxBodyBytes"), int) else DEFAULT_BODY_MAX
        try:
            payload = await hc.read_json(request, limit)
        except hc.BodyError as exc:
            return _fail(exc.status, {413: "payload too large", 408: "request body timeout"}.get(exc.status, str(exc)))
        if not isinstance(payload, dict):
            payload = {}
        if sub == "wake":
            return await self.wake(hooks, payload)
        if sub == "agent":
            return await self.agent(request, hooks, payload)
        return hc.not_found()

    # ----------------------------------------------------------------------------------------- targets

    def _target(self, hooks: dict[str, Any], payload: dict[str, Any]) -> str:
        """The agent a request names (or the default); ValueError with upstream's text when not allowed."""
        cfg = self.core.host.gateway_config()
        raw = payload.get("agentId")
        if raw is not None and not (isinstance(raw, str) and raw.strip()):
            raise ValueError("agentId must be a non-empty string")
        agent = raw.strip().lower() if isinstance(raw, str) else ah.default_agent(cfg)
        if agent not in ah.agent_ids(cfg):
            raise ValueError(f'unknown agentId "{raw.strip() if isinstance(raw, str) else agent}"')
        allowed = hooks.get("allowedAgentIds")
        if isinstance(allowed, list) and allowed and agent not in {str(a).strip().lower() for a in allowed}:
            raise ValueError("agentId is not allowed by hooks.allowedAgentIds")
        return agent

    @staticmethod
    def _prefixes(hooks: dict[str, Any]) -> list[str]:
        raw = hooks.get("allowedSessionKeyPrefixes")
        return [p.strip().lower() for p in raw if isinstance(p, str) and p.strip()] if isinstance(raw, list) else []

    def _session(self, hooks: dict[str, Any], requested: str | None) -> str:
        prefixes = self._prefixes(hooks)
        if requested:
            if hooks.get("allowRequestSessionKey") is not True:
                raise ValueError("sessionKey is disabled for externally supplied hook payload values; set "
                                 "hooks.allowRequestSessionKey=true to enable")
            key = requested
        else:
            key = _opt_str(hooks, "defaultSessionKey") or f"hook:{uuid.uuid4()}"
        if prefixes and not key.lower().startswith(tuple(prefixes)):
            raise ValueError(f"sessionKey must start with one of: {', '.join(prefixes)}")
        return key

    # ------------------------------------------------------------------------------------------- wake

    async def wake(self, hooks: dict[str, Any], payload: dict[str, Any]) -> web.Response:
        text = _opt_str(payload, "text")
        if not text:
            return _fail(400, "text required")
        mode = "next-heartbeat" if payload.get("mode") == "next-heartbeat" else "now"
        session = _opt_str(payload, "sessionKey")
        if payload.get("sessionKey") is not None and not session:
            return _fail(400, "sessionKey must be a non-empty string")
        if mode == "next-heartbeat" and session:
            return _fail(400, "sessionKey requires mode=now")
        try:
            agent = self._target(hooks, payload)
            params: dict[str, Any] = {"mode": mode, "text": text, "agentId": agent}
            if session:
                key = self._session(hooks, session)
                params["sessionKey"] = key if key.startswith("agent:") else f"agent:{agent}:{key}"
        except ValueError as exc:
            return _fail(400, str(exc))
        try:
            await self.core.host.call_worker("scheduler", "wake", params, timeout=10.0)
        except MethodError as exc:
            return _fail(400 if exc.code == "INVALID_REQUEST" else 503, str(exc))
        return hc.json_response(200, {"ok": True, "mode": mode, "eventOutcome": "queued"})

    # ------------------------------------------------------------------------------------------ agent

    async def agent(self, request: web.Request, hooks: dict[str, Any], payload: dict[str, Any]) -> web.Response:
        wait = payload.get("waitForCompletion")
        if wait is not None and not isinstance(wait, bool):
            return _fail(400, "waitForCompletion must be boolean")
        message = _opt_str(payload, "message")
        if not message:
            return _fail(400, "message required")
        mode = payload.get("sessionMode", "isolated")
        if mode not in ("isolated", "persistent"):
            return _fail(400, "sessionMode must be isolated or persistent")
        if payload.get("model") is not None and not _opt_str(payload, "model"):
            return _fail(400, "model required")
        requested = _opt_str(payload, "sessionKey")
        if mode == "persistent" and not requested:
            return _fail(400, "sessionKey is required when sessionMode is persistent")
        try:
            delivery = self._delivery(payload)
            agent = self._target(hooks, payload)
            key = self._session(hooks, requested)
        except ValueError as exc:
            return _fail(400, str(exc))
        if mode == "persistent" and not self._prefixes(hooks):
            return _fail(400, "hooks.allowedSessionKeyPrefixes is required when direct hook sessionMode is persistent")
        idem = _idempotency_key(request, payload)
        scope = requested or _opt_str(hooks, "defaultSessionKey") or ""
        replay = self._replayed(idem, agent, scope, message)
        if replay is not None:
            return hc.json_response(200, {"ok": True, "runId": replay})
        run_id = str(uuid.uuid4())
        if not await self._admitted():
            return _fail(503, "hook agent run did not start before admission timeout", runId=run_id)
        timeout_s = payload.get("timeoutSeconds")
        timeout_s = int(timeout_s) if isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool) \
            and timeout_s > 0 else DEFAULT_TURN_TIMEOUT_S
        params: dict[str, Any] = {
            "agentId": agent, "sessionKey": key if key.startswith("agent:") else f"agent:{agent}:{key}",
            "message": message, "timeoutSeconds": timeout_s,
            "source": {"kind": "hook", "name": _opt_str(payload, "name") or "Hook", "runId": run_id,
                       "path": f"{base_path(hooks)}/agent", "wakeMode": payload.get("wakeMode") or "now",
                       **({"idempotencyKey": idem} if idem else {})},
        }
        for k in ("model", "thinking"):
            if _opt_str(payload, k):
                params[k] = _opt_str(payload, k)
        if idem:
            params["idempotencyKey"] = f"hook:{self._replay_key(idem, agent, scope, message)}"
            self._remember(idem, agent, scope, message, run_id)
        task = asyncio.get_running_loop().create_task(self._turn(params, delivery, run_id))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        if not wait:
            return hc.json_response(200, {"ok": True, "runId": run_id})
        completion = await asyncio.shield(task)
        return hc.json_response(200, {"ok": True, "runId": run_id, "completion": completion})

    @staticmethod
    def _delivery(payload: dict[str, Any]) -> dict[str, Any] | None:
        """Where the reply goes: None (not delivered), {channel: "last"} (the agent's route) or {channel, to}."""
        if payload.get("deliver") is False:
            return None
        channel = payload.get("channel", "last")
        if not isinstance(channel, str) or not channel.strip():
            raise ValueError("channel must be last or a configured channel id")
        to, account = _opt_str(payload, "to"), _opt_str(payload, "accountId")
        has_to, has_account = payload.get("to") is not None, payload.get("accountId") is not None
        if has_to and not to:
            raise ValueError("to must be a non-empty string for hook delivery")
        if has_account and not account:
            raise ValueError("accountId must be a non-empty string for hook delivery")
        if "channel" not in payload and not has_to and not has_account:
            return {"channel": "last"}
        if has_account and ("channel" not in payload or not to):
            raise ValueError("accountId requires channel and to for hook delivery")
        if "channel" not in payload or not to:
            raise ValueError("channel and to must be set together for hook delivery")
        if channel == "last":
            raise ValueError("channel must name a concrete channel for hook delivery")
        return {"channel": channel.strip().lower(), "to": to, "accountId": account}

    async def _admitted(self) -> bool:
        """Whether the agent worker runs (or starts on this first use), waiting up to ADMISSION_S for one that is
        (re)starting."""
        deadline = time.monotonic() + ADMISSION_S
        while True:
            state = (self.core.host.readiness().get("workers") or {}).get(ah.AGENT_WORKER)
            if state in SERVING_STATES:
                return True
            if state is None or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    async def _turn(self, params: dict[str, Any], delivery: dict[str, Any] | None, run_id: str) -> dict[str, Any]:
        try:
            answer = await self.core.host.call_worker(ah.AGENT_WORKER, "agent.turn", params,
                                                      timeout=params["timeoutSeconds"] + 10)
        except MethodError as exc:
            self.core.log("warning", f"hook agent run {run_id} failed: {exc}")
            return {"status": "error", "error": str(exc)}
        if not isinstance(answer, dict):
            return {"status": "error", "error": "the agent worker sent a malformed agent.turn answer"}
        completion = {k: answer[k] for k in ("status", "summary", "error", "reason", "model") if k in answer}
        completion.setdefault("status", "ok")
        summary = answer.get("summary")
        if delivery is not None and completion["status"] == "ok" and isinstance(summary, str) and summary.strip():
            delivered = await self._deliver(delivery, answer.get("route"), summary, run_id, params)
            if delivered is not None:
                completion["delivered"] = delivered
        return completion

    async def _deliver(self, delivery: dict[str, Any], route: Any, text: str, run_id: str,
                       params: dict[str, Any]) -> bool | None:
        """Send the reply to its channel worker; None when there is nowhere to send it."""
        target = delivery if delivery.get("channel") != "last" else (route if isinstance(route, dict) else None)
        if not target or not target.get("channel") or not target.get("to"):
            return None
        worker = f"channel:{target['channel']}:{target.get('accountId') or 'default'}"
        send = {"text": text, "to": target["to"], "idempotencyKey": run_id,
                "source": {"kind": "hook", "agentId": params["agentId"], "runId": run_id}}
        if target.get("threadId"):
            send["threadId"] = target["threadId"]
        try:
            await self.core.host.call_worker(worker, "channel.send", send, timeout=CHANNEL_SEND_TIMEOUT_S)
            return True
        except MethodError as exc:
            self.core.log("warning", f"hook agent run {run_id}: delivery to {worker} failed: {exc}")
            return False

    # ------------------------------------------------------------------------------------ idempotency

    def _replay_key(self, idem: str, agent: str, session: str, message: str) -> str:
        return hashlib.sha256(f"{idem}\0{agent}\0{session}\0{message}".encode()).hexdigest()

    def _replayed(self, idem: str | None, agent: str, session: str, message: str) -> str | None:
        if not idem:
            return None
        now = time.monotonic()
        while self.replays and next(iter(self.replays.values()))[0] < now - IDEMPOTENCY_TTL_S:
            self.replays.popitem(last=False)
        entry = self.replays.get(self._replay_key(idem, agent, session, message))
        return entry[1] if entry else None

    def _remember(self, idem: str, agent: str, session: str, message: str, run_id: str) -> None:
        self.replays[self._replay_key(idem, agent, session, message)] = (time.monotonic(), run_id)
        while len(self.replays) > IDEMPOTENCY_MAX:
            self.replays.popitem(last=False)
