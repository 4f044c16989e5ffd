"""A loopback Slack for the channel tests (the real service cannot run here), following Slack's documented formats:
Web API methods under `/api/<method>` with a Bearer token, answering `{"ok": true, ...}` or `{"ok": false, "error":
...}` (`missing_scope` with `needed` and `provided`, `not_in_channel`, `invalid_auth`), HTTP 429 with `Retry-After`
when rate limited; Socket Mode through `apps.connections.open` (app-level token) and a WebSocket that says
`hello`, delivers `events_api` envelopes `{envelope_id, type, payload, retry_attempt, retry_reason,
accepts_response_payload}`, redelivers every envelope not acknowledged (`{"envelope_id": ...}`) on the next
connection, and may ask the client to reconnect with `{"type": "disconnect", "reason": "refresh_requested"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from typing import Any

from aiohttp import WSMsgType, web
from discord_server import serve_app, stop_loop_server

from conftest import free_port

ALL_SCOPES = frozenset({"chat:write", "im:history", "channels:history", "groups:history", "app_mentions:read",
                        "users:read"})


class FakeSlack:
    def __init__(self, bot_token: str, app_token: str, *, bot_user: str = "UBOT0001", team: str = "T0001",
                 scopes: frozenset[str] = ALL_SCOPES) -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.bot_user, self.team = bot_user, team
        self.scopes = set(scopes)
        self.member_of: set[str] | None = None  # channels the bot is in (None: all)
        self.port = free_port()
        self.posted: list[dict[str, Any]] = []
        self.acked: list[str] = []
        self.delivered: list[tuple[str, int]] = []  # (envelope_id, retry_attempt)
        self.connections = 0
        self.calls: list[tuple[str, float]] = []
        self.violations: list[str] = []
        self._pending: dict[str, dict[str, Any]] = {}  # envelope id -> envelope, until acknowledged
        self._ratelimit: list[float] = []
        self._blocked_until = 0.0
        self._ids = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def _run(self) -> None:
        app = web.Application()
        app.router.add_get("/link", self._socket)
        app.router.add_post("/api/{method}", self._api)
        serve_app(self, app)

    def close(self) -> None:
        stop_loop_server(self._loop, self._runner, list(self._sockets))
        self._thread.join(5)

    def _do(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- test controls ------------------------------------------------------------------------------

    def push_message(self, channel: str, user: str, text: str, channel_type: str = "im") -> str:
        ts = f"{time.time():.6f}"
        n = next(self._ids)
        event = {"type": "message", "channel": channel, "user": user, "text": text, "ts": f"{ts[:-3]}{n:03d}",
                 "channel_type": channel_type, "event_ts": ts}
        env = {"envelope_id": f"env-{n}", "type": "events_api", "accepts_response_payload": False,
               "retry_attempt": 0, "retry_reason": "",
               "payload": {"token": "verif", "team_id": self.team, "api_app_id": "A0001", "event": event,
                           "type": "event_callback", "event_id": f"Ev{n:08d}", "event_time": int(time.time())}}
        with self._lock:
            self._pending[env["envelope_id"]] = env
        self._do(self._deliver(env))
        return env["envelope_id"]

    def rate_limit(self, *retry_after: float) -> None:
        """The next chat.postMessage calls answer HTTP 429 with these Retry-After values."""
        with self._lock:
            self._ratelimit.extend(retry_after)

    def ask_reconnect(self) -> None:
        async def go() -> None:
            for ws in list(self._sockets):
                with contextlib.suppress(Exception):
                    await ws.send_json({"type": "disconnect", "reason": "refresh_requested",
                                        "debug_info": {"host": "loopback"}})
        self._do(go())

    def drop_sockets(self) -> None:
        async def go() -> None:
            for ws in list(self._sockets):
                with contextlib.suppress(Exception):
                    await ws.close(code=1006)
        self._do(go())

    def posted_texts(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(p["channel"], p["text"]) for p in self.posted]

    # -- Socket Mode --------------------------------------------------------------------------------

    async def _deliver(self, env: dict[str, Any]) -> None:
        for ws in list(self._sockets):
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.send_json(env)
                    self.delivered.append((env["envelope_id"], env["retry_attempt"]))
                    return

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "loopback"},
                            "connection_info": {"app_id": "A0001"}})
        with self._lock:
            unacked = list(self._pending.values())
        for env in unacked:  # Slack retries what was never acknowledged
            env["retry_attempt"] += 1
            env["retry_reason"] = "timeout"
            await ws.send_json(env)
            self.delivered.append((env["envelope_id"], env["retry_attempt"]))
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                env_id = frame.json().get("envelope_id")
                with self._lock:
                    if env_id in self._pending:
                        del self._pending[env_id]
                        self.acked.append(env_id)
        self._sockets.remove(ws)
        return ws

    # -- Web API ------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        now = time.monotonic()
        with self._lock:
            self.calls.append((method, now))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
        if method == "apps.connections.open":
            if token != self.app_token:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link?ticket=t{now}"})
        if token != self.bot_token:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return web.json_response({"ok": True, "url": "https://loopback.slack.test/", "team": "Claw",
                                      "user": "clawbot", "team_id": self.team, "user_id": self.bot_user,
                                      "bot_id": "B0001"})
        if method == "chat.postMessage":
            return self._post(body, now)
        return web.json_response({"ok": False, "error": "unknown_method"})

    def _post(self, body: dict[str, Any], now: float) -> web.Response:
        with self._lock:
            if now < self._blocked_until:
                self.violations.append(f"chat.postMessage {self._blocked_until - now:.3f}s before Retry-After")
            if self._ratelimit:
                retry = self._ratelimit.pop(0)
                self._blocked_until = now + retry
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers={"Retry-After": f"{retry:g}"})
            if "chat:write" not in self.scopes:
                return web.json_response({"ok": False, "error": "missing_scope", "needed": "chat:write",
                                          "provided": ",".join(sorted(self.scopes))})
            channel = str(body.get("channel"))
            if self.member_of is not None and not channel.startswith("D") and channel not in self.member_of:
                return web.json_response({"ok": False, "error": "not_in_channel"})
            ts = f"{time.time():.6f}"
            self.posted.append({"channel": channel, "text": body.get("text", ""), "ts": ts})
        return web.json_response({"ok": True, "channel": channel, "ts": ts,
                                  "message": {"type": "message", "text": body.get("text", ""), "user": self.bot_user,
                                              "ts": ts}})
