"""The supervisor: one class whose lifecycle reads top to bottom.

    run      -> signals, bus, control socket, listener, wanted workers (on-demand ones idle until `wake`)
    reap     -> exit reports from the fork server drive the state machine (no polling decides restarts)
    manage   -> readiness, heartbeats, start timeouts, RSS ceilings, backoff and slow retries
    reload   -> SIGHUP re-reads the settings and applies a ReloadPlan; SIGUSR1 restarts everything in place
    stop     -> SIGTERM/SIGINT: every worker down the stop ladder (bus `stop`, SIGTERM, SIGKILL), then exit

Beside it, one job per module: supervisor/router.py (`BusRouter`) takes every bus frame and correlates the
requests sent to workers with their answers; supervisor/gatewayhost.py (`SupervisorHost`) is all the gateway
core sees of the supervisor; supervisor/reload.py (`ConfigReloader`) reads, diffs and applies a config edit
through the public methods here (`exclusive`, `restart_in_place`, `apply_worker_plan`, `rebind`, `spawn_task`).

Nothing a worker or a client sends can raise out of a callback here: every inbound path validates, and a
failure in one handler is logged and contained.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import gc
import importlib
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openclaw_sup import __version__
from openclaw_sup.config import filepages
from openclaw_sup.config.browser_state import left_running
from openclaw_sup.config.paths import ProfilePaths, derived_ports, ensure_private_dir, loose_mode
from openclaw_sup.config.plan import CRON_DISABLED_LINE, ReloadPlan, cron_skipped, worker_specs
from openclaw_sup.config.record import record
from openclaw_sup.config.restart import (
    LIVE_STATES,
    RETRY_STATES,
    SERVING_STATES,
    UNHEALTHY_STATES,
    WAKING_STATES,
    Backoff,
    Event,
    State,
)
from openclaw_sup.config.settings import SupervisorSettings, WorkerSpec
from openclaw_sup.gateway.authn import AuthConfig
from openclaw_sup.gateway.bind import BindRefused, guard, resolve_host
from openclaw_sup.gateway.protocol import UPSTREAM_VERSION, MethodError
from openclaw_sup.gateway.server import GatewayServer
from openclaw_sup.ipc.envelope import Kind, sender_pid
from openclaw_sup.ipc.forkproto import describe_status
from openclaw_sup.supervisor import fdlimit, signalfd, sigstack
from openclaw_sup.supervisor.control import ControlServer
from openclaw_sup.supervisor.forkserver import ForkServer, ForkServerError
from openclaw_sup.supervisor.gatewayhost import SupervisorHost
from openclaw_sup.supervisor.liblog import route_library_output
from openclaw_sup.supervisor.lock import UpstreamLock
from openclaw_sup.supervisor.logsink import LogSink, Redactor, secrets_in
from openclaw_sup.supervisor.output import OutputPipe
from openclaw_sup.supervisor.reload import ConfigReloader
from openclaw_sup.supervisor.router import BusRouter
from openclaw_sup.supervisor.sdnotify import Notifier, status_line
from openclaw_sup.supervisor.table import Incarnation, ProcessTable, SampleRing, WorkerRecord

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

_PAGE = os.sysconf("SC_PAGE_SIZE")
LINE_LIMIT = 8192
EARLY_MAX = 32
EARLY_EXITS_MAX = 64  # exits read before their spawn was recorded (only while spawns are in flight)
FS_BOOT_TIMEOUT_S = 60.0
FS_RETRY_FIRST_S = 0.5
FS_RETRY_MAX_S = 30.0
RESTART_DRAIN_S = 30.0  # an in-place restart gives requests already at a worker this long to finish
RESTART_SETTLE_S = 60.0  # a request for a worker made during an in-place restart waits this long for it
HEAP_TRIM_AFTER_S = 2.0
"""The start-up's freed C heap goes back to the system this long after the gateway is up (its first clients and
workers served meanwhile): glibc keeps it mapped, and counted, otherwise."""
SpawnAsk = tuple[asyncio.Future[int], int, int] | Exception


@record(frozen=True)
class RunOptions:
    host: str
    port: int
    auth: AuthConfig
    gateway_config: dict[str, Any]
    tick_interval_ms: int
    verbose: bool = False
    port_pinned: bool = False
    ssl_context: ssl.SSLContext | None = None
    listen: bool = True
    """False for a node host (`openclaw-sup node run`): no port, just the fixed `workers`."""
    workers: tuple[WorkerSpec, ...] | None = None

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}"


def restart_enabled(cfg: dict[str, Any]) -> bool:
    """Upstream's `commands.restart`: on unless set to false."""
    commands = cfg.get("commands")
    return not (isinstance(commands, dict) and commands.get("restart") is False)


_STATM: int | None = None


def _own_rss() -> int | None:
    """This process's RSS, read through one descriptor kept open: `status` must answer when none is left."""
    global _STATM
    try:
        if _STATM is None:
            _STATM = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        return int(os.pread(_STATM, 128, 0).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class Supervisor:
    def __init__(self, paths: ProfilePaths, settings: SupervisorSettings, opts: RunOptions,
                 fork_server: ForkServer, sink: LogSink, notifier: Notifier | None = None,
                 gateway_lock: UpstreamLock | None = None) -> None:
        self.paths = paths
        self.gateway_lock = gateway_lock
        self.notifier = notifier or Notifier()
        self.settings = settings
        self.opts = opts
        self.fs = fork_server
        self.sink = sink
        self._standbys_until = 0.0
        self._standbys_release: asyncio.TimerHandle | None = None
        self.specs: list[WorkerSpec] = []
        self.available_kinds: set[str] | None = None
        self._skipped: set[str] = set()
        self.reloader = ConfigReloader(self)
        self.host = SupervisorHost(self)
        self.table = ProcessTable(self._state_changed)
        self.started = time.monotonic()
        self.exit_code = 0
        self.stopping = False
        self.booted = False
        self.router = BusRouter(lookup=lambda name: self.table.get(name), lifecycle=self._worker_message,
                                events=self.host.worker_event, serve=self.host.serve_worker, log=self.log,
                                spawn_task=self.spawn_task, wake=self.wake,
                                max_message_bytes=lambda: self.settings.bus.max_message_bytes)
        self.control: ControlServer | None = None
        self.gateway: GatewayServer | None = None
        self._stop_requested: asyncio.Event | None = None
        self._fs_settled: asyncio.Event | None = None  # the current fork server booted, or was declared down
        self._fs_task: asyncio.Task[None] | None = None
        self._fs_retry_now = asyncio.Event()
        self.fs_problem: str | None = None
        self._started = False
        self.spares: fdlimit.Spares | None = None
        self.fds: dict[str, int] = {}
        self._loose_config: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._flush_scheduled = False
        self._ops_lock: asyncio.Lock | None = None
        self.core: GatewayCore | None = None
        self.gateway_cfg = opts.gateway_config
        self._early_exits: dict[int, int] = {}  # pid -> status, for exits read before their spawn was recorded
        self._health_scheduled = False
        self._restarting: asyncio.Event | None = None  # set while an in-place restart runs; opens when it is done
        self._restart_scheduled = False
        self.self_history = SampleRing()
        self._cpu_mark: tuple[float, float] | None = None
        self._signals: signalfd.SignalReader | None = None

    # ================================================================ run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._loop, self._loop_thread = loop, threading.get_ident()
        route_library_output(self._library_log)
        self._fs_settled = asyncio.Event()
        self._ops_lock = asyncio.Lock()
        self.spares = fdlimit.Spares()
        self._install_signals(loop)
        self.notifier.start_watchdog(loop)
        ensure_private_dir(self.paths.run_dir)
        with contextlib.suppress(FileNotFoundError):
            (self.paths.run_dir / "bus.sock").unlink()
        self.router.open(self.paths.bus_endpoint, self.settings.bus)
        self.control = ControlServer(self.paths.control_socket, self._on_control, self.spares)
        await self.control.start()
        if self.opts.listen and not await self._bind():
            return self.exit_code
        self._attach(self.fs)  # the first spawns are sent now, ahead of its boot: it forks them as soon as it is up
        first_fs = asyncio.ensure_future(self._boot_first_fork_server())
        self.specs = self.wanted_specs(self.gateway_cfg, self.settings)
        for spec in self.specs:
            self._bring_up(self.table.add(spec))
        if self.opts.listen and not await self._serve():
            return self.exit_code
        gc.enable()  # off since the entry point: the imports of the start are done
        await first_fs
        if cron_skipped(os.environ):
            self.log("warn", CRON_DISABLED_LINE)
        where = f"gateway listening on {self.opts.url}" if self.gateway else "node host supervisor started"
        sockets = f", {self.gateway.admission.capacity} client sockets at most" if self.gateway else ""
        self.log("info", f"{where} (pid {os.getpid()}, profile {self.paths.label}, {len(self.specs)} workers"
                         f"{sockets})")
        self._stability("gateway.started", pid=os.getpid(), port=self.opts.port, workers=len(self.specs))
        self.booted = True
        self.readiness()
        if self.opts.listen:
            self.reloader.start()
        self._every_second()
        self.notify_state()
        loop.call_later(HEAP_TRIM_AFTER_S, filepages.settle)
        await self._stop_requested.wait()
        await self.shutdown()
        return self.exit_code

    async def _bind(self) -> bool:
        """Take the gateway port; False (and torn down, exit code set) when it cannot be bound. Nothing is
        served on it before `_serve`."""
        assert self.control is not None
        self.gateway = self._gateway_server(self.opts)
        try:
            await self.gateway.bind()
        except Exception as exc:
            await self._listen_failed(exc)
            return False
        return True

    async def _serve(self) -> bool:
        """The gateway core (auth, devices, methods), then clients are served on the bound port. Its modules load
        once the first spawns have left, on this thread: on a busy machine a loading thread and the loop passing
        the GIL back and forth took longer than the loading alone (`gateway listening` ~15 ms later)."""
        assert self.gateway is not None
        core = importlib.import_module("openclaw_sup.gateway.core")
        importlib.import_module("openclaw_sup.gateway.connection")  # what the first client's socket runs
        self.core = core.GatewayCore(self.host, self.paths.state_dir, self.opts.auth,
                                tick_interval_ms=self.opts.tick_interval_ms)
        self.gateway.core = self.core
        try:
            await self.gateway.serve()
        except Exception as exc:
            await self._listen_failed(exc)
            return False
        self.core.start()
        self._fit_port_to_fds()
        return True

    async def _listen_failed(self, exc: Exception) -> None:
        self.log("error", str(exc))
        print(exc, file=sys.stderr, flush=True)
        self.exit_code = 1
        self.stopping = True
        await asyncio.gather(*(self.stop_worker(r) for r in self.table), return_exceptions=True)
        await self._teardown()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """TERM, INT, QUIT stop; HUP reloads; USR2 (upstream's) and USR1 restart in place; every other signal
        that would end the process is logged and ignored, and a crash (SEGV, BUS, ILL, FPE, ABRT) prints its
        Python traceback on stderr: nothing ends the supervisor without a word, except SIGKILL. They are read
        from a signalfd (supervisor/signalfd.py) when the entry point blocked them, else the loop's handlers."""
        self._signals = signalfd.SignalReader.for_blocked()
        if self._signals is not None:
            loop.add_reader(self._signals.fd, self._read_signals)
        else:
            for sig in signalfd.HANDLED:
                with contextlib.suppress(ValueError, OSError, RuntimeError):
                    loop.add_signal_handler(sig, self._on_signal, sig, 0)
        faulthandler.enable()
        sigstack.install()  # after faulthandler's own: nested handlers overran its 16 kB

    def _read_signals(self) -> None:
        assert self._signals is not None
        for sig, pid in self._signals.read():
            try:
                self._on_signal(sig, pid)
            except Exception as exc:  # a signal must never end the supervisor through its handler
                self.log("error", f"handling {signalfd.signal_name(sig)} failed: {exc!r}")

    def _on_signal(self, sig: int, pid: int) -> None:
        by = signalfd.sender(pid)
        if sig in signalfd.STOP_SIGNALS:
            self.request_stop(sig, by)
        elif sig in signalfd.RELOAD_SIGNALS:
            self.spawn_task(self.reloader.reload(signalfd.signal_name(sig)), "reload")
        elif sig in signalfd.RESTART_SIGNALS:
            self._restart_signal(sig, by)
        elif sig in signalfd.IGNORED_SIGNALS:
            name = signalfd.signal_name(sig)
            self.log("warn", f"received {name}; ignored (SIGTERM stops the gateway, SIGHUP reloads its config, SIGUSR2 "
                             f"restarts it in place){by}")

    def _restart_signal(self, sig: int, by: str = "") -> None:
        name = signalfd.signal_name(sig)
        if self.stopping:
            self.log("info", f"received {name} during shutdown; ignoring{by}")
        elif not restart_enabled(self.gateway_cfg):
            self.log("warn", f"{name} restart ignored (commands.restart=false); restart through the service manager "
                             f"or set commands.restart to true{by}")
        else:
            self.log("info", f"received {name}; restarting in place (pid {os.getpid()}, port {self.opts.port}){by}")
            self.spawn_task(self.restart_all(True), "restart")

    def _reap_adopted(self) -> None:
        """The supervisor is a child subreaper: workers orphaned by a dying fork server come back here.

        uvloop owns SIGCHLD, so this runs right after a fork-server loss and in the once-a-second
        housekeeping; exits of workers are still reported by the fork server as they happen.
        """
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            if info.si_pid == self.fs.pid:
                if self.fs.reap(block=False) is None:
                    return
                continue
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, os.WNOHANG)

    def request_stop(self, sig: int | None = None, by: str = "") -> None:
        if sig is not None and not self.stopping:
            self.log("info", f"received {signalfd.signal_name(sig)}; shutting down{by}")
        assert self._stop_requested is not None
        self._stop_requested.set()

    def spawn_task(self, coro: Any, what: str) -> None:
        """Run `coro` in the background; a failure is logged with `what`, never lost or raised."""
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(lambda t: self._task_failed(t, what))

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Reloads, in-place restarts and operator actions on workers run one at a time."""
        assert self._ops_lock is not None
        async with self._ops_lock:
            yield

    def _task_failed(self, task: asyncio.Task[Any], what: str) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log("error", f"{what} failed: {type(exc).__name__}: {exc}")

    # ================================================================ fork server

    async def _boot_first_fork_server(self) -> None:
        """The fork server `main` forked, or a replacement when it does not boot (spawns wait for either)."""
        if not await self._attach_fork_server(self.fs):
            self._new_fork_server()

    async def _attach_fork_server(self, fs: ForkServer) -> bool:
        """Wait for `fs` to boot; False (and it is declared down) if it dies or hangs first. One that has
        already booted is attached without a turn of the loop."""
        assert self._fs_settled is not None
        self._attach(fs)
        assert fs.booted is not None
        try:
            boot = fs.booted.result() if fs.booted.done() else await asyncio.wait_for(fs.booted, FS_BOOT_TIMEOUT_S)
        except (TimeoutError, ForkServerError) as exc:
            fs._on_lost = None
            fs.abandon()
            self._fork_server_down(f"fork server (pid {fs.pid}) "
                                   + (f"did not boot within {FS_BOOT_TIMEOUT_S:g}s" if isinstance(exc, TimeoutError)
                                      else "exited while booting"))
            return False
        for err in boot.get("errors", []):
            self.log("error", f"fork server: {err}")
        self.available_kinds = set(boot.get("kinds", []))
        fs.standby(self._standbys_now())
        if self.fs_problem is not None:
            self.log("info", f"fork server back (pid {fs.pid}); starting the workers that waited for it")
        self.fs_problem = None
        self._fs_settled.set()
        self._unblock("fork server")
        return True

    def _attach(self, fs: ForkServer) -> None:
        if fs is not self.fs or fs.booted is None:
            self.fs = fs
            fs.attach(self._on_exit, self._on_fork_server_lost)

    def _ahead_of_boot(self) -> bool:
        """A spawn may be sent now to the first fork server, attached, before its boot is known to the supervisor
        (it may still be preloading: it reads the request once it is up)."""
        return self._fs_task is None and self.fs_problem is None and self.fs.alive and self.fs.booted is not None

    def _fork_server_down(self, problem: str, retry_in: float | None = None) -> None:
        """No fork server for now: spawns fail at once (through the restart policy) instead of waiting."""
        assert self._fs_settled is not None
        self.fs_problem = problem
        self._fs_settled.set()
        retry = f"; next try in {retry_in:g}s" if retry_in is not None else ""
        self.log("error", f"{problem}; workers cannot start until a fork server is up{retry}")

    def _on_fork_server_lost(self) -> None:
        if self.stopping:
            return
        self.log("error", f"fork server (pid {self.fs.pid}) exited; every worker went with it; starting a new one")
        for rec in self.table:
            inc = rec.current
            if inc is not None and inc.exit is None and inc.pid in self.table.by_pid:
                inc.kill_reason = inc.kill_reason or "fork server exited"
                self._on_exit(inc.pid, -1)
        self._new_fork_server()
        loop = asyncio.get_running_loop()
        for delay in (0.02, 0.1, 0.5):
            loop.call_later(delay, self._reap_adopted)

    def _new_fork_server(self) -> None:
        """Replace the fork server (one replacement at a time); spawns wait until it booted or is declared down."""
        assert self._fs_settled is not None
        if self._fs_task is not None and not self._fs_task.done():
            return
        self._fs_settled.clear()
        self._fs_task = asyncio.get_running_loop().create_task(self._replace_fork_server())
        self._fs_task.add_done_callback(lambda t: self._task_failed(t, "fork server restart"))

    async def _replace_fork_server(self) -> None:
        """Start a fork server, retrying with backoff for as long as it takes (e.g. out of descriptors)."""
        backoff = Backoff(FS_RETRY_FIRST_S, FS_RETRY_MAX_S, jitter=0.0)
        while not self.stopping:
            delay = backoff.next()
            try:
                fs = ForkServer.exec(self.paths.label, list(self.settings.kind_modules))
            except Exception as exc:
                self._fork_server_down(f"cannot start a fork server ({type(exc).__name__}: {exc})", delay)
            else:
                if await self._attach_fork_server(fs):
                    return
            self._fs_retry_now.clear()
            with contextlib.suppress(TimeoutError):  # woken early when descriptors are free again
                await asyncio.wait_for(self._fs_retry_now.wait(), delay)

    def _unblock(self, cause: str) -> None:
        """Workers whose last spawn failed for `cause` (now gone) are started now, not at their next retry."""
        for rec in self.table:
            if rec.blocked_on == cause and rec.state in RETRY_STATES:
                rec.cancel_timer()
                self._retry(rec)

    # ================================================================ manage: starting

    def _bring_up(self, rec: WorkerRecord) -> None:
        """A wanted worker starts now, unless it is on-demand: then it stays idle until its first request."""
        if rec.state != State.IDLE:
            self._start(rec)
            return
        pending = self._boot_work(rec.spec)
        if pending:
            self.log("info", f"worker {rec.name} starts now, not on first use: {pending}")
            self._start(rec)
            return
        rec.settled = True
        self.log("info", f"worker {rec.name} idle: starts on first use")

    def _boot_work(self, spec: WorkerSpec) -> str | None:
        """Why an on-demand worker must start at boot anyway: a Chromium its predecessor left to sweep or restore."""
        if spec.kind == "browser":
            left = left_running(Path(spec.options.get("stateDir") or self.paths.state_dir))
            if left:
                return f"Chromium of profile(s) {', '.join(left)} was running when it last stopped"
        return None

    async def wake(self, name: str, why: str) -> None:
        """An on-demand worker's first use: start it if idle, then wait until it is ready (at most its start
        timeout, through crashes and backoff). A worker in no state to come up (stopped, failed) is left to the
        caller's usual `unavailable` answer."""
        rec = self.table.get(name)
        if rec is None or not rec.spec.on_demand or rec.state == State.RUNNING:
            return
        if rec.state == State.IDLE and not self.stopping:
            self.log("info", f"worker {name}: first use ({why}); starting it")
            self._start(rec)
        if rec.state not in WAKING_STATES:
            return
        bound = rec.spec.liveness.start_timeout_ms / 1000 + 1
        came = await rec.until(lambda s: s not in WAKING_STATES, bound)
        if rec.state == State.RUNNING:
            return
        if self.table.get(name) not in (rec, None) and not self.stopping:  # a reload replaced it meanwhile
            return await self.wake(name, why)
        last = f"; last error: {rec.last_error}" if rec.last_error else ""
        what = f"is not ready after {bound:g}s (it is {rec.state.value}" if not came else \
            f"could not start (it is {rec.state.value}"
        raise MethodError("UNAVAILABLE", f"the {name} worker (started on first use) {what}{last})",
                          retryable=rec.state != State.FAILED)

    def _start(self, rec: WorkerRecord, event: Event = Event.START) -> None:
        rec.cancel_timer()
        rec.retry_at = None
        rec.fire(event)
        rec.begin_spawn()
        settled = self._fs_settled is not None and self._fs_settled.is_set()
        ahead = not settled and self._ahead_of_boot()
        asked = self._ask_fork(rec.spec) if settled or ahead else None
        self.spawn_task(self._spawn(rec, asked, ahead), f"spawn of {rec.name}")

    async def _spawn(self, rec: WorkerRecord, asked: SpawnAsk | None = None, ahead: bool = False) -> None:
        """Fork one incarnation of `rec`; any error on the way is a failed start for the restart policy.

        With a fork server up, `_start` has already sent the request (`asked`): a restart's request leaves in the
        same loop step as the exit that caused it, ahead of the log flush and whatever else is queued. A request
        sent `ahead` of the first fork server's boot that it cannot fork (it never booted, or lacks the kind) is
        no failed start: it is asked again as any spawn waiting for a fork server is."""
        assert self._fs_settled is not None
        while True:
            if asked is None:
                while not self._fs_settled.is_set():  # set, then cleared again when one is declared down and replaced
                    await self._fs_settled.wait()
                if self._unprovided(rec):
                    return
                asked = self._ask_fork(rec.spec)
            try:
                if isinstance(asked, Exception):
                    raise asked
                pid, out_r, err_r = await self._forked(*asked)
                break
            except Exception as exc:
                if ahead and rec.spawning and not self.stopping:
                    asked, ahead = None, False
                    continue
                self._spawn_failed(rec, exc)
                return
        rec.end_spawn()
        rec.spawn_error = None
        rec.blocked_on = None
        inc = Incarnation(pid=pid, started=time.monotonic())
        inc.done = asyncio.get_running_loop().create_future()
        rec.previous, rec.current = rec.current, inc
        self.table.by_pid[pid] = rec
        inc.pipes = [OutputPipe(out_r, lambda text: self._output_line(rec, inc, "info", text)),
                     OutputPipe(err_r, lambda text: self._output_line(rec, inc, "error", text))]
        self.log("info", f"worker {rec.name} spawned (pid {pid})")
        self._arm(rec, inc, rec.spec.liveness.start_timeout_ms / 1000)
        early, rec.early = rec.early, []
        for msg in early:
            if sender_pid(msg) == pid:
                self.router.dispatch(rec, msg)
        status = self._early_exits.pop(pid, None)
        if status is not None:
            self._on_exit(pid, status)

    def _unprovided(self, rec: WorkerRecord) -> bool:
        """A worker started before the fork server said which kinds this build provides (the boot spawns go out
        first), of a kind it does not: dropped as `wanted_specs` drops one once the kinds are known, never forked
        into a crash loop."""
        if self.available_kinds is None or rec.spec.kind in self.available_kinds:
            return False
        self.table.records.pop(rec.name, None)
        self.specs = [s for s in self.specs if s.name != rec.name]
        if rec.name not in self._skipped:
            self._skipped.add(rec.name)
            self.log("warn", f"worker {rec.name} (kind {rec.spec.kind}) is not provided by this build; skipped")
        self.readiness()
        return True

    def _ask_fork(self, spec: WorkerSpec) -> SpawnAsk:
        """Send the fork server a spawn request with the worker's output pipes: (the pid's future, stdout reader,
        stderr reader), or the error that stopped it (nothing stays open then)."""
        fds: list[int] = []
        try:
            if self.fs_problem is not None:
                raise ForkServerError(f"no fork server: {self.fs_problem}")
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            fds += (out_r, out_w)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            fds += (err_r, err_w)
            fut = self.fs.spawn(spec.name, spec.kind, spec.options, self.paths.bus_endpoint,
                                spec.liveness.heartbeat_interval_ms, out_w, err_w)
        except Exception as exc:
            for fd in fds:
                os.close(fd)
            return exc
        os.close(out_w)
        os.close(err_w)
        return fut, out_r, err_r

    @staticmethod
    async def _forked(fut: asyncio.Future[int], out_r: int, err_r: int) -> tuple[int, int, int]:
        """(pid, stdout reader, stderr reader) of the new worker; the readers are closed if it fails."""
        try:
            return await fut, out_r, err_r
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise

    def _spawn_failed(self, rec: WorkerRecord, exc: Exception) -> None:
        rec.end_spawn()
        rec.early = []
        rec.settled = True
        if isinstance(exc, OSError) and exc.errno in fdlimit.EXHAUSTED:
            rec.blocked_on = "descriptors"
        elif isinstance(exc, ForkServerError):
            rec.blocked_on = "fork server"
        else:
            rec.blocked_on = None
        what = str(exc) if isinstance(exc, ForkServerError) else f"{type(exc).__name__}: {exc}"
        rec.spawn_error = f"spawn failed: {what}"
        self.log("error", f"worker {rec.name}: {rec.spawn_error}")
        if rec.state == State.STARTING:
            rec.fire(Event.EXIT)
            self._after_crash(rec, ran_for=None)
        elif rec.state == State.STOPPING:
            rec.fire(Event.EXIT)

    def _output_line(self, rec: WorkerRecord, inc: Incarnation, level: str, text: str) -> None:
        if level == "error":
            inc.errors.append(self.sink.redact(text))
        self._write_log(level, text, subsystem="stderr" if level == "error" else "stdout", worker=rec.name)

    # ================================================================ manage: what workers say

    def _worker_message(self, rec: WorkerRecord, msg: dict[str, Any]) -> None:
        """hello, ready, hb and log, as the router hands them over: readiness, liveness and stats; and a request
        sent before the worker's spawn was recorded."""
        kind = msg["kind"]
        inc = rec.current
        if rec.spawning and kind in (Kind.HELLO, Kind.READY, Kind.HB, Kind.REQ):
            # The worker can speak before the fork server's `spawned` reply is read: replay it then.
            if len(rec.early) < EARLY_MAX:
                rec.early.append(msg)
            elif kind == Kind.REQ:
                self.router.refuse(rec, msg, MethodError("UNAVAILABLE", f"worker {rec.name} is still being "
                                                         f"spawned and {EARLY_MAX} messages already wait",
                                                         retryable=True))
            return
        if inc is None or inc.exit is not None:
            if kind == Kind.LOG:
                self._worker_log(rec, None, msg)
            return
        if kind == Kind.HB:
            if msg.get("pid") != inc.pid:
                return
            now = time.monotonic()
            stats = msg.get("stats")
            if isinstance(stats, dict):
                cpu, prev_cpu = stats.get("cpu"), inc.stats.get("cpu")
                if isinstance(cpu, (int, float)) and isinstance(prev_cpu, (int, float)) and inc.last_hb:
                    inc.cpu_pct = round(100 * max(0.0, cpu - prev_cpu) / max(1e-3, now - inc.last_hb), 1)
                inc.stats = stats
                rec.history.offer(now, stats.get("rss"), inc.cpu_pct)
                self._check_rss(rec, inc)
            inc.last_hb = now
        elif kind == Kind.LOG:
            self._worker_log(rec, inc, msg)
        elif kind == Kind.READY:
            if msg.get("pid") == inc.pid and rec.state == State.STARTING:
                now = time.monotonic()
                inc.ready_at = inc.last_hb = now
                rec.ever_ready = rec.settled = True
                methods = msg.get("methods")
                rec.methods = frozenset(m for m in methods if isinstance(m, str)) if isinstance(methods, list) \
                    else frozenset()
                rec.fire(Event.READY)
                self.host.tell_listeners(rec.name)
                if self.core is not None:
                    self.core.methods.worker_ready(rec.name)
                self.log("info", f"worker {rec.name} ready (pid {inc.pid}, "
                                 f"{(now - inc.started) * 1000:.1f} ms after spawn)")
                self._arm(rec, inc, rec.spec.liveness.heartbeat_timeout_ms / 1000)
        elif kind == Kind.HELLO and msg.get("pid") == inc.pid:
            inc.last_hb = time.monotonic()

    def _worker_log(self, rec: WorkerRecord, inc: Incarnation | None, msg: dict[str, Any]) -> None:
        level = str(msg.get("level", "info"))[:8]
        text = str(msg.get("msg", ""))[:LINE_LIMIT]
        ts = msg.get("ts")
        if inc is not None and level in ("error", "critical", "fatal"):
            inc.errors.append(self.sink.redact(text.splitlines()[-1] if text else text))
        self._write_log(level, text, subsystem=str(msg.get("subsystem", "worker"))[:64], worker=rec.name,
                        ts=ts if isinstance(ts, (int, float)) else None)

    # ================================================================ manage: liveness

    def _arm(self, rec: WorkerRecord, inc: Incarnation, delay: float) -> None:
        rec.cancel_timer()
        rec.timer = asyncio.get_running_loop().call_later(delay, self._check_liveness, rec, inc)

    def _check_liveness(self, rec: WorkerRecord, inc: Incarnation) -> None:
        rec.timer = None
        if inc is not rec.current or inc.exit is not None or inc.kill_reason:
            return
        now = time.monotonic()
        live = rec.spec.liveness
        if rec.state == State.STARTING:
            self._kill(rec, inc, f"did not say ready within {live.start_timeout_ms / 1000:g}s")
        elif rec.state == State.RUNNING:
            timeout = live.heartbeat_timeout_ms / 1000
            last = inc.last_hb or inc.ready_at or inc.started
            if now - last >= timeout:
                self._kill(rec, inc, f"no heartbeat for {now - last:.1f}s (bound {timeout:g}s)")
            else:
                self._arm(rec, inc, last + timeout - now)

    def _check_rss(self, rec: WorkerRecord, inc: Incarnation) -> None:
        limit = rec.spec.liveness.rss_limit_mb
        rss = inc.stats.get("rss")
        if limit and isinstance(rss, int) and rss > limit * 1024 * 1024 and not inc.kill_reason:
            self._kill(rec, inc, f"RSS {rss / 1048576:.0f} MB over the {limit:g} MB ceiling")

    def _kill(self, rec: WorkerRecord, inc: Incarnation, reason: str) -> None:
        inc.kill_reason = reason
        self._stability("worker.killed", worker=rec.name, pid=inc.pid, reason=reason)
        self.log("warn", f"worker {rec.name} (pid {inc.pid}): {reason}; killing it")
        self.fs.signal(inc.pid, signal.SIGKILL)

    # ================================================================ standbys

    def _standbys_now(self) -> int:
        """How many standbys the fork server keeps now: from boot on, or for a while after an unplanned exit."""
        tuning = self.settings.fork_server
        return tuning.standbys if tuning.standby_at_boot or time.monotonic() < self._standbys_until else 0

    def _arm_standbys(self) -> None:
        """Exits come in runs (a bad upstream, a crash loop): after one, keep standbys until `standbyKeepMs` pass
        without another. Called after the respawn's request left, so the standby never delays it."""
        tuning = self.settings.fork_server
        if tuning.standby_at_boot or not tuning.standbys:
            return
        armed = time.monotonic() < self._standbys_until
        self._standbys_until = time.monotonic() + tuning.standby_keep_ms / 1000
        if not armed:
            self.fs.standby(tuning.standbys, after_s=0.0)
        if self._standbys_release is None:
            self._standbys_release = asyncio.get_running_loop().call_later(
                tuning.standby_keep_ms / 1000, self._release_standbys)

    def _release_standbys(self) -> None:
        self._standbys_release = None
        left = self._standbys_until - time.monotonic()
        if left > 0:
            self._standbys_release = asyncio.get_running_loop().call_later(left, self._release_standbys)
            return
        if not self.settings.fork_server.standby_at_boot:
            self.fs.standby(0)

    def refresh_standbys(self) -> None:
        """The settings' `forkServer` changed (reload): tell the fork server what they mean now."""
        self.fs.standby(self._standbys_now(), after_s=0.0)

    # ================================================================ reap

    def _on_exit(self, pid: int, status: int) -> None:
        """A worker's exit, as the fork server reports it. A worker that dies at once can have its exit read
        in the same batch as its `spawned` reply, before `_spawn` has recorded the pid: kept until it has."""
        rec = self.table.by_pid.pop(pid, None)
        if rec is None:
            if any(r.spawning for r in self.table):
                self._early_exits[pid] = status
                while len(self._early_exits) > EARLY_EXITS_MAX:
                    del self._early_exits[next(iter(self._early_exits))]
            return
        inc = rec.current
        if inc is None or inc.pid != pid:
            return
        now = time.monotonic()
        inc.exit = describe_status(status) if status >= 0 else {"code": None, "signal": None,
                                                                "text": "lost with the fork server"}
        inc.exit["atS"] = round(time.time(), 3)
        rec.cancel_timer()
        rec.settled = True
        self.router.worker_gone(rec.name, f"the {rec.name} worker exited ({inc.exit['text']}) before answering")
        self.host.worker_gone(rec.name)
        if inc.done is not None and not inc.done.done():
            inc.done.set_result(inc.exit)
        if rec.state == State.STOPPING:
            rec.fire(Event.EXIT)
            self.log("info", f"worker {rec.name} stopped (pid {pid}, {inc.exit['text']})")
            return
        rec.fire(Event.EXIT)
        ran_for = now - inc.ready_at if inc.ready_at else None
        why = inc.last_error

        def said() -> None:
            self._stability("worker.exited", worker=rec.name, pid=pid, exit=inc.exit["text"], reason=why,
                            ranForMs=round(ran_for * 1000) if ran_for is not None else None)
            self.log("warn", f"worker {rec.name} exited (pid {pid}, {inc.exit['text']})"
                             + (f": {why}" if why else ""))

        self._after_crash(rec, ran_for, said)
        if not self.stopping and rec.wanted:
            self._arm_standbys()

    def _after_crash(self, rec: WorkerRecord, ran_for: float | None, said: Callable[[], None] = lambda: None) -> None:
        """The restart policy's answer to an exit; `said` records the exit, after an immediate respawn's request
        has left (the log line costs more than the request) and before anything else is logged."""
        if self.stopping or not rec.wanted:
            said()
            rec.fire(Event.STOP)
            return
        now = time.monotonic()
        delay = rec.policy.on_exit(now, ran_for)
        if delay is not None and delay <= 0:
            rec.fire(Event.RETRY_LATER)
            self._retry(rec)
            said()
            return
        said()
        loop = asyncio.get_running_loop()
        if delay is None:
            rec.fire(Event.GIVE_UP)
            retry = rec.policy.failed_retry
            rec.retry_at = now + retry
            lim = rec.spec.restart
            self._stability("worker.failed", worker=rec.name, restarts=rec.restarts)
            self.log("error", f"worker {rec.name} is crash-looping ({lim.crash_loop_max} exits within "
                              f"{lim.crash_loop_window_ms / 1000:g}s); marked failed, next try in {retry:g}s")
            rec.timer = loop.call_later(retry, self._retry, rec)
            return
        rec.fire(Event.RETRY_LATER)
        rec.retry_at = now + delay
        rec.timer = loop.call_later(delay, self._retry, rec)

    def _retry(self, rec: WorkerRecord) -> None:
        rec.timer = None
        if rec.state not in RETRY_STATES or self.stopping:
            return
        rec.restarts += 1
        self._start(rec, Event.RETRY)

    # ================================================================ stop

    async def stop_worker(self, rec: WorkerRecord) -> None:
        """The stop ladder: `stop` on the bus, then SIGTERM, then SIGKILL to the group, each bounded."""
        rec.cancel_timer()
        rec.retry_at = None
        if rec.state in UNHEALTHY_STATES or rec.state == State.IDLE:
            rec.fire(Event.STOP)
            return
        if rec.state not in (State.STARTING, State.RUNNING):
            return
        rec.fire(Event.STOP)
        await rec.spawn_settled(5)
        inc = rec.current
        if rec.state != State.STOPPING or inc is None or inc.exit is not None or inc.done is None:
            if rec.state == State.STOPPING:
                rec.fire(Event.EXIT)
            return
        ladder = rec.spec.stop
        self.router.send(rec.name, {"kind": Kind.STOP})
        for sig, bound in ((signal.SIGTERM, ladder.bus_timeout_ms / 1000),
                           (signal.SIGKILL, ladder.term_timeout_ms / 1000),
                           (None, 5.0)):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(inc.done), bound)
                return
            if sig is None:
                break
            self.log("warn", f"worker {rec.name} (pid {inc.pid}) did not stop within {bound:g}s; "
                             f"sending {signal.Signals(sig).name}")
            self.fs.signal(inc.pid, sig)
        self.log("error", f"worker {rec.name} (pid {inc.pid}) survived SIGKILL; giving up on it")

    async def shutdown(self) -> None:
        self.stopping = True
        self.notifier.stopping("stopping every worker")
        self.log("info", "stopping every worker")
        if self.gateway is not None:
            self.gateway.draining = True
        if self.core is not None:
            await self.core.hub.shutdown("gateway stopping")
        await asyncio.gather(*(self.stop_worker(r) for r in self.table), return_exceptions=True)
        await self._teardown()

    async def _teardown(self) -> None:
        self.reloader.stop()
        if self.gateway is not None:
            await self.gateway.stop()
        if self.core is not None:
            self.core.close()
        if self.control is not None:
            await self.control.close()
        self.fs.close()
        for rec in self.table:
            for inc in (rec.current, rec.previous):
                for pipe in inc.pipes if inc else ():
                    pipe.drain()
        self.router.close()
        self.sink.report_drops()
        self.log("info", "gateway stopped")
        self.sink.close()
        self.notifier.close()

    # ================================================================ reload

    def wanted_specs(self, cfg: dict[str, Any], settings: SupervisorSettings) -> list[WorkerSpec]:
        """The workers the config asks for, less kinds this build does not provide (said once each)."""
        if self.opts.workers is not None:
            return list(self.opts.workers)
        specs = [replace(s, options={**s.options, "gatewayPort": self.opts.port, "stateDir": str(self.paths.state_dir)})
                 if s.kind == "browser" else s for s in worker_specs(cfg, settings)]  # its CDP range follows the port
        if self.available_kinds is None:
            return specs
        kept = []
        for spec in specs:
            if spec.kind in self.available_kinds:
                kept.append(spec)
            elif spec.name not in self._skipped:
                self._skipped.add(spec.name)
                self.log("warn", f"worker {spec.name} (kind {spec.kind}) is not provided by this build; skipped")
        return kept

    async def apply_worker_plan(self, plan: ReloadPlan) -> None:
        """Stop, respawn and start exactly the workers a plan names; the others keep their pid."""
        for name in plan.stop:
            rec = self.table.get(name)
            if rec is not None:
                rec.wanted = False
        await asyncio.gather(*(self.stop_worker(self.table.records[n]) for n in plan.stop if n in self.table.records))
        for name in plan.stop:
            self.table.records.pop(name, None)
        await asyncio.gather(*(self._respawn(spec) for spec in plan.respawn))
        for spec in plan.start:
            self._bring_up(self.table.add(spec))
        self.specs = [*(s for s in self.specs if s.name not in plan.stop and
                        s.name not in {r.name for r in plan.respawn}), *plan.respawn, *plan.start]

    async def _respawn(self, spec: WorkerSpec) -> None:
        """A changed spec: the worker is restarted with it, unless it is on-demand and not running (then the new
        spec waits for its first use)."""
        rec = self.table.records[spec.name]
        was_up = rec.state not in (State.IDLE, State.STOPPED)
        await self.stop_worker(rec)
        fresh = self.table.add(spec)
        fresh.restarts = rec.restarts
        fresh.history = rec.history
        fresh.previous = rec.current
        if was_up or fresh.state != State.IDLE:
            self._start(fresh)
        else:
            fresh.settled = True

    async def rebind(self, gateway_cfg: dict[str, Any], port: int) -> None:
        """Move the listener in place: clients get `shutdown` and 1012, workers are not touched."""
        assert self.core is not None and self.gateway is not None
        try:
            auth = AuthConfig.from_config(gateway_cfg, os.environ)
            host = resolve_host(gateway_cfg)
            guard(host, port, has_shared_secret=bool(auth.token or auth.password) and not auth.generated)
            from openclaw_sup.gateway.tls import server_tls

            ssl_context = server_tls(gateway_cfg, self.paths.state_dir)
        except (ValueError, BindRefused) as exc:
            self.log("error", f"config reload: listener not moved: {exc}")
            return
        await self.core.hub.shutdown("gateway restarting", restart_expected_ms=500)
        await self.gateway.stop()
        self.core.set_auth(auth)
        old_opts = self.opts
        new_opts = replace(self.opts, host=host, port=port, auth=auth, ssl_context=ssl_context)
        new_server = self._gateway_server(new_opts)
        try:
            await new_server.start()
            self.opts = new_opts
            self.gateway = new_server
            if self.gateway_lock is not None:
                self.gateway_lock.renew(port)
            self.log("info", f"gateway listening on {new_opts.url} (moved from {old_opts.url})")
        except Exception as exc:
            self.log("error", f"config reload: cannot bind {new_opts.url} ({exc}); staying on {old_opts.url}")
            self.gateway = self._gateway_server(old_opts)
            await self.gateway.start()
        self.core.hub.reopen()

    def apply_logging(self, logging_cfg: dict[str, Any]) -> None:
        """`logging.*` in place: a new file or size limit takes effect with the next record."""
        file = logging_cfg.get("file")
        self.sink.retarget(Path(file).expanduser() if file else None,
                           int(logging_cfg.get("maxFileBytes") or 104_857_600))
        self.sink.redact = Redactor(secrets_in(self.gateway_cfg, self.opts.auth))

    async def restart_all(self, notify_clients: bool = False) -> None:
        """In-place restart (SIGUSR2, SIGUSR1, `gateway.restart.request`, a reload that needs one): the same process
        and port; a fresh config, fork server and set of workers; a new gateway generation in the upstream lock.

        Nothing read is dropped. WebSocket clients connected before it are answered what they already sent (new
        requests on them get upstream's retryable `unavailable during gateway restart`), then `shutdown` and 1012,
        as upstream. Requests already at a worker get RESTART_DRAIN_S to finish; a request for a worker made during
        the restart (a new connection, HTTP) waits until that worker is back, at most RESTART_SETTLE_S.
        """
        async with self.exclusive():
            self.notifier.reloading()
            try:
                await self.restart_in_place(notify_clients)
            finally:
                self.notifier.ready(self.status_summary())

    async def restart_in_place(self, notify_clients: bool) -> None:
        """The in-place restart itself; the caller holds `exclusive()` (restart_all, a reload that needs one)."""
        assert self._fs_settled is not None
        self.log("info", "restarting every worker in place")
        t0 = time.monotonic()
        gate = asyncio.Event()
        retired = self.core.hub.retire() if self.core is not None and notify_clients else []
        try:
            await self._drain(lambda: not self.router.outstanding and not any(c.busy for c in retired), RESTART_DRAIN_S)
            if self.core is not None and retired:
                await self.core.hub.close_retired(retired, "gateway restarting", restart_expected_ms=1000)
            self._restarting = gate
            await self._drain(lambda: not self.router.outstanding, RESTART_DRAIN_S)
            loaded = self.reloader.load()
            if isinstance(loaded, str):
                self.log("error", f"config reload skipped (invalid config): {loaded}; restarting with the last good "
                                  "one")
            else:
                self.gateway_cfg, self.settings = loaded
            for rec in self.table:
                rec.wanted = False
            await asyncio.gather(*(self.stop_worker(r) for r in self.table))
            old = self.fs
            old._on_lost = None
            old.close()
            self._new_fork_server()
            await self._fs_settled.wait()
            self.table = ProcessTable(self._state_changed)
            self.specs = self.wanted_specs(self.gateway_cfg, self.settings)
            for spec in self.specs:
                self._bring_up(self.table.add(spec))
            await self._drain(lambda: all(r.settled or r.state == State.FAILED for r in self.table),
                              max((s.liveness.start_timeout_ms / 1000 for s in self.specs), default=0.0))
        finally:
            self._restarting = None
            gate.set()
        if self.gateway_lock is not None:
            self.gateway_lock.renew(self.opts.port)
        states = self.readiness()["workers"]
        self._stability("gateway.restart", durationMs=round((time.monotonic() - t0) * 1000),
                        workers=len(states), running=sum(v == State.RUNNING for v in states.values()))
        self.log("info", f"in-place restart done in {time.monotonic() - t0:.2f}s (pid {os.getpid()}, port "
                         f"{self.opts.port}): {sum(v == State.RUNNING for v in states.values())}/{len(states)} "
                         "workers running")

    @staticmethod
    async def _drain(done: Any, bound_s: float) -> None:
        """Wait until `done()` or `bound_s` seconds."""
        deadline = time.monotonic() + bound_s
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # ================================================================ gateway host (asked through SupervisorHost)

    def _gateway_server(self, opts: RunOptions) -> GatewayServer:
        return GatewayServer(opts.host, opts.port, self.readiness, UPSTREAM_VERSION, self.core,
                             ssl_context=opts.ssl_context, limits=self.settings.limits)

    def _fit_port_to_fds(self) -> None:
        """Each second: the port's share of descriptors is what the soft limit leaves once everything else in
        use and a reserve are set aside; with room again, workers whose spawn ran out of them start now."""
        in_use = fdlimit.open_fds()
        if in_use < 0 or self.gateway is None:
            return
        limit = fdlimit.soft_limit()
        admission = self.gateway.admission
        admission.set_capacity(fdlimit.connection_capacity(limit, in_use, admission.in_use(), len(self.table.records),
                                                           self.settings.limits.max_connections))
        self.fds = {"open": in_use, "limit": limit}
        if self.spares is not None:
            self.spares.refill()
        if in_use + 2 * fdlimit.RESERVE_PER_WORKER < limit:
            self._fs_retry_now.set()
            self._unblock("descriptors")

    def worker_view(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [r.snapshot(now) for r in self.table]

    async def restart_settled(self) -> None:
        """During an in-place restart, wait until it is done (at most RESTART_SETTLE_S); at once otherwise."""
        gate = self._restarting
        if gate is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gate.wait(), RESTART_SETTLE_S)

    def request_restart(self, reason: str, delay_ms: int) -> dict[str, Any]:
        """Schedule an in-place restart; one already scheduled or running absorbs this one (`coalesced`)."""
        restart = {"pid": os.getpid(), "reason": reason, "delayMs": delay_ms}
        if self._restart_scheduled or self._restarting is not None:
            self.log("info", f"restart requested ({reason}); one is already under way")
            return {"ok": True, "status": "coalesced", "scheduled": True, "pid": os.getpid(),
                    "restart": {**restart, "coalesced": True}}
        self.log("info", f"restart requested ({reason}); restarting in place in {delay_ms} ms")
        self._restart_scheduled = True

        def begin() -> None:
            self._restart_scheduled = False
            if not self.stopping:
                self.spawn_task(self.restart_all(notify_clients=True), "requested restart")

        asyncio.get_running_loop().call_later(delay_ms / 1000, begin)
        return {"ok": True, "status": "scheduled", "scheduled": True, "delayMs": delay_ms, "pid": os.getpid(),
                "restart": {**restart, "coalesced": False}}

    async def control_worker(self, name: str, action: str) -> dict[str, Any]:
        """restart | stop | start one worker as an operator asked (the dashboard's buttons, `workers.*`).

        Serialised with reloads and in-place restarts. A start resets the crash-loop count, so a `failed`
        worker gets a fresh chance at once; a stopped worker stays stopped until started or respawned by a reload.
        """
        async with self.exclusive():
            rec = self.table.get(name)
            if rec is None:
                raise MethodError("INVALID_REQUEST", f"no worker named {name!r} (workers: "
                                                     f"{', '.join(self.table.records) or 'none'})")
            state = rec.state
            if action == "stop":
                if state == State.STOPPED:
                    raise MethodError("INVALID_REQUEST", f"worker {name} is already stopped")
                await self.stop_worker(rec)
            elif action in ("start", "restart"):
                if action == "start" and state in LIVE_STATES:
                    raise MethodError("INVALID_REQUEST", f"worker {name} is {state.value}; use workers.restart")
                if action == "restart" and state not in (State.STARTING, State.RUNNING):
                    raise MethodError("INVALID_REQUEST", f"worker {name} is {state.value}; use workers.start")
                if state == State.CRASHED:
                    raise MethodError("UNAVAILABLE", f"worker {name} has just exited; try again in a moment",
                                      retryable=True)
                if action == "restart":
                    await self.stop_worker(rec)
                rec.policy.reset()
                self._start(rec, Event.RETRY if rec.state in RETRY_STATES else Event.START)
            else:
                raise MethodError("INVALID_REQUEST", f"unknown worker action {action!r} (restart, stop, start)")
            self.log("info", f"worker {name}: {action} asked by an operator (was {state.value})")
            return {"ok": True, "name": name, "action": action, "state": rec.state.value}

    def _state_changed(self) -> None:
        """Worker states feed the `health` broadcast, coalesced over 50 ms; the last first start ends `starting`."""
        if self.core is not None:
            self.core.methods.workers_changed()
        if not self._started:
            self.readiness()
        if self._health_scheduled or self.core is None:
            return
        self._health_scheduled = True

        def push() -> None:
            self._health_scheduled = False
            if self.stopping:
                return
            self.notify_state()
            if self.core is not None:
                self.core.hub.health_changed(self.core.methods.health_snapshot(fresh=True))

        asyncio.get_running_loop().call_later(0.05, push)

    # ================================================================ status

    def status_summary(self) -> str:
        return status_line(self.worker_view(), self.opts.url)

    def notify_state(self) -> None:
        """Tell the service manager: `READY=1` once the port is bound and every worker has settled, then `STATUS=`."""
        if not self.notifier.enabled or self.stopping:
            return
        if not self.notifier.ready_sent:
            if self.booted and self.readiness()["started"]:
                self.notifier.ready(self.status_summary())
            else:
                self.notifier.status("starting: " + self.status_summary())
        else:
            self.notifier.status(self.status_summary())

    def readiness(self) -> dict[str, Any]:
        states = {r.name: r.state.value for r in self.table}
        pending = [n for n, s in states.items() if s not in SERVING_STATES]
        if not self._started and self.booted:  # latched: once started, whatever the workers do later
            self._started = all(r.settled or r.state == State.FAILED for r in self.table)
            if self._started and self._loop is not None:  # held connects answered, READY=1 sent, now
                if self.core is not None:
                    self._loop.call_soon(self.core.release_held)
                self._loop.call_soon(self.notify_state)
        started = self._started
        return {"started": started, "ready": started and not pending, "pending": pending or None,
                "workers": states}

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        ru = os.times()
        bus = self.router.bus
        return {
            "ok": True,
            "supervisor": {
                "pid": os.getpid(), "version": __version__, "profile": self.paths.label,
                "stateDir": str(self.paths.state_dir), "configPath": str(self.paths.config_path),
                "uptimeS": round(now - self.started, 3), "rss": _own_rss(),
                "cpuS": round(ru.user + ru.system, 3), "forkServerPid": self.fs.pid,
                "listen": self.opts.url if self.opts.listen else f"node host -> {self.opts.url}",
                "bus": self.paths.bus_endpoint,
                "ports": {"gateway": self.opts.port, **derived_ports(self.opts.port)},
                "logFile": str(self.sink.path) if self.sink.path else None,
                "busReceived": bus.received if bus else 0,
                "busDropped": bus.dropped if bus else 0, "stopping": self.stopping,
                "started": self.readiness()["started"],
                "booted": self.booted,
                "forkServer": {"pid": self.fs.pid, "problem": self.fs_problem, "standbys": self.fs.standby_pids,
                               "standbysWanted": self._standbys_now()},
                "port": self.gateway.admission.snapshot() if self.gateway is not None else None,
                "fds": {**self.fds, "spares": self.spares.held if self.spares else 0,
                        "sparesLent": self.spares.lent if self.spares else 0},
            },
            "workers": [r.snapshot(now) for r in self.table],
        }

    async def _on_control(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "status":
            return self.snapshot()
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "reload":
            decision = await self.reloader.reload("control")
            return {"ok": decision is not None, "plan": decision.summary() if decision else None,
                    "error": None if decision else "config reload skipped (invalid config); see the log"}
        return {"ok": False, "error": f"unknown control op {op!r} (known: status, ping, reload)"}

    # ================================================================ logging

    def log(self, level: str, message: str, subsystem: str = "supervisor") -> None:
        """The supervisor's own records are never throttled (they are few, and they are the lifecycle);
        the gateway's, driven by what clients send, are throttled and folded like any other source."""
        self._write_log(level, message, subsystem=subsystem, keep=subsystem == "supervisor")

    def _stability(self, type_: str, **fields: Any) -> None:
        if self.core is not None:
            self.core.stability.record(type_, **fields)

    def _write_log(self, level: str, message: str, **kw: Any) -> None:
        self.sink.write(level, message, **kw)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _library_log(self, level: str, message: str, subsystem: str) -> None:
        """Library output (supervisor/liblog.py), from whichever thread produced it."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._write_log(level, message, subsystem=subsystem)
        else:
            self._loop.call_soon_threadsafe(functools.partial(self._write_log, level, message, subsystem=subsystem))

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.sink.flush()

    def _check_config_mode(self) -> None:
        """A config others can read is said once (per mode seen), not tightened: `doctor --fix` does that."""
        mode = loose_mode(self.paths.config_path)
        if mode is not None and mode != self._loose_config:
            self.log("warn", f"config file {self.paths.config_path} holds secrets but others may read it (mode "
                             f"{mode:04o}); run `openclaw-sup doctor --fix` or `chmod 600` it")
        self._loose_config = mode

    def _every_second(self) -> None:
        """Housekeeping only (log summaries); restarts are never decided here."""
        if self.stopping:
            return
        self.router.report_bad()
        self.sink.report_drops()
        self._check_config_mode()
        self._fit_port_to_fds()
        self._reap_adopted()
        self.notify_state()
        self._sample_self(time.monotonic())
        if self.core is not None and self.core.release_idle():
            filepages.settle()
        asyncio.get_running_loop().call_later(1.0, self._every_second)

    def _sample_self(self, now: float) -> None:
        """The supervisor's own RSS/CPU sample for the dashboard's sparklines (every 10 s)."""
        if not self.self_history.due(now):
            return
        ru = os.times()
        cpu, last = ru.user + ru.system, self._cpu_mark
        self._cpu_mark = (now, cpu)
        pct = round(100 * max(0.0, cpu - last[1]) / max(1e-3, now - last[0]), 1) if last else None
        self.self_history.offer(now, _own_rss(), pct)

