"""The typer app for every command that is not on a fast path (see openclaw_sup/entry.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from openclaw_sup import __version__
from openclaw_sup.cli.browser import browser_app
from openclaw_sup.cli.channels import channels_app
from openclaw_sup.cli.config import config_app
from openclaw_sup.cli.dashboard import dashboard
from openclaw_sup.cli.doctor import doctor
from openclaw_sup.cli.gateway_cmds import gateway_app, health
from openclaw_sup.cli.logs import logs
from openclaw_sup.cli.models import models_app
from openclaw_sup.cli.pairing import pairing_app
from openclaw_sup.cli.service import install, restart, start, stop, uninstall

app = typer.Typer(
    help="openclaw-sup: the OpenClaw gateway as a supervisor of isolated workers.\n\n"
    "Fast paths: `openclaw-sup gateway [--port N] [--dev|--profile NAME]` runs the gateway; "
    "`openclaw-sup status [--json] [--watch]` shows its workers.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Option("--profile", help="profile: state in ~/.openclaw-NAME")] = None,
    dev: Annotated[bool, typer.Option("--dev", help="the dev profile: ~/.openclaw-dev, port 19001")] = False,
) -> None:
    """Keep upstream's global `--profile NAME` / `--dev` for every sub-command (they read `ctx.obj`)."""
    ctx.obj = {"profile": profile, "dev": dev}


app.add_typer(config_app, name="config")
app.add_typer(gateway_app, name="gateway")
app.add_typer(channels_app, name="channels")
app.add_typer(pairing_app, name="pairing")
app.add_typer(models_app, name="models")
app.add_typer(browser_app, name="browser")
app.command("health")(health)
app.command("doctor")(doctor)
app.command("logs")(logs)
app.command("dashboard")(dashboard)
gateway_app.command("install")(install)
gateway_app.command("uninstall")(uninstall)
gateway_app.command("start")(start)
gateway_app.command("stop")(stop)
gateway_app.command("restart")(restart)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"openclaw-sup {__version__}")
