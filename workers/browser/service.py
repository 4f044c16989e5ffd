"""The browser worker's main: profiles from the options, the RPC handlers, restore after a crash, clean stop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import struct
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from openclaw_sup.config.browser import browser_profiles, default_profile_name, find_browser
from openclaw_sup.config.paths import DEFAULT_PORT, DEV_PORT, DEV_PROFILE
from openclaw_sup.workers.browser.cdp import CdpClient, CdpError
from openclaw_sup.workers.browser.chromium import sweep_recorded
from openclaw_sup.workers.browser.control import browser_request
from openclaw_sup.workers.browser.profile import ProfileRunner
from openclaw_sup.workers.browser.ssrf import SsrfPolicy
from openclaw_sup.workers.runtime import RequestError, WorkerContext

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_INLINE_B64 = 700_000  # the bus carries at most 1 MiB per message (bus.maxMessageBytes)
DEFAULT_ACTION_TIMEOUT_MS = 20_000
URL_SCHEMES = ("http", "https", "about", "data")
log = logging.getLogger("browser")


def gateway_port(ctx: WorkerContext) -> int:
    """The gateway's effective port (the supervisor passes it), else OPENCLAW_GATEWAY_PORT, else the default."""
    for value in (ctx.options.get("gatewayPort"), os.environ.get("OPENCLAW_GATEWAY_PORT")):
        try:
            if value:
                return int(value)
        except (TypeError, ValueError):
            pass
    return DEV_PORT if ctx.profile == DEV_PROFILE else DEFAULT_PORT


def png_size(data: bytes) -> tuple[int, int]:
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise RequestError("INVALID_REQUEST", "url is required (e.g. https://example.com)")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in URL_SCHEMES:
        raise RequestError("INVALID_REQUEST", f"url {url!r}: scheme must be one of {', '.join(URL_SCHEMES)}")
    return url


class BrowserWorker:
    """The profiles of one gateway and the methods that drive them."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.cdp = CdpClient()
        section = {k: v for k, v in ctx.options.items() if k not in ("gatewayPort", "stateDir")}
        self.state_dir: Path = ctx.state_dir()
        self.default = default_profile_name(section)
        self.action_timeout = int(section.get("actionTimeoutMs") or DEFAULT_ACTION_TIMEOUT_MS) / 1000
        profiles = browser_profiles(section, gateway_port(ctx), self.state_dir)
        self.runners = {name: ProfileRunner(p, self.cdp, self._emit) for name, p in profiles.items()}
        self.detected = find_browser()
        self.ssrf = SsrfPolicy(section.get("ssrfPolicy"))

    def _emit(self, payload: dict[str, Any]) -> None:
        self.ctx.emit("browser", payload)
        self.ctx.stats["browsersRunning"] = sum(1 for r in self.runners.values() if r.active)

    def runner(self, params: dict[str, Any]) -> ProfileRunner:
        name = params.get("profile") or self.default
        runner = self.runners.get(str(name))
        if runner is None:
            known = ", ".join(sorted(self.runners))
            raise RequestError("INVALID_REQUEST", f'unknown browser profile "{name}" (profiles: {known})')
        return runner

    # -- life ------------------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Kill what a SIGKILLed predecessor's Chromium groups left behind."""
        for r in self.runners.values():
            if r.profile.managed:
                n = sweep_recorded(r.profile)
                if n:
                    log.warning('browser: killed %d leftover Chromium process(es) of profile "%s"', n, r.name)

    async def restore(self) -> None:
        """Profiles that were up when the previous worker died come back up."""
        for r in self.runners.values():
            if r.profile.managed and r.wanted_marker.exists():
                log.info('browser: restarting Chromium for profile "%s" (it was running when the worker stopped)',
                         r.name)
                try:
                    await r.start()
                except RequestError as exc:
                    log.error('browser: profile "%s" did not come back: %s', r.name, exc)

    async def shutdown(self) -> None:
        """Stop every profile at once: each SIGTERM grace runs in parallel, inside the supervisor's stop bound."""
        await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
        await self.cdp.close()

    # -- methods ---------------------------------------------------------------------------------------

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        selected = self.runner(params)
        profiles = [await r.status() for r in self.runners.values()]
        current = next(p for p in profiles if p["profile"] == selected.name)
        return {"enabled": True, **current, "transport": "cdp", "detectedBrowser": self.detected[0] if self.detected
                else None, "detectedExecutablePath": self.detected[1] if self.detected else None,
                "defaultProfile": self.default, "profiles": profiles}

    async def start(self, params: dict[str, Any]) -> dict[str, Any]:
        runner = self.runner(params)
        await runner.start()
        return await runner.status()

    async def stop(self, params: dict[str, Any]) -> dict[str, Any]:
        runner = self.runner(params)
        stopped = await runner.stop()
        return {"ok": True, "profile": runner.name, "stopped": stopped}

    async def _pages(self, runner: ProfileRunner) -> list[dict[str, Any]]:
        try:
            targets = await self.cdp.targets(runner.profile.cdp_url)
        except CdpError as exc:
            raise RequestError("UNAVAILABLE", f'browser profile "{runner.name}": {exc}') from None
        return [t for t in targets if t.get("type") == "page"]

    async def tabs(self, params: dict[str, Any]) -> dict[str, Any]:
        runner = self.runner(params)
        if not runner.active:
            return {"profile": runner.name, "running": False, "tabs": []}
        tabs = [{"targetId": t["id"], "title": t.get("title", ""), "url": t.get("url", ""), "type": t["type"]}
                for t in await self._pages(runner)]
        return {"profile": runner.name, "running": True, "tabs": tabs}

    async def _ensure(self, params: dict[str, Any]) -> ProfileRunner:
        runner = self.runner(params)
        if not runner.active:
            await runner.start()
        return runner

    async def _target(self, runner: ProfileRunner, target_id: Any) -> dict[str, Any]:
        pages = await self._pages(runner)
        if target_id:
            for t in pages:
                if t["id"] == target_id:
                    return t
            raise RequestError("INVALID_REQUEST", f'no tab with targetId "{target_id}" in profile "{runner.name}"')
        if not pages:
            raise RequestError("UNAVAILABLE", f'No browser tabs found for profile="{runner.name}"')
        return pages[0]

    async def _navigate(self, runner: ProfileRunner, target: dict[str, Any], url: str) -> dict[str, Any]:
        try:
            result = await self.cdp.commands(target["webSocketDebuggerUrl"], [("Page.enable", {}), (
                "Page.navigate", {"url": url})], timeout=self.action_timeout, wait_event="Page.loadEventFired")
        except (CdpError, KeyError) as exc:
            raise RequestError("UNAVAILABLE", f"navigate to {url} failed: {exc}") from None
        nav = result[-1]
        if nav.get("errorText"):
            raise RequestError("UNAVAILABLE", f"navigate to {url} failed: {nav['errorText']}")
        return {"ok": True, "profile": runner.name, "targetId": target["id"], "url": url}

    async def open(self, params: dict[str, Any]) -> dict[str, Any]:
        url = check_url(params.get("url"))
        await self.ssrf.check(url)
        runner = await self._ensure(params)
        try:
            tab = await self.cdp.new_tab(runner.profile.cdp_url, "about:blank")
        except CdpError as exc:
            raise RequestError("UNAVAILABLE", f"open {url} failed: {exc}") from None
        await self._navigate(runner, tab, url)
        title = next((t.get("title", "") for t in await self._pages(runner) if t["id"] == tab["id"]), "")
        return {"ok": True, "profile": runner.name, "targetId": tab["id"], "url": url, "title": title}

    async def navigate(self, params: dict[str, Any]) -> dict[str, Any]:
        url = check_url(params.get("url"))
        await self.ssrf.check(url)
        runner = await self._ensure(params)
        return await self._navigate(runner, await self._target(runner, params.get("targetId")), url)

    async def screenshot(self, params: dict[str, Any]) -> dict[str, Any]:
        runner = await self._ensure(params)
        target = await self._target(runner, params.get("targetId"))
        ws = target["webSocketDebuggerUrl"]
        try:
            shot = await self.cdp.command(ws, "Page.captureScreenshot", {"format": "png"},
                                          timeout=self.action_timeout)
            fmt = "png"
            if len(shot.get("data", "")) > MAX_INLINE_B64:
                shot = await self.cdp.command(ws, "Page.captureScreenshot", {"format": "jpeg", "quality": 60},
                                              timeout=self.action_timeout)
                fmt = "jpeg"
        except CdpError as exc:
            raise RequestError("UNAVAILABLE", f"screenshot failed: {exc}") from None
        data = shot.get("data", "")
        if len(data) > MAX_INLINE_B64:
            raise RequestError("UNAVAILABLE", f"screenshot is {len(data)} bytes of base64, over the bus limit; "
                               "use a smaller window (browser.extraArgs --window-size=W,H)")
        out: dict[str, Any] = {"ok": True, "profile": runner.name, "targetId": target["id"], "url": target.get("url"),
                               "format": fmt, "data": data}
        if fmt == "png":
            out["width"], out["height"] = png_size(base64.b64decode(data))
        return out


async def main(ctx: WorkerContext) -> None:
    worker = BrowserWorker(ctx)
    worker.sweep()
    for method in ("status", "start", "stop", "tabs", "open", "navigate", "screenshot"):
        ctx.handle(f"browser.{method}", getattr(worker, method))
    ctx.handle("browser.request", lambda params: browser_request(worker, params))
    ctx.ready()
    names = ", ".join(f"{r.name}:{r.profile.cdp_port}" + ("(attach)" if not r.profile.managed else "")
                      for r in worker.runners.values())
    log.info("browser: profiles %s; state under %s", names, worker.state_dir / "browser")
    restoring = asyncio.ensure_future(worker.restore())  # a stop must not wait for Chromium's start-up
    try:
        await ctx.stopping.wait()
    finally:
        restoring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await restoring
        await worker.shutdown()
