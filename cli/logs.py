"""`openclaw-sup logs [--follow] [--limit N] [--json] [--plain] [--url --token] [--interval MS]`.

Reads the gateway's JSONL log through the `logs.tail` RPC with a byte cursor, as upstream's `openclaw logs`.
When no gateway answers (and no `--url` was given) it reads the same file directly: the path the running
supervisor reports on its control socket, else the profile's `logging.file`, else the default
`/tmp/openclaw/openclaw[-<profile>]-YYYY-MM-DD.log`. `--follow` polls with the cursor every `--interval`
and, when the gateway goes away, reconnects with backoff and says `[logs] gateway reconnected`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from openclaw_sup.cli.common import profile_paths
from openclaw_sup.cli.gateway_cmds import Target, connect, resolve_target
from openclaw_sup.cli.service import config_data
from openclaw_sup.config.paths import ProfilePaths
from openclaw_sup.gateway.client import ConnectionClosed, GatewayClient, GatewayError
from openclaw_sup.gateway.logtail import tail
from openclaw_sup.ipc.control import ControlError, call

RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0)
LEVEL_COLORS = {"fatal": "red", "error": "red", "warn": "yellow", "warning": "yellow", "info": "green",
                "debug": "blue", "trace": "magenta"}
TRANSPORT_ERRORS = (OSError, ConnectionClosed, ConnectionError, ValueError)


class SourceLost(Exception):
    """The gateway stopped answering `logs.tail`."""


class RpcSource:
    """`logs.tail` over one WebSocket connection, reopened on demand."""

    kind = "rpc"

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.client: GatewayClient | None = None

    def open(self) -> None:
        self.close()
        self.client = connect(self.target, client_id="cli", mode="cli", timeout=self.timeout)

    def fetch(self, cursor: int | None, limit: int, max_bytes: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "maxBytes": max_bytes}
        if cursor is not None:
            params["cursor"] = cursor
        try:
            if self.client is None:
                self.open()
            assert self.client is not None
            return self.client.request("logs.tail", params, timeout=self.timeout)
        except TRANSPORT_ERRORS as exc:
            self.close()
            raise SourceLost(str(exc)) from None

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.close()
            self.client = None


class FileSource:
    """The log file read in place; a dated default path is re-resolved so a new day's file is picked up."""

    kind = "file"

    def __init__(self, locate: Callable[[], Path]) -> None:
        self.locate = locate
        self.path = locate()

    def fetch(self, cursor: int | None, limit: int, max_bytes: int) -> dict[str, Any]:
        path = self.locate()
        if path != self.path:
            self.path, cursor = path, 0
        return tail(self.path, cursor, limit, max_bytes)

    def close(self) -> None:
        pass


def local_log_file(paths: ProfilePaths) -> Callable[[], Path]:
    """Where the gateway of this profile writes: its own word, else `logging.file`, else the dated default."""
    try:
        reported = call(paths.control_socket, "status", timeout=2)["supervisor"].get("logFile")
    except (ControlError, KeyError, TypeError, ValueError):
        reported = None
    if reported:
        fixed = Path(str(reported))
        return lambda: fixed
    configured = (config_data(paths.config_path).get("logging") or {}).get("file")
    if isinstance(configured, str) and configured:
        fixed = Path(configured).expanduser()
        return lambda: fixed

    def dated() -> Path:
        default = paths.default_log_file(datetime.now().strftime("%Y-%m-%d"))
        fallback = Path(os.environ.get("TMPDIR", "/tmp")) / f"openclaw-{os.getuid()}" / default.name
        return fallback if not default.exists() and fallback.exists() else default

    return dated


def _live_target(paths: ProfilePaths, target: Target) -> Target:
    """A running gateway of this profile knows its own listen URL better than the config file does."""
    if target.source != "config":
        return target
    try:
        listen = call(paths.control_socket, "status", timeout=2)["supervisor"]["listen"]
    except (ControlError, KeyError, TypeError, ValueError):
        return target
    if isinstance(listen, str) and listen.startswith("ws://"):
        return Target(listen, target.token, target.password, "control")
    return target


class Printer:
    def __init__(self, as_json: bool, plain: bool, color: bool) -> None:
        self.as_json, self.plain, self.color = as_json, plain, color

    def _out(self, text: str) -> None:
        sys.stdout.write(text + "\n")

    def meta(self, **fields: Any) -> None:
        if self.as_json:
            self._out(json.dumps({"type": "meta", **fields}))

    def notice(self, message: str) -> None:
        self._say("notice", message)

    def error(self, message: str) -> None:
        self._say("error", message)

    def _say(self, kind: str, message: str) -> None:
        """A line about the tail itself: a typed JSON record, or `[logs] ...` on stderr."""
        if self.as_json:
            self._out(json.dumps({"type": kind, "message": message}))
            sys.stdout.flush()
        else:
            print(f"[logs] {message}", file=sys.stderr, flush=True)

    def lines(self, lines: list[str]) -> None:
        for raw in lines:
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = None
            if not isinstance(rec, dict):
                self._out(json.dumps({"type": "raw", "line": raw}) if self.as_json else raw)
            elif self.as_json:
                self._out(json.dumps({"type": "log", **rec}, ensure_ascii=False))
            else:
                self._out(self.format(rec))
        sys.stdout.flush()

    def format(self, rec: dict[str, Any]) -> str:
        meta = rec.get("_meta") if isinstance(rec.get("_meta"), dict) else {}
        when = str(rec.get("time") or meta.get("date") or "")
        level = str(rec.get("level") or meta.get("logLevelName") or "info").lower()
        subsystem = str(rec.get("subsystem") or meta.get("name") or "-")
        message = str(rec.get("message") if rec.get("message") is not None else rec.get("0", ""))
        worker = f" [{rec['worker']}]" if rec.get("worker") else ""
        if self.plain:
            return f"{when} {level} {subsystem}{worker} {message}"
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone().isoformat(timespec="milliseconds")
        shown = typer.style(f"{level:<5}", fg=LEVEL_COLORS.get(level)) if self.color else f"{level:<5}"
        return f"{when} {shown} {subsystem}{worker} {message}"


def logs(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=5000, help="lines to show first")] = 200,
    max_bytes: Annotated[int, typer.Option("--max-bytes", min=1, help="bytes read per poll")] = 250_000,
    as_json: Annotated[bool, typer.Option("--json", help='JSON lines: {"type": "log", ...record}')] = False,
    plain: Annotated[bool, typer.Option("--plain", help="<time> <level> <subsystem> [<worker>] <message>")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="no ANSI colors")] = False,
    interval: Annotated[int, typer.Option("--interval", min=50, help="poll interval in ms with --follow")] = 1000,
    url: Annotated[str | None, typer.Option("--url", help="gateway URL (needs --token or --password)")] = None,
    token: Annotated[str | None, typer.Option("--token", help="gateway token")] = None,
    password: Annotated[str | None, typer.Option("--password", help="gateway password")] = None,
    timeout: Annotated[int, typer.Option("--timeout", min=100, help="RPC timeout in ms")] = 30_000,
) -> None:
    """Print the gateway's log (`logs.tail`), or the local log file when no gateway answers."""
    paths = profile_paths(ctx)
    target = _live_target(paths, resolve_target(paths, config_data(paths.config_path), url, token, password))
    printer = Printer(as_json, plain, color=not (plain or no_color or as_json) and sys.stdout.isatty())
    source: RpcSource | FileSource = RpcSource(target, timeout / 1000)
    try:
        try:
            first = source.fetch(None, limit, max_bytes)
        except (SourceLost, GatewayError) as exc:
            lost = isinstance(exc, SourceLost)
            if target.source == "explicit":  # an explicit --url never falls back to a local file
                printer.error(f"gateway {target.url} did not answer: {exc}" if lost else f"logs.tail failed: {exc}")
                raise typer.Exit(1) from None
            source = FileSource(local_log_file(paths))
            why = "no gateway answered" if lost else "logs.tail failed"
            printer.notice(f"{why} at {target.url} ({exc}); reading {source.path}")
            first = source.fetch(None, limit, max_bytes)
        printer.meta(file=first.get("file"), sourceKind="file", via=source.kind,
                     url=target.url if source.kind == "rpc" else None, cursor=first.get("cursor"))
        printer.lines(first.get("lines") or [])
        if follow:
            _follow(source, first.get("cursor"), limit, max_bytes, interval / 1000, printer)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        source.close()


def _follow(source: RpcSource | FileSource, cursor: int | None, limit: int, max_bytes: int, interval: float,
            printer: Printer) -> None:
    while True:
        time.sleep(interval)
        try:
            res = source.fetch(cursor, limit, max_bytes)
        except SourceLost as exc:
            assert isinstance(source, RpcSource)
            res = _reconnect(source, cursor, limit, max_bytes, printer, str(exc))
        except GatewayError as exc:
            printer.error(f"logs.tail failed: {exc}")
            raise typer.Exit(1) from None
        if res.get("reset"):
            printer.notice(f"log file {res.get('file')} was rotated or truncated; reading it from the start")
        printer.lines(res.get("lines") or [])
        cursor = res.get("cursor", cursor)


def _reconnect(source: RpcSource, cursor: int | None, limit: int, max_bytes: int, printer: Printer,
               why: str) -> dict[str, Any]:
    printer.notice(f"gateway connection lost ({why}); reconnecting")
    for delay in RECONNECT_DELAYS_S:
        time.sleep(delay)
        try:
            res = source.fetch(cursor, limit, max_bytes)
        except SourceLost:
            continue
        except GatewayError as exc:
            if exc.error.get("retryable") or exc.code == "UNAVAILABLE":
                continue  # the gateway is back but still starting its workers
            printer.error(f"logs.tail failed after reconnecting: {exc}")
            raise typer.Exit(1) from None
        printer.notice("gateway reconnected")
        return res
    printer.error(f"gateway {source.target.url} unreachable after {len(RECONNECT_DELAYS_S)} retries; giving up")
    raise typer.Exit(1)
