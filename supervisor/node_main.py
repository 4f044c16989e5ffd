"""`openclaw-sup node run`: this machine as a node of a gateway, under the same supervisor.

The supervisor runs without a port and with one worker, `node-host` (workers/nodehost/): it is restarted
alone if it crashes or hangs, and its identity, device token and approvals live in the profile's state dir.
Its sockets and lock are under `<stateDir>/run-node/`, so a node host can share a state dir with a gateway.
`openclaw-sup node identity [--json]` prints the device id the gateway pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from openclaw_sup.argformat import HelpFormatter
from openclaw_sup.config.paths import NODE_RUN_DIR, ProfilePaths, ensure_private_dir, resolve_or_report

USAGE = """openclaw-sup node run --host HOST --port PORT [--tls] [--tls-fingerprint SHA256] [--display-name NAME]
                         [--context-path PATH] [--profile NAME | --dev] [--verbose]
       openclaw-sup node identity [--json] [--profile NAME | --dev]
       openclaw-sup node status [--json] [--watch] [--profile NAME | --dev]

Runs this machine as a headless node of the gateway at HOST:PORT (ours or upstream's): it advertises
system.run and system.which, runs commands only as this host's exec approvals allow, and reconnects with
backoff. Credentials: OPENCLAW_GATEWAY_TOKEN or OPENCLAW_GATEWAY_PASSWORD, then the stored device token."""


class NodePaths(ProfilePaths):
    """A profile's paths with the node host's own run dir (bus, control socket, lock)."""

    __slots__ = ()

    @property
    def run_dir(self) -> Path:
        return self.state_dir / NODE_RUN_DIR

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "node.lock"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="openclaw-sup node", usage=USAGE, formatter_class=HelpFormatter)
    p.add_argument("action", choices=["run", "identity"])
    p.add_argument("--host", default="127.0.0.1", help="gateway host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=18789, help="gateway port (default 18789)")
    p.add_argument("--tls", action="store_true", help="connect with TLS (wss://)")
    p.add_argument("--tls-fingerprint", help="expected SHA-256 of the gateway's certificate")
    p.add_argument("--display-name", help="this node's name on the gateway")
    p.add_argument("--context-path", default="", help="WebSocket path behind a reverse proxy")
    p.add_argument("--profile")
    p.add_argument("--dev", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port {args.port}: must be between 1 and 65535")
    return args


def identity(paths: ProfilePaths, as_json: bool) -> int:
    from openclaw_sup.config.statedb import StateDbError
    from openclaw_sup.workers.nodehost.identity import NodeHostState

    try:
        state = NodeHostState(paths.state_dir)
    except StateDbError as exc:
        print(f"openclaw-sup node identity: {exc}", file=sys.stderr)
        return 1
    try:
        ident = state.identity()
    finally:
        state.close()
    if as_json:
        print(json.dumps({"deviceId": ident.device_id, "publicKey": ident.public_key}))
    else:
        print(f"Device ID: {ident.device_id}\nPublic key: {ident.public_key}")
    return 0


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    base = resolve_or_report(args.profile, args.dev)
    if base is None:
        return 2
    paths = NodePaths(base.profile, base.state_dir, base.config_path, base.dev)
    ensure_private_dir(paths.state_dir)
    if args.action == "identity":
        return identity(paths, args.json)

    from openclaw_sup.config.loader import ConfigError
    from openclaw_sup.config.settings import WorkerSpec, load_settings

    try:
        settings = load_settings(paths)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 78
    options = {"host": args.host, "port": args.port, "tls": args.tls, "contextPath": args.context_path,
               "stateDir": str(paths.state_dir)}
    if args.tls_fingerprint:
        options["tlsFingerprint"] = args.tls_fingerprint
    if args.display_name:
        options["displayName"] = args.display_name
    spec = WorkerSpec(name="node-host", kind="node-host", options=options, restart=settings.restart,
                      liveness=settings.liveness, stop=settings.stop)

    from openclaw_sup.supervisor.lock import LockHeld, StateLock

    ensure_private_dir(paths.run_dir)
    try:
        lock = StateLock.acquire(paths.lock_file)
    except LockHeld as exc:
        print(str(exc).replace("gateway", "node host"), file=sys.stderr)
        return 1

    from openclaw_sup.supervisor import signalfd
    from openclaw_sup.supervisor.forkserver import ForkServer
    from openclaw_sup.supervisor.sdnotify import Notifier

    notifier = Notifier.from_env()
    fork_server = ForkServer.fork(paths.label, list(settings.kind_modules), close_fds=(lock.fd,))
    signalfd.block()  # before any thread: the supervisor reads its signals from a signalfd

    import setproctitle
    import uvloop

    from openclaw_sup.config import eventloop
    from openclaw_sup.gateway.authn import AuthConfig
    from openclaw_sup.supervisor.arbiter import RunOptions, Supervisor
    from openclaw_sup.supervisor.logsink import LogSink, Redactor
    from openclaw_sup.supervisor.main import set_child_subreaper

    setproctitle.setproctitle(f"openclaw-sup: node host [{paths.label}]")
    set_child_subreaper()
    secrets = [v for v in (os.environ.get("OPENCLAW_GATEWAY_TOKEN"), os.environ.get("OPENCLAW_GATEWAY_PASSWORD"))
               if v]
    sink = LogSink(file=paths.state_dir / "logs" / "node-host.log", profile=paths.profile,
                   redactor=Redactor(secrets), console=sys.stdout if args.verbose else None)
    opts = RunOptions(host=args.host, port=args.port, auth=AuthConfig(mode="none"), gateway_config={},
                      tick_interval_ms=30_000, verbose=args.verbose, listen=False, workers=(spec,))
    sup = Supervisor(paths, settings, opts, fork_server, sink, notifier)
    try:
        return uvloop.run(sup.run(), loop_factory=eventloop.new_event_loop)
    finally:
        lock.release()
