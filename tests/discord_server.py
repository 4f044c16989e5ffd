"""A loopback Discord for the channel tests (the real service cannot run here), following Discord's documented wire
formats: the REST API under `/api/v10` (bot-token auth, JSON error bodies `{message, code}`, per-route rate-limit
headers `X-RateLimit-Limit/-Remaining/-Reset/-Reset-After/-Bucket`, 429 bodies `{message, retry_after, global}`
with `Retry-After` and `X-RateLimit-Global`/`-Scope`, `nonce` + `enforce_nonce` deduplication) and the Gateway
WebSocket (opcodes 0 DISPATCH, 1 HEARTBEAT, 2 IDENTIFY, 6 RESUME, 7 RECONNECT, 9 INVALID_SESSION, 10 HELLO,
11 HEARTBEAT_ACK; close codes 4004 authentication failed and 4014 disallowed intents; RESUME replays every
dispatch after the given sequence number; without the MESSAGE_CONTENT intent a guild message that does not
mention the bot arrives with empty content).

Tests push user messages (`push_dm`, `push_guild`), read what the bot posted (`posted`), drop the socket, script
429 storms, and check that the client honoured every back-off (`violations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from conftest import free_port

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT


def serve_app(server: Any, app: web.Application) -> None:
    """Run `app` on `server.port` in `server._loop` (call in the server's thread); sets `_runner` and `_ready`."""
    asyncio.set_event_loop(server._loop)
    server._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    server._loop.run_until_complete(server._runner.setup())
    server._loop.run_until_complete(web.TCPSite(server._runner, "127.0.0.1", server.port).start())
    server._ready.set()
    server._loop.run_forever()


def stop_loop_server(loop: asyncio.AbstractEventLoop, runner: web.AppRunner, sockets: list[Any]) -> None:
    """Close the open WebSockets, the server, every task left, then the loop (no task left pending)."""
    async def shutdown() -> None:
        for ws in sockets:
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=1001), 1)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.cleanup(), 3)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(6)
    loop.call_soon_threadsafe(loop.stop)


@dataclass
class Session:
    session_id: str
    intents: int
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # (seq, type, data)
    ws: web.WebSocketResponse | None = None
    transport: Any = None


class FakeDiscord:
    def __init__(self, token: str, *, bot_id: str = "900000000000000001", username: str = "clawbot",
                 privileged_enabled: int = PRIVILEGED, bucket_limit: int = 5, bucket_window: float = 1.0,
                 heartbeat_ms: int = 1000) -> None:
        self.token = token
        self.bot = {"id": bot_id, "username": username, "discriminator": "0", "bot": True, "global_name": None}
        self.privileged_enabled = privileged_enabled
        self.bucket_limit, self.bucket_window = bucket_limit, bucket_window
        self.heartbeat_ms = heartbeat_ms
        self.port = free_port()
        self.guilds: dict[str, dict[str, Any]] = {}
        self.denied_channels: dict[str, tuple[int, str]] = {}  # channel -> (code, message) answered with 403
        self.sessions: dict[str, Session] = {}
        self.ops: list[tuple[int, Any]] = []  # (op, d) of every frame the client sent
        self.posted: list[dict[str, Any]] = []
        self.violations: list[str] = []  # requests that ignored a back-off the server had announced
        self.rest_calls: list[tuple[str, str, float]] = []
        self._storm: list[tuple[float, bool]] = []  # scripted 429s: (retry_after, global)
        self._blocked_until: dict[str, float] = {}  # bucket key (or "global") -> until
        self._windows: dict[str, tuple[float, int]] = {}  # bucket key -> (window start, used)
        self._nonces: dict[str, dict[str, Any]] = {}
        self._dm_channels: dict[str, str] = {}
        self._ids = itertools.count(1_000_000)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    def _run(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        serve_app(self, app)

    def _do(self, fn: Any, *args: Any) -> Any:
        async def wrap() -> Any:
            return await fn(*args) if asyncio.iscoroutinefunction(fn) else fn(*args)
        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(10)

    def close(self) -> None:
        stop_loop_server(self._loop, self._runner, [s.ws for s in self.sessions.values()])
        self._thread.join(5)

    def _snowflake(self) -> str:
        return str(next(self._ids))

    # -- test controls ------------------------------------------------------------------------------

    def add_guild(self, guild_id: str, name: str, channels: dict[str, str]) -> None:
        """A guild the bot is in, with text channels {id: name}."""
        self.guilds[guild_id] = {"id": guild_id, "name": name, "unavailable": False,
                                 "channels": [{"id": cid, "name": n, "type": 0, "guild_id": guild_id}
                                              for cid, n in channels.items()]}

    def deny(self, channel_id: str, code: int = 50013, message: str = "Missing Permissions") -> None:
        self.denied_channels[channel_id] = (code, message)

    def storm(self, n: int, retry_after: float, global_: bool = False) -> None:
        """The next `n` message posts are answered 429 with this retry_after."""
        with self._lock:
            self._storm.extend([(retry_after, global_)] * n)

    def push_dm(self, user_id: str, text: str, username: str | None = None) -> str:
        with self._lock:
            channel_id = self._dm_channels.setdefault(user_id, self._snowflake())
        msg = {"id": self._snowflake(), "channel_id": channel_id, "content": text, "type": 0,
               "author": {"id": user_id, "username": username or f"user{user_id}", "discriminator": "0"},
               "mentions": [], "mention_roles": [], "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00")}
        self._do(self._dispatch, "MESSAGE_CREATE", msg)
        return msg["id"]

    def push_guild(self, guild_id: str, channel_id: str, user_id: str, text: str, *, mention_bot: bool = False,
                   roles: list[str] | None = None) -> str:
        content = f"<@{self.bot['id']}> {text}" if mention_bot else text
        msg = {"id": self._snowflake(), "channel_id": channel_id, "guild_id": guild_id, "content": content,
               "type": 0, "author": {"id": user_id, "username": f"user{user_id}", "discriminator": "0"},
               "member": {"roles": roles or [], "nick": None},
               "mentions": [dict(self.bot)] if mention_bot else [], "mention_roles": [],
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00")}
        self._do(self._dispatch, "MESSAGE_CREATE", msg)
        return msg["id"]

    def drop_sockets(self) -> int:
        """Cut every Gateway connection without a close frame (the sessions stay resumable)."""
        def drop() -> int:
            n = 0
            for s in self.sessions.values():
                if s.ws is not None and not s.ws.closed and s.transport is not None:
                    s.transport.abort()
                    n += 1
                s.ws = None
            return n
        return self._do(drop)

    def posted_texts(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(p["channel_id"], p["content"]) for p in self.posted]

    def dm_channel(self, user_id: str) -> str:
        return self._dm_channels[user_id]

    # -- gateway ------------------------------------------------------------------------------------

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        for s in self.sessions.values():
            seq = (s.events[-1][0] if s.events else 0) + 1
            shown = dict(data)
            if event == "MESSAGE_CREATE" and data.get("guild_id") and not (s.intents & INTENT_MESSAGE_CONTENT) \
                    and not any(m.get("id") == self.bot["id"] for m in data.get("mentions") or []):
                shown["content"] = ""
            s.events.append((seq, event, shown))
            if s.ws is not None and not s.ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await s.ws.send_json({"op": 0, "t": event, "s": seq, "d": shown})

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}, "s": None, "t": None})
        session: Session | None = None
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            payload = frame.json()
            op, d = payload.get("op"), payload.get("d")
            with self._lock:
                self.ops.append((op, d))
            if op == 1:
                await ws.send_json({"op": 11})
            elif op == 2:
                if (d or {}).get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                intents = int((d or {}).get("intents") or 0)
                if intents & PRIVILEGED & ~self.privileged_enabled:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                session = Session(f"sess-{self._snowflake()}", intents)
                self.sessions[session.session_id] = session
                session.ws, session.transport = ws, request.transport
                await self._send_dispatch(session, "READY", {
                    "v": 10, "user": self.bot, "session_id": session.session_id,
                    "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                    "guilds": [{"id": g, "unavailable": True} for g in self.guilds], "application": {"id": "42"}})
                for guild in self.guilds.values():
                    await self._send_dispatch(session, "GUILD_CREATE", guild)
            elif op == 6:
                found = self.sessions.get(str((d or {}).get("session_id")))
                if found is None or (d or {}).get("token") != self.token:
                    await ws.send_json({"op": 9, "d": False})
                    continue
                session = found
                session.ws, session.transport = ws, request.transport
                after = int((d or {}).get("seq") or 0)
                for seq, event, data in list(session.events):
                    if seq > after:
                        await ws.send_json({"op": 0, "t": event, "s": seq, "d": data})
                await self._send_dispatch(session, "RESUMED", {})
        if session is not None and session.ws is ws:
            session.ws = None
        return ws

    async def _send_dispatch(self, s: Session, event: str, data: dict[str, Any]) -> None:
        seq = (s.events[-1][0] if s.events else 0) + 1
        s.events.append((seq, event, data))
        await s.ws.send_json({"op": 0, "t": event, "s": seq, "d": data})

    # -- REST ---------------------------------------------------------------------------------------

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(body, status=status, headers=headers or {})

    def _limited(self, key: str, now: float) -> tuple[web.Response | None, dict[str, str]]:
        """The route's bucket: headers always; a 429 when the client sent with no request left in the window."""
        start, used = self._windows.get(key, (now, 0))
        if now - start >= self.bucket_window:
            start, used = now, 0
        reset_after = self.bucket_window - (now - start)
        if used >= self.bucket_limit:
            self.violations.append(f"{key}: request with X-RateLimit-Remaining 0 before the reset")
            self._blocked_until[key] = now + reset_after
            return self._json(429, {"message": "You are being rate limited.", "retry_after": round(reset_after, 3),
                                    "global": False}, {"Retry-After": str(max(1, round(reset_after))),
                                                       "X-RateLimit-Scope": "user"}), {}
        self._windows[key] = (start, used + 1)
        return None, {"X-RateLimit-Limit": str(self.bucket_limit),
                      "X-RateLimit-Remaining": str(self.bucket_limit - used - 1),
                      "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                      "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": "msgbucket"}

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        now = time.monotonic()
        with self._lock:
            self.rest_calls.append((request.method, path, now))
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return self._json(401, {"message": "401: Unauthorized", "code": 0})
        body = await request.json() if request.can_read_body else {}
        if request.method == "GET" and path == "/gateway/bot":
            return self._json(200, {"url": f"ws://127.0.0.1:{self.port}/gateway", "shards": 1,
                                    "session_start_limit": {"total": 1000, "remaining": 999,
                                                            "reset_after": 0, "max_concurrency": 1}})
        if request.method == "GET" and path == "/users/@me":
            return self._json(200, self.bot)
        if request.method == "GET" and path == "/applications/@me":
            flags = (1 << 19) if self.privileged_enabled & INTENT_MESSAGE_CONTENT else 0
            return self._json(200, {"id": "42", "name": "claw", "flags": flags, "bot": self.bot})
        if request.method == "POST" and path == "/users/@me/channels":
            uid = str(body.get("recipient_id"))
            with self._lock:
                cid = self._dm_channels.setdefault(uid, self._snowflake())
            return self._json(200, {"id": cid, "type": 1, "recipients": [{"id": uid}]})
        parts = path.strip("/").split("/")
        if request.method == "POST" and len(parts) == 3 and parts[0] == "channels" and parts[2] == "messages":
            return self._post_message(parts[1], body, now)
        return self._json(404, {"message": "404: Not Found", "code": 0})

    def _post_message(self, channel_id: str, body: dict[str, Any], now: float) -> web.Response:
        key = f"msgbucket:{channel_id}"
        with self._lock:
            for k in ("global", key):
                if now < self._blocked_until.get(k, 0):
                    self.violations.append(f"{k}: post {self._blocked_until[k] - now:.3f}s before retry time")
            if self._storm:
                retry_after, global_ = self._storm.pop(0)
                self._blocked_until["global" if global_ else key] = now + retry_after
                headers = {"Retry-After": str(max(1, round(retry_after))), "X-RateLimit-Scope":
                           "global" if global_ else "user"}
                if global_:
                    headers["X-RateLimit-Global"] = "true"
                return self._json(429, {"message": "You are being rate limited.", "retry_after": retry_after,
                                        "global": global_}, headers)
            limited, headers = self._limited(key, now)
            if limited is not None:
                return limited
            if channel_id in self.denied_channels:
                code, message = self.denied_channels[channel_id]
                return self._json(403, {"message": message, "code": code}, headers)
            nonce = body.get("nonce")
            if body.get("enforce_nonce") and nonce is not None and f"{channel_id}:{nonce}" in self._nonces:
                return self._json(200, self._nonces[f"{channel_id}:{nonce}"], headers)
            msg = {"id": self._snowflake(), "channel_id": channel_id, "content": body.get("content", ""),
                   "author": self.bot, "nonce": nonce, "type": 0}
            if nonce is not None:
                self._nonces[f"{channel_id}:{nonce}"] = msg
            self.posted.append(msg)
        return self._json(200, msg, headers)
