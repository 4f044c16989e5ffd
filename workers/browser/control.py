"""`browser.request`: upstream's browser control routes, proxied through the gateway as the real `openclaw browser`
CLI sends them (`{method, path, query, body, timeoutMs}`, admin scope), mapped onto the worker's own methods.

Served: `GET /` (status), `POST /start`, `POST /stop`, `GET /tabs`, `POST /tabs/open {url}`, `POST /navigate
{url, targetId?}`, `POST /screenshot {targetId?, type?}` (written under `<stateDir>/media/browser/`, answered with
its `path`, as upstream), `GET /profiles`. Anything else answers INVALID_REQUEST naming what is supported.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from openclaw_sup.workers.runtime import RequestError

if TYPE_CHECKING:
    from openclaw_sup.workers.browser.service import BrowserWorker

Route = Callable[["BrowserWorker", dict[str, Any], dict[str, Any]], Awaitable[Any]]


async def _status(w: BrowserWorker, query: dict[str, Any], body: dict[str, Any]) -> Any:
    return await w.status(query)


async def _start(w: BrowserWorker, query: dict[str, Any], body: dict[str, Any]) -> Any:
    st = await w.start(query)
    return {"ok": True, "profile": st["profile"]}


async def _stop(w: BrowserWorker, query: dict[str, Any], body: dict[str, Any]) -> Any:
    return await w.stop(query)


async def _tabs(w: BrowserWorker, query: dict[str, Any], body: dict[str, Any]) -> Any:
    return await w.tabs(query)


async def _open(w: BrowserWorker, query: dict[str, Any], body: dict[str, Any]) -> Any:
    return await w.open({**query, "url": body.get("url")})


async def _navigate(w: BrowserWorker, query: dict[str, Any], body: dict[str, Any]) -> Any:
    return await w.navigate({**query, "url": body.get("url"), "targetId": body.get("targetId")})


async def _screenshot(w: BrowserWorker, query: dict[str, Any], body: dict[str, Any]) -> Any:
    shot = await w.screenshot({**query, "targetId": body.get("targetId")})
    media = w.state_dir / "media" / "browser"
    media.mkdir(parents=True, exist_ok=True, mode=0o700)
    ext = "jpg" if shot["format"] == "jpeg" else "png"
    path = media / f"screenshot-{time.strftime('%Y%m%d-%H%M%S')}-{shot['targetId'][:8]}.{ext}"
    path.write_bytes(base64.b64decode(shot["data"]))
    return {"ok": True, "path": str(path), "targetId": shot["targetId"], "url": shot.get("url")}


async def _profiles(w: BrowserWorker, query: dict[str, Any], body: dict[str, Any]) -> Any:
    out = []
    for name, runner in w.runners.items():
        st = await runner.status()
        tabs = len((await w.tabs({"profile": name}))["tabs"]) if runner.active else 0
        out.append({"name": name, "driver": st["driver"], "cdpPort": st["cdpPort"], "cdpUrl": st["cdpUrl"],
                    "color": st["color"], "running": st["running"], "tabCount": tabs, "isDefault": name == w.default})
    return {"profiles": out}


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/"): _status,
    ("POST", "/start"): _start,
    ("POST", "/stop"): _stop,
    ("GET", "/tabs"): _tabs,
    ("POST", "/tabs/open"): _open,
    ("POST", "/navigate"): _navigate,
    ("POST", "/screenshot"): _screenshot,
    ("GET", "/profiles"): _profiles,
}


async def browser_request(w: BrowserWorker, params: dict[str, Any]) -> Any:
    method = str(params.get("method") or "GET").upper()
    path = "/" + str(params.get("path") or "/").strip("/")
    query = params.get("query") if isinstance(params.get("query"), dict) else {}
    body = params.get("body") if isinstance(params.get("body"), dict) else {}
    route = ROUTES.get((method, path))
    if route is None:
        supported = ", ".join(f"{m} {p}" for m, p in ROUTES)
        raise RequestError("INVALID_REQUEST", f"browser.request: {method} {path} is not supported by openclaw-sup "
                           f"(supported: {supported})")
    return await route(w, {k: v for k, v in query.items() if k == "profile"}, body)
