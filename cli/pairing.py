"""`openclaw-sup pairing list|approve`: DM pairing requests of the channel accounts.

Reads and writes the pairing store directly (`<stateDir>/state/openclaw.sqlite`, config/pairing_store.py), so
it works whether the gateway runs or not; the channel workers read the allow list on every DM, so an approval
takes effect on the sender's next message. `--notify` tells the sender through the running gateway (`send`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated

import typer

from openclaw_sup.cli.common import profile_paths
from openclaw_sup.cli.gateway_cmds import config_state, connect, fail_text, resolve_target
from openclaw_sup.config.pairing_store import APPROVED_NOTICE, PairingError, PairingStore, store_path

pairing_app = typer.Typer(help="DM pairing: list pending requests, approve a sender.", no_args_is_help=True,
                          add_completion=False)


def _store(ctx: typer.Context) -> PairingStore:
    return PairingStore(store_path(profile_paths(ctx).state_dir))


@pairing_app.command("list")
def list_requests(
    ctx: typer.Context,
    channel: Annotated[str | None, typer.Argument(help="channel, e.g. irc or telegram")] = None,
    channel_opt: Annotated[str | None, typer.Option("--channel", help="channel (same as the argument)")] = None,
    account: Annotated[str | None, typer.Option("--account", help="only this account id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Pending pairing requests (codes expire after one hour)."""
    ch = channel or channel_opt
    store = _store(ctx)
    try:
        reqs = store.pending(ch, account)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"channel": ch, "requests": [r.to_json() for r in reqs]}, indent=2))
        return
    if not reqs:
        typer.echo(f"No pending {ch + ' ' if ch else ''}pairing requests.")
        return
    now = int(time.time() * 1000)
    for r in reqs:
        mins = max(0, (r.expires_at - now) // 60_000)
        name = f" ({r.sender_name})" if r.sender_name and r.sender_name != r.sender_id else ""
        typer.echo(f"{r.code}  {r.channel}/{r.account_id}  {r.sender_id}{name}  expires in {mins}m")


@pairing_app.command("approve")
def approve(
    ctx: typer.Context,
    args: Annotated[list[str], typer.Argument(help="[channel] code")],
    channel_opt: Annotated[str | None, typer.Option("--channel", help="channel of the code")] = None,
    account: Annotated[str | None, typer.Option("--account", help="account id of the code")] = None,
    notify: Annotated[bool, typer.Option("--notify", help="tell the sender, through the running gateway")] = False,
) -> None:
    """Approve a pairing code: its sender may DM the agent from now on."""
    if len(args) > 2:
        raise typer.BadParameter("expected [channel] code", param_hint="args")
    code = args[-1]
    channel = args[0] if len(args) == 2 else channel_opt
    store = _store(ctx)
    try:
        if channel is None:
            channels = sorted({r.channel for r in store.pending(None, account)})
            if len(channels) != 1:
                typer.echo("Channel required: `openclaw-sup pairing approve <channel> <code>` "
                           f"(pending requests on: {', '.join(channels) or 'none'})", err=True)
                raise typer.Exit(1)
            channel = channels[0]
        try:
            req = store.approve(channel, code, account)
        except PairingError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    finally:
        store.close()
    typer.echo(f"Approved {req.channel} sender {req.sender_id} (account {req.account_id}).")
    if notify:
        _notify(ctx, req.channel, req.account_id, req.chat_id or req.sender_id)


def _notify(ctx: typer.Context, channel: str, account_id: str, to: str) -> None:
    paths = profile_paths(ctx)
    cfg, _ = config_state(paths)
    try:
        client = connect(resolve_target(paths, cfg, None, None, None))
        try:
            res = client.request("send", {"channel": channel, "accountId": account_id, "to": to,
                                          "message": APPROVED_NOTICE, "idempotencyKey": str(uuid.uuid4())})
        finally:
            client.close()
    except Exception as exc:
        typer.echo(f"Could not notify the sender: {fail_text(exc)}", err=True)
        return
    if isinstance(res, dict) and res.get("ok") is False:
        typer.echo(f"Could not notify the sender: {res.get('error')}", err=True)
    else:
        typer.echo("Sender notified.")
