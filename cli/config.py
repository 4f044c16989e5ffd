"""`openclaw-sup config get|set|unset|file|validate`: upstream's `openclaw config`, on the same file.

Values are JSON5 (else a raw string), output is redacted, a missing path exits 1, writes are atomic and
validated, and after a write one of upstream's three restart hints is printed, computed from the same
decision the reloader takes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import pyjson5
import typer

from openclaw_sup.cli.common import fail, profile_paths
from openclaw_sup.config.document import Config, read_config, reload_mode
from openclaw_sup.config.loader import ConfigError, json5_error, substitute_env
from openclaw_sup.config.paths import ProfilePaths
from openclaw_sup.config.plan import classify, decide, restart_hint, same_json
from openclaw_sup.config.schema import redact
from openclaw_sup.config.store import (
    ConfigPathNotFound,
    get_path,
    parse_path,
    set_path,
    unset_path,
    write_config_atomic,
)

config_app = typer.Typer(
    help="Read and edit the gateway config (openclaw.json): get, set, unset, file, validate.",
    no_args_is_help=True,
    add_completion=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON")]




def _read(paths: ProfilePaths) -> Config:
    try:
        return read_config(paths)
    except ConfigError as exc:
        fail(str(exc))


def _segments(path: str) -> list[str]:
    try:
        return parse_path(path)
    except ValueError as exc:
        fail(str(exc))


def _print_value(value: Any, as_json: bool) -> None:
    if isinstance(value, str) and not as_json:
        typer.echo(value)
    elif isinstance(value, bool | int | float) and not as_json:
        typer.echo(json.dumps(value))
    else:
        typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


@config_app.command("get")
def get_cmd(ctx: typer.Context, path: Annotated[str, typer.Argument(help="dot or bracket path")],
            as_json: JsonFlag = False) -> None:
    """Print the value at a path (secrets redacted); exit 1 when the path is not set."""
    segs = _segments(path)
    config = _read(profile_paths(ctx))
    if not config.valid:
        fail(config.error_text())
    try:
        value = get_path(redact(config.data), segs)
    except ConfigPathNotFound:
        message = f"Config path not found: {path}"
        if as_json:
            typer.echo(json.dumps({"error": message}, indent=2))
            raise typer.Exit(1) from None
        fail(message)
    _print_value(value, as_json)


def _parse_value(raw: str, strict: bool) -> Any:
    """JSON5 when it parses, else the raw string (upstream); `--strict-json` makes a parse failure an error."""
    text = raw.strip()
    try:
        return pyjson5.decode(text)
    except (pyjson5.Json5Exception, ValueError) as exc:
        if strict:
            _, column, words = json5_error(exc, text)
            fail(f"Failed to parse JSON5 value: {words} (at character {column} of {text!r})")
        return raw


def _write(paths: ProfilePaths, config: Config, new_raw: dict[str, Any], verb: str, path: str) -> None:
    env = dict(os.environ)
    try:
        write_config_atomic(paths.config_path, new_raw, env)
    except ConfigError as exc:
        fail(str(exc))
    new_data = substitute_env(new_raw, env)
    decision = decide(reload_mode(new_data), classify(config.data, new_data, env=env))
    typer.echo(f"{verb} {path}. {restart_hint(decision)}")


@config_app.command("set")
def set_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="dot or bracket path")],
    value: Annotated[str, typer.Argument(help="JSON5 value, else taken as a raw string")],
    strict_json: Annotated[bool, typer.Option("--strict-json", "--json",
                                              help="parse the value as JSON5, no string fallback")] = False,
) -> None:
    """Set a value; objects replace what was there. `No change` leaves the file untouched."""
    segs = _segments(path)
    parsed = _parse_value(value, strict_json)
    paths = profile_paths(ctx)
    config = _read(paths)
    try:
        new_raw = set_path(config.raw, segs, parsed)
    except ValueError as exc:
        fail(str(exc))
    if config.exists and same_json(new_raw, config.raw):
        typer.echo("No change")
        return
    _write(paths, config, new_raw, "Updated", path)


@config_app.command("unset")
def unset_cmd(ctx: typer.Context, path: Annotated[str, typer.Argument(help="dot or bracket path")]) -> None:
    """Remove a value; exit 1 when the path is not set."""
    segs = _segments(path)
    paths = profile_paths(ctx)
    config = _read(paths)
    try:
        new_raw = unset_path(config.raw, segs)
    except ConfigPathNotFound:
        fail(f"Config path not found: {path}")
    _write(paths, config, new_raw, "Removed", path)


@config_app.command("file")
def file_cmd(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Print the path of the active config file."""
    path = str(profile_paths(ctx).config_path)
    typer.echo(json.dumps({"path": path}, indent=2) if as_json else path)


@config_app.command("validate")
def validate_cmd(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Validate the config against the schema; exit 0 when valid, 1 when not."""
    paths = profile_paths(ctx)
    path: Path = paths.config_path
    try:
        config: Config | None = read_config(paths)
    except ConfigError as exc:
        config, parse_error = None, str(exc)
    if config is None:
        errors = [{"path": "", "message": parse_error}]
        notices: list[dict[str, str]] = []
    else:
        errors = [i.to_json() for i in config.report.errors]
        notices = [i.to_json() for i in config.report.notices]
        notices += [{"path": "", "message": f"${{{v}}} is not set; left as written"} for v in config.missing_env]
    valid = not errors
    if as_json:
        typer.echo(json.dumps({"valid": valid, "path": str(path), "exists": path.exists(), "errors": errors,
                               "notices": notices}, indent=2))
    elif valid:
        typer.echo(f"Config valid: {path}" + ("" if path.exists() else " (no file; defaults apply)"))
        for n in notices:
            typer.echo(f"  notice: {n['path'] or '<root>'}: {n['message']}")
    else:
        typer.echo(config.error_text() if config is not None else parse_error, err=True)
    if not valid:
        raise typer.Exit(1)

