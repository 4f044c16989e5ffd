"""The Control UI on the gateway port, served by upstream's rules (docs/web/control-ui.md, dashboard.md).

Under `/` or `gateway.controlUi.basePath`: our dashboard (package data in `gateway/ui/`, no build step) or,
with `gateway.controlUi.root`, another built UI directory such as upstream's `dist/control-ui`. Every request
reads the running config, so `enabled`, `basePath` and `root` follow a reload without a re-bind.

- Unmatched GET/HEAD paths get the app shell only when `Accept` admits HTML (headerless and wildcard
  requests do; `text/html;q=0` does not); a missing file with a static extension is always 404.
- Our assets are addressed by content hash (`assets/app.<sha>.js`), computed when first asked for, and are
  `immutable`; the shell is `no-cache` with an ETag. A root's `assets/` (Vite's hashed output) is immutable.
- A strict CSP (`script-src 'self'`, no inline code) on our UI; a root's shell gets the hashes of its inline
  scripts, as upstream does for its own.
- Paths are decoded once, must be relative, without `..`, NUL or backslash, and must resolve (symlinks
  included) inside the UI directory.

Nothing is read or cached before the first request: the dashboard costs the gateway nothing while no
browser asks for it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from openclaw_sup import __version__
from openclaw_sup.gateway.http_common import authorize, json_response, plain

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

UI_DIR = Path(__file__).resolve().parent / "ui"
IMMUTABLE = "public, max-age=31536000, immutable"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".mjs": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json; charset=utf-8",
    ".woff2": "font/woff2",
}
STATIC_EXTENSIONS = frozenset(CONTENT_TYPES) - {".html"}
"""A missing file with one of these extensions is 404, never the app shell."""

NOT_UI_PREFIXES = ("/v1", "/api", "/tools", "/hooks", "/health", "/healthz", "/ready", "/readyz", "/startup",
                   "/startupz", "/ui", "/j", "/__openclaw__/ws")
"""Paths upstream never answers with the app shell when the UI is at `/` (APIs, probes, the retired `/ui`)."""

CONFIG_JSON = "control-ui-config.json"
LEGACY_CONFIG_PATHS = ("/__openclaw/control-ui-config.json",)

STRICT_CSP = "; ".join((
    "default-src 'self'", "base-uri 'none'", "object-src 'none'", "frame-ancestors 'none'", "form-action 'none'",
    "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:", "font-src 'self'",
    "connect-src 'self' ws: wss:", "worker-src 'none'", "manifest-src 'self'",
))
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
ASSET_REF = re.compile(r"%ASSET:([A-Za-z0-9_.-]+)%")
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)
RESCAN_S = 1.0


# ================================================================ settings and routing


def normalize_base_path(value: Any) -> str:
    """`/openclaw/` -> `/openclaw`, `/` or empty -> `` (upstream's normalisation)."""
    text = value.strip() if isinstance(value, str) else ""
    text = text.strip("/")
    return f"/{text}" if text else ""


@dataclass(frozen=True)
class UiSettings:
    enabled: bool
    base_path: str
    root: Path | None

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> UiSettings:
        gateway = cfg.get("gateway") if isinstance(cfg.get("gateway"), dict) else {}
        ui = gateway.get("controlUi") if isinstance(gateway.get("controlUi"), dict) else {}
        root = ui.get("root")
        return cls(enabled=ui.get("enabled") is not False, base_path=normalize_base_path(ui.get("basePath")),
                   root=Path(root).expanduser() if isinstance(root, str) and root.strip() else None)


def accepts_html(accept: str | None) -> bool:
    """Whether `Accept` admits an HTML document: the most specific matching range decides, q=0 refuses."""
    if accept is None or not accept.strip():
        return True
    best = (-1, 0.0)
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        rank = {"text/html": 2, "application/xhtml+xml": 2, "text/*": 1, "*/*": 0}.get(media)
        if rank is None:
            continue
        if rank > best[0]:
            best = (rank, quality)
        elif rank == best[0]:
            best = (rank, max(best[1], quality))
    return best[1] > 0


def relative_path(ui_path: str) -> str | None:
    """The file a UI path names, relative to the UI directory, or None when it is not a safe relative path."""
    try:
        rel = unquote(ui_path.lstrip("/"), errors="strict")
    except UnicodeDecodeError:
        return None
    if "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    return "/".join(parts) + ("/" if rel.endswith("/") and parts else "")


def inside(root: Path, candidate: Path) -> Path | None:
    """`candidate` resolved (symlinks followed) when it is a regular file inside `root`, else None."""
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _content_type(name: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def _not_found() -> web.Response:
    return plain(404, "Not Found", dict(SECURITY_HEADERS))


def _bytes_response(request: web.Request, body: bytes, content_type: str, cache: str, csp: str,
                    etag: str | None = None) -> web.Response:
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": csp, "Cache-Control": cache,
               "Content-Type": content_type}
    if etag is not None:
        headers["ETag"] = etag
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return web.Response(status=200, headers=headers)
    return web.Response(status=200, body=body, headers=headers)


# ================================================================ our dashboard (package data)


class BuiltUi:
    """Our UI: `index.html` with `%ASSET:name%` references, replaced by content-hashed asset URLs.

    Scanned when first asked for, then at most once a second when a file may have changed, so an edited
    checkout is served fresh without a restart.
    """

    def __init__(self, directory: Path = UI_DIR) -> None:
        self.dir = directory.resolve()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._assets: dict[str, tuple[bytes, str]] = {}  # hashed name -> (body, content type)
        self._urls: dict[str, str] = {}  # plain name -> hashed name
        self._template = ""
        self._shells: dict[str, tuple[bytes, str]] = {}

    def _scan_stamp(self) -> tuple[int, int]:
        files = [self.dir / "index.html", *sorted((self.dir / "assets").iterdir())]
        return len(files), max(f.stat().st_mtime_ns for f in files)

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < RESCAN_S:
            return
        self._checked = now
        stamp = self._scan_stamp()
        if stamp == self._stamp:
            return
        assets: dict[str, tuple[bytes, str]] = {}
        urls: dict[str, str] = {}
        for f in sorted((self.dir / "assets").iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            body = f.read_bytes()
            stem, ext = os.path.splitext(f.name)
            hashed = f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}{ext}"
            assets[hashed] = (body, _content_type(f.name))
            urls[f.name] = hashed
        self._assets, self._urls = assets, urls
        self._template = (self.dir / "index.html").read_text()
        self._shells = {}
        self._stamp = stamp

    def shell(self, base_path: str) -> tuple[bytes, str]:
        self._refresh()
        cached = self._shells.get(base_path)
        if cached is None:
            def asset_url(m: re.Match[str]) -> str:
                name = m.group(1)
                if name not in self._urls:
                    raise KeyError(f"index.html names a missing asset: {name}")
                return f"{base_path}/assets/{self._urls[name]}"

            html = ASSET_REF.sub(asset_url, self._template)
            html = html.replace("%BASE_PATH%", base_path).replace("%VERSION%", __version__)
            body = html.encode()
            cached = self._shells[base_path] = (body, _etag(body))
        return cached

    def asset(self, hashed: str) -> tuple[bytes, str] | None:
        self._refresh()
        return self._assets.get(hashed)

    def total_bytes(self) -> int:
        self._refresh()
        return len(self._template.encode()) + sum(len(b) for b, _ in self._assets.values())


# ================================================================ serving


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlUi:
    def __init__(self, core: GatewayCore | None, config: Callable[[], dict[str, Any]],
                 upgrade: Handler | None = None) -> None:
        self.core = core
        self.config = config
        self.upgrade = upgrade
        self.built = BuiltUi()
        self._root_shells: dict[tuple[str, str, int], tuple[bytes, str, str]] = {}

    def claims(self, path: str, settings: UiSettings) -> bool:
        """Whether `path` is the UI's (served or answered 404 by it) rather than the rest of the port's."""
        base = settings.base_path
        if base:
            return path == base or path.startswith(base + "/")
        hooks = ((self.config().get("hooks") or {}).get("path") or "/hooks") if self.core is not None else "/hooks"
        return not any(path == p or path.startswith(p + "/") for p in (*NOT_UI_PREFIXES, hooks.rstrip("/")))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        settings = UiSettings.from_config(self.config())
        path = request.path
        if not settings.enabled or not self.claims(path, settings):
            return _not_found()
        base = settings.base_path
        if (base and path in (base, base + "/") and self.upgrade is not None
                and request.headers.get("Upgrade", "").lower() == "websocket"):
            return await self.upgrade(request)  # upstream's clients connect at the base path
        if base and path == base:
            raise web.HTTPFound(base + "/" + (f"?{request.query_string}" if request.query_string else ""),
                                headers=SECURITY_HEADERS)
        ui_path = path[len(base):] if base else path
        if ui_path == f"/{CONFIG_JSON}" or ui_path in LEGACY_CONFIG_PATHS:
            return await self._config_json(request, settings)
        rel = relative_path(ui_path)
        if rel is None:
            return _not_found()
        if settings.root is not None:
            return await self._serve_root(request, settings, rel)
        return self._serve_built(request, base, rel)

    async def _config_json(self, request: web.Request, settings: UiSettings) -> web.Response:
        """Upstream's runtime settings for its UI, behind the gateway's HTTP auth as upstream."""
        if self.core is not None:
            refused = authorize(request, self.core)
            if refused is not None:
                return refused
        body = {"basePath": settings.base_path, "assistantName": "Assistant", "assistantAvatar": None,
                "assistantAvatarSource": None, "assistantAvatarStatus": None, "assistantAvatarReason": None,
                "serverVersion": __version__, "embedSandbox": "scripts", "allowExternalEmbedUrls": False,
                "automaticallyFetchFavicons": False, "communityInvite": False, "terminalEnabled": False,
                "cliAgentsEnabled": False, "pluginAssetsRequireAuth": True, "pluginFrameGrants": []}
        return json_response(200, body, {"Cache-Control": "no-cache", **SECURITY_HEADERS})

    def _serve_built(self, request: web.Request, base: str, rel: str) -> web.StreamResponse:
        ui = self.built
        if rel.startswith("assets/"):
            found = ui.asset(rel[len("assets/"):])
            if found is None:
                return _not_found()
            body, ctype = found
            return _bytes_response(request, body, ctype, IMMUTABLE, STRICT_CSP)
        if rel == "favicon.svg":
            body = (ui.dir / "favicon.svg").read_bytes()
            return _bytes_response(request, body, _content_type(rel), "no-cache", STRICT_CSP, _etag(body))
        if rel and rel not in ("index.html",) and (os.path.splitext(rel)[1].lower() in STATIC_EXTENSIONS
                                                   or not accepts_html(request.headers.get("Accept"))):
            return _not_found()
        body, etag = ui.shell(base)
        return _bytes_response(request, body, CONTENT_TYPES[".html"], "no-cache", STRICT_CSP, etag)

    async def _serve_root(self, request: web.Request, settings: UiSettings, rel: str) -> web.StreamResponse:
        root = settings.root
        assert root is not None
        try:
            real_root = root.resolve(strict=True)
        except (OSError, RuntimeError):
            real_root = None
        if real_root is None or not (real_root / "index.html").is_file():
            return plain(503, f"Control UI assets not found at {root}. Build them, or update gateway.controlUi.root.",
                         {"Cache-Control": "no-store", **SECURITY_HEADERS})
        wanted = rel if rel and not rel.endswith("/") else f"{rel}index.html"
        found = inside(real_root, real_root / wanted)
        if found is not None and found.name != "index.html":
            cache = IMMUTABLE if wanted.startswith("assets/") else "no-cache"
            headers = {**SECURITY_HEADERS, "Content-Security-Policy": STRICT_CSP, "Cache-Control": cache,
                       "Content-Type": _content_type(found.name)}
            return web.FileResponse(found, headers=headers)
        if found is None and (os.path.splitext(wanted)[1].lower() in STATIC_EXTENSIONS
                              or not accepts_html(request.headers.get("Accept"))):
            return _not_found()
        index = inside(real_root, real_root / "index.html")
        if index is None:
            return _not_found()
        body, etag, csp = self._root_shell(index, settings.base_path)
        return _bytes_response(request, body, CONTENT_TYPES[".html"], "no-cache", csp, etag)

    def _root_shell(self, index: Path, base: str) -> tuple[bytes, str, str]:
        """A root's index.html as upstream serves its own: asset hrefs under the base path, the base path on
        `<html>`, and a CSP that admits exactly its inline scripts (by hash)."""
        mtime = index.stat().st_mtime_ns
        key = (str(index), base, mtime)
        cached = self._root_shells.get(key)
        if cached is not None:
            return cached
        html = index.read_text()
        for attr in ("src", "href"):
            html = html.replace(f'{attr}="./assets/', f'{attr}="{base}/assets/')
        html = re.sub(r"<html\b", f'<html data-openclaw-control-ui-base-path="{base}"', html, count=1, flags=re.I)
        hashes = ["'sha256-" + base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode() + "'"
                  for m in INLINE_SCRIPT.finditer(html)]
        csp = "; ".join((
            "default-src 'self'", "base-uri 'none'", "object-src 'none'", "frame-ancestors 'none'",
            "script-src " + " ".join(["'self'", *hashes]), "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob: https:", "media-src 'self' data: blob:", "font-src 'self'",
            "worker-src 'self'", "connect-src 'self' ws: wss: data:",
        ))
        body = html.encode()
        self._root_shells = {key: (body, _etag(body), csp)}
        return self._root_shells[key]


def add_control_ui(app: web.Application, core: GatewayCore | None, config: Callable[[], dict[str, Any]],
                   upgrade: Handler | None = None) -> ControlUi:
    """The UI answers every GET/HEAD no other route took (registered last); other methods keep their 404/405.
    `upgrade` serves a WebSocket upgrade at the base path."""
    ui = ControlUi(core, config, upgrade)
    app.router.add_get("/{tail:.*}", ui.handle)
    return ui
