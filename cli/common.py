"""What every command group shares: failing with a message, and the profile the global options chose."""

from __future__ import annotations

from typing import NoReturn

import typer

from openclaw_sup.config.paths import ProfilePaths, resolve


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def profile_paths(ctx: typer.Context) -> ProfilePaths:
    """The paths of the global `--profile NAME` / `--dev` (stored by the main callback); a bad name exits 2."""
    obj = ctx.find_root().obj or {}
    try:
        return resolve(obj.get("profile"), bool(obj.get("dev")))
    except ValueError as exc:
        fail(str(exc), 2)
