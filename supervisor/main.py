"""`openclaw-sup gateway`: read the config, fork the fork server, take the state lock, run.

Order matters: the fork server is forked before anything creates a thread, an event loop or a ZeroMQ
context, so every worker starts from a clean, single-threaded image; and as soon as the config says which
workers run, so its preloading of their kinds overlaps the rest of this process's start (auth, TLS, locks,
state checks, the gateway's imports).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openclaw_sup.argformat import HelpFormatter
from openclaw_sup.config.document import Config, load_config, start_block_reason
from openclaw_sup.config.loader import ConfigError
from openclaw_sup.config.paths import DEFAULT_PORT, DEV_PORT, ProfilePaths, ensure_private_dir, resolve_or_report
from openclaw_sup.config.settings import SupervisorSettings, load_settings

if TYPE_CHECKING:
    from openclaw_sup.supervisor.forkserver import ForkServer
    from openclaw_sup.supervisor.sdnotify import Notifier

EXIT_CONFIG = 78

USAGE = """openclaw-sup gateway [--port N] [--verbose] [--profile NAME | --dev] [--allow-unconfigured]

Runs the gateway in the foreground: the supervisor binds the port and forks one worker per channel
account, plus the scheduler, browser and agent workers.

Other gateway commands: openclaw-sup gateway status | call | install | uninstall | start | stop | restart
(each has --help)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="openclaw-sup gateway", usage=USAGE, formatter_class=HelpFormatter)
    p.add_argument("--port", type=int, help="port for WebSocket and HTTP (default 18789, --dev 19001)")
    p.add_argument("--verbose", action="store_true", help="mirror the log to stdout")
    p.add_argument("--profile", help="isolated profile: state in ~/.openclaw-NAME")
    p.add_argument("--dev", action="store_true", help="the dev profile: ~/.openclaw-dev, port 19001")
    p.add_argument("--allow-unconfigured", action="store_true",
                   help="start even when gateway.mode is not local")
    p.add_argument("--force", action="store_true", help="stop a gateway already listening on the port first")
    args = p.parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        p.error(f"--port {args.port}: must be between 1 and 65535")
    return args


def resolve_port(cli: int | None, cfg: dict[str, Any], dev: bool) -> int:
    if cli:
        return cli
    env = os.environ.get("OPENCLAW_GATEWAY_PORT")
    if env:
        try:
            return int(env)
        except ValueError:
            raise ConfigError(f"OPENCLAW_GATEWAY_PORT={env!r} is not a port number") from None
    port = (cfg.get("gateway") or {}).get("port")
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    return DEV_PORT if dev else DEFAULT_PORT


def write_dev_config(paths: ProfilePaths) -> None:
    """`--dev` with no config: write the minimal local one, as upstream's `gateway --dev` does."""
    if paths.config_path.exists():
        return
    ensure_private_dir(paths.config_path.parent)
    tmp = paths.config_path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        token = secrets.token_urlsafe(24)
        f.write('{\n  "gateway": { "mode": "local", "bind": "loopback", "auth": { "mode": "token", "token": "'
                + token + '" } },\n  "agents": { "defaults": { "model": "echo/echo" } }\n}\n')
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, paths.config_path)


def set_child_subreaper() -> None:
    """Orphans of a dying fork server re-parent to us (and are reaped) rather than to init."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    paths = resolve_or_report(args.profile, args.dev)
    if paths is None:
        return 2
    try:
        if paths.dev:
            write_dev_config(paths)
        config = load_config(paths)
        cfg = config.data
        settings = load_settings(paths)
        port = resolve_port(args.port, cfg, paths.dev)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for notice in config.report.notices:
        print(f"config notice: {notice.line().strip()}", file=sys.stderr)
    blocked = start_block_reason(config, args.allow_unconfigured)
    if blocked:
        print(blocked, file=sys.stderr)
        return EXIT_CONFIG

    from openclaw_sup.config.plan import worker_specs
    from openclaw_sup.supervisor import signalfd
    from openclaw_sup.supervisor.fdlimit import raise_soft_limit
    from openclaw_sup.supervisor.forkserver import ForkServer
    from openclaw_sup.supervisor.sdnotify import Notifier

    raise_soft_limit(settings.limits.nofile)  # before the fork: the workers get the same limit
    notifier = Notifier.from_env()  # before the fork: children must not inherit NOTIFY_SOCKET
    # An on-demand kind (the browser) is imported by the fork server on its first use: one never used costs nothing.
    kinds = tuple(sorted({spec.kind for spec in worker_specs(cfg, settings) if not spec.on_demand}))
    fork_server = ForkServer.fork(paths.label, list(settings.kind_modules), kinds=kinds)
    signalfd.block()  # before any thread: the supervisor reads its signals from a signalfd
    try:
        return _run(args, paths, config, settings, port, fork_server, notifier)
    finally:
        if fork_server.alive:  # the supervisor did not run (a lock, the state, TLS stopped it): it closes its own
            fork_server.close(timeout=0.5)


def _run(args: argparse.Namespace, paths: ProfilePaths, config: Config, settings: SupervisorSettings, port: int,
         fork_server: ForkServer, notifier: Notifier) -> int:
    """Everything after the fork server's fork (its preloading overlaps this), up to the supervisor's exit code."""
    from openclaw_sup.gateway.authn import AuthConfig
    from openclaw_sup.gateway.bind import BindRefused, guard, resolve_host

    cfg = config.data
    gateway_cfg = cfg.get("gateway") or {}
    try:
        auth = AuthConfig.from_config(gateway_cfg, os.environ)
        host = resolve_host(gateway_cfg)
        guard(host, port, has_shared_secret=bool(auth.token or auth.password) and not auth.generated)
    except (ValueError, BindRefused) as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.force:
        from openclaw_sup.supervisor.force import ForceRefused, free_port

        try:
            for line in free_port(port):
                print(line, file=sys.stderr)
        except ForceRefused as exc:
            print(exc, file=sys.stderr)
            return 1

    from openclaw_sup.supervisor.lock import LockHeld, StateLock, UpstreamLock

    ensure_private_dir(paths.state_dir)
    ensure_private_dir(paths.run_dir)
    try:
        lock = StateLock.acquire(paths.lock_file)
    except LockHeld as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        upstream_lock = UpstreamLock.acquire(paths.state_dir, paths.config_path, port)
    except LockHeld as exc:
        lock.release()
        print(exc, file=sys.stderr)
        return 1
    from openclaw_sup.config.statedb import prepare

    unusable = prepare(paths.state_dir, lambda line: print(line, file=sys.stderr))
    if unusable:
        print(f"Gateway start blocked: {unusable}", file=sys.stderr)
        upstream_lock.release()
        lock.release()
        return EXIT_CONFIG

    from openclaw_sup.gateway.tls import TlsError, server_tls

    try:
        ssl_context = server_tls(gateway_cfg, paths.state_dir)
    except TlsError as exc:
        print(exc, file=sys.stderr)
        upstream_lock.release()
        lock.release()
        return EXIT_CONFIG

    # Only now: modules that may start threads or loops.
    import uvloop

    from openclaw_sup.config import eventloop
    from openclaw_sup.supervisor.arbiter import RunOptions, Supervisor
    from openclaw_sup.supervisor.logsink import LogSink, Redactor, secrets_in
    from openclaw_sup.supervisor.proctitle import set_gateway_title

    titled = set_gateway_title(paths.label)
    set_child_subreaper()
    logging_cfg = cfg.get("logging") or {}
    log_file = logging_cfg.get("file")
    sink = LogSink(
        file=Path(log_file).expanduser() if log_file else None,
        profile=paths.profile,
        max_file_bytes=int(logging_cfg.get("maxFileBytes") or 104_857_600),
        redactor=Redactor(secrets_in(cfg, auth)),
        console=sys.stdout if args.verbose else None,
    )
    if not titled:
        sink.write("warn", "could not set the process title upstream's CLI looks for (openclaw-gateway); "
                           "`openclaw gateway restart|stop` will not find this gateway", subsystem="supervisor")

    from openclaw_sup.gateway.protocol import tick_interval_from_env

    opts = RunOptions(host=host, port=port, auth=auth, gateway_config=cfg, tick_interval_ms=tick_interval_from_env(),
                      verbose=args.verbose, port_pinned=bool(args.port or os.environ.get("OPENCLAW_GATEWAY_PORT")),
                      ssl_context=ssl_context)
    sup = Supervisor(paths, settings, opts, fork_server, sink, notifier, gateway_lock=upstream_lock)
    try:
        return uvloop.run(sup.run(), loop_factory=eventloop.new_event_loop)
    finally:
        upstream_lock.release()
        lock.release()
