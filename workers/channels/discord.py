"""Discord adapter: the Gateway WebSocket (identify, resume, heartbeats, the documented close codes) for inbound,
REST v10 for replies with per-route rate-limit buckets and global 429s, `users/@me` for the probe.

Why our own client. discord.py, hikari and their forks keep the Gateway session (id, sequence number, resume URL)
inside the library and start a fresh one in each new process, so a worker restarted after a kill could not
resume and would lose what Discord sent meanwhile; here the sequence number is committed in the same transaction as
the messages it covers, and a restarted worker resumes from it (Discord replays every dispatch after it). Like the
Matrix and Slack libraries measured in bench/channel_libs.py, they would also be imported privately by each
forked worker, on top of the shared aiohttp this module uses.

Config (`channels.discord`, upstream's keys): `token` (env `DISCORD_BOT_TOKEN` for the default account),
`dmPolicy` / `allowFrom` (legacy `dm.policy` / `dm.allowFrom`), `dm.enabled`, `groupPolicy`, `guilds`
`{<guild id|slug|*>: {requireMention, users, roles, channels: {<channel id|name|*>: {enabled, requireMention,
users, roles}}}}`, `intents.{messageContent, guildMembers, presence}`, `textChunkLimit` (2000). Env
`DISCORD_API_URL` overrides the versioned REST base (and, through `/gateway/bot`, the Gateway).

Replies carry a `nonce` derived from the outbox row with `enforce_nonce`, so Discord answers a repeated post with
the first message: a reply cut short by a kill is resent safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from openclaw_sup.config.restart import Backoff
from openclaw_sup.workers.channels.adapter import Adapter, SendError
from openclaw_sup.workers.channels.httpjson import HttpJson, aiohttp
from openclaw_sup.workers.channels.policy import DROP, Inbound, Verdict, dm_settings
from openclaw_sup.workers.keyedlock import KeyedLocks

DEFAULT_API = "https://discord.com/api/v10"
TEXT_LIMIT = 2000
MAX_429_WAIT_S = 120.0
RESET_MARGIN_S = 0.01  # Reset-After comes rounded to the millisecond
SESSION_KEY, SEQ_KEY = "discord.session", "discord.seq"

INTENTS = {"guilds": 1 << 0, "guildMembers": 1 << 1, "presence": 1 << 8, "guildMessages": 1 << 9,
           "directMessages": 1 << 12, "messageContent": 1 << 15}
PRIVILEGED_NAMES = {"messageContent": "Message Content Intent", "guildMembers": "Server Members Intent",
                    "presence": "Presence Intent"}

# Close codes (Discord docs, "Gateway Close Event Codes"): what each means, and whether to reconnect / resume.
CLOSE_CODES: dict[int, tuple[str, str]] = {
    4000: ("unknown error", "resume"),
    4001: ("unknown opcode", "resume"),
    4002: ("decode error", "resume"),
    4003: ("not authenticated", "resume"),
    4004: ("authentication failed", "fatal"),
    4005: ("already authenticated", "resume"),
    4007: ("invalid seq", "identify"),
    4008: ("rate limited", "resume"),
    4009: ("session timed out", "identify"),
    4010: ("invalid shard", "fatal"),
    4011: ("sharding required", "fatal"),
    4012: ("invalid API version", "fatal"),
    4013: ("invalid intent(s)", "fatal"),
    4014: ("disallowed intent(s)", "fatal"),
}


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {message} ({code})" if code else f"{status} {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class GatewayClosed(Exception):
    def __init__(self, code: int | None, reason: str = "") -> None:
        meaning, self.action = CLOSE_CODES.get(code or 0, ("connection lost", "resume"))
        super().__init__(f"gateway closed {code if code is not None else '-'} {reason or meaning}".strip())
        self.code = code


def slug(name: str) -> str:
    return "-".join(name.lower().lstrip("#").split())


class RateLimits:
    """Discord's buckets: a route maps to a bucket (X-RateLimit-Bucket) per major parameter; each bucket has its
    remaining count and reset time; a global 429 stops every route until it expires."""

    def __init__(self) -> None:
        self.route_bucket: dict[str, str] = {}
        self.state: dict[str, tuple[int, float]] = {}  # bucket:major -> (remaining, reset at, monotonic)
        self.global_until = 0.0
        # One request in flight per route and major parameter: the second sees the first's headers before it goes,
        # or both could spend the bucket's last request (and two posts to one channel could cross on the way).
        self.turns = KeyedLocks()

    @staticmethod
    def route(method: str, path: str) -> tuple[str, str]:
        """(route key, major parameter): ids are folded except the channel/guild/webhook id that leads."""
        parts = path.strip("/").split("/")
        major = parts[1] if len(parts) > 1 and parts[0] in ("channels", "guilds", "webhooks") else ""
        shape = [p if not p.isdigit() or (i == 1 and major) else "{id}" for i, p in enumerate(parts)]
        return f"{method} /{'/'.join(shape)}", major

    def _key(self, route: str, major: str) -> str:
        return f"{self.route_bucket.get(route, route)}:{major}"

    def wait_for(self, route: str, major: str) -> float:
        now = time.monotonic()
        wait = max(0.0, self.global_until - now)
        remaining, reset_at = self.state.get(self._key(route, major), (1, 0.0))
        if remaining <= 0 and reset_at > now:
            wait = max(wait, reset_at - now)
        return wait

    def update(self, route: str, major: str, headers: dict[str, str]) -> None:
        if "x-ratelimit-bucket" in headers:
            self.route_bucket[route] = headers["x-ratelimit-bucket"]
        if "x-ratelimit-remaining" in headers and "x-ratelimit-reset-after" in headers:
            with contextlib.suppress(ValueError):
                self.state[self._key(route, major)] = (int(headers["x-ratelimit-remaining"]),
                                                       time.monotonic() + float(headers["x-ratelimit-reset-after"])
                                                       + RESET_MARGIN_S)

    def limited(self, route: str, major: str, retry_after: float, global_: bool) -> None:
        until = time.monotonic() + retry_after + RESET_MARGIN_S
        if global_:
            self.global_until = max(self.global_until, until)
        else:
            self.state[self._key(route, major)] = (0, until)


class DiscordAdapter(Adapter):
    channel = "discord"
    group_noun = "guild"
    idempotent_send = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        token = self.cfg.get("token")
        self.token = str(token).strip() if isinstance(token, str) else (
            os.environ.get("DISCORD_BOT_TOKEN", "").strip() if self.account_id == "default" else "")
        self.token_source = "config" if isinstance(token, str) else ("env" if self.token else "none")
        self.api_base = (os.environ.get("DISCORD_API_URL") or DEFAULT_API).rstrip("/")
        self.rest = HttpJson(self.api_base, {"Authorization": f"Bot {self.token}",
                                             "User-Agent": "DiscordBot (openclaw-sup, 0.1)"})
        self.limits = RateLimits()
        self.intents = self._intents()
        self.bot_id: str | None = None
        self.bot_username: str | None = None
        self.session_id: str | None = None
        self.resume_url: str | None = None
        self.seq: int | None = None
        self.channel_names: dict[str, str] = {}
        self.guild_names: dict[str, str] = {}
        self.dm_channels: dict[str, str] = {}
        self.fatal: GatewayClosed | None = None
        self.denied: dict[str, str] = {}  # channel -> the permission error a send got there
        self.application: dict[str, Any] | None = None
        self._ws: Any = None
        self._acked = True

    # -- config -------------------------------------------------------------------------------------

    def _intents(self) -> int:
        wanted = self.cfg.get("intents") if isinstance(self.cfg.get("intents"), dict) else {}
        bits = INTENTS["guilds"] | INTENTS["guildMessages"] | INTENTS["directMessages"]
        if wanted.get("messageContent", True) is not False:
            bits |= INTENTS["messageContent"]
        for name in ("guildMembers", "presence"):
            if wanted.get(name) is True:
                bits |= INTENTS[name]
        return bits

    def privileged_requested(self) -> list[str]:
        return [label for name, label in PRIVILEGED_NAMES.items() if self.intents & INTENTS[name]]

    @property
    def configured(self) -> bool:
        return bool(self.token)

    def secrets(self) -> list[str]:
        return [self.token]

    @classmethod
    def policy_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        policy, allow = dm_settings(cfg)
        return {**cfg, "dmPolicy": policy, "allowFrom": allow, "mentionPatterns": []}

    def reply_target(self, msg: Inbound) -> str:
        return msg.chat_id  # a DM has its own channel id

    def judge(self, policy_cfg: dict[str, Any], msg: Inbound, store_allowed: bool) -> Verdict:
        """Guild and channel allowlists (a guild's `channels` map is an allowlist), then users/roles, then the
        shared engine for the mention gate (its line: `drop guild message (mention required)`)."""
        if msg.chat_type != "group" or policy_cfg.get("groupPolicy") == "disabled":
            return super().judge(policy_cfg, msg, store_allowed)
        where = f"discord: guild message in {msg.chat_id} (guild {msg.space}) from {msg.sender_id}"
        guilds = policy_cfg.get("guilds") if isinstance(policy_cfg.get("guilds"), dict) else {}
        gname = slug(self.guild_names.get(msg.space, ""))
        guild = next((v for k, v in guilds.items() if isinstance(v, dict) and k in (msg.space, gname)),
                     guilds.get("*") if isinstance(guilds.get("*"), dict) else None)
        if guild is None and (policy_cfg.get("groupPolicy") or "allowlist") == "allowlist":
            return Verdict(DROP, "not-allowlisted",
                           f"{where} blocked: guild not in allowlist (channels.discord.guilds)")
        guild = guild or {}
        channels = guild.get("channels") if isinstance(guild.get("channels"), dict) else {}
        entry: dict[str, Any] = {}
        if channels:
            cname = self.channel_names.get(msg.chat_id, "")
            found = next((v for k, v in channels.items() if isinstance(v, dict)
                          and k in (msg.chat_id, cname, slug(cname), f"#{cname}")), channels.get("*"))
            if not isinstance(found, dict) or found.get("enabled") is False:
                return Verdict(DROP, "not-allowlisted",
                               f"{where} blocked: channel not in allowlist (guilds.{msg.space}.channels)")
            entry = found
        merged = {**{k: v for k, v in guild.items() if k != "channels"}, **entry}
        users = [str(u) for u in merged.get("users") or []]
        roles = [str(r) for r in merged.get("roles") or []]
        if (users or roles) and not ("*" in users or msg.sender_id in users or set(roles) & set(msg.roles)):
            return Verdict(DROP, "not-allowlisted", f"{where} blocked: sender not in allowlist (users/roles)")
        view = {**policy_cfg, "groupPolicy": "open", "groupAllowFrom": [],
                "groups": {msg.chat_id: {"requireMention": merged.get("requireMention", True)}}}
        return super().judge(view, msg, store_allowed)

    # -- REST ---------------------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """One REST call that honours the route's bucket and every 429 (bounded by MAX_429_WAIT_S in all)."""
        route, major = RateLimits.route(method, path)
        async with self.limits.turns.hold(f"{route}:{major}"):
            return await self._call_in_turn(route, major, method, path, body, timeout)

    async def _call_in_turn(self, route: str, major: str, method: str, path: str, body: Any, timeout: float) -> Any:
        waited = 0.0
        while True:
            wait = self.limits.wait_for(route, major)
            if wait > 0:
                if waited + wait > MAX_429_WAIT_S:
                    raise DiscordError(429, 0, f"rate limited for {wait:.1f}s more", retry_after=wait)
                await asyncio.sleep(wait)
                waited += wait
                continue  # the loop's clock is cached and its timers round to the ms: they can fire a little early
            status, headers, data = await self.rest.call(method, path, body=body, timeout=timeout)
            self.limits.update(route, major, headers)
            data = data if isinstance(data, (dict, list)) else {}
            if status == 429:
                d = data if isinstance(data, dict) else {}
                retry = float(d.get("retry_after") or headers.get("retry-after") or 1.0)
                global_ = bool(d.get("global")) or headers.get("x-ratelimit-global") == "true"
                self.limits.limited(route, major, retry, global_)
                self.log.warning("discord: rate limited (429%s) on %s; retrying after %gs",
                                 ", global" if global_ else "", route, retry)
                continue
            if 200 <= status < 300:
                return data
            d = data if isinstance(data, dict) else {}
            raise DiscordError(status, int(d.get("code") or 0), str(d.get("message") or d.get("_raw") or ""))

    # -- the Gateway --------------------------------------------------------------------------------

    async def run(self) -> None:
        if not self.configured:
            self.set_error("not configured: set channels.discord.token (or DISCORD_BOT_TOKEN)")
            self.log.error("discord: %s", self.last_error)
            await asyncio.Event().wait()
        stored = self.meta(SESSION_KEY)
        if stored:
            s = orjson.loads(stored)
            self.session_id, self.resume_url = s.get("sessionId"), s.get("resumeUrl")
            self.seq = int(self.meta(SEQ_KEY) or 0) or None
        backoff = Backoff(base=1.0, cap=60.0)
        while not self.closed:
            started = time.monotonic()
            try:
                await self._connect_once()
            except asyncio.CancelledError:
                raise
            except GatewayClosed as exc:
                self.mark_connected(False)
                if exc.action == "fatal":
                    self._fatal(exc)
                    return
                if exc.action == "identify":
                    self._forget_session()
                self.set_error(f"discord: {exc}")
                self.log.warning("discord: %s; %s", exc, "resuming" if self.session_id else "identifying again")
            except DiscordError as exc:
                self.mark_connected(False)
                if exc.status == 401:
                    self._fatal(GatewayClosed(4004, f"REST 401 {exc.message}"))
                    return
                self.set_error(f"discord: {exc}")
                self.log.error("%s", self.last_error)
            except Exception as exc:  # network, or the ingress write failing: the stored seq stays put
                self.mark_connected(False)
                self.set_error(f"discord: gateway connection failed: {type(exc).__name__}: {exc}")
                self.log.error("%s", self.last_error)
            if self.closed:
                return
            if time.monotonic() - started > 30:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    def _fatal(self, exc: GatewayClosed) -> None:
        self.fatal = exc
        if exc.code == 4014:
            names = ", ".join(self.privileged_requested()) or "the privileged intents"
            text = (f"discord: {exc}: enable {names} for this bot in the Discord Developer Portal (Bot > Privileged "
                    "Gateway Intents), or set channels.discord.intents.messageContent: false")
        elif exc.code == 4004:
            text = (f"discord: {exc}: the bot token was rejected (auth error: check channels.discord.token or "
                    "DISCORD_BOT_TOKEN)")
        else:
            text = f"discord: {exc}: not reconnecting; fix the configuration and restart the channel"
        self.set_error(text)
        self.log.error("%s", self.last_error)

    def _forget_session(self) -> None:
        self.session_id = self.resume_url = None
        self.seq = None

    async def _gateway_url(self) -> str:
        if self.session_id and self.resume_url:
            return self.resume_url
        info = await self.call("GET", "/gateway/bot", timeout=30)
        return str(info.get("url") or "wss://gateway.discord.gg")

    async def _connect_once(self) -> None:
        url = await self._gateway_url()
        sep = "&" if urlsplit(url).query else "?"
        async with self.rest.client().ws_connect(f"{url}{sep}v=10&encoding=json", autoping=True,
                                                   max_msg_size=16 * 2**20) as ws:
            self._ws = ws
            hello = await self._receive(ws, timeout=30)
            if hello.get("op") != 10:
                raise GatewayClosed(None, f"expected HELLO, got op {hello.get('op')}")
            interval = float(hello["d"]["heartbeat_interval"]) / 1000
            beat = asyncio.get_running_loop().create_task(self._heartbeat(ws, interval))
            try:
                await self._hello_reply(ws)
                while True:
                    await self._on_payload(await self._receive(ws, timeout=interval * 3))
            finally:
                beat.cancel()
                self._ws = None

    async def _receive(self, ws: Any, timeout: float) -> dict[str, Any]:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return orjson.loads(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise GatewayClosed(ws.close_code, str(msg.extra or ""))
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise GatewayClosed(None, f"socket error: {ws.exception()}")
        raise GatewayClosed(None, f"unexpected frame {msg.type}")

    async def _hello_reply(self, ws: Any) -> None:
        if self.session_id:
            await ws.send_json({"op": 6, "d": {"token": self.token, "session_id": self.session_id, "seq": self.seq}})
            return
        await ws.send_json({"op": 2, "d": {"token": self.token, "intents": self.intents,
                                            "properties": {"os": "linux", "browser": "openclaw-sup",
                                                           "device": "openclaw-sup"}}})

    async def _heartbeat(self, ws: Any, interval: float) -> None:
        """Beat every `interval` (the first after a random fraction of it); a beat never acknowledged means the
        connection is a zombie: close it (not with 1000, so the session stays resumable) and resume."""
        await asyncio.sleep(interval * random.random())
        self._acked = True
        while not ws.closed:
            if not self._acked:
                self.log.warning("discord: heartbeat not acknowledged; reconnecting to resume")
                await ws.close(code=4000, message=b"heartbeat not acknowledged")
                return
            self._acked = False
            await ws.send_json({"op": 1, "d": self.seq})
            await asyncio.sleep(interval)

    async def _on_payload(self, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        if op == 11:
            self._acked = True
        elif op == 1:
            await self._ws.send_json({"op": 1, "d": self.seq})
        elif op == 7:
            raise GatewayClosed(None, "RECONNECT asked by Discord")
        elif op == 9:
            if not payload.get("d"):
                self._forget_session()
            await asyncio.sleep(1 + random.random() * 4)
            raise GatewayClosed(None, f"INVALID_SESSION ({'resumable' if payload.get('d') else 'new session'})")
        elif op == 0:
            await self._on_dispatch(str(payload.get("t")), payload.get("d") or {}, payload.get("s"))

    async def _on_dispatch(self, event: str, d: dict[str, Any], seq: int | None) -> None:
        if event == "READY":
            self.session_id, self.resume_url = str(d["session_id"]), d.get("resume_gateway_url")
            user = d.get("user") or {}
            self.bot_id, self.bot_username = str(user.get("id")), user.get("username")
            self.seq = seq
            await self.sink([], {SESSION_KEY: orjson.dumps({"sessionId": self.session_id,
                                                            "resumeUrl": self.resume_url}).decode(),
                                 SEQ_KEY: str(seq or 0)})
            self.log.info("discord: connected as %s (%s); session %s", self.bot_username, self.bot_id, self.session_id)
            self.mark_connected(True)
            return
        if event == "RESUMED":
            self.log.info("discord: resumed session %s at seq %s", self.session_id, self.seq)
            if self.bot_id is None:
                with contextlib.suppress(DiscordError):
                    me = await self.call("GET", "/users/@me")
                    self.bot_id, self.bot_username = str(me.get("id")), me.get("username")
            self.mark_connected(True)
            return
        if event == "GUILD_CREATE":
            self.guild_names[str(d.get("id"))] = str(d.get("name") or "")
            for ch in d.get("channels") or []:
                self.channel_names[str(ch.get("id"))] = str(ch.get("name") or "")
        msg = self._inbound(d) if event == "MESSAGE_CREATE" else None
        if msg is not None:
            await self.sink([msg], {SEQ_KEY: str(seq)})  # the seq advances only once the message is durable
        if seq is not None:
            self.seq = seq

    def _inbound(self, d: dict[str, Any]) -> Inbound | None:
        author = d.get("author") or {}
        if not author or str(author.get("id")) == self.bot_id or (author.get("bot") and not self.cfg.get("allowBots")):
            return None
        text = d.get("content")
        if not isinstance(text, str):
            return None
        guild = d.get("guild_id")
        mentioned = bool(guild) and (any(str(m.get("id")) == self.bot_id for m in d.get("mentions") or [])
                                     or f"<@{self.bot_id}>" in text or f"<@!{self.bot_id}>" in text
                                     or str(((d.get("referenced_message") or {}).get("author") or {}).get("id"))
                                     == self.bot_id)
        if guild and not text:
            self.log.info("discord: guild message %s in %s has no content (is the Message Content Intent "
                          "enabled?)", d.get("id"), d.get("channel_id"))
        return Inbound(message_id=f"dc:{d['id']}", sender_id=str(author.get("id")), text=text,
                       chat_type="group" if guild else "direct", chat_id=str(d.get("channel_id")),
                       sender_name=author.get("username"), mentioned=mentioned, ts=time.time(),
                       space=str(guild or ""), roles=[str(r) for r in (d.get("member") or {}).get("roles") or []])

    # -- sending ------------------------------------------------------------------------------------

    async def _channel_for(self, target: str) -> str:
        target = target.removeprefix("discord:")
        user = target[len("user:"):] if target.startswith("user:") else (
            target[2:-1].lstrip("!") if target.startswith("<@") and target.endswith(">") else None)
        if user is None:
            return target.removeprefix("channel:")
        if user not in self.dm_channels:
            res = await self.call("POST", "/users/@me/channels", {"recipient_id": user})
            self.dm_channels[user] = str(res["id"])
        return self.dm_channels[user]

    async def send_keyed(self, key: str, target: str, text: str) -> str | None:
        limit = min(int(self.cfg.get("textChunkLimit") or TEXT_LIMIT), TEXT_LIMIT)
        channel_id = target
        try:
            channel_id = await self._channel_for(target)
            last = None
            for i, start in enumerate(range(0, len(text), limit)):
                nonce = hashlib.sha256(f"{key}.{i}".encode()).hexdigest()[:25]
                res = await self.call("POST", f"/channels/{channel_id}/messages",
                                      {"content": text[start:start + limit], "nonce": nonce, "enforce_nonce": True})
                last = str(res.get("id"))
        except DiscordError as exc:
            if exc.status == 429:
                raise SendError(str(exc), retry_after=exc.retry_after or 1.0) from None
            if exc.status == 401:
                raise SendError(f"{exc} (auth error: check channels.discord.token)", auth=True) from None
            if exc.status == 403:
                need = {50013: "grant the bot Send Messages (and View Channel) there",
                        50001: "add the bot to that channel (View Channel)",
                        50007: "the user does not accept DMs from the bot"}.get(exc.code, "check its permissions")
                self.denied[channel_id] = f"403 {exc.message} ({exc.code}) in channel {channel_id}: {need}"
                raise SendError(f"{exc} sending to channel {channel_id}: {need}", retryable=False) from None
            raise SendError(str(exc), retryable=exc.status >= 500) from None
        except (OSError, TimeoutError) as exc:
            raise SendError(self.redact(f"{type(exc).__name__}: {exc}")) from None
        self.denied.pop(channel_id, None)
        return last

    async def send(self, target: str, text: str) -> str | None:
        return await self.send_keyed(f"send.{time.time_ns()}", target, text)

    # -- status -------------------------------------------------------------------------------------

    async def probe(self, timeout: float) -> dict[str, Any]:
        if not self.configured:
            return {"ok": False, "error": self.last_error or "not configured"}
        t0 = time.monotonic()
        try:
            me = await self.call("GET", "/users/@me", timeout=timeout)
            app = await self.call("GET", "/applications/@me", timeout=timeout)
        except DiscordError as exc:
            return {"ok": False, "status": exc.status, "error": self.redact(str(exc)), "auth": exc.status == 401}
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            return {"ok": False, "error": self.redact(f"{type(exc).__name__}: {exc}")}
        flags = int(app.get("flags") or 0)
        content = "enabled" if flags & (1 << 19) else "limited" if flags & (1 << 18) else "disabled"
        self.application = {"id": app.get("id"), "intents": {"messageContent": content}}
        return {"ok": True, "elapsedMs": round((time.monotonic() - t0) * 1000, 1),
                "bot": {"id": me.get("id"), "username": me.get("username")}}

    def status_extra(self) -> dict[str, Any]:
        issues: list[dict[str, Any]] = []
        if self.fatal is not None and self.fatal.code == 4014:
            issues.append({"kind": "intent", "message": self.last_error or str(self.fatal),
                           "fix": f"enable {', '.join(self.privileged_requested())} in the Developer Portal"})
        elif self.fatal is not None:
            issues.append({"kind": "auth" if self.fatal.code == 4004 else "config",
                           "message": self.last_error or str(self.fatal)})
        issues += [{"kind": "permissions", "message": f"discord: {text}"} for text in self.denied.values()]
        out: dict[str, Any] = {"mode": "gateway", "tokenSource": self.token_source, "issues": issues,
                               "bot": {"id": self.bot_id, "username": self.bot_username} if self.bot_id else None,
                               "intents": self.privileged_requested()}
        if self.application is not None:
            out["application"] = self.application
        return out

    async def close(self) -> None:
        self.closed = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close(code=4000, message=b"stopping")  # not 1000: the session stays resumable
        await self.rest.close()
