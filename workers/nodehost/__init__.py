"""The `node-host` worker kind: this machine as a headless node of a gateway (ours or upstream's).

It connects to the gateway's WebSocket as `role: "node"` with a signed device identity, declares
`system.run`, `system.run.prepare`, `system.which` and `system.execApprovals.get|set`, answers
`node.invoke.request` events with `node.invoke.result`, and publishes host stats every minute. A lost
connection is retried with exponential backoff and jitter (1 s to 30 s; a pending pairing is retried every
few seconds so an approval is picked up quickly). Identity, device token and approvals stay under the state
dir (workers/nodehost/identity.py), so a restart or a crash never re-pairs the machine.

Options: `host`, `port`, `tls`, `tlsFingerprint`, `contextPath`, `displayName`. Credentials come from
OPENCLAW_GATEWAY_TOKEN / OPENCLAW_GATEWAY_PASSWORD, else the stored device token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import ssl
import time
from typing import Any

import orjson

from openclaw_sup import __version__
from openclaw_sup.workers.groupledger import GroupLedger
from openclaw_sup.workers.nodehost.commands import COMMANDS, CommandError, NodeCommands
from openclaw_sup.workers.nodehost.identity import NodeHostState
from openclaw_sup.workers.registry import register
from openclaw_sup.workers.runtime import WorkerContext

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 30.0
PAIRING_RETRY_S = 3.0
STABLE_AFTER_S = 10.0
STATS_EVERY_S = 60.0
HANDSHAKE_TIMEOUT_S = 15.0
MAX_MESSAGE = 25 * 1024 * 1024


class Rejected(Exception):
    """The gateway refused the connect; `error` is its error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error
        self.detail = error.get("details") if isinstance(error.get("details"), dict) else {}


def host_stats() -> dict[str, Any]:
    usage = shutil.disk_usage(os.path.expanduser("~"))
    stats: dict[str, Any] = {"cpuCount": os.cpu_count() or 1, "loadAverage": [round(x, 2) for x in os.getloadavg()],
                             "diskTotalBytes": usage.total, "diskAvailableBytes": usage.free}
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            meminfo = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        stats["memoryTotalBytes"] = int(meminfo["MemTotal"].split()[0]) * 1024
        stats["memoryFreeBytes"] = int(meminfo["MemAvailable"].split()[0]) * 1024
    return stats


class NodeHost:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        opts = ctx.options
        self.host = str(opts.get("host") or "127.0.0.1")
        self.port = int(opts.get("port") or 18789)
        self.tls = bool(opts.get("tls"))
        pin = str(opts.get("tlsFingerprint") or "").strip().lower().removeprefix("sha256:")
        self.fingerprint = pin.replace(":", "").replace(" ", "") or None
        path = "/" + str(opts.get("contextPath") or "").lstrip("/")
        self.url = f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}{path}"
        self.state = NodeHostState(ctx.state_dir())
        self.identity = self.state.identity()
        self.config = self.state.config(display_name=opts.get("displayName"),
                                        gateway={"host": self.host, "port": self.port, "tls": self.tls})
        ledger = GroupLedger(ctx.state_dir() / "run-node" / f"exec-groups-{ctx.name}.json")
        swept = ledger.sweep()
        if swept:
            ctx.log.warning("killed %d process(es) a previous node host left running", swept)
        self.commands = NodeCommands(ctx.state_dir(), self._emit, ledger)
        self.ws: Any = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._ids = 0
        self.stats = ctx.stats
        self.stats.update(gateway=self.url, connected=False, nodeId=self.identity.device_id, connects=0)

    # -- connect -------------------------------------------------------------------------------------

    def _client(self) -> dict[str, Any]:
        return {"id": "node-host", "displayName": self.config["displayName"], "version": __version__,
                "platform": "linux", "deviceFamily": "Linux", "mode": "node", "instanceId": self.config["nodeId"]}

    def _auth(self) -> dict[str, str]:
        token = os.environ.get("OPENCLAW_GATEWAY_TOKEN") or self.state.token(self.identity.device_id)
        password = os.environ.get("OPENCLAW_GATEWAY_PASSWORD")
        return {k: v for k, v in (("token", token), ("password", password)) if v}

    def _connect_params(self, challenge: dict[str, Any]) -> dict[str, Any]:
        from openclaw_sup.workers.nodehost.identity import signed_payload

        client, auth = self._client(), self._auth()
        nonce, signed_at = str(challenge.get("nonce") or ""), int(challenge.get("ts") or time.time() * 1000)
        text = signed_payload(device_id=self.identity.device_id, client=client, role="node", scopes=[],
                              signed_at_ms=signed_at, token=auth.get("token"), nonce=nonce)
        return {"minProtocol": 4, "maxProtocol": 4, "client": client, "caps": ["system"], "commands": list(COMMANDS),
                "pathEnv": os.environ.get("PATH", ""), "auth": auth, "role": "node", "scopes": [],
                "device": {"id": self.identity.device_id, "publicKey": self.identity.public_key,
                           "signature": self.identity.sign(text), "signedAt": signed_at, "nonce": nonce}}

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.tls:
            return False
        ctx = ssl.create_default_context()
        if self.fingerprint:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the pinned fingerprint is checked right after the handshake
        return ctx

    def _check_pin(self, ws: Any) -> None:
        if not (self.tls and self.fingerprint):
            return
        import hashlib

        sslobj = ws.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if der is None or hashlib.sha256(der).hexdigest() != self.fingerprint:
            raise Rejected({"code": "TLS_PIN_MISMATCH",
                            "message": "the gateway's TLS certificate does not match tlsFingerprint"})

    async def session(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.ws_connect(
                self.url, max_msg_size=MAX_MESSAGE, ssl=self._ssl(), autoping=True) as ws:
            self._check_pin(ws)
            first = await ws.receive(timeout=HANDSHAKE_TIMEOUT_S)
            challenge = orjson.loads(first.data) if first.type == aiohttp.WSMsgType.TEXT else {}
            if challenge.get("event") != "connect.challenge":
                raise Rejected({"code": "PROTOCOL", "message": f"expected connect.challenge, got {first.type}"})
            await ws.send_str(orjson.dumps({"type": "req", "id": "connect", "method": "connect",
                                            "params": self._connect_params(challenge.get("payload") or {})}).decode())
            hello = await self._await_hello(ws)
            issued = (hello.get("auth") or {}).get("deviceToken")
            if isinstance(issued, str) and issued:
                self.state.save_token(self.identity.device_id, issued, [])
            tick_ms = int((hello.get("policy") or {}).get("tickIntervalMs") or 30_000)
            self.ws = ws
            self.stats.update(connected=True, connectedAt=time.time(), lastError=None,
                              connects=self.stats.get("connects", 0) + 1)
            self.ctx.log.info("node host connected to %s as %s", self.url, self.identity.device_id)
            stats_task = asyncio.ensure_future(self._publish_stats())
            try:
                await self._serve(ws, tick_ms)
            finally:
                stats_task.cancel()
                self.ws = None
                self.stats["connected"] = False

    async def _await_hello(self, ws: Any) -> dict[str, Any]:
        import aiohttp

        deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
        while True:
            msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise Rejected({"code": "CLOSED", "message": f"gateway closed during connect ({ws.close_code})"})
            frame = orjson.loads(msg.data)
            if frame.get("type") == "res" and frame.get("id") == "connect":
                if not frame.get("ok"):
                    raise Rejected(frame.get("error") or {})
                return frame.get("payload") or {}

    async def _serve(self, ws: Any, tick_ms: int) -> None:
        import aiohttp

        while not self.ctx.stopping.is_set():
            try:
                msg = await ws.receive(timeout=2 * tick_ms / 1000 + 5)
            except TimeoutError:
                self.ctx.log.warning("no frame from the gateway for %.0f s; reconnecting", 2 * tick_ms / 1000 + 5)
                return
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.stats["lastError"] = f"gateway closed the connection ({ws.close_code})"
                return
            try:
                frame = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                continue
            if frame.get("type") == "event" and frame.get("event") == "node.invoke.request":
                self._spawn(self._invoke(frame.get("payload") or {}))
            elif frame.get("type") == "res" and not frame.get("ok"):
                self.ctx.log.warning("gateway refused %s: %s", frame.get("id"), (frame.get("error") or {})
                                     .get("message"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, method: str, params: dict[str, Any]) -> bool:
        ws = self.ws
        if ws is None or ws.closed:
            return False
        self._ids += 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(orjson.dumps({"type": "req", "id": f"{self._ids}:{method}", "method": method,
                                            "params": params}).decode())
            return True
        return False

    async def _emit(self, event: str, payload: dict[str, Any]) -> None:
        await self._send("node.event", {"event": event, "payloadJSON": orjson.dumps(payload).decode()})

    async def _publish_stats(self) -> None:
        while True:
            await self._emit("node.host.stats", await asyncio.to_thread(host_stats))
            await asyncio.sleep(STATS_EVERY_S)

    async def _invoke(self, req: dict[str, Any]) -> None:
        invoke_id, command = req.get("id"), str(req.get("command") or "")
        result: dict[str, Any] = {"id": invoke_id, "nodeId": self.identity.device_id}
        try:
            params = orjson.loads(req["paramsJSON"]) if isinstance(req.get("paramsJSON"), str) else req.get("params")
            payload = await self.commands.handle(command, params)
            result.update(ok=True, payloadJSON=orjson.dumps(payload).decode())
        except CommandError as exc:
            result.update(ok=False, error={"code": exc.code, "message": str(exc)})
        except Exception as exc:
            self.ctx.log.exception("node command %s failed", command)
            result.update(ok=False, error={"code": "UNAVAILABLE", "message": f"{type(exc).__name__}: {exc}"})
        if not await self._send("node.invoke.result", result):
            self.ctx.log.warning("result of %s (%s) not delivered: the gateway connection is gone", command, invoke_id)

    # -- reconnect loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        while not self.ctx.stopping.is_set():
            started = time.monotonic()
            delay: float | None = None
            try:
                await self.session()
            except Rejected as exc:
                delay = self._rejected(exc)
            except (OSError, TimeoutError) as exc:
                self.stats["lastError"] = f"cannot reach {self.url}: {exc}"
            except Exception as exc:
                if type(exc).__module__.startswith("aiohttp"):
                    self.stats["lastError"] = f"cannot reach {self.url}: {type(exc).__name__}: {exc}"
                else:
                    raise
            failures = 0 if time.monotonic() - started > STABLE_AFTER_S else failures + 1
            if delay is None:
                delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, failures - 1)) * random.uniform(0.8, 1.2)
            self.ctx.log.info("gateway connection ended (%s); retrying in %.1f s", self.stats.get("lastError"),
                              delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stopping.wait(), delay)

    def _rejected(self, exc: Rejected) -> float | None:
        code = exc.detail.get("code") or exc.error.get("code")
        self.stats["lastError"] = str(exc)
        if code == "PAIRING_REQUIRED":
            rid = exc.detail.get("requestId")
            self.ctx.log.warning("pairing required: approve this node on the gateway with `openclaw devices approve "
                                 "%s`; retrying", rid)
            return PAIRING_RETRY_S
        if code == "AUTH_DEVICE_TOKEN_MISMATCH":
            self.state.forget_token(self.identity.device_id)
        if code == "TLS_PIN_MISMATCH" or str(code).startswith("AUTH_"):
            self.ctx.log.error("gateway refused the connection: %s", exc)  # needs the operator: shown in status
        else:
            self.ctx.log.warning("gateway refused the connection: %s", exc)
        return None

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.commands.close()
        self.state.close()


@register("node-host")
async def main(ctx: WorkerContext) -> None:
    host = NodeHost(ctx)
    ctx.ready()
    runner = asyncio.ensure_future(host.run())
    try:
        await ctx.stopping.wait()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        host.close()
