"""RPC methods: the scope each needs, the ones the supervisor answers, and the ones routed to a worker.

Scope table as the real server: `operator.admin` implies all, `write` implies `read`; a method not listed
needs admin. Routed families go to the worker that owns them (cron.* -> scheduler, browser.* -> browser,
agent and chat.* -> agent, channels.* -> the channel workers); while that worker is not running they answer
UNAVAILABLE naming the worker and its state.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from openclaw_sup import __version__
from openclaw_sup.config.durations import DurationError, parse_duration_ms
from openclaw_sup.gateway import approvals, logtail, nodes, pairing_rpc, workers_rpc
from openclaw_sup.gateway.hub import now_ms
from openclaw_sup.gateway.params import check as params_check
from openclaw_sup.gateway.protocol import UPSTREAM_VERSION, MethodError, invalid, missing_scope, unavailable

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore
    from openclaw_sup.gateway.host import Partial

READ, WRITE, ADMIN = "operator.read", "operator.write", "operator.admin"

SCOPES: dict[str, str] = {
    **dict.fromkeys(
        ["health", "status", "system-presence", "config.get", "config.schema.lookup", "logs.tail",
         "last-heartbeat", "channels.status", "cron.list", "cron.status", "cron.get", "cron.runs", "chat.history",
         "models.list", "agent.identity.get", "browser.status", "browser.tabs", "sessions.list",
         "gateway.identity.get", "system.info", "diagnostics.stability"], READ),
    **dict.fromkeys(
        ["agent", "agent.wait", "chat.send", "chat.abort", "chat.inject", "send", "wake", "browser.open",
         "browser.navigate", "browser.screenshot"], WRITE),
    **workers_rpc.SCOPES,
    **pairing_rpc.SCOPES,
    **nodes.SCOPES,
    **approvals.SCOPES,
}

IDEMPOTENT = frozenset({"agent", "send", "chat.send", "node.invoke", "poll"})
ROUTE_PREFIXES = (("cron.", "scheduler"), ("browser.", "browser"), ("chat.", "agent"), ("agent.", "agent"))
ROUTE_EXACT = {"agent": "agent", "set-heartbeats": "scheduler", "wake": "scheduler"}
WORKER_TIMEOUT_S = 30.0
AGENT_TIMEOUT_S = 600.0
HEALTH_MAX_AGE_S = 1.0
DEFAULT_HEARTBEAT = "30m"


def duration_ms(text: Any, default: int = 0) -> int:
    """`30m`, `1h30m`, `45s`, `0m` -> milliseconds (a bare number is minutes, as upstream's heartbeat)."""
    try:
        return parse_duration_ms(text)
    except DurationError:
        return default


def required_scope(method: str) -> str:
    return SCOPES.get(method, ADMIN)


def route_of(method: str) -> str | None:
    if method in ROUTE_EXACT:
        return ROUTE_EXACT[method]
    for prefix, worker in ROUTE_PREFIXES:
        if method.startswith(prefix):
            return worker
    return None


class IdempotencyCache:
    """Side-effecting requests with the same key share one result for 5 minutes (1000 keys at most)."""

    def __init__(self, ttl_s: float = 300.0, size: int = 1000) -> None:
        self.ttl, self.size = ttl_s, size
        self._entries: OrderedDict[tuple[str, str], tuple[float, asyncio.Future[Any]]] = OrderedDict()

    def get_or_start(self, method: str, key: str) -> tuple[asyncio.Future[Any], bool]:
        now = time.monotonic()
        while self._entries and (len(self._entries) > self.size or next(iter(self._entries.values()))[0] < now):
            self._entries.popitem(last=False)
        entry = self._entries.get((method, key))
        if entry is not None and entry[0] >= now:
            return entry[1], False
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._entries[(method, key)] = (now + self.ttl, fut)
        return fut, True

    def forget(self, method: str, key: str) -> None:
        self._entries.pop((method, key), None)


class Methods:
    def __init__(self, core: GatewayCore) -> None:
        self.core = core
        self.idem = IdempotencyCache()
        self.last_heartbeat: dict[str, Any] | None = None
        self._health: tuple[float, dict[str, Any]] | None = None
        self.sessions_path = str(core.state_dir / "agents" / "main" / "agent" / "openclaw-agent.sqlite")
        self.local = {
            "health": self.health,
            "status": self.status,
            "system-presence": self.system_presence,
            "config.get": self.config_get,
            "logs.tail": self.logs_tail,
            "last-heartbeat": self.get_last_heartbeat,
            "gateway.restart.request": self.restart_request,
            "channels.status": self.channels_status,
            "channels.start": lambda p, m="channels.start": self.channels_control(p, m),
            "channels.stop": lambda p, m="channels.stop": self.channels_control(p, m),
            "channels.logout": lambda p, m="channels.logout": self.channels_control(p, m),
            "send": self.send_via_channel,
            "gateway.identity.get": self.identity,
            "system.info": self.identity,
        }
        self.workers = workers_rpc.WorkersRpc(core)
        self.local.update(self.workers.methods())
        self.local.update(pairing_rpc.PairingRpc(core).methods())

    def is_local(self, method: str) -> bool:
        """Answered by the supervisor without waiting on a worker: served in order, without a task."""
        return method in self.local and not method.startswith("channels.") and method != "send"

    async def call(self, conn: Connection, method: str, params: dict[str, Any], partial: Partial) -> Any:
        scope = required_scope(method)
        if conn.role != "node" and not conn.has_scope(scope):
            raise missing_scope(scope)
        params_check(method, params)
        if (conn.role == "node") != (method in nodes.NODE_ROLE_METHODS) and method != "health":
            raise invalid(f"unauthorized role: {conn.role}")
        if method in IDEMPOTENT:
            key = params.get("idempotencyKey")
            if not isinstance(key, str) or not key:
                raise invalid(f"{method} requires idempotencyKey")
            fut, fresh = self.idem.get_or_start(method, key)
            if not fresh:
                return await asyncio.shield(fut)
            try:
                result = await self._dispatch(conn, method, params, partial)
            except MethodError as exc:
                self.idem.forget(method, key)
                fut.set_exception(exc)
                fut.exception()
                raise
            fut.set_result(result)
            return result
        return await self._dispatch(conn, method, params, partial)

    async def _dispatch(self, conn: Connection, method: str, params: dict[str, Any], partial: Partial) -> Any:
        family = self.core.handlers.get(method)
        if family is not None:
            return await family(conn, params)
        stream = self.core.streaming.get(method)
        if stream is not None:
            return await stream(conn, params, partial)
        handler = self.local.get(method)
        if handler is not None:
            return await (handler(params, conn) if method in workers_rpc.PER_CONNECTION else handler(params))
        worker = route_of(method)
        if worker is None:
            raise invalid(f"unknown method: {method}")
        timeout = AGENT_TIMEOUT_S if worker == "agent" else WORKER_TIMEOUT_S
        return await self.core.host.call_worker(worker, method, params, timeout=timeout,
                                                partial=partial if method == "agent" else None)

    # -- system --------------------------------------------------------------------------------------

    def health_snapshot(self, fresh: bool = False) -> dict[str, Any]:
        """The health snapshot, cached like upstream's (here at most HEALTH_MAX_AGE_S, and dropped on any
        worker state change or reload); `probe: true` asks for a fresh one."""
        now = time.monotonic()
        if not fresh and self._health is not None and now - self._health[0] < HEALTH_MAX_AGE_S:
            return self._health[1]
        snap = self._build_health()
        self._health = (now, snap)
        return snap

    def invalidate_health(self) -> None:
        self._health = None

    def _build_health(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        cfg = self.core.host.gateway_config()
        hb_cfg = ((cfg.get("agents") or {}).get("defaults") or {}).get("heartbeat") or {}
        every = hb_cfg.get("every", DEFAULT_HEARTBEAT)
        every_ms = duration_ms(every, duration_ms(DEFAULT_HEARTBEAT))
        sessions = {"path": self.sessions_path, "count": 0, "recent": []}
        ready = self.core.host.readiness()
        snap: dict[str, Any] = {
            "ok": True,
            "ts": now_ms(),
            "durationMs": 0,
            "channels": {},
            "channelOrder": [],
            "channelLabels": {},
            "heartbeatSeconds": every_ms // 1000,
            "defaultAgentId": "main",
            "agents": [{"agentId": "main", "isDefault": True,
                        "heartbeat": {"enabled": every_ms > 0, "every": every, "everyMs": every_ms,
                                      "target": hb_cfg.get("target", "owner")},
                        "sessions": sessions}],
            "sessions": sessions,
            "configReload": self.core.reload_status(),
            "readiness": {"ready": ready["ready"], "pending": ready.get("pending")},
            "workers": self.core.host.worker_view(),
        }
        snap["durationMs"] = round((time.perf_counter() - t0) * 1000)
        return snap

    async def health(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.health_snapshot(fresh=bool(params.get("probe")))

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        cfg = self.core.host.gateway_config()
        hb = ((cfg.get("agents") or {}).get("defaults") or {}).get("heartbeat") or {}
        every = hb.get("every", DEFAULT_HEARTBEAT)
        return {
            "runtimeVersion": UPSTREAM_VERSION,
            "supervisorVersion": __version__,
            "heartbeat": {"defaultAgentId": "main",
                          "agents": [{"agentId": "main", "enabled": duration_ms(every) > 0, "every": every,
                                      "everyMs": duration_ms(every)}]},
            "channelSummary": [],
            "queuedSystemEvents": [],
            "sessions": {"paths": [], "count": 0, "defaults": {"model": None, "contextTokens": None},
                         "recent": []},
            "supervisor": self.core.host.supervisor_view(),
            "workers": self.core.host.worker_view(),
        }

    async def system_presence(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.core.hub.presence_list()

    async def identity(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"version": __version__, "instanceId": self.core.hub.instance_id,
                "host": self.core.hub.self_presence["host"]}

    async def config_get(self, params: dict[str, Any]) -> dict[str, Any]:
        from openclaw_sup.config.schema import redact

        path = self.core.host.config_path()
        try:
            raw = path.read_bytes()
            exists = True
        except OSError:
            raw, exists = b"", False
        cfg = self.core.host.gateway_config()
        return {"path": str(path), "exists": exists, "valid": True, "config": redact(cfg),
                "hash": "sha256:" + hashlib.sha256(raw).hexdigest(),
                "configRevisionHash": "sha256:" + hashlib.sha256(orjson.dumps(cfg, option=orjson.OPT_SORT_KEYS))
                .hexdigest()}

    async def logs_tail(self, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and (not isinstance(cursor, int) or cursor < 0):
            raise invalid("invalid logs.tail params: cursor must be a non-negative integer")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, logtail.tail, self.core.host.log_file(), cursor, params.get("limit", 200),
                params.get("maxBytes", 250_000))
        except (TypeError, ValueError) as exc:
            raise invalid(f"invalid logs.tail params: {exc}") from None

    async def get_last_heartbeat(self, params: dict[str, Any]) -> dict[str, Any] | None:
        return self.last_heartbeat

    async def restart_request(self, params: dict[str, Any]) -> dict[str, Any]:
        delay = params.get("restartDelayMs", 0)
        if not isinstance(delay, int) or delay < 0:
            raise invalid("restartDelayMs must be a non-negative integer")
        return self.core.host.request_restart(str(params.get("reason") or "gateway.restart.request"), delay)

    async def channels_status(self, params: dict[str, Any]) -> dict[str, Any]:
        """Ask every channel worker in parallel; a worker that is down shows as not running."""
        host = self.core.host
        names = [n for n in host.workers_of_kind("channel.")
                 if not params.get("channel") or n.split(":")[1:2] == [params["channel"]]]
        timeout = min(float(params.get("timeoutMs") or 10_000) / 1000, 60.0)
        out: dict[str, Any] = {"ts": now_ms(), "channelOrder": [], "channelLabels": {}, "channels": {},
                               "channelAccounts": {}, "channelDefaultAccountId": {}}

        async def one(name: str) -> tuple[str, Any]:
            try:
                return name, await host.call_worker(name, "channels.status", params, timeout=timeout)
            except MethodError as exc:
                return name, {"running": False, "lastError": str(exc)}

        for name, res in await asyncio.gather(*(one(n) for n in names)):
            _, channel, account = ([*name.split(":"), "", ""])[:3]
            if channel not in out["channels"]:
                out["channelOrder"].append(channel)
                out["channelLabels"][channel] = {"irc": "IRC", "webchat": "WebChat"}.get(channel, channel.capitalize())
                out["channels"][channel] = {"configured": True}
                out["channelAccounts"][channel] = []
                out["channelDefaultAccountId"][channel] = "default"
            out["channelAccounts"][channel].append({"accountId": account, **(res if isinstance(res, dict) else {})})
        issues = channel_status_issues(out["channelAccounts"])
        if issues:
            out["statusIssues"] = issues
        return out

    def _channel_worker(self, params: dict[str, Any], method: str) -> str:
        channel, account = params.get("channel"), params.get("accountId") or "default"
        if not isinstance(channel, str) or not channel:
            raise invalid(f"{method} requires channel (e.g. irc, telegram)")
        return f"channel:{channel}:{account}"

    async def channels_control(self, params: dict[str, Any], method: str) -> dict[str, Any]:
        """`channels.start|stop|logout {channel, accountId?}`: the account's worker (dis)connects its adapter."""
        name = self._channel_worker(params, "channels.start|stop|logout")
        return await self.core.host.call_worker(name, method, params, timeout=WORKER_TIMEOUT_S)

    async def send_via_channel(self, params: dict[str, Any]) -> dict[str, Any]:
        """`send {channel, accountId?, to, message, idempotencyKey}` -> the account worker's `channel.send`."""
        name = self._channel_worker(params, "send")
        res = await self.core.host.call_worker(name, "channel.send", {
            "text": params.get("message"), "to": params.get("to"), "idempotencyKey": params.get("idempotencyKey"),
        }, timeout=WORKER_TIMEOUT_S + 5)
        if isinstance(res, dict) and res.get("ok") is False:
            raise unavailable(f"send via {name} failed: {res.get('error')}", worker=name)
        return {"runId": params.get("idempotencyKey"), "messageId": (res or {}).get("messageId"),
                "channel": params.get("channel"), **({"ok": True} if isinstance(res, dict) else {})}


def channel_status_issues(accounts: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Upstream's `statusIssues`: what each worker reports (`issues`: auth, intent, permissions, config), and,
    since a payload that has the list replaces the CLI's own generic checks, those generic lines for the rest."""
    own = [{"channel": ch, "accountId": str(a.get("accountId") or "default"), "kind": str(i.get("kind") or "runtime"),
            "message": str(i.get("message") or ""), **({"fix": str(i["fix"])} if i.get("fix") else {})}
           for ch, rows in accounts.items() for a in rows for i in a.get("issues") or [] if isinstance(i, dict)]
    if not own:
        return []
    generic = []
    for ch, rows in accounts.items():
        for a in rows:
            if a.get("issues") or a.get("stopped"):
                continue
            if a.get("running") is False:
                message = "Channel is enabled and configured, but its runtime is not running."
            elif a.get("running") and a.get("connected") is False:
                message = "Channel reports running, but the runtime is disconnected."
            else:
                continue
            generic.append({"channel": ch, "accountId": str(a.get("accountId") or "default"), "kind": "runtime",
                            "message": message, "fix": "restart the channel or gateway"})
    return (own + generic)[:50]


def unavailable_worker(name: str, state: str | None) -> MethodError:
    if state is None:
        return unavailable(f"the {name} worker is not part of this gateway's configuration",
                           worker=name, reason="not-configured")
    return unavailable(f"the {name} worker is {state}; try again once it is running", worker=name, state=state)
