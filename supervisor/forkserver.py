"""The supervisor's handle on its fork server (the serving side is workers/forkserver.py).

The first fork server is forked before the supervisor creates any thread, event loop or ZeroMQ context, so
it inherits nothing but imported modules. If it ever dies, its replacement is started by fork+exec of a
fresh interpreter, which is safe from a threaded process. The supervisor process itself never imports the
serving code: only the forked child does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from openclaw_sup.ipc.forkproto import MAX_PACKET

ExitCallback = Callable[[int, int], None]

SHARED = ("asyncio", "uvloop", "zmq", "orjson", "setproctitle", "ctypes", "openclaw_sup.ipc.bus",
          "openclaw_sup.config.statedb")
"""What the supervisor, the fork server and every worker all run (ctypes: titles and parent-death signals; statedb:
the lock, the gateway's stores, every worker's SQLite): imported once, before the first fork."""


class ForkServerError(RuntimeError):
    pass


def _inherit_only(keep: int) -> None:
    """Of the supervisor's descriptors, only stdout, stderr and `keep` cross the next exec (what `Popen`'s
    `close_fds` gave): one inherited from whoever started the supervisor would stay open in every worker."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, fd == keep)


class ForkServer:
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self._seq = itertools.count(1)
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_exit: ExitCallback | None = None
        self._on_lost: Callable[[], None] | None = None
        self.booted: asyncio.Future[dict[str, Any]] | None = None
        self.alive = True
        self.status: int | None = None
        self.standby_pids: list[int] = []

    # -- starting ------------------------------------------------------------------------------------

    @classmethod
    def fork(cls, profile: str, kind_modules: list[str], close_fds: tuple[int, ...] = (),
             kinds: tuple[str, ...] = ()) -> ForkServer:
        """Fork the fork server; call before any thread, event loop or ZeroMQ context exists.

        The libraries every process of the tree runs are imported first and frozen out of the garbage
        collector, so the fork server and the workers it forks share those pages with the supervisor. `kinds`
        (the workers the config asks for) are imported by the fork server while the supervisor binds the port,
        so the first workers cost a fork each."""
        for name in SHARED:
            importlib.import_module(name)
        gc.freeze()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            ours.close()
            for fd in close_fds:
                os.close(fd)
            from openclaw_sup.workers import forkserver

            forkserver.run(theirs, parent_pid, profile, kind_modules, kinds)
        theirs.close()
        return cls(pid, ours)

    @classmethod
    def exec(cls, profile: str, kind_modules: list[str]) -> ForkServer:
        """Start a fork server in a fresh interpreter (safe once threads exist). posix_spawn gives it the default
        signal mask: the supervisor's blocks what it reads from its signalfd, and a mask survives exec."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-m", "openclaw_sup.workers.forkserver", str(theirs.fileno()),
                str(os.getpid()), profile, *kind_modules]
        try:
            _inherit_only(theirs.fileno())
            pid = os.posix_spawn(sys.executable, argv, os.environ, setsigmask=(),
                                 setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                                 file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return cls(pid, ours)

    def attach(self, on_exit: ExitCallback, on_lost: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_exit, self._on_lost = on_exit, on_lost
        self.booted = self._loop.create_future()
        self.sock.setblocking(False)
        self._loop.add_reader(self.sock.fileno(), self._readable)
        self._readable()  # what it said before we listened (its boot, once it preloaded while we started)

    # -- requests ------------------------------------------------------------------------------------

    def spawn(self, name: str, kind: str, options: dict[str, Any], bus: str, hb_ms: int,
              out_fd: int, err_fd: int) -> asyncio.Future[int]:
        """Ask for a worker; the future resolves to its pid. The fds become its stdout and stderr."""
        assert self._loop is not None
        seq = next(self._seq)
        fut = self._loop.create_future()
        msg = {"op": "spawn", "seq": seq, "name": name, "kind": kind, "options": options, "bus": bus,
               "hb_ms": hb_ms}
        try:
            socket.send_fds(self.sock, [orjson.dumps(msg)], [out_fd, err_fd])
        except OSError as exc:
            fut.set_exception(ForkServerError(f"fork server did not take the request: {exc}"))
            return fut
        self._pending[seq] = fut
        return fut

    def signal(self, pid: int, sig: int) -> None:
        """Signal a worker's process group; the fork server ignores pids it has already reaped."""
        with contextlib.suppress(OSError):
            self.sock.send(orjson.dumps({"op": "signal", "pid": pid, "sig": int(sig)}))

    def standby(self, count: int, after_s: float | None = None) -> None:
        """Ask for `count` pre-forked standby processes (workers/forkserver.py), so a respawn costs no fork; the
        first is forked `after_s` from now (default: out of the way of a start-up)."""
        msg: dict[str, Any] = {"op": "standby", "count": count}
        if after_s is not None:
            msg["afterS"] = after_s
        with contextlib.suppress(OSError):
            self.sock.send(orjson.dumps(msg))

    def quit(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(b'{"op":"quit"}')

    # -- replies -------------------------------------------------------------------------------------

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_PACKET)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            try:
                msg = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "exit" and self._on_exit:
            self._on_exit(int(msg["pid"]), int(msg["status"]))
        elif op in ("spawned", "spawn_failed"):
            fut = self._pending.pop(int(msg.get("seq", 0)), None)
            if fut is None or fut.done():
                return
            if op == "spawned":
                fut.set_result(int(msg["pid"]))
            else:
                fut.set_exception(ForkServerError(str(msg.get("error"))))
        elif op == "standbys" and isinstance(msg.get("pids"), list):
            self.standby_pids = [int(p) for p in msg["pids"] if isinstance(p, int)]
        elif op == "boot" and self.booted is not None and not self.booted.done():
            self.booted.set_result(msg)

    def _lost(self) -> None:
        if not self.alive:
            return
        self.alive = False
        assert self._loop is not None
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self._fail_pending("fork server exited")
        if self.booted is not None and not self.booted.done():
            self.booted.set_exception(ForkServerError("fork server exited while booting"))
        self.reap(block=False)
        if self._on_lost:
            self._on_lost()

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ForkServerError(why))
        self._pending.clear()

    def abandon(self) -> None:
        """Give up on one that did not boot: close it; the spawns sent ahead of its boot fail (and are asked again)."""
        self._fail_pending("fork server did not boot")
        self.close(timeout=0.1)

    def reap(self, block: bool) -> int | None:
        """Collect the fork server's own exit status (it is our only direct child)."""
        if self.status is not None:
            return self.status
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.status = -1
            return self.status
        if pid:
            self.status = status
        return self.status

    def close(self, timeout: float = 2.0) -> None:
        """Tell it to quit (it SIGKILLs any worker left), and wait for it, bounded."""
        if self.booted is not None and not self.booted.done():
            self.booted.set_exception(ForkServerError("fork server closed while booting"))
            self.booted.exception()  # retrieved here too: at shutdown nobody may be waiting
        if self.alive:
            self.quit()
            self.alive = False
            if self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.reap(block=False) is not None:
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)
        self.reap(block=True)
