"""RPC methods: the one table of what this gateway serves, the scope each needs and who answers it.

A method not in the table is `unknown method: <name>` whoever asks, before any scope check (upstream checks the
scope first, so an unknown method looks like a permission problem to a non-admin). Scopes as the real server:
`operator.admin` implies all, `write` implies `read`; `health` needs none (the scope-less probe connection of
`gateway probe` reads it). Worker-owned methods go over the bus to their worker and answer UNAVAILABLE naming
it while it is not running. Beyond the table, a worker family (`cron.*`, `browser.*`, `agent.*`, `chat.*`)
also serves the methods its worker announced when it became ready (extension kinds), needing admin. Every
refused or unknown method is logged once per method and client.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from openclaw_sup.config.durations import DurationError, parse_duration_ms
from openclaw_sup.gateway import approvals, inventory, logtail, nodes, pairing_rpc, snapshots, workers_rpc
from openclaw_sup.gateway.hub import now_ms
from openclaw_sup.gateway.params import check as params_check
from openclaw_sup.gateway.protocol import (
    MethodError,
    invalid,
    missing_scope,
    unavailable,
    unknown_method,
)

if TYPE_CHECKING:
    from openclaw_sup.gateway.connection import Connection
    from openclaw_sup.gateway.core import GatewayCore
    from openclaw_sup.gateway.host import Partial

READ, WRITE, ADMIN = "operator.read", "operator.write", "operator.admin"
PAIRING, APPROVALS = "operator.pairing", "operator.approvals"
GATEWAY, CHANNELS = "gateway", "channels"
"""Owners that are not a worker: the supervisor itself, and the channel workers asked together."""


def _owned(owner: str, scope: str | None, *methods: str) -> dict[str, tuple[str | None, str]]:
    return dict.fromkeys(methods, (scope, owner))


METHODS: dict[str, tuple[str | None, str]] = {
    **_owned(GATEWAY, None, "health"),
    **_owned(GATEWAY, READ, "status", "system-presence", "last-heartbeat", "config.get", "config.schema.lookup",
             "logs.tail", "system.info", "diagnostics.stability", "models.list",
             "skills.status", "hooks.status", "doctor.memory.status"),
    **_owned(GATEWAY, ADMIN, "system-event", "gateway.restart.request"),
    **_owned(GATEWAY, PAIRING, "device.pair.list", "device.pair.approve", "device.pair.reject",
             "device.pair.remove"),
    **_owned(CHANNELS, READ, "channels.status"),
    **_owned(CHANNELS, ADMIN, "channels.start", "channels.stop", "channels.logout"),
    **_owned(CHANNELS, WRITE, "send"),
    **_owned("scheduler", READ, "cron.list", "cron.status", "cron.get", "cron.runs"),
    **_owned("scheduler", ADMIN, "cron.add", "cron.update", "cron.remove", "cron.run", "set-heartbeats"),
    **_owned("scheduler", WRITE, "wake"),
    **_owned("agent", READ, "agent.identity.get", "chat.history", "sessions.list", "usage.cost"),
    **_owned("agent", WRITE, "agent", "agent.wait", "chat.send", "chat.abort"),
    **_owned("agent", ADMIN, "chat.inject"),
    **_owned("browser", READ, "browser.status", "browser.tabs"),
    **_owned("browser", WRITE, "browser.open", "browser.navigate", "browser.screenshot"),
    **_owned("browser", ADMIN, "browser.start", "browser.stop", "browser.request"),
    **{m: (scope, GATEWAY) for m, scope in {**workers_rpc.SCOPES, **pairing_rpc.SCOPES, **nodes.SCOPES,
                                            **approvals.SCOPES}.items()},
    **_owned(GATEWAY, None, *sorted(nodes.NODE_ROLE_METHODS)),  # a node's own calls (role checked, no scope)
}
FAMILIES = (("cron.", "scheduler"), ("browser.", "browser"), ("chat.", "agent"), ("agent.", "agent"))
IDEMPOTENT = frozenset({"agent", "send", "chat.send", "node.invoke", "poll"})
WORKER_TIMEOUT_S = 30.0
AGENT_TIMEOUT_S = 600.0
HEALTH_MAX_AGE_S = 1.0
SESSIONS_ASK_S = 2.0
SESSIONS_WORKER = "agent"
"""The worker that owns the session stores and answers `sessions.summary`."""
DEFAULT_HEARTBEAT = "30m"
REFUSALS_KEPT = 4096


def duration_ms(text: Any, default: int = 0) -> int:
    """`30m`, `1h30m`, `45s`, `0m` -> milliseconds (a bare number is minutes, as upstream's heartbeat)."""
    try:
        return parse_duration_ms(text)
    except DurationError:
        return default


def restart_target(value: Any) -> dict[str, Any] | None:
    """`{pid, ownerId, port}` of a targeted restart, or None when it is malformed."""
    if not isinstance(value, dict):
        return None
    pid, owner, port = value.get("pid"), value.get("ownerId"), value.get("port")
    if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and isinstance(owner, str)
            and owner.strip() and isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536):
        return None
    return {"pid": pid, "ownerId": owner.strip(), "port": port}


def family_owner(method: str) -> str | None:
    return next((worker for prefix, worker in FAMILIES if method.startswith(prefix)), None)


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
        self._sessions: tuple[dict[str, Any] | None, str | None] = (None, None)  # agent's summary, why stale
        self._sessions_ask: asyncio.Task[None] | None = None
        self._refusals: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._served: list[str] | None = None
        self.sessions_path = str(core.state_dir / "agents" / "main" / "agent" / "openclaw-agent.sqlite")
        self.local: dict[str, Any] = {
            "health": self.health,
            "status": self.status,
            "system-presence": self.system_presence,
            "config.get": self.config_get,
            "logs.tail": self.logs_tail,
            "last-heartbeat": self.get_last_heartbeat,
            "gateway.restart.request": self.restart_request,
            "channels.status": self.channels_status,
            "channels.start": lambda p, _c, m="channels.start": self.channels_control(p, m),
            "channels.stop": lambda p, _c, m="channels.stop": self.channels_control(p, m),
            "channels.logout": lambda p, _c, m="channels.logout": self.channels_control(p, m),
            "send": self.send_via_channel,
            "system.info": lambda _p, _c: self._now(snapshots.system_info(core, core.host.supervisor_view()["ports"][
                "gateway"])),
            "system-event": self.system_event,
            "diagnostics.stability": lambda p, _c: self._now(core.stability.snapshot(p)),
            "models.list": lambda p, _c: self._now(inventory.models_list(p, self._cfg(), core.state_dir)),
            "skills.status": lambda p, _c: self._now(inventory.skills_status(p, self._cfg(), core.state_dir)),
            "hooks.status": lambda p, _c: self._now(inventory.hooks_status(p, self._cfg(), core.state_dir)),
            "doctor.memory.status": lambda p, _c: self._now(inventory.doctor_memory_status(p, self._cfg())),
            "config.schema.lookup": lambda p, _c: self._now(inventory.config_schema_lookup(p)),
            "device.pair.list": core.pairing.list,
            "device.pair.approve": core.pairing.approve,
            "device.pair.reject": core.pairing.reject,
            "device.pair.remove": core.pairing.remove,
        }
        self.workers = workers_rpc.WorkersRpc(core)
        for method, fn in {**self.workers.methods(), **pairing_rpc.PairingRpc(core).methods()}.items():
            self.local[method] = fn if method in workers_rpc.PER_CONNECTION else (lambda p, _c, f=fn: f(p))

    @staticmethod
    async def _now(value: Any) -> Any:
        return value

    def _cfg(self) -> dict[str, Any]:
        return self.core.host.gateway_config()

    def entry(self, method: str) -> tuple[str | None, str] | None:
        """(scope, owner) of a method this gateway serves, or None."""
        known = METHODS.get(method)
        if known is not None:
            return known
        owner = family_owner(method)
        if owner is not None and method in self.core.host.worker_methods(owner):
            return ADMIN, owner
        return None

    def served(self) -> list[str]:
        """What `hello-ok` advertises: the methods answered here, by configured workers, and what those announced
        (kept until a worker changes state: every handshake reads it)."""
        if self._served is None:
            host = self.core.host
            out = {m for m, (_scope, owner) in METHODS.items()
                   if owner in (GATEWAY, CHANNELS) or host.has_worker(owner)}
            for prefix, worker in FAMILIES:
                out.update(m for m in host.worker_methods(worker) if m.startswith(prefix))
            self._served = sorted(out)
        return self._served

    def workers_changed(self) -> None:
        self._served = None

    def is_local(self, method: str) -> bool:
        """Answered by the supervisor from its own state, without waiting on a worker."""
        known = METHODS.get(method)
        return known is not None and known[1] == GATEWAY and method not in self.core.handlers \
            and method not in self.core.streaming  # nodes and approvals wait on others: never in line

    def refused(self, conn: Connection, method: str, why: str) -> None:
        """Log a refused or unknown method once per method and client (bounded)."""
        key = (conn.presence_key, method)
        if key in self._refusals:
            return
        self._refusals[key] = None
        while len(self._refusals) > REFUSALS_KEPT:
            self._refusals.popitem(last=False)
        client = conn.client
        self.core.log("warn", f"refused {method} from {client.get('id')}/{client.get('mode')} "
                              f"{client.get('version') or ''} at {conn.remote_ip}: {why}".replace("  ", " "))

    async def call(self, conn: Connection, method: str, params: dict[str, Any], partial: Partial) -> Any:
        entry = self.entry(method)
        if entry is None:
            self.refused(conn, method, "unknown method")
            raise unknown_method(method)
        scope, owner = entry
        if scope is not None and conn.role != "node" and not conn.has_scope(scope):
            self.refused(conn, method, f"missing scope: {scope}")
            raise missing_scope(scope)
        params_check(method, params)
        if (conn.role == "node") != (method in nodes.NODE_ROLE_METHODS) and method != "health":
            raise invalid(f"unauthorized role: {conn.role}")
        if method in IDEMPOTENT:
            key = params.get("idempotencyKey")
            if not isinstance(key, str) or not key:
                raise invalid(f"{method} requires idempotencyKey", field="idempotencyKey")
            fut, fresh = self.idem.get_or_start(method, key)
            if not fresh:
                return await asyncio.shield(fut)
            try:
                result = await self._dispatch(conn, method, owner, params, partial)
            except MethodError as exc:
                self.idem.forget(method, key)
                fut.set_exception(exc)
                fut.exception()
                raise
            fut.set_result(result)
            return result
        return await self._dispatch(conn, method, owner, params, partial)

    async def _dispatch(self, conn: Connection, method: str, owner: str, params: dict[str, Any],
                        partial: Partial) -> Any:
        family = self.core.handlers.get(method)
        if family is not None:
            return await family(conn, params)
        stream = self.core.streaming.get(method)
        if stream is not None:
            return await stream(conn, params, partial)
        handler = self.local.get(method)
        if handler is not None:
            return await handler(params, conn)
        timeout = AGENT_TIMEOUT_S if owner == "agent" else WORKER_TIMEOUT_S
        return await self.core.host.call_worker(owner, method, params, timeout=timeout,
                                                partial=partial if method == "agent" else None)

    # -- system --------------------------------------------------------------------------------------

    def health_snapshot(self, fresh: bool = False) -> dict[str, Any]:
        """The health snapshot, cached like upstream's (here at most HEALTH_MAX_AGE_S, and dropped on any
        worker state change or reload); `probe: true` asks for a fresh one."""
        now = time.monotonic()
        if not fresh and self._health is not None and now - self._health[0] < HEALTH_MAX_AGE_S:
            return self._health[1]
        t0 = time.perf_counter()
        snap = snapshots.health(self.core, self._sessions[0])
        snap["durationMs"] = round((time.perf_counter() - t0) * 1000)
        self._health = (now, snap)
        return snap

    def invalidate_health(self) -> None:
        self._health = None

    async def refresh_sessions(self) -> None:
        """Ask the agent worker for its per-agent session counts (bounded: health and status never wait long); a
        caller that comes while an ask is out waits for that one's answer."""
        await asyncio.shield(self._sessions_asked())

    def worker_ready(self, name: str) -> None:
        """The agent worker said ready: its session counts are asked now, while the gateway starts, so the first
        `health` (a client's usual first call, as the gateway leaves `starting`) finds them."""
        if name == SESSIONS_WORKER and self._sessions[0] is None:
            self._sessions_asked()

    def _sessions_asked(self) -> asyncio.Task[None]:
        """The ask for session counts that is out, or a new one."""
        if self._sessions_ask is None or self._sessions_ask.done():
            self._sessions_ask = asyncio.ensure_future(self._ask_sessions())
            self._sessions_ask.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._sessions_ask

    async def _ask_sessions(self) -> None:
        try:
            self._sessions = (await asyncio.wait_for(self.core.host.call_worker(
                SESSIONS_WORKER, "sessions.summary", {}, timeout=SESSIONS_ASK_S), SESSIONS_ASK_S), None)
        except MethodError as exc:
            self._sessions = (self._sessions[0], str(exc))
        except TimeoutError:
            self._sessions = (self._sessions[0], f"the agent worker did not answer within {SESSIONS_ASK_S:g}s")

    async def health(self, params: dict[str, Any], _conn: Connection | None = None) -> dict[str, Any]:
        probe = bool(params.get("probe"))
        if probe or self._sessions[0] is None:
            await self.refresh_sessions()
        return self.health_snapshot(fresh=probe)

    async def status(self, params: dict[str, Any], _conn: Connection | None = None) -> dict[str, Any]:
        await self.refresh_sessions()
        return snapshots.status(self.core, params, *self._sessions)

    async def system_presence(self, params: dict[str, Any], _conn: Connection | None = None) -> list[dict[str, Any]]:
        return self.core.hub.presence_list()

    async def system_event(self, params: dict[str, Any], _conn: Connection | None = None) -> dict[str, Any]:
        """A presence beacon: updates that client's presence entry; a plain line is also queued as a system event
        for the main session (the scheduler's `wake`, `now` when `wake: true`)."""
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise invalid("text required", field="text")
        text = text.strip()
        self.core.hub.beacon(text, params)
        if not text.startswith("Node:"):
            await self.core.host.call_worker("scheduler", "wake", {
                "text": text, "mode": "now" if params.get("wake") is True else "next-heartbeat",
                **({"sessionKey": params["sessionKey"]} if isinstance(params.get("sessionKey"), str) else {}),
            }, timeout=WORKER_TIMEOUT_S)
        return {"ok": True}

    async def config_get(self, params: dict[str, Any], _conn: Connection | None = None) -> dict[str, Any]:
        return snapshots.config_get(self.core)

    async def logs_tail(self, params: dict[str, Any], _conn: Connection | None = None) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and (not isinstance(cursor, int) or cursor < 0):
            raise invalid("invalid logs.tail params: cursor must be a non-negative integer")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, logtail.tail, self.core.host.log_file(), cursor, params.get("limit", 200),
                params.get("maxBytes", 250_000))
        except (TypeError, ValueError) as exc:
            raise invalid(f"invalid logs.tail params: {exc}") from None

    def heartbeat_seen(self, payload: dict[str, Any]) -> None:
        """The scheduler's latest `heartbeat` event, what `last-heartbeat` answers."""
        self.last_heartbeat = payload

    async def get_last_heartbeat(self, params: dict[str, Any], _conn: Connection | None = None
                                 ) -> dict[str, Any] | None:
        return self.last_heartbeat

    async def restart_request(self, params: dict[str, Any], _conn: Connection | None = None) -> dict[str, Any]:
        """In-place restart. With `target {pid, ownerId, port}` (what `openclaw gateway restart` reads from the
        upstream lock) only if this gateway still holds that lock; the answer then carries our pid, as upstream's."""
        delay = params.get("restartDelayMs", 0)
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise invalid("restartDelayMs must be a non-negative integer", field="restartDelayMs")
        reason = params.get("reason")
        reason = reason.strip()[:200] if isinstance(reason, str) and reason.strip() else "gateway.restart.request"
        target = params.get("target")
        if target is not None:
            wanted = restart_target(target)
            if wanted is None:
                raise invalid("invalid targeted gateway restart: target needs pid (a positive integer), ownerId (a "
                              "non-empty string) and port (1-65535)", field="target")
            if self.core.host.restart_target() != wanted:
                raise invalid("target gateway no longer owns the active lock", field="target")
        res = self.core.host.request_restart(reason, delay)
        if target is not None:
            return {"ok": True, "status": res["status"], "pid": res["pid"]}
        return {**res, "preflight": {"safe": True, "blockers": [],
                                     "summary": "safe to restart now: requests in flight are answered before the "
                                                "workers stop"}}

    async def channels_status(self, params: dict[str, Any], _conn: Connection | None = None) -> dict[str, Any]:
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

    async def send_via_channel(self, params: dict[str, Any], _conn: Connection | None = None) -> dict[str, Any]:
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
