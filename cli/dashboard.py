"""`openclaw-sup dashboard [--no-open] [--json]`: the Control UI's URL, checked, printed and opened.

As upstream's `openclaw dashboard`: https when `gateway.tls.enabled`; the URL is on 127.0.0.1 whenever the
gateway answers there (a browser has a secure context on loopback, which the device identity needs), under
`gateway.controlUi.basePath`. The page is checked with `HEAD` first. The browser is opened with the token in the
URL fragment (`#token=`, never sent to the server; the UI strips it at once); the token is never printed.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
import webbrowser
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer

from openclaw_sup.cli.common import fail, profile_paths
from openclaw_sup.cli.gateway_cmds import config_state
from openclaw_sup.config.paths import DEFAULT_PORT, DEV_PORT

PROBE_TIMEOUT_S = 3.0


def base_path(cfg: dict[str, Any]) -> str:
    value = ((cfg.get("gateway") or {}).get("controlUi") or {}).get("basePath")
    text = value.strip().strip("/") if isinstance(value, str) else ""
    return f"/{text}" if text else ""


def probe(url: str) -> str | None:
    """Why the dashboard document is not served at `url`, or None when it is (200 text/html to a HEAD).

    Over TLS the certificate is not checked: this only asks our own port whether the page is there (no secret
    is sent); the browser checks the certificate it is shown."""
    req = urllib.request.Request(url, method="HEAD", headers={"Accept": "text/html"})
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT_S, context=context) as res:
            ctype = res.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return None if res.status == 200 and ctype == "text/html" else f"HTTP {res.status} {ctype}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no gateway answers ({reason})"


def dashboard(
    ctx: typer.Context,
    no_open: Annotated[bool, typer.Option("--no-open", help="print the URL, do not launch a browser")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object: url (with the token), httpUrl, wsUrl")
                       ] = False,
) -> None:
    """Print (and open) the Control UI of the running gateway."""
    paths = profile_paths(ctx)
    cfg, state = config_state(paths)
    if state.startswith("invalid"):
        fail(f"The config is {state}. Run `openclaw-sup config validate`.")
    gateway = cfg.get("gateway") or {}
    ui = gateway.get("controlUi") or {}
    env_port = os.environ.get("OPENCLAW_GATEWAY_PORT", "")
    port = int(env_port) if env_port.isdigit() else gateway.get("port") or (DEV_PORT if paths.dev else DEFAULT_PORT)
    base = base_path(cfg)
    hosts = ["127.0.0.1"]
    if gateway.get("bind") == "custom" and gateway.get("customBindHost") not in (None, "127.0.0.1", "0.0.0.0"):
        hosts.append(str(gateway["customBindHost"]))
    if ui.get("enabled") is False:
        reason = "the Control UI is disabled (gateway.controlUi.enabled: false)"
        _failed(as_json, reason)
    reason = "no address to try"
    scheme = "https" if (gateway.get("tls") or {}).get("enabled") is True else "http"
    for host in hosts:
        http_url = f"{scheme}://{host}:{port}{base}/"
        reason = probe(http_url)
        if reason is None:
            break
    else:
        _failed(as_json, f"Control UI dashboard is unavailable at {scheme}://127.0.0.1:{port}{base}/: {reason}")
    auth = gateway.get("auth") or {}
    token = os.environ.get("OPENCLAW_GATEWAY_TOKEN") or auth.get("token")
    token = token if isinstance(token, str) and auth.get("mode") != "password" else None
    browser_url = f"{http_url}#token={quote(token, safe='')}" if token else http_url
    if as_json:
        typer.echo(json.dumps({"ok": True, "url": browser_url, "httpUrl": http_url,
                               "wsUrl": f"{'wss' if scheme == 'https' else 'ws'}://{http_url.split('://', 1)[1]}",
                               "port": port,
                               "tokenIncluded": bool(token)}))
        return
    typer.echo(f"Dashboard URL: {http_url}")
    if "://127.0.0.1:" not in http_url:
        typer.echo("This address is not loopback: the browser has no secure context there, so the dashboard "
                   f"asks for localhost, an SSH tunnel (ssh -N -L {port}:127.0.0.1:{port} <host>) or HTTPS.")
    if no_open:
        typer.echo("Browser launch disabled (--no-open). Open the URL above and enter the gateway secret.")
        return
    if webbrowser.open(browser_url):
        typer.echo("Opened in your browser.")
    else:
        typer.echo("No browser could be launched here. Open the URL above (through an SSH tunnel from another "
                   f"machine: ssh -N -L {port}:127.0.0.1:{port} <host>) and enter the gateway secret.")


def _failed(as_json: bool, reason: str) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"ok": False, "reason": reason}))
        raise typer.Exit(1)
    fail(f"{reason}\nRun `openclaw-sup gateway status` for details.")
