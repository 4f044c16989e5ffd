"""`openclaw-sup browser status|start|stop|tabs|open URL|navigate URL|screenshot [--out FILE]`: the browser
worker through the gateway's `browser.*` RPCs (connection and credentials as `gateway call`).

`--browser-profile NAME` picks a browser profile (upstream's flag; `--profile` stays the gateway profile).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from openclaw_sup.cli.common import profile_paths
from openclaw_sup.cli.gateway_cmds import config_state, connect, fail_text, resolve_target
from openclaw_sup.gateway.client import ConnectionClosed, GatewayError

browser_app = typer.Typer(help="Drive the gateway's managed browser (Chromium over CDP).", no_args_is_help=True,
                          add_completion=False)

BrowserProfile = Annotated[str | None, typer.Option("--browser-profile", help="browser profile (default: "
                                                    "browser.defaultProfile, else openclaw)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the raw JSON answer")]
Url = Annotated[str | None, typer.Option("--url", help="gateway URL (needs --token or --password)")]
Token = Annotated[str | None, typer.Option("--token")]
Password = Annotated[str | None, typer.Option("--password")]
Timeout = Annotated[float, typer.Option("--timeout", help="seconds")]
STATUS_KEYS = ("state", "running", "cdpReady", "pid", "cdpPort", "cdpUrl", "chosenBrowser", "executablePath",
               "browserVersion", "userDataDir", "headless", "attachOnly", "restarts", "lastExit", "lastError")


def _call(ctx: typer.Context, method: str, params: dict[str, Any], url: str | None, token: str | None,
          password: str | None, timeout: float) -> Any:
    paths = profile_paths(ctx)
    cfg, _ = config_state(paths)
    target = resolve_target(paths, cfg, url, token, password)
    try:
        client = connect(target, timeout=timeout)
        try:
            return client.request(method, params, timeout=timeout)
        finally:
            client.close()
    except (OSError, GatewayError, ConnectionClosed, ValueError) as exc:
        text = exc.error.get("message") if isinstance(exc, GatewayError) else fail_text(exc)
        typer.echo(f"Browser {method.split('.', 1)[1]} failed: {text}", err=True)
        details = exc.details if isinstance(exc, GatewayError) else {}
        for key in ("stderr", "cause", "fix"):
            if details.get(key):
                typer.echo(f"  {key}: {details[key]}", err=True)
        raise typer.Exit(1) from None


def _params(profile: str | None, **extra: Any) -> dict[str, Any]:
    return {**({"profile": profile} if profile else {}), **{k: v for k, v in extra.items() if v is not None}}


def _print_status(st: dict[str, Any]) -> None:
    typer.echo(f"profile: {st['profile']}")
    for key in STATUS_KEYS:
        value = st.get(key)
        if value is not None:
            typer.echo(f"{key}: {json.dumps(value) if isinstance(value, bool) else value}")


@browser_app.command("status")
def status(ctx: typer.Context, profile: BrowserProfile = None, as_json: AsJson = False, url: Url = None,
           token: Token = None, password: Password = None, timeout: Timeout = 30.0) -> None:
    """The profile's browser: state, pid, CDP port and URL, executable, restarts, last error."""
    st = _call(ctx, "browser.status", _params(profile), url, token, password, timeout)
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    _print_status(st)
    others = [p for p in st.get("profiles", []) if p["profile"] != st["profile"]]
    if others:
        typer.echo("other profiles: " + ", ".join(f"{p['profile']} ({p['state']}, port {p['cdpPort']})"
                                                  for p in others))


@browser_app.command("start")
def start(ctx: typer.Context, profile: BrowserProfile = None, as_json: AsJson = False, url: Url = None,
          token: Token = None, password: Password = None, timeout: Timeout = 60.0) -> None:
    """Launch the profile's Chromium (or attach to it) and wait until its CDP answers."""
    t0 = time.monotonic()
    st = _call(ctx, "browser.start", _params(profile), url, token, password, timeout)
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    _print_status(st)
    typer.echo(f"ready in {(time.monotonic() - t0) * 1000:.0f} ms")


@browser_app.command("stop")
def stop(ctx: typer.Context, profile: BrowserProfile = None, url: Url = None, token: Token = None,
         password: Password = None, timeout: Timeout = 30.0) -> None:
    """Stop the profile's Chromium (its whole process group); an attached browser is only released."""
    res = _call(ctx, "browser.stop", _params(profile), url, token, password, timeout)
    typer.echo(f"{res['profile']}: {'stopped' if res['stopped'] else 'was not running'}")


@browser_app.command("tabs")
def tabs(ctx: typer.Context, profile: BrowserProfile = None, as_json: AsJson = False, url: Url = None,
         token: Token = None, password: Password = None, timeout: Timeout = 30.0) -> None:
    """The open tabs: target id, title, URL."""
    res = _call(ctx, "browser.tabs", _params(profile), url, token, password, timeout)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    elif not res["running"]:
        typer.echo(f"{res['profile']}: browser not running")
    else:
        for t in res["tabs"]:
            typer.echo(f"{t['targetId']}  {t['title'] or '-'}  {t['url']}")


@browser_app.command("open")
def open_tab(ctx: typer.Context, target_url: Annotated[str, typer.Argument(metavar="URL")],
             profile: BrowserProfile = None, as_json: AsJson = False, url: Url = None, token: Token = None,
             password: Password = None, timeout: Timeout = 60.0) -> None:
    """Open URL in a new tab (starting the browser if needed); waits for the page to load."""
    res = _call(ctx, "browser.open", _params(profile, url=target_url), url, token, password, timeout)
    typer.echo(json.dumps(res, indent=2) if as_json else f"{res['targetId']}  {res['title'] or '-'}  {res['url']}")


@browser_app.command("navigate")
def navigate(ctx: typer.Context, target_url: Annotated[str, typer.Argument(metavar="URL")],
             target_id: Annotated[str | None, typer.Option("--target-id", help="tab (default: the first)")] = None,
             profile: BrowserProfile = None, url: Url = None, token: Token = None, password: Password = None,
             timeout: Timeout = 60.0) -> None:
    """Load URL in a tab and wait for its load event."""
    res = _call(ctx, "browser.navigate", _params(profile, url=target_url, targetId=target_id), url, token,
                password, timeout)
    typer.echo(f"{res['targetId']}  {res['url']}")


@browser_app.command("screenshot")
def screenshot(ctx: typer.Context,
               out: Annotated[Path | None, typer.Option("--out", help="file to write (default ./screenshot-"
                                                        "<time>.png)")] = None,
               target_id: Annotated[str | None, typer.Option("--target-id", help="tab (default: the first)")] = None,
               profile: BrowserProfile = None, url: Url = None, token: Token = None, password: Password = None,
               timeout: Timeout = 60.0) -> None:
    """Capture a tab as PNG (via CDP Page.captureScreenshot) and write it to a file."""
    res = _call(ctx, "browser.screenshot", _params(profile, targetId=target_id), url, token, password, timeout)
    path = out or Path(f"screenshot-{time.strftime('%Y%m%d-%H%M%S')}.{res['format'].replace('jpeg', 'jpg')}")
    path.write_bytes(base64.b64decode(res["data"]))
    size = f" {res['width']}x{res['height']}" if res.get("width") else ""
    typer.echo(f"{path} ({res['format']}{size}, tab {res['targetId']})")
