"""What every worker process runs after the fork: bus link, hello/ready, heartbeats, requests, clean stop.

A kind is `async def main(ctx)`: it sets itself up, calls `ctx.ready()`, then works until `ctx.stopping`
is set (a `stop` on the bus or SIGTERM) and returns. Heartbeats come from the worker's own event loop, so a
worker whose loop is stuck goes silent and the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple, cast

import uvloop
import zmq

from openclaw_sup.config import eventloop, filepages
from openclaw_sup.config.paths import resolve
from openclaw_sup.ipc.bus import DealerLink
from openclaw_sup.ipc.envelope import EnvelopeError, Kind, decode, encode, request_id
from openclaw_sup.workers import registry

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
Partial = Callable[[Any], bool]
StreamHandler = Callable[[dict[str, Any], Partial], Awaitable[Any]]

_PAGE = os.sysconf("SC_PAGE_SIZE")
SETTLE_MS = 2000
"""A worker is settled once it served no request for this long (after `ready`, and again after each busy spell):
then what its work filled (SQLite's page caches, the C heap's free pages) goes back (`WorkerContext.when_settled`)."""


class RequestError(Exception):
    """Raised by a handler to answer a request with an error code and message."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class BusLogHandler(logging.Handler):
    """Ship log records to the supervisor's log sink over the bus."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__()
        self.ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self.ctx.send(
                {"kind": Kind.LOG, "level": record.levelname.lower(), "subsystem": record.name,
                 "msg": msg, "ts": record.created}
            )
        except Exception:
            self.handleError(record)


class WorkerContext:
    """A worker kind's view of its process: identity, options, logging, bus requests and stop."""

    def __init__(self, name: str, kind: str, options: dict[str, Any], profile: str, link: DealerLink) -> None:
        self.name = name
        self.kind = kind
        self.options = options
        self.profile = profile
        self.link = link
        self.log = logging.getLogger(f"worker.{name}")
        self.stopping = asyncio.Event()
        self.is_ready = False
        self.listened = True  # a client receives this worker's events (the supervisor says when none does)
        self.stats: dict[str, Any] = {}
        self._handlers: dict[str, Handler] = {}
        self._streaming: dict[str, StreamHandler] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._serving: dict[str, asyncio.Task[None]] = {}
        self._ids = itertools.count(1)
        self._hb_interval = 1.0
        self._hb: asyncio.Task[None] | None = None
        self._on_settled: list[Callable[[], object]] = []
        self._busy_at = 0.0
        self._settle_s: float | None = None  # armed: a settle is due; None: settled (or not ready yet)

    def send(self, msg: dict[str, Any]) -> bool:
        return self.link.send(msg)

    def state_dir(self) -> Path:
        """The profile's state dir: the `stateDir` option, else where the bus socket lives
        (`<stateDir>/run/bus.sock`), else what OPENCLAW_STATE_DIR or the profile say."""
        if self.options.get("stateDir"):
            return Path(str(self.options["stateDir"])).expanduser()
        with contextlib.suppress(zmq.ZMQError, AttributeError, UnicodeDecodeError):
            endpoint = self.link.sock.getsockopt(zmq.LAST_ENDPOINT).decode().rstrip("\x00")
            if endpoint.startswith("ipc://") and endpoint.endswith("/run/bus.sock"):
                return Path(endpoint[len("ipc://"):]).parent.parent
        return resolve(profile=None if self.profile in ("", "default") else self.profile).state_dir

    def ready(self) -> None:
        """Tell the supervisor this worker finished its start-up; it is `running` from now on."""
        if not self.is_ready:
            self.is_ready = True
            self.send({"kind": Kind.READY, "pid": os.getpid(), "methods": sorted({*self._handlers, *self._streaming})})
            self._start_heartbeats()
            with contextlib.suppress(RuntimeError):  # no running loop: nothing will run the callbacks either
                loop = asyncio.get_running_loop()
                self._busy_at = loop.time()
                self._settle_s = self._settle_delay()
                self._settle_later(loop, self._settle_s)

    def when_settled(self, fn: Callable[[], object]) -> None:
        """Run `fn` each time the worker settles (no request for `SETTLE_MS`, the `settleMs` option, after `ready`
        and after each busy spell): a kind gives back what its work kept, e.g. its stores' SQLite page caches."""
        self._on_settled.append(fn)

    def _settle_delay(self) -> float:
        settle = self.options.get("settleMs", SETTLE_MS)
        ok = isinstance(settle, (int, float)) and not isinstance(settle, bool) and settle >= 0
        return (settle if ok else SETTLE_MS) / 1000

    def _settle_later(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        loop.call_later(delay_s, self._settle, loop, delay_s)

    def _settle(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        """The callbacks, then the C heap's free pages back to the system (glibc's malloc_trim). A worker that
        served a request meanwhile is asked again one delay after its last one."""
        quiet = loop.time() - self._busy_at
        if self._serving or quiet < delay_s:
            self._settle_later(loop, delay_s if self._serving else delay_s - quiet)
            return
        self._settle_s = None
        for fn in self._on_settled:
            try:
                fn()
            except Exception:
                self.log.exception("giving memory back on settling failed")
        filepages.settle()

    def busy(self) -> None:
        """Work was done (a request served, or a kind's own work): settle again once quiet (one timer per busy
        spell, not one per call)."""
        loop = asyncio.get_running_loop()
        self._busy_at = loop.time()
        if self._settle_s is None and self.is_ready:
            self._settle_s = self._settle_delay()
            self._settle_later(loop, self._settle_s)

    def handle(self, method: str, fn: Handler) -> None:
        self._handlers[method] = fn

    def handle_stream(self, method: str, fn: StreamHandler) -> None:
        """Like `handle`, but `fn(params, partial)` may call `partial(payload)` any number of times before it
        returns: each sends `{kind: res, id, partial: true, payload}` ahead of the final answer."""
        self._streaming[method] = fn

    def emit(self, event: str, payload: Any = None) -> bool:
        return self.send({"kind": Kind.EVENT, "event": event, "payload": payload})

    async def request(self, method: str, params: Any = None, *, to: str | None = None,
                      timeout: float = 30.0) -> Any:
        """Ask the supervisor (or, through it, worker `to`) and wait for the answer."""
        rid = request_id(self.name, os.getpid(), next(self._ids))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        msg: dict[str, Any] = {"kind": Kind.REQ, "id": rid, "method": method, "params": params}
        if to:
            msg["to"] = to
        if not self.send(msg):
            self._pending.pop(rid, None)
            raise RequestError("UNAVAILABLE", "bus queue full")
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    # -- inbound -------------------------------------------------------------------------------------

    def _on_bus(self, raw: bytes) -> None:
        try:
            msg = decode(raw)
        except EnvelopeError as exc:
            self.log.warning("dropped a bad message from the supervisor: %s", exc)
            return
        kind = msg["kind"]
        if kind == Kind.STOP:
            self.stopping.set()
        elif kind == Kind.REQ:
            rid = str(msg.get("id"))
            task = asyncio.get_running_loop().create_task(self._serve(msg))
            self._serving[rid] = task
            task.add_done_callback(lambda _t: self._serving.pop(rid, None))
        elif kind == Kind.CANCEL:
            task = self._serving.get(str(msg.get("id")))
            if task is not None:
                task.cancel()
        elif kind == Kind.LISTENERS:
            self.listened = msg.get("on") is not False
        elif kind == Kind.RES:
            fut = self._pending.get(str(msg.get("id")))
            if fut is not None and not fut.done() and not msg.get("partial"):
                if msg.get("ok", True):
                    fut.set_result(msg.get("payload"))
                else:
                    err = msg.get("error") or {}
                    fut.set_exception(RequestError(err.get("code", "UNAVAILABLE"), err.get("message", "")))

    async def _serve(self, msg: dict[str, Any]) -> None:
        """Run one request's handler and answer it; a `cancel` for its id cancels this task (no answer then)."""
        rid = msg.get("id")
        method = msg.get("method")
        handler = self._handlers.get(str(method))
        streaming = self._streaming.get(str(method))
        reply: dict[str, Any] = {"kind": Kind.RES, "id": rid}
        if msg.get("from"):
            reply["to"] = msg["from"]

        def partial(payload: Any) -> bool:
            return self.send({**reply, "partial": True, "ok": True, "payload": payload})

        try:
            if streaming is not None:
                reply["ok"], reply["payload"] = True, await streaming(msg.get("params") or {}, partial)
            elif handler is None:
                raise RequestError("INVALID_REQUEST", f"unknown method {method!r} for worker {self.name}")
            else:
                reply["ok"], reply["payload"] = True, await handler(msg.get("params") or {})
        except RequestError as exc:
            reply["ok"] = False
            reply["error"] = {"code": exc.code, "message": str(exc), **({"details": exc.details}
                                                                         if exc.details else {})}
        except Exception as exc:
            self.log.exception("request %s failed", method)
            reply["ok"] = False
            reply["error"] = {"code": "UNAVAILABLE", "message": f"{type(exc).__name__}: {exc}"}
        self.send(reply)
        self.busy()

    # -- heartbeats ----------------------------------------------------------------------------------

    def _start_heartbeats(self) -> None:
        """The first beat follows `ready` (or one interval after the start, whichever comes first): the start-up
        itself goes first, `hello` already told the supervisor the worker is alive."""
        if self._hb is None and not self.stopping.is_set():
            with contextlib.suppress(RuntimeError):  # no running loop: `_amain` starts them one interval in
                self._hb = asyncio.get_running_loop().create_task(self._heartbeats(self._hb_interval))

    async def _heartbeats(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            ru = resource.getrusage(resource.RUSAGE_SELF)
            self.send({
                "kind": Kind.HB, "pid": os.getpid(), "ts": time.time(),
                "stats": {"rss": _rss_bytes(), "cpu": ru.ru_utime + ru.ru_stime,
                          "sent": self.link.sent, "dropped": self.link.dropped, **self.stats},
            })
            await asyncio.sleep(interval)
            self.stats["lagMs"] = round(max(0.0, loop.time() - t0 - interval) * 1000, 2)


async def _amain(ctx: WorkerContext, hb_interval: float) -> int:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, ctx.stopping.set)
    ctx.link.attach()
    ctx.send({"kind": Kind.HELLO, "pid": os.getpid(), "workerKind": ctx.kind})
    ctx._hb_interval = hb_interval
    first_beat = loop.call_later(hb_interval, ctx._start_heartbeats)
    try:
        main = registry.get(ctx.kind)
        await main(ctx)
        return 0
    finally:
        first_beat.cancel()
        if ctx._hb is not None:
            ctx._hb.cancel()


async def _rehearsal() -> None:
    """What `_amain` does first, minus what has effects: a signal handler set and taken back, a message encoded."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    loop.remove_signal_handler(signal.SIGTERM)
    encode({"kind": Kind.HELLO, "pid": os.getpid(), "workerKind": ""})


class Prepared(NamedTuple):
    """What a worker opens whatever its name and kind: made ahead by a standby process (workers/forkserver.py)."""

    bus: tuple[zmq.Context, zmq.Socket]
    loop: asyncio.AbstractEventLoop

    @classmethod
    def make(cls) -> Prepared:
        """Open the bus socket and the loop, then rehearse the rest of a start (a turn of the loop, a throwaway
        context, a stdout object): the shared pages a start writes to are copied now, off the respawn's path
        (measured: a standby-born start takes ~115 page faults after its request with the rehearsal, ~310 without)."""
        loop = eventloop.new_event_loop()
        loop.run_until_complete(_rehearsal())
        WorkerContext("standby", "", {}, "", cast(DealerLink, None))
        with contextlib.suppress(OSError), open(1, "w", buffering=1, closefd=False):
            pass  # fd 1 may be closed until the request brings the output pipe: nothing to rehearse then
        return cls(DealerLink.open_socket(), loop)


def run_worker(name: str, kind: str, options: dict[str, Any], bus: str, profile: str, hb_ms: int,
               prepared: Prepared | None = None) -> int:
    """The whole life of a worker process; returns its exit code."""
    link = DealerLink(bus, name, lambda raw: ctx._on_bus(raw), opened=prepared.bus if prepared else None)
    ctx = WorkerContext(name, kind, options, profile, link)
    root = logging.getLogger()
    root.handlers[:] = [BusLogHandler(ctx)]
    root.setLevel(logging.INFO)
    code = 1
    try:
        if prepared is None:
            code = uvloop.run(_amain(ctx, hb_ms / 1000), loop_factory=eventloop.new_event_loop)
        else:
            code = uvloop.run(_amain(ctx, hb_ms / 1000), loop_factory=lambda: prepared.loop)
    except LookupError as exc:
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        code = 78
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    finally:
        logging.shutdown()
        link.close()
    return code
