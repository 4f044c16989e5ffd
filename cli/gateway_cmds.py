"""`openclaw-sup gateway status|call` and `openclaw-sup health`: the gateway seen through its own port.

Which gateway, which credentials and which TLS trust: cli/target.py (upstream's precedence, remote mode).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from openclaw_sup.cli.common import profile_paths
from openclaw_sup.cli.service import inspect_service
from openclaw_sup.cli.target import Target, TargetError
from openclaw_sup.cli.target import resolve_target as target_of
from openclaw_sup.config.loader import ConfigError, load_json5
from openclaw_sup.config.paths import ProfilePaths
from openclaw_sup.gateway.client import ConnectionClosed, GatewayClient, GatewayError
from openclaw_sup.ipc.control import ControlError, call

gateway_app = typer.Typer(help="Run or inspect the gateway (`openclaw-sup gateway` alone runs it).",
                          no_args_is_help=False, add_completion=False)


def config_state(paths: ProfilePaths) -> tuple[dict[str, Any], str]:
    if not paths.config_path.exists():
        return {}, "missing"
    try:
        return load_json5(paths.config_path), "valid"
    except ConfigError as exc:
        return {}, f"invalid: {exc}"


def resolve_target(paths: ProfilePaths, cfg: dict[str, Any], url: str | None, token: str | None,
                   password: str | None) -> Target:
    """cli/target.py's precedence; a target that cannot work is a usage error naming what to set."""
    try:
        return target_of(paths, cfg, url, token, password)
    except TargetError as exc:
        raise typer.BadParameter(str(exc), param_hint="--url" if url else "gateway.remote") from None


def connect(target: Target, *, client_id: str = "cli", mode: str = "cli", timeout: float = 10.0) -> GatewayClient:
    client = GatewayClient(target.url, token=target.token, password=target.password, client_id=client_id,
                           mode=mode, timeout=timeout, tls_fingerprint=target.tls_fingerprint)
    client.connect()
    return client


def fail_text(exc: Exception) -> str:
    if isinstance(exc, GatewayError):
        return f"{exc.code}: {exc.error.get('message')}"
    if isinstance(exc, ConnectionClosed):
        return f"gateway closed ({exc.code}): {exc.reason}"
    return f"gateway connection failed: {exc}"


def last_gateway_error(paths: ProfilePaths) -> str | None:
    """The newest error-level line of the supervisor's log, read from its end."""
    try:
        snap = call(paths.control_socket, "status", timeout=2)
        log_file = snap["supervisor"].get("logFile")
    except ControlError:
        return None
    if not log_file:
        return None
    try:
        with open(log_file, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 256 * 1024))
            lines = f.read().splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if rec.get("level") in ("error", "fatal"):
            return f"{rec.get('time')} {rec.get('message')}"
    return None


@gateway_app.command("status")
def status(ctx: typer.Context,
           url: str | None = typer.Option(None, help="gateway URL, e.g. ws://127.0.0.1:18789"),
           token: str | None = typer.Option(None, help="shared token (needed with --url)"),
           password: str | None = typer.Option(None, help="shared password (needed with --url)"),
           as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
           deep: bool = typer.Option(False, "--deep", help="also list the workers"),
           require_rpc: bool = typer.Option(False, "--require-rpc", help="exit 1 when the RPC probe fails"),
           timeout: float = typer.Option(10.0, help="seconds")) -> None:
    """Runtime, listener and RPC probe of the gateway for this profile."""
    paths = profile_paths(ctx)
    cfg, validity = config_state(paths)
    target = resolve_target(paths, cfg, url, token, password)
    service = inspect_service(paths)
    service_json = service.to_json()
    report: dict[str, Any] = {"service": service_json["service"],
                              "config": {"cli": {"path": str(paths.config_path), "status": validity,
                                                 "validity": service.cli_validity},
                                         "service": service_json["config"]["service"]},
                              "warnings": service_json["warnings"], "probeTarget": target.url}
    try:
        snap = call(paths.control_socket, "status", timeout=2)
        report["runtime"] = {"status": "running", "pid": snap["supervisor"]["pid"],
                             "listen": snap["supervisor"]["listen"], "workers": snap["workers"]}
    except ControlError as exc:
        report["runtime"] = {"status": "stopped" if target.source != "explicit" else "unknown", "detail": str(exc)}
    rpc: dict[str, Any] = {"url": target.url}
    try:
        client = connect(target, client_id="gateway-client", mode="backend", timeout=timeout)
        try:
            result = client.request("status", {}, timeout=timeout)
            rpc.update(ok=True, version=client.hello["server"]["version"],
                       scopes=client.hello["auth"]["scopes"], runtimeVersion=result.get("runtimeVersion"))
            if report["runtime"]["status"] != "running":
                report["runtime"] = {"status": "running", "listen": target.url}
        finally:
            client.close()
    except (OSError, GatewayError, ConnectionClosed, ValueError) as exc:
        rpc.update(ok=False, error=fail_text(exc))
    report["rpc"] = rpc
    report["lastGatewayError"] = last_gateway_error(paths)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        rt = report["runtime"]
        pid = f" (pid {rt['pid']})" if rt.get("pid") else ""
        for line in service.lines():
            typer.echo(line)
        typer.echo(f"Probe target: {target.url}")
        typer.echo(f"Runtime: {rt['status']}{pid}")
        if rt.get("listen"):
            typer.echo(f"Listening: {rt['listen'].removeprefix('ws://')}")
        typer.echo("RPC probe: ok" if rpc["ok"] else f"RPC probe: failed ({rpc['error']})")
        if rpc["ok"]:
            typer.echo("Read probe: ok" if "operator.read" in rpc["scopes"] or "operator.admin" in rpc["scopes"]
                       else "Read probe: limited - missing scope: operator.read")
        if report["lastGatewayError"]:
            typer.echo(f"Last gateway error: {report['lastGatewayError']}")
        if deep and rt.get("workers"):
            for w in rt["workers"]:
                typer.echo(f"  {w['name']:<28} {w['state']:<9} pid {w['pid'] or '-'}  restarts {w['restarts']}")
    if require_rpc and not rpc["ok"]:
        raise typer.Exit(1)


@gateway_app.command("call")
def call_method(ctx: typer.Context, method: str = typer.Argument(..., help="RPC method, e.g. health"),
                params: str = typer.Option("{}", help="params as a JSON object"),
                url: str | None = typer.Option(None), token: str | None = typer.Option(None),
                password: str | None = typer.Option(None),
                expect_final: bool = typer.Option(False, "--expect-final", help="wait past an `accepted` answer"),
                timeout: float = typer.Option(30.0, help="seconds")) -> None:
    """Call one gateway RPC and print its JSON result."""
    paths = profile_paths(ctx)
    cfg, _ = config_state(paths)
    try:
        parsed = json.loads(params)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--params") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--params")
    target = resolve_target(paths, cfg, url, token, password)
    try:
        client = connect(target, timeout=timeout)
        try:
            result = client.request(method, parsed, expect_final=expect_final, timeout=timeout)
        finally:
            client.close()
    except (OSError, GatewayError, ConnectionClosed, ValueError) as exc:
        typer.echo(f"Gateway call failed: {fail_text(exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2))


def health(ctx: typer.Context, as_json: bool = typer.Option(False, "--json"),
           url: str | None = typer.Option(None), token: str | None = typer.Option(None),
           password: str | None = typer.Option(None), timeout: float = typer.Option(10.0)) -> None:
    """The gateway's health snapshot: workers, channels, agents, heartbeat."""
    paths = profile_paths(ctx)
    cfg, _ = config_state(paths)
    target = resolve_target(paths, cfg, url, token, password)
    try:
        client = connect(target, client_id="gateway-client", mode="backend", timeout=timeout)
        try:
            snap = client.request("health", timeout=timeout)
        finally:
            client.close()
    except (OSError, GatewayError, ConnectionClosed, ValueError) as exc:
        typer.echo(f"Health check failed: {fail_text(exc)}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(snap, indent=2))
        return
    typer.echo(f"Gateway: ok ({target.url})")
    typer.echo(f"Heartbeat: every {snap.get('heartbeatSeconds')}s, default agent {snap.get('defaultAgentId')}")
    for w in snap.get("workers", []):
        typer.echo(f"Worker {w['name']}: {w['state']} (pid {w['pid'] or '-'}, restarts {w['restarts']})")
    if not snap.get("channelOrder"):
        typer.echo("Channels: none configured")
    sys.stdout.flush()
