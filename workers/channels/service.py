"""The channel runtime one channel-account worker runs: adapter -> ingress queue -> policy -> agent -> outbox.

Inbound messages are admitted to the durable queue by the adapter, then a dispatcher hands them out (at most
`agents.defaults.maxConcurrent` turns at once, one at a time per peer so a conversation stays in order). Each
message is judged by the policy engine: dropped with its log line, answered with a pairing code, or sent to the agent
(`agent.turn`, retried while the agent is unavailable). The reply is queued in the outbox in the same
transaction that closes the message, and a single sender task writes the outbox to the network in order,
retrying what failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from openclaw_sup.config.models import max_concurrent
from openclaw_sup.config.pairing_store import PairingStore, store_path
from openclaw_sup.workers.channels.adapter import Adapter, SendError
from openclaw_sup.workers.channels.ingress import IngressQueue, Reply, queue_path
from openclaw_sup.workers.channels.policy import (
    DROP,
    PAIR,
    Inbound,
    normalize_id,
    pairing_text,
    session_key,
)
from openclaw_sup.workers.runtime import RequestError, WorkerContext

DEFAULT_TURN_TIMEOUT_S = 600
SEND_WAIT_S = 30.0
TURN_ASK_S = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)



class ChannelService:
    def __init__(self, ctx: WorkerContext, adapter_cls: type[Adapter]) -> None:
        self.ctx = ctx
        self.cfg = ctx.options
        self.log = ctx.log
        self.channel = str(self.cfg.get("channel") or ctx.kind.split(".", 1)[-1])
        self.account_id = str(self.cfg.get("accountId") or "default")
        root = ctx.state_dir()
        self.queue = IngressQueue(queue_path(root, self.channel, self.account_id))
        self.store = PairingStore(store_path(root))
        self.adapter = adapter_cls(self.cfg, self.log, self.admit, self.queue.get_meta)
        self.policy = adapter_cls.policy_config(self.cfg)
        self.agent_id = str(self.cfg.get("agentId") or "main")
        # as the plan resolved it; a worker declared by hand without it gets upstream's default, not a KeyError
        self.concurrency = max_concurrent({"defaults": {"maxConcurrent": self.cfg.get("maxConcurrent")}})
        self._wake_dispatch = asyncio.Event()
        self._wake_send = asyncio.Event()
        self._inflight: set[str] = set()
        self._busy_peers: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._adapter_task: asyncio.Task[None] | None = None
        self._sent_waiters: dict[str, asyncio.Future[None]] = {}
        self.stopped_by_operator = False
        self.last_probe: dict[str, Any] | None = None
        self.last_probe_at: int | None = None

    # -- life ----------------------------------------------------------------------------------------

    def start(self) -> None:
        resend = self.adapter.idempotent_send
        for row in self.queue.recover(resend=resend):
            self.log.warning("%s: reply %s to %s: %s", self.channel, row.out_id, row.target,
                             "the worker stopped while sending it; resending it (the network drops a duplicate)"
                             if resend else
                             "the worker stopped while sending it; not resent (it may not have been delivered)")
        for name, fn in (("channels.status", self.status), ("channels.start", self.op_start),
                         ("channels.stop", self.op_stop), ("channels.logout", self.op_logout),
                         ("channel.send", self.op_send), ("channel.describe", self.describe)):
            self.ctx.handle(name, fn)
        self._spawn(self._dispatch_loop())
        self._spawn(self._send_loop())
        self.start_adapter()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("%s: internal task failed: %s: %s", self.channel, type(exc).__name__,
                           self.adapter.redact(str(exc)))

    def start_adapter(self) -> None:
        if self._adapter_task is None or self._adapter_task.done():
            self.adapter.closed = False
            self._adapter_task = asyncio.get_running_loop().create_task(self._run_adapter())

    async def _run_adapter(self) -> None:
        try:
            await self.adapter.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.adapter.set_error(f"{type(exc).__name__}: {exc}")  # redacted; no traceback (it may hold a token)
            self.log.error("%s: adapter stopped: %s", self.channel, self.adapter.last_error)

    async def stop_adapter(self) -> None:
        task, self._adapter_task = self._adapter_task, None
        with contextlib.suppress(Exception):
            await self.adapter.close()
        while task is not None and not task.done():  # asyncio.wait_for may swallow one cancel (3.11)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        self.adapter.mark_connected(False)

    async def close(self) -> None:
        await self.stop_adapter()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.queue.close()
        self.store.close()

    # -- inbound -------------------------------------------------------------------------------------

    async def admit(self, msgs: list[Inbound], meta: dict[str, str] | None = None) -> None:
        """Make messages durable (with the adapter's cursor); only then may the adapter acknowledge them."""
        items = [(m.message_id, normalize_id(self.channel, m.peer), _inbound_json(m)) for m in msgs]
        self.queue.admit(items, meta)
        if msgs:
            self.adapter.last_inbound_at = now_ms()
            self._wake_dispatch.set()

    async def _dispatch_loop(self) -> None:
        await _guarded(self.log, "dispatcher", self._dispatch_forever)

    async def _dispatch_forever(self) -> None:
        while True:
            self._wake_dispatch.clear()
            free = self.concurrency - len(self._inflight)
            # A burst's messages wait behind the ones in flight: read only what could start now.
            rows = self.queue.pending_inbound(limit=free * 8, busy=list(self._busy_peers)) if free > 0 else []
            for row in rows:
                if len(self._inflight) >= self.concurrency:
                    break
                if row.msg_id in self._inflight or row.peer in self._busy_peers:
                    continue
                self._inflight.add(row.msg_id)
                self._busy_peers.add(row.peer)
                self._spawn(self._handle(row.msg_id, row.peer, row.payload, row.attempts))
            due = self.queue.next_inbound_due()
            timeout = 5.0 if due is None else min(5.0, max(0.05, due - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_dispatch.wait(), timeout)

    async def _handle(self, msg_id: str, peer: str, payload: dict[str, Any], attempts: int) -> None:
        try:
            await self._judge_and_answer(msg_id, Inbound(**payload), attempts)
        except Exception as exc:  # a store error or a bug: keep the message, try again later, never spin
            self.log.exception("%s: message %s could not be handled; retrying in 5s", self.channel, msg_id)
            with contextlib.suppress(Exception):
                self.queue.retry_inbound(msg_id, 5.0, f"{type(exc).__name__}: {exc}")
        finally:
            self._inflight.discard(msg_id)
            self._busy_peers.discard(peer)
            self._wake_dispatch.set()

    async def _judge_and_answer(self, msg_id: str, msg: Inbound, attempts: int) -> None:
        allowed = msg.chat_type == "direct" and self.store.is_allowed(
            self.channel, self.account_id, normalize_id(self.channel, msg.sender_id))
        v = self.adapter.judge(self.policy, msg, allowed)
        if v.action == DROP:
            self.log.info("%s", v.log)
            self.queue.finish_inbound(msg_id, "dropped", note=v.reason)
            return
        if v.action == PAIR:
            self._pairing_request(msg_id, msg)
            return
        await self._agent_turn(msg_id, msg, attempts)

    def _pairing_request(self, msg_id: str, msg: Inbound) -> None:
        sender = normalize_id(self.channel, msg.sender_id)
        outcome = self.store.request(self.channel, self.account_id, sender, msg.sender_name, msg.chat_id)
        who = f"{self.channel}: pairing request from {msg.sender_id} (account {self.account_id})"
        if outcome.status == "created" and outcome.request is not None:
            self.log.info("%s: code sent; approve with `openclaw-sup pairing approve %s <code>`", who, self.channel)
            reply = Reply(f"{msg_id}:pairing", self.adapter_target(msg), pairing_text(
                self.channel, msg.sender_id, outcome.request.code))
            self.queue.finish_inbound(msg_id, "dropped", [reply], note="pairing-code-sent")
            self._wake_send.set()
        elif outcome.status == "pending":
            self.log.info("%s: already pending; no new code until it expires", who)
            self.queue.finish_inbound(msg_id, "dropped", note="pairing-pending")
        else:
            self.log.info("%s ignored: 3 requests already pending for this account", who)
            self.queue.finish_inbound(msg_id, "dropped", note="pairing-full")

    def adapter_target(self, msg: Inbound) -> str:
        return self.adapter.reply_target(msg)

    async def _agent_turn(self, msg_id: str, msg: Inbound, attempts: int) -> None:
        timeout_s = int(self.cfg.get("timeoutSeconds") or DEFAULT_TURN_TIMEOUT_S)
        params = {
            "agentId": self.agent_id,
            "sessionKey": session_key(self.agent_id, self.channel, msg),
            "message": msg.text,
            "timeoutSeconds": timeout_s,
            "idempotencyKey": f"{self.channel}:{self.account_id}:{msg_id}",  # a retried turn never runs twice
            "source": {"kind": "channel", "channel": self.channel, "accountId": self.account_id,
                       "from": msg.sender_id, "chatType": msg.chat_type, "messageId": msg.message_id,
                       "chatId": msg.chat_id, "senderName": msg.sender_name},
        }
        self.adapter.turn_started(msg)
        try:
            # Ask again at least every TURN_ASK_S: the agent answers a repeated idempotencyKey with the run already
            # going (or its stored result), so this costs nothing, and a request lost with a restarted agent
            # worker (the supervisor does not fail worker-to-worker requests) is noticed within that bound.
            answer = await self.ctx.request("agent.turn", params, to="agent", timeout=min(timeout_s + 10, TURN_ASK_S))
        except (RequestError, TimeoutError) as exc:
            code = getattr(exc, "code", "TIMEOUT")
            if code in ("UNAVAILABLE", "TIMEOUT") and attempts < 100:
                delay = 0.1 if code == "TIMEOUT" else min(30.0, 0.25 * 2 ** min(attempts, 7))
                self.log.warning("%s: agent turn for message %s failed (%s: %s); retrying in %.1fs",
                                 self.channel, msg_id, code, exc, delay)
                self.queue.retry_inbound(msg_id, delay, f"{code}: {exc}")
                return
            self.log.error("%s: agent turn for message %s failed for good: %s: %s", self.channel, msg_id, code, exc)
            self.queue.finish_inbound(msg_id, "failed", note=f"{code}: {exc}")
            return
        answer = answer if isinstance(answer, dict) else {}
        text = self._reply_text(answer)
        replies = [Reply(f"{msg_id}:reply", self.adapter_target(msg), text)] if text else []
        self.queue.finish_inbound(msg_id, "done", replies, note=str(answer.get("status")))
        if replies:
            self._wake_send.set()

    def _reply_text(self, answer: dict[str, Any]) -> str | None:
        status = answer.get("status")
        if status == "ok":
            text = str(answer.get("summary") or "").strip()
            if not text or text == "NO_REPLY":
                return None
            prefix = self.cfg.get("responsePrefix")
            return f"{prefix} {text}" if prefix else text
        if status == "error" and self.cfg.get("errorPolicy") != "silent":
            return f"⚠️ {answer.get('error') or 'the agent failed to answer'}"
        return None

    # -- outbound ------------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        await _guarded(self.log, "sender", self._send_forever)

    async def _send_forever(self) -> None:
        while True:
            self._wake_send.clear()
            rows = self.queue.pending_outbound(limit=100) if self.adapter.connected else []
            for row in rows:
                if not self.adapter.connected:
                    break
                await self.adapter.before_send(row.target, row.text)
                self.queue.mark_sending(row.out_id)
                try:
                    try:
                        upstream_id = await self.adapter.send_keyed(row.out_id, row.target, row.text)
                    except SendError:
                        raise
                    except Exception as exc:  # an adapter bug must not end the sender
                        self.log.exception("%s: send to %s raised", self.channel, row.target)
                        raise SendError(f"{type(exc).__name__}: {exc}") from exc
                except SendError as exc:
                    if exc.auth:
                        self.adapter.set_error(str(exc))
                    if exc.retryable and row.attempts < 20:
                        delay = exc.retry_after if exc.retry_after is not None else min(60.0, 2.0 ** row.attempts)
                        self.log.warning("%s: send to %s failed (%s); retrying in %.1fs", self.channel, row.target,
                                         self.adapter.redact(str(exc)), delay)
                        self.queue.retry_outbound(row.out_id, delay, str(exc))
                        if exc.retry_after is not None:
                            await asyncio.sleep(min(delay, 60.0))
                    else:
                        self.log.error("%s: send to %s failed for good: %s", self.channel, row.target,
                                       self.adapter.redact(str(exc)))
                        self.queue.fail_outbound(row.out_id, str(exc))
                        self._resolve(row.out_id)
                    continue
                self.queue.mark_sent(row.out_id, upstream_id)
                self.adapter.last_outbound_at = now_ms()
                self._resolve(row.out_id)
                self.queue.checkpoint()
            if not rows:
                self.queue.checkpoint()
            due = self.queue.next_outbound_due()
            timeout = 2.0 if due is None or not self.adapter.connected else min(2.0, max(0.05, due - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_send.wait(), timeout)

    def _resolve(self, out_id: str) -> None:
        fut = self._sent_waiters.pop(out_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def wake_sender(self) -> None:
        """Adapters call this when they (re)connect so queued replies go out at once."""
        self._wake_send.set()

    # -- bus methods ---------------------------------------------------------------------------------

    async def op_send(self, params: dict[str, Any]) -> dict[str, Any]:
        """`channel.send` (workers/scheduler contract): queue a message and wait until it went out."""
        text = params.get("text") if params.get("text") is not None else params.get("message")
        if not isinstance(text, str) or not text.strip():
            return {"ok": False, "error": "channel.send needs a non-empty text"}
        target = params.get("to") or self.cfg.get("defaultTo")
        if not target:
            return {"ok": False, "error": f"no target: pass `to` or set channels.{self.channel}.defaultTo"}
        key = str(params.get("idempotencyKey") or f"{time.time_ns()}")
        out_id = f"send:{key}"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sent_waiters[out_id] = fut
        self.queue.enqueue(Reply(out_id, str(target), text))
        self._wake_send.set()
        state = self.queue.outbound_state(out_id)
        if state is None or state[0] == "pending" or state[0] == "sending":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), float(params.get("timeoutSeconds") or SEND_WAIT_S))
        self._sent_waiters.pop(out_id, None)
        state = self.queue.outbound_state(out_id)
        if state and state[0] == "sent":
            return {"ok": True, "messageId": state[1]}
        if state and state[0] == "failed":
            return {"ok": False, "error": state[2] or "send failed"}
        return {"ok": False, "error": "queued; not sent yet (channel not connected)", "queued": True}

    async def describe(self, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"channel": self.channel, "accountId": self.account_id}
        if isinstance(self.cfg.get("heartbeat"), dict):
            out["heartbeatVisibility"] = self.cfg["heartbeat"]
        return out

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("probe"):
            timeout = min(float(params.get("timeoutMs") or 10_000) / 1000, 30.0)
            try:
                self.last_probe = await asyncio.wait_for(self.adapter.probe(timeout), timeout)
            except TimeoutError:
                self.last_probe = {"ok": False, "error": f"probe timed out after {timeout:g}s"}
            except Exception as exc:
                self.last_probe = {"ok": False, "error": self.adapter.redact(f"{type(exc).__name__}: {exc}")}
            self.last_probe_at = now_ms()
        out: dict[str, Any] = {
            "accountId": self.account_id,
            "enabled": True,
            "configured": self.adapter.configured,
            "running": self._adapter_task is not None and not self._adapter_task.done(),
            "connected": self.adapter.connected,
            "lastError": self.adapter.last_error,
            "lastConnectedAt": self.adapter.last_connected_at,
            "lastInboundAt": self.adapter.last_inbound_at,
            "lastOutboundAt": self.adapter.last_outbound_at,
            "dmPolicy": self.policy.get("dmPolicy") or "pairing",
            "groupPolicy": self.policy.get("groupPolicy") or "allowlist",
            "allowFrom": [str(a) for a in self.policy.get("allowFrom") or []],
            "queue": self.queue.counts(),
            **self.adapter.status_extra(),
        }
        if self.cfg.get("name"):
            out["name"] = self.cfg["name"]
        if self.stopped_by_operator:
            out["stopped"] = True
        if self.last_probe is not None:
            out["probe"] = self.last_probe
            out["lastProbeAt"] = self.last_probe_at
        return out

    async def op_start(self, params: dict[str, Any]) -> dict[str, Any]:
        self.stopped_by_operator = False
        self.start_adapter()
        self.log.info("%s: account %s started by an operator", self.channel, self.account_id)
        return {"channel": self.channel, "accountId": self.account_id, "started": True}

    async def op_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        self.stopped_by_operator = True
        await self.stop_adapter()
        self.log.info("%s: account %s stopped by an operator", self.channel, self.account_id)
        return {"channel": self.channel, "accountId": self.account_id, "stopped": True}

    async def op_logout(self, params: dict[str, Any]) -> dict[str, Any]:
        """Disconnect, and end the adapter's session upstream if it holds one (IRC and Telegram keep none:
        their credentials live in config)."""
        await self.op_stop(params)
        cleared = await self.adapter.logout()
        return {"channel": self.channel, "accountId": self.account_id, "loggedOut": True, "cleared": cleared}


async def _guarded(log: Any, what: str, loop_fn: Any) -> None:
    """Run a forever-loop; if it raises (a store error, a bug), log it and start it again after a pause."""
    while True:
        try:
            await loop_fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("channel %s loop failed; restarting it in 2s", what)
            await asyncio.sleep(2.0)


def _inbound_json(m: Inbound) -> dict[str, Any]:
    return {"message_id": m.message_id, "sender_id": m.sender_id, "text": m.text, "chat_type": m.chat_type,
            "chat_id": m.chat_id, "sender_name": m.sender_name, "mentioned": m.mentioned, "ts": m.ts,
            "space": m.space, "roles": list(m.roles)}


async def run_channel(ctx: WorkerContext, adapter_cls: type[Adapter]) -> None:
    svc = ChannelService(ctx, adapter_cls)
    svc.adapter.on_connected = svc.wake_sender
    svc.start()
    ctx.ready()
    try:
        await ctx.stopping.wait()
    finally:
        await svc.close()
