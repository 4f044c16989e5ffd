"""`openclaw-sup channels status [--probe] [--json]`: every channel account as the running gateway sees it.

Asks the gateway (`channels.status`) over its WebSocket; when it is unreachable, prints the config-only summary
(which accounts the config enables) like upstream, and still exits 0.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from openclaw_sup.cli.common import profile_paths
from openclaw_sup.cli.gateway_cmds import config_state, connect, fail_text, resolve_target

channels_app = typer.Typer(help="Channel accounts: status and probes.", no_args_is_help=True, add_completion=False)

LABELS = {"irc": "IRC", "telegram": "Telegram", "webchat": "WebChat", "matrix": "Matrix", "discord": "Discord",
          "slack": "Slack"}


def account_line(label: str, acct: dict[str, Any]) -> str:
    flags = [
        "enabled" if acct.get("enabled", True) else "disabled",
        "configured" if acct.get("configured") else "not configured",
        "running" if acct.get("running") else "stopped",
        "connected" if acct.get("connected") else "disconnected",
    ]
    probe = acct.get("probe")
    if isinstance(probe, dict):
        flags.append("works" if probe.get("ok") else f"probe failed ({probe.get('error') or 'unknown'})")
    if acct.get("lastError"):
        flags.append(f"error: {acct['lastError']}")
    return f"{label} {acct.get('accountId', 'default')}: {', '.join(flags)}"


@channels_app.command("status")
def status(
    ctx: typer.Context,
    probe: Annotated[bool, typer.Option("--probe", help="also probe each account's network")] = False,
    channel: Annotated[str | None, typer.Option("--channel", help="only this channel")] = None,
    timeout: Annotated[int, typer.Option("--timeout", help="milliseconds")] = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Per account: enabled, configured, running, connected, last error and (with --probe) the probe result."""
    paths = profile_paths(ctx)
    cfg, _ = config_state(paths)
    params: dict[str, Any] = {"probe": probe, "timeoutMs": timeout}
    if channel:
        params["channel"] = channel
    try:
        client = connect(resolve_target(paths, cfg, None, None, None), timeout=timeout / 1000 + 5)
        try:
            result = client.request("channels.status", params, timeout=timeout / 1000 + 5)
        finally:
            client.close()
    except Exception as exc:
        _config_only(cfg, channel, as_json, fail_text(exc))
        return
    accounts = result.get("channelAccounts") or {}
    if channel:
        accounts = {k: v for k, v in accounts.items() if k == channel}
    if as_json:
        typer.echo(json.dumps({**result, "channelAccounts": accounts}, indent=2))
        return
    if not accounts:
        typer.echo("No channels configured.")
    for ch, rows in accounts.items():
        for acct in rows:
            typer.echo(account_line(LABELS.get(ch, ch.capitalize()), acct))
            for issue in acct.get("issues") or []:
                fix = f" (fix: {issue['fix']})" if issue.get("fix") else ""
                typer.echo(f"  - {issue.get('kind', 'runtime')}: {issue.get('message')}{fix}")


def _config_only(cfg: dict[str, Any], channel: str | None, as_json: bool, why: str) -> None:
    from openclaw_sup.config.plan import channel_accounts

    rows = [{"channel": o["channel"], "accountId": o["accountId"], "enabled": True, "configured": True}
            for o in channel_accounts(cfg).values() if not channel or o["channel"] == channel]
    if as_json:
        typer.echo(json.dumps({"gatewayReachable": False, "error": why, "accounts": rows}, indent=2))
        return
    typer.echo(f"Gateway not reachable ({why}); showing config only.")
    for r in rows:
        typer.echo(f"{LABELS.get(r['channel'], r['channel'])} {r['accountId']}: enabled, configured")
