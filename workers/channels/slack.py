"""Slack adapter: Socket Mode for inbound (each envelope acknowledged only once its event is in the ingress queue),
the Web API for replies (`chat.postMessage`) and the probe (`auth.test`).

Why our own client. slack-sdk (Slack's own, well kept, and able to point at any base URL) acknowledges an
envelope from inside its listener callback, which fits; but imported after fork it adds 6.3 MB of unique memory
to each worker (measured like the Matrix candidates, see matrix.py), more than twice the worker itself, for the
three Web API methods and one WebSocket this module needs over the shared aiohttp.

Config (`channels.slack`, upstream's keys): `botToken` (xoxb-) and `appToken` (xapp-, with `connections:write`),
env `SLACK_BOT_TOKEN` / `SLACK_APP_TOKEN` for the default account, `mode` (only `socket` is served; `http` and
`relay` say UNAVAILABLE), `dmPolicy` / `allowFrom` (legacy `dm.policy` / `dm.allowFrom`), `dm.enabled`,
`groupPolicy`, `channels` `{<channel id|*>: {enabled, requireMention, users}}`, `requireMention` (default true),
`textChunkLimit` (4000). Env `SLACK_API_URL` points the Web API (and so Socket Mode) elsewhere, as slack-sdk's
`base_url` does.

Web API errors are reported with the runbook's signatures: `missing_scope` names the scope to add,
`not_in_channel` says to invite the bot, `invalid_auth` / `token_revoked` / `account_inactive` are auth errors;
these fail fast (no reconnect loop) and show in `channels status`. `chat.postMessage` has no idempotency key,
so a reply cut short by a kill follows the in-doubt rule (reported, never sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import orjson

from openclaw_sup.config.restart import Backoff
from openclaw_sup.workers.channels.adapter import Adapter, SendError
from openclaw_sup.workers.channels.httpjson import HttpJson, aiohttp
from openclaw_sup.workers.channels.policy import Inbound, Verdict, dm_settings

DEFAULT_API = "https://slack.com/api/"
TEXT_LIMIT = 4000
MAX_429_WAIT_S = 120.0
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
                         "no_permission", "team_access_not_granted"})


class SlackError(Exception):
    def __init__(self, method: str, error: str, needed: str | None = None, provided: str | None = None) -> None:
        self.method, self.error, self.needed = method, error, needed
        super().__init__(f"{method} failed: {error}" + (f" (needed: {needed}; provided: {provided})"
                                                          if needed else ""))

    @property
    def auth(self) -> bool:
        return self.error in AUTH_ERRORS

    @property
    def permanent(self) -> bool:
        return self.auth or self.error == "missing_scope"

    def advice(self, what: str = "") -> str:
        if self.error == "missing_scope":
            return f"add the {self.needed or 'missing'} scope to the Slack app and reinstall it"
        if self.error == "not_in_channel":
            return f"invite the bot to {what or 'the channel'} (/invite @bot)"
        if self.auth:
            return "auth error: check channels.slack.botToken / appToken"
        return ""


class SlackAdapter(Adapter):
    channel = "slack"
    group_noun = "channel"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        default = self.account_id == "default"

        def token(key: str, env: str) -> tuple[str, str]:
            value = self.cfg.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip(), "config"
            found = os.environ.get(env, "").strip() if default else ""
            return found, "env" if found else "none"

        self.bot_token, self.bot_source = token("botToken", "SLACK_BOT_TOKEN")
        self.app_token, self.app_source = token("appToken", "SLACK_APP_TOKEN")
        self.api = HttpJson(os.environ.get("SLACK_API_URL") or DEFAULT_API)
        self.bot_user: str | None = None
        self.team: str | None = None
        self.fatal: str | None = None
        self.problems: dict[str, tuple[str, str]] = {}  # what -> (kind, message)
        self._blocked_until = 0.0
        self._ws: Any = None

    # -- config -------------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        return bool(self.bot_token and self.app_token)

    def secrets(self) -> list[str]:
        return [self.bot_token, self.app_token]

    @classmethod
    def policy_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        policy, allow = dm_settings(cfg)
        chans = cfg.get("channels") if isinstance(cfg.get("channels"), dict) else {}
        groups = {str(k): {**{f: v[f] for f in ("enabled", "requireMention") if f in v},
                           **({"allowFrom": v["users"]} if isinstance(v.get("users"), list) else {})}
                  for k, v in chans.items() if isinstance(v, dict)}
        return {**cfg, "dmPolicy": policy, "allowFrom": allow, "groups": groups, "mentionPatterns": []}

    def judge(self, policy_cfg: dict[str, Any], msg: Inbound, store_allowed: bool) -> Verdict:
        """The channel-level `requireMention` is the default of every channel entry (and of any channel under
        groupPolicy open)."""
        if msg.chat_type == "group":
            groups = policy_cfg.get("groups") or {}
            entry = groups[msg.chat_id] if msg.chat_id in groups else groups.get("*")
            top = policy_cfg.get("requireMention", True)
            if entry is not None or policy_cfg.get("groupPolicy") == "open":
                own = {"requireMention": top, **(entry or {})}
                policy_cfg = {**policy_cfg, "groups": {**groups, msg.chat_id: own}}
        return super().judge(policy_cfg, msg, store_allowed)

    def reply_target(self, msg: Inbound) -> str:
        return msg.chat_id  # a DM is an `im` channel (D...)

    # -- Web API ------------------------------------------------------------------------------------

    async def call(self, method: str, body: dict[str, Any] | None = None, token: str | None = None,
                   timeout: float = 30.0) -> dict[str, Any]:
        """One Web API call; HTTP 429 waits its Retry-After (bounded in all), `ok: false` raises SlackError."""
        waited = 0.0
        while True:
            wait = self._blocked_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                waited += wait
                continue  # the loop's timers can fire a little early: check the clock again
            status, headers, data = await self.api.call(
                "POST", f"/{method}", body=body or {}, timeout=timeout,
                headers={"Authorization": f"Bearer {token or self.bot_token}"})
            if status == 429:
                retry = float(headers.get("retry-after") or 1)
                if waited + retry > MAX_429_WAIT_S:
                    raise SlackError(method, "ratelimited")
                self._blocked_until = time.monotonic() + retry
                self.log.warning("slack: %s rate limited (429); retrying after %gs", method, retry)
                continue
            data = data if isinstance(data, dict) else {}
            if data.get("ok") is True:
                return data
            raise SlackError(method, str(data.get("error") or f"HTTP {status}"), data.get("needed"),
                             data.get("provided"))

    def _problem(self, what: str, exc: SlackError, target: str = "") -> str:
        kind = "auth" if exc.auth else "permissions"
        text = f"slack: {exc}: {exc.advice(target)}".rstrip(": ")
        self.problems[what] = (kind, self.redact(text))
        return text

    # -- Socket Mode --------------------------------------------------------------------------------

    async def run(self) -> None:
        mode = self.cfg.get("mode") or "socket"
        problem = None
        if mode != "socket":
            problem = f"UNAVAILABLE: channels.slack.mode={mode} is not supported yet (use socket)"
        elif not self.configured:
            problem = ("not configured: set channels.slack.botToken and appToken (or SLACK_BOT_TOKEN and "
                       "SLACK_APP_TOKEN)")
        if problem:
            self.set_error(problem)
            self.log.error("slack: %s", self.last_error)
            await asyncio.Event().wait()
        backoff = Backoff(base=2.0, cap=30.0)
        while not self.closed:
            started = time.monotonic()
            try:
                if self.bot_user is None:
                    me = await self.call("auth.test", timeout=15)
                    self.bot_user, self.team = str(me.get("user_id")), me.get("team_id")
                await self._session()
                self.set_error("slack: socket closed")
            except asyncio.CancelledError:
                raise
            except SlackError as exc:
                self.mark_connected(False)
                text = self._problem("connect", exc)
                if exc.permanent:
                    self.fatal = text
                    self.set_error(text)
                    self.log.error("%s; not retrying until the channel is restarted", self.last_error)
                    return
                self.set_error(text)
                self.log.error("%s", self.last_error)
            except Exception as exc:  # network, or the ingress write failing: nothing was acknowledged
                self.set_error(f"slack: socket mode failed: {type(exc).__name__}: {exc}")
                self.log.error("%s", self.last_error)
            finally:
                self.mark_connected(False)
            if self.closed:
                return
            if time.monotonic() - started > 30:
                backoff.reset()
            delay = backoff.next()
            self.log.warning("slack: socket mode reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        opened = await self.call("apps.connections.open", token=self.app_token, timeout=15)
        async with self.api.client().ws_connect(str(opened["url"]), heartbeat=15.0) as ws:
            self._ws = ws
            try:
                async for frame in ws:
                    if frame.type != aiohttp.WSMsgType.TEXT:
                        break
                    if not await self._on_frame(ws, orjson.loads(frame.data)):
                        return
            finally:
                self._ws = None

    async def _on_frame(self, ws: Any, env: dict[str, Any]) -> bool:
        kind = env.get("type")
        if kind == "hello":
            self.problems.pop("connect", None)
            self.log.info("slack: socket mode connected as %s (team %s)", self.bot_user, self.team)
            self.mark_connected(True)
        elif kind == "disconnect":
            self.log.info("slack: socket mode asked to reconnect (%s)", env.get("reason"))
            return False
        elif "envelope_id" in env:
            msg = self._inbound(env) if kind == "events_api" else None
            if msg is not None:
                await self.sink([msg], None)  # durable first...
            await ws.send_json({"envelope_id": env["envelope_id"]})  # ...then acknowledged
        return True

    def _inbound(self, env: dict[str, Any]) -> Inbound | None:
        ev = (env.get("payload") or {}).get("event") or {}
        if ev.get("type") not in ("message", "app_mention") or ev.get("subtype") or ev.get("bot_id"):
            return None
        user, text, channel = ev.get("user"), ev.get("text"), ev.get("channel")
        if not user or user == self.bot_user or not isinstance(text, str) or not channel:
            return None
        direct = ev.get("channel_type") == "im"
        return Inbound(message_id=f"sl:{channel}:{ev.get('ts')}", sender_id=str(user), text=text,
                       chat_type="direct" if direct else "group", chat_id=str(channel), sender_name=str(user),
                       mentioned=not direct and (ev.get("type") == "app_mention" or f"<@{self.bot_user}>" in text),
                       ts=float(ev.get("ts") or time.time()), space=str((env.get("payload") or {}).get("team_id")
                                                                        or ""))

    # -- sending ------------------------------------------------------------------------------------

    async def send(self, target: str, text: str) -> str | None:
        channel = target.removeprefix("slack:").removeprefix("channel:").removeprefix("user:")
        limit = int(self.cfg.get("textChunkLimit") or TEXT_LIMIT)
        last = None
        try:
            for start in range(0, len(text), limit):
                res = await self.call("chat.postMessage", {"channel": channel, "text": text[start:start + limit],
                                                           "unfurl_links": bool(self.cfg.get("unfurlLinks"))})
                last = str(res.get("ts"))
        except SlackError as exc:
            if exc.error == "ratelimited":
                raise SendError(str(exc), retry_after=5.0) from None
            if exc.permanent or exc.error in ("not_in_channel", "channel_not_found", "is_archived"):
                text_ = self._problem(f"send:{channel}", exc, channel)
                raise SendError(text_, retryable=False, auth=exc.auth) from None
            raise SendError(str(exc)) from None
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise SendError(self.redact(f"{type(exc).__name__}: {exc}")) from None
        self.problems.pop(f"send:{channel}", None)
        return last

    # -- status -------------------------------------------------------------------------------------

    async def probe(self, timeout: float) -> dict[str, Any]:
        if not self.configured:
            return {"ok": False, "error": self.last_error or "not configured"}
        t0 = time.monotonic()
        try:
            me = await self.call("auth.test", timeout=timeout)
        except SlackError as exc:
            return {"ok": False, "error": self.redact(f"{exc}: {exc.advice()}".rstrip(": ")), "auth": exc.auth}
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            return {"ok": False, "error": self.redact(f"{type(exc).__name__}: {exc}")}
        return {"ok": True, "elapsedMs": round((time.monotonic() - t0) * 1000, 1),
                "bot": {"id": me.get("user_id"), "username": me.get("user")}, "team": me.get("team")}

    def status_extra(self) -> dict[str, Any]:
        issues = [{"kind": kind, "message": text} for kind, text in self.problems.values()]
        return {"mode": "socket", "botTokenSource": self.bot_source, "appTokenSource": self.app_source,
                "bot": {"id": self.bot_user, "username": self.bot_user} if self.bot_user else None,
                "issues": issues}

    async def close(self) -> None:
        self.closed = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        await self.api.close()
