"""The typer app for every command that is not on a fast path (see openclaw_sup/entry.py)."""

from __future__ import annotations

import typer

from openclaw_sup import __version__

app = typer.Typer(
    help="openclaw-sup: the OpenClaw gateway as a supervisor of isolated workers.\n\n"
    "Fast paths: `openclaw-sup gateway [--port N] [--dev|--profile NAME]` runs the gateway; "
    "`openclaw-sup status [--json] [--watch]` shows its workers.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"openclaw-sup {__version__}")
