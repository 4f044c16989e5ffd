"""The bus router: every frame a worker sends, and every request sent to a worker, passes through here.

    on_bus      -> a frame from a worker: decoded and bounded, or dropped with a log line (summarised each second)
    dispatch    -> hello, ready, hb and log go to the lifecycle; events to the gateway's clients; answers to
                   the request that awaits them; requests to `gateway` to its core; between workers, relayed
    call_worker -> the gateway's request to a worker, correlated by id, bounded in time, cancelled if abandoned
    wake        -> a request for an on-demand worker that is not running waits for it to start, then goes on
    worker_gone -> a worker exited: whatever it was asked, or was asking, fails now instead of hanging

Both correlation tables are bounded: `_pending` by the callers awaiting it, `_relayed` by RELAYED_MAX per target;
so are the relayed requests held while their on-demand target starts (`_held`, RELAYED_MAX per target).
Nothing a worker sends can raise out of `on_bus`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from openclaw_sup.config.restart import State
from openclaw_sup.config.settings import BusLimits
from openclaw_sup.gateway.host import Partial
from openclaw_sup.gateway.protocol import MethodError
from openclaw_sup.ipc.bus import RouterBus
from openclaw_sup.ipc.envelope import EnvelopeError, Kind, decode
from openclaw_sup.supervisor.table import WorkerRecord

RELAYED_MAX = 10_000  # worker-to-worker requests awaiting an answer, per target
LIFECYCLE_KINDS = frozenset({Kind.HELLO, Kind.READY, Kind.HB, Kind.LOG})

WorkerHandler = Callable[[WorkerRecord, dict[str, Any]], None]


class BusRouter:
    def __init__(self, *, lookup: Callable[[str], WorkerRecord | None], lifecycle: WorkerHandler,
                 events: WorkerHandler, serve: Callable[[str, dict[str, Any]], bool],
                 max_message_bytes: Callable[[], int],
                 log: Callable[[str, str], None], spawn_task: Callable[[Coroutine[Any, Any, Any], str], None],
                 wake: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self._lookup = lookup
        self._lifecycle = lifecycle
        self._events = events
        self._serve = serve
        self._max_message_bytes = max_message_bytes
        self._log = log
        self._spawn_task = spawn_task
        self._wake = wake
        self.bus: RouterBus | None = None
        self._pending: dict[str, tuple[asyncio.Future[Any], Partial | None, str]] = {}
        self._req_ids = itertools.count(1)
        self._relayed: dict[str, dict[str, str]] = {}  # target worker -> {request id: requesting worker}
        self._held: dict[str, int] = {}  # on-demand target worker -> relayed requests waiting for it to start
        self._bad: dict[str, int] = {}

    def open(self, endpoint: str, limits: BusLimits) -> RouterBus:
        self.bus = RouterBus(endpoint, self.on_bus, self._on_bad_frames, max_message_bytes=limits.max_message_bytes,
                             rcv_hwm=limits.rcv_hwm, snd_hwm=limits.snd_hwm)
        return self.bus

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()

    def send(self, worker: str, msg: dict[str, Any]) -> bool:
        return self.bus is not None and self.bus.send(worker.encode(), msg)

    @property
    def outstanding(self) -> int:
        """Requests sent to workers and not answered yet."""
        return len(self._pending)

    # ---------------------------------------------------------------- inbound

    def on_bus(self, identity: bytes, payload: bytes) -> None:
        name = identity.decode("utf-8", "replace")
        rec = self._lookup(name)
        if rec is None:
            self._note_bad(name, "message from an unknown worker identity")
            return
        try:
            msg = decode(payload, self._max_message_bytes())
        except EnvelopeError as exc:
            self._note_bad(name, str(exc))
            return
        try:
            self.dispatch(rec, msg)
        except Exception as exc:
            self._note_bad(name, f"{msg.get('kind')} message could not be handled: {type(exc).__name__}: {exc}")

    def dispatch(self, rec: WorkerRecord, msg: dict[str, Any]) -> None:
        kind = msg["kind"]
        if kind in LIFECYCLE_KINDS:
            self._lifecycle(rec, msg)
            return
        inc = rec.current
        if inc is None or inc.exit is not None:
            if kind == Kind.REQ and rec.spawning:
                self._lifecycle(rec, msg)  # held with the early hello and ready, dispatched once the spawn is known
            return
        if kind == Kind.EVENT:
            self._events(rec, msg)
        elif kind == Kind.RES and str(msg.get("id")) in self._pending:
            self._answer(msg)
        elif kind in (Kind.REQ, Kind.RES):
            self._route(rec, msg)

    def _answer(self, msg: dict[str, Any]) -> None:
        rid = str(msg.get("id"))
        fut, partial, _worker = self._pending[rid]
        if msg.get("partial"):
            if partial is not None:
                self._spawn_task(partial(msg.get("payload")), "partial answer")
            return
        del self._pending[rid]
        if fut.done():
            return
        if msg.get("ok", True):
            fut.set_result(msg.get("payload"))
        else:
            err = msg.get("error") if isinstance(msg.get("error"), dict) else {}
            fut.set_exception(MethodError(str(err.get("code", "UNAVAILABLE")), str(err.get("message", "failed")),
                                          details=err.get("details") if isinstance(err.get("details"), dict)
                                          else None))

    def _route(self, rec: WorkerRecord, msg: dict[str, Any]) -> None:
        """Worker-to-worker traffic goes through here; requests to `gateway` are served by the port's core."""
        assert self.bus is not None
        target = msg.get("to")
        if target == "gateway" and msg["kind"] == Kind.REQ and self._serve(rec.name, msg):
            return
        dest = self._lookup(target) if isinstance(target, str) else None
        if (dest is not None and msg["kind"] == Kind.REQ and dest.spec.on_demand and dest.state != State.RUNNING
                and self._wake is not None):
            if self._held.get(dest.name, 0) >= RELAYED_MAX:
                self.refuse(rec, msg, MethodError("UNAVAILABLE", f"worker {dest.name} is starting and "
                                                   f"{RELAYED_MAX} requests already wait for it", retryable=True))
                return
            self._held[dest.name] = self._held.get(dest.name, 0) + 1
            self._spawn_task(self._relay_when_awake(rec, dest.name, msg), f"{msg.get('method')} for {dest.name}")
            return
        self._relay(rec, target, msg)

    async def _relay_when_awake(self, rec: WorkerRecord, target: str, msg: dict[str, Any]) -> None:
        assert self._wake is not None
        try:
            await self._wake(target, f"{msg.get('method')} from {rec.name}")
        except MethodError as exc:
            self.refuse(rec, msg, exc)
            return
        finally:
            self._held[target] -= 1
            if not self._held[target]:
                del self._held[target]
        self._relay(rec, target, msg)

    def refuse(self, rec: WorkerRecord, msg: dict[str, Any], exc: MethodError) -> None:
        if self.bus is not None:
            self.bus.send(rec.name.encode(), {"kind": Kind.RES, "id": msg.get("id"), "ok": False,
                                              "error": exc.to_error()})

    def _relay(self, rec: WorkerRecord, target: Any, msg: dict[str, Any]) -> None:
        assert self.bus is not None
        if isinstance(target, str) and self._lookup(target) is not None:
            fwd = dict(msg)
            fwd.pop("to", None)
            fwd["from"] = rec.name
            sent = self.bus.send(target.encode(), fwd)
            if msg["kind"] == Kind.RES:
                if not msg.get("partial"):
                    self._relayed.get(rec.name, {}).pop(str(msg.get("id")), None)
                return
            if sent:
                asked = self._relayed.setdefault(target, {})
                if len(asked) >= RELAYED_MAX:
                    del asked[next(iter(asked))]
                asked[str(msg.get("id"))] = rec.name
                return
            error = f"worker {target} is not accepting messages"
        elif msg["kind"] == Kind.RES:
            return
        else:
            error = f"no worker named {target!r}" if target else f"unknown method {msg.get('method')!r}"
        self.bus.send(rec.name.encode(), {"kind": Kind.RES, "id": msg.get("id"), "ok": False,
                                          "error": {"code": "UNAVAILABLE", "message": error}})

    # ---------------------------------------------------------------- requests to workers

    async def call_worker(self, name: str, method: str, params: dict[str, Any], *, timeout: float,
                          partial: Partial | None = None) -> Any:
        rec = self._lookup(name)
        if rec is None or rec.state != State.RUNNING:
            from openclaw_sup.gateway.methods import unavailable_worker  # the gateway's method table loads after bind

            raise unavailable_worker(name, rec.state.value if rec else None)
        assert self.bus is not None
        rid = f"gw:{next(self._req_ids)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, partial, name)
        if not self.bus.send(name.encode(), {"kind": Kind.REQ, "id": rid, "method": method, "params": params}):
            del self._pending[rid]
            raise MethodError("UNAVAILABLE", f"the {name} worker is not accepting requests", retryable=True)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._cancel_request(name, rid)
            raise MethodError("UNAVAILABLE", f"the {name} worker did not answer {method} within {timeout:g}s",
                              retryable=True) from None
        except asyncio.CancelledError:
            self._cancel_request(name, rid)  # e.g. the HTTP client left: the worker stops the run
            raise
        finally:
            self._pending.pop(rid, None)

    def _cancel_request(self, name: str, rid: str) -> None:
        if rid in self._pending and self.bus is not None:
            self.bus.send(name.encode(), {"kind": Kind.CANCEL, "id": rid})

    def worker_gone(self, worker: str, why: str) -> None:
        """A worker died: its unanswered requests fail now, whether a client or another worker asked."""
        for rid, (fut, _partial, name) in list(self._pending.items()):
            if name == worker:
                del self._pending[rid]
                if not fut.done():
                    fut.set_exception(MethodError("UNAVAILABLE", why, retryable=True))
        for rid, requester in self._relayed.pop(worker, {}).items():
            if self.bus is not None and self._lookup(requester) is not None:
                self.bus.send(requester.encode(), {"kind": Kind.RES, "id": rid, "ok": False,
                                                   "error": {"code": "UNAVAILABLE", "message": why}})
        for asked in self._relayed.values():
            for rid in [r for r, requester in asked.items() if requester == worker]:
                del asked[rid]

    # ---------------------------------------------------------------- bad input

    def _on_bad_frames(self, frames: list[bytes]) -> None:
        who = frames[0].decode("utf-8", "replace") if frames else "?"
        self._note_bad(who, f"message with {len(frames) - 1} payload frames (expected 1)")

    def _note_bad(self, who: str, reason: str) -> None:
        """Drop a bad message with a log line; a source that keeps sending them is summarised each second."""
        n = self._bad.get(who, 0)
        self._bad[who] = n + 1
        if n == 0:
            self._log("warn", f"dropped a bad bus message from {who!r}: {reason}")

    def report_bad(self) -> None:
        """Once a second: how many more bad messages each source sent since its first was logged."""
        for who, n in list(self._bad.items()):
            if n > 1:
                self._log("warn", f"dropped {n - 1} more bad bus messages from {who!r}")
        self._bad.clear()
