"""The fork server: a process forked before the supervisor has any thread, loop or ZeroMQ context.

It holds what workers share and forks a worker per request: a respawn costs a fork, not an interpreter start.
The libraries both sides use (asyncio, uvloop, ZeroMQ, orjson, the bus) come imported from the supervisor,
which froze them before forking this process; here come the worker runtime and, just before the first worker
of a kind is forked, that kind's module (workers/registry.py). Everything is frozen out of the garbage
collector before each fork and workers never unfreeze it, so no collection writes to those pages and they stay
shared by the supervisor, the fork server and every worker. It is the parent of every
worker, so it alone reaps them, reports their exit status, and signals a worker's process group only while
that worker is unreaped (no pid-reuse race). It is a child subreaper: a worker's orphaned children come back
to it and are reaped too. When the supervisor dies it gets SIGTERM (PR_SET_PDEATHSIG), kills every worker
group and exits; workers in turn have PR_SET_PDEATHSIG=SIGKILL on the fork server.

A respawn is on the path of every crash, so the fork server keeps a standby (the supervisor sets how many): a
process forked ahead that has done what any worker does before it knows its name (its own ZeroMQ context and
I/O threads, its event loop, signals, parent-death signal) and waits for a spawn request. A request takes a
standby when one is up to date (forked since the last kind module loaded), else forks as before; a used standby
is replaced once spawning has been quiet for a moment, so its start-up never competes with the worker's.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from openclaw_sup.config import filepages
from openclaw_sup.config.record import record
from openclaw_sup.ipc.forkproto import MAX_PACKET
from openclaw_sup.workers.heapholes import HeapHoles

if TYPE_CHECKING:
    from openclaw_sup.workers.runtime import Prepared

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

PRELOAD = ("setproctitle", "openclaw_sup.workers.runtime")
"""What every worker runs; a kind's own modules are imported before its first fork (registry.preload)."""

STANDBY_QUIET_S = 0.2
"""A used standby is replaced once no spawn came for this long: the new worker's start-up goes first."""
STANDBY_AFTER_BOOT_S = 1.0
"""The first standby is forked this long after the supervisor asks for it: out of the way of the gateway's start."""
STANDBY_FAILURES_MAX = 3
"""Standbys that die before their first request, in a row, after which the fork server stops making them."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
# argtypes set once here: a forked worker's call then converts no Python ints through ctypes' generic path


def prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_parent_death_signal(sig: int) -> None:
    if sys.platform.startswith("linux"):
        prctl(PR_SET_PDEATHSIG, sig)


@record
class Standby:
    """A forked process waiting for its spawn request on `sock`; `modules` is what the fork server had loaded."""

    pid: int
    sock: socket.socket
    modules: int


class ForkServerLoop:
    def __init__(self, sock: socket.socket, profile: str) -> None:
        self.sock = sock
        self.profile = profile
        self.server_pid = os.getpid()
        self.children: dict[int, str] = {}
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.quitting = False
        self.modules = 0
        self.holes = HeapHoles()
        self.standbys: dict[int, Standby] = {}
        self.standbys_wanted = 0
        self.standby_due: float | None = None
        self.standby_failures = 0

    # -- set-up --------------------------------------------------------------------------------------

    def boot(self, kind_modules: list[str], kinds: tuple[str, ...] = ()) -> None:
        import importlib

        from openclaw_sup.workers import registry

        errors = []
        for mod in PRELOAD:
            try:
                importlib.import_module(mod)
            except ImportError as exc:
                errors.append(f"cannot preload {mod}: {exc}")
        errors += registry.load(kind_modules)
        for kind in kinds:
            with contextlib.suppress(Exception):  # a kind that cannot be imported says so when it is spawned
                registry.preload(kind)
        self.modules = len(sys.modules)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            prctl(PR_SET_CHILD_SUBREAPER, 1)
        filepages.drop()  # what the imports read: before the holes are taken, so its own garbage leaves none
        gc.collect()
        self.holes.take()
        gc.freeze()
        gc.enable()
        self._send({"op": "boot", "pid": os.getpid(), "errors": errors, "kinds": registry.names()})

    def _on_term(self, *_: Any) -> None:
        self._kill_all()
        os._exit(0)

    # -- main loop -----------------------------------------------------------------------------------

    def serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "ctl")
        sel.register(self.wake_r, selectors.EVENT_READ, "chld")
        told: list[int] = []
        while True:
            if told != list(self.standbys):
                told = list(self.standbys)
                self._send({"op": "standbys", "pids": told})
            due = self.standby_due
            for key, _ in sel.select(None if due is None else max(0.0, due - time.monotonic())):
                if key.data == "chld":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
                    self._reap()
                elif not self._on_ctl():
                    self._kill_all()
                    return
            self._reap()
            if self.standby_due is not None and time.monotonic() >= self.standby_due:
                self._fill_standbys()

    def _on_ctl(self) -> bool:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_PACKET, 4)
        except InterruptedError:
            return True
        except OSError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        try:
            req = orjson.loads(data)
            op = req.get("op")
        except (orjson.JSONDecodeError, AttributeError):
            for fd in fds:
                os.close(fd)
            return True
        if op == "spawn":
            self._spawn(req, fds, data)
            for fd in fds:
                os.close(fd)
        elif op == "signal":
            pid = int(req.get("pid", 0))
            if pid in self.children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, int(req.get("sig", signal.SIGKILL)))
        elif op == "standby":
            count = req.get("count")
            self.standbys_wanted = count if isinstance(count, int) and count > 0 else 0
            self.standby_failures = 0
            for standby in list(self.standbys.values())[self.standbys_wanted:]:
                self._drop_standby(standby)
            after = req.get("afterS")
            self._standbys_later(float(after) if isinstance(after, (int, float)) and after >= 0
                                 else STANDBY_AFTER_BOOT_S)
        elif op == "quit":
            return False
        return True

    def _send(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(orjson.dumps(msg))

    # -- spawning ------------------------------------------------------------------------------------

    def _spawn(self, req: dict[str, Any], fds: list[int], data: bytes) -> None:
        from openclaw_sup.workers import registry

        kind = str(req.get("kind"))
        try:
            registry.preload(kind)
        except Exception as exc:
            self._send({"op": "spawn_failed", "seq": req.get("seq"), "name": req.get("name"),
                        "error": f"cannot import worker kind {kind!r}: {type(exc).__name__}: {exc}"})
            return
        if not registry.provides(kind):  # a request sent before the supervisor had this server's list of kinds
            self._send({"op": "spawn_failed", "seq": req.get("seq"), "name": req.get("name"),
                        "error": f"worker kind {kind!r} is not provided by this build"})
            return
        self._standbys_later(STANDBY_QUIET_S)
        pid = self._hand_to_standby(data, fds)
        if pid is None:
            self._freeze_for_fork()
            try:
                pid = os.fork()
            except OSError as exc:
                self._send({"op": "spawn_failed", "seq": req.get("seq"), "name": req.get("name"),
                            "error": f"fork failed: {exc.strerror}"})
                return
            if pid == 0:
                self._become_worker(req, fds)
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)
        self.children[pid] = str(req.get("name"))
        self._send({"op": "spawned", "seq": req.get("seq"), "name": req.get("name"), "pid": pid})

    def _freeze_for_fork(self) -> None:
        """What a fork needs first: new modules' garbage collected and the heap's holes taken, everything frozen."""
        if len(sys.modules) != self.modules:
            self.modules = len(sys.modules)
            filepages.drop()
            gc.collect()
            self.holes.take()
        gc.freeze()

    def _detach(self) -> None:
        """In a forked child: leave the fork server's signals, sockets and stdin; die with it."""
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != self.server_pid:
            os._exit(70)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        self.sock.close()
        for standby in self.standbys.values():
            standby.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)

    def _become_worker(self, req: dict[str, Any], fds: list[int], detached: bool = False,
                       prepared: Prepared | None = None) -> NoReturn:
        _exit_with(lambda: self._run_worker(req, fds, detached, prepared))

    def _run_worker(self, req: dict[str, Any], fds: list[int], detached: bool, prepared: Prepared | None) -> int:
        if not detached:
            self._detach()
        for target, fd in zip((1, 2), fds, strict=False):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        import setproctitle

        name = str(req["name"])
        setproctitle.setproctitle(f"openclaw-sup: {name} [{self.profile}]")
        from openclaw_sup.workers.runtime import run_worker

        return run_worker(name, str(req["kind"]), req.get("options") or {}, str(req["bus"]),
                          self.profile, int(req.get("hb_ms") or 1000), prepared)

    # -- standbys ------------------------------------------------------------------------------------

    def _standbys_later(self, delay: float) -> None:
        """Top the standbys up `delay` from now or at the time already set, whichever is later (each spawn pushes
        it back while spawns keep coming)."""
        if not self.standbys_wanted or self.standby_failures >= STANDBY_FAILURES_MAX:
            self.standby_due = None
            return
        due = time.monotonic() + delay
        self.standby_due = due if self.standby_due is None else max(self.standby_due, due)

    def _fill_standbys(self) -> None:
        self.standby_due = None
        self._freeze_for_fork()
        for standby in [s for s in self.standbys.values() if s.modules != self.modules]:
            self._drop_standby(standby)  # forked before a kind module loaded: it lacks that module's pages
        while len(self.standbys) < self.standbys_wanted and self.standby_failures < STANDBY_FAILURES_MAX:
            try:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            except OSError:
                self._standbys_later(STANDBY_QUIET_S * 10)
                return
            try:
                pid = os.fork()
            except OSError:
                ours.close()
                theirs.close()
                self._standbys_later(STANDBY_QUIET_S * 10)
                return
            if pid == 0:
                ours.close()
                self._become_standby(theirs)
            theirs.close()
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)
            self.standbys[pid] = Standby(pid, ours, self.modules)

    def _become_standby(self, sock: socket.socket) -> NoReturn:
        _exit_with(lambda: self._run_standby(sock))

    def _run_standby(self, sock: socket.socket) -> int:
        """In the standby: do what every worker does first, then wait for the one spawn request it will run."""
        self._detach()
        import setproctitle

        from openclaw_sup.workers.runtime import Prepared

        setproctitle.setproctitle(f"openclaw-sup: standby [{self.profile}]")
        prepared = Prepared.make()
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_PACKET, 4)
        sock.close()
        if not data:
            return 0
        self._become_worker(orjson.loads(data), fds, detached=True, prepared=prepared)

    def _hand_to_standby(self, data: bytes, fds: list[int]) -> int | None:
        """Pass the request (as received) and its fds to an up-to-date standby; its pid, or None when there is none."""
        while self.standbys:
            standby = self.standbys.pop(next(iter(self.standbys)))
            if standby.modules != len(sys.modules):
                self._drop_standby(standby)
                continue
            try:
                socket.send_fds(standby.sock, [data], fds)
            except OSError:
                self._drop_standby(standby)
                continue
            standby.sock.close()
            self.standby_failures = 0
            return standby.pid
        return None

    def _drop_standby(self, standby: Standby) -> None:
        self.standbys.pop(standby.pid, None)
        standby.sock.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(standby.pid, signal.SIGKILL)

    # -- reaping -------------------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            standby = self.standbys.pop(pid, None)
            if standby is not None:  # died before its request: not a worker, nothing to report
                standby.sock.close()
                self.standby_failures += 1
                self._standbys_later(STANDBY_QUIET_S * 10)
            if pid in self.children or standby is not None:
                # Still a zombie, so the group id cannot have been reused: clear the worker's leftovers.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            if self.children.pop(pid, None) is not None:
                self._send({"op": "exit", "pid": pid, "status": status})

    def _kill_all(self) -> None:
        for standby in list(self.standbys.values()):
            self._drop_standby(standby)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _exit_with(body: Callable[[], int], failed: int = 70) -> NoReturn:
    """Run a forked child's body and leave with its exit code (`failed`, after the traceback, if it raised): a child
    must never return into the loop of the process it was forked from."""
    code = failed
    try:
        code = body()
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
            sys.stderr.flush()
    finally:
        os._exit(code)


def run(sock: socket.socket, parent_pid: int, profile: str, kind_modules: list[str],
        kinds: tuple[str, ...] = ()) -> NoReturn:
    """Entry in the forked (or exec'd) fork-server process; never returns."""
    gc.disable()  # no collection while booting: it would leave freed holes that the workers' allocations dirty
    _exit_with(lambda: _serve(sock, parent_pid, profile, kind_modules, kinds), failed=1)


def _serve(sock: socket.socket, parent_pid: int, profile: str, kind_modules: list[str], kinds: tuple[str, ...]) -> int:
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:
        return 1
    os.setpgid(0, 0)
    import setproctitle

    setproctitle.setproctitle(f"openclaw-sup: forkserver [{profile}]")
    server = ForkServerLoop(sock, profile)
    server.boot(kind_modules, kinds)
    server.serve()
    return 0


if __name__ == "__main__":
    fd, ppid, profile_label, *mods = sys.argv[1:]
    run(socket.socket(fileno=int(fd)), int(ppid), profile_label, mods)
