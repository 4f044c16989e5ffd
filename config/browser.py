"""Browser profiles as the `browser` config section describes them (operations spec section 10).

Pure and stdlib-only: the browser worker launches from these, and `doctor` checks the same executable, ports
and lock files without importing the worker. A profile is managed (we launch Chromium on its CDP port with its
own user-data dir) unless it is `attachOnly` or its `cdpUrl` is not loopback: then it is only ever attached to.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openclaw_sup.config.paths import derived_ports, pid_alive

DEFAULT_PROFILE = "openclaw"
CDP_RANGE = 100
AVOIDED_PORTS = frozenset({9222})
SINGLETON_FILES = ("SingletonLock", "SingletonSocket", "SingletonCookie")
UNSUPPORTED_DRIVERS = ("existing-session", "extension")

LINUX_BROWSERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Google Chrome", ("google-chrome", "google-chrome-stable", "/opt/google/chrome/chrome")),
    ("Brave", ("brave-browser", "brave", "/opt/brave.com/brave/brave-browser", "/opt/brave.com/brave/brave")),
    ("Microsoft Edge", ("microsoft-edge", "microsoft-edge-stable", "/opt/microsoft/msedge/msedge")),
    ("Chromium", ("chromium", "chromium-browser", "/snap/bin/chromium", "/usr/lib/chromium/chromium",
                  "/usr/lib/chromium-browser/chromium-browser")),
    ("Chrome Canary", ("google-chrome-canary", "google-chrome-unstable")),
)
MAC_BROWSERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Google Chrome", ("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",)),
    ("Brave", ("/Applications/Brave Browser.app/Contents/MacOS/Brave Browser",)),
    ("Microsoft Edge", ("/Applications/Microsoft Edge.app/Contents/MacOS/Microsoft Edge",)),
    ("Chromium", ("/Applications/Chromium.app/Contents/MacOS/Chromium",)),
    ("Chrome Canary", ("/Applications/Google Chrome Canary.app/Contents/MacOS/Google Chrome Canary",)),
)
BROWSER_DIRS = "/usr/bin:/usr/local/bin:/snap/bin:/opt/google/chrome:/opt/brave.com/brave"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def find_browser(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The first Chromium-family browser in upstream's order: Chrome, Brave, Edge, Chromium, Chrome Canary,
    then the Playwright cache. Returns (kind, path)."""
    env = os.environ if env is None else env
    table = MAC_BROWSERS if sys.platform == "darwin" else LINUX_BROWSERS
    search = f"{env.get('PATH', '')}:{BROWSER_DIRS}"
    for kind, names in table:
        for name in names:
            candidate = name if name.startswith("/") else shutil.which(name, path=search)
            if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return kind, candidate
    home = env.get("HOME") or str(Path.home())
    cache = env.get("PLAYWRIGHT_BROWSERS_PATH") or f"{home}/.cache/ms-playwright"
    for pattern in ("chromium-*/chrome-linux*/chrome", "chromium-*/chrome-mac*/Chromium.app/Contents/MacOS/Chromium"):
        for candidate in sorted(glob.glob(f"{cache}/{pattern}"), reverse=True):
            if os.access(candidate, os.X_OK):
                return "Chromium (Playwright)", candidate
    return None


def has_display(env: Mapping[str, str]) -> bool:
    return sys.platform != "linux" or bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


@dataclass(frozen=True)
class BrowserProfile:
    """One browser profile, fully resolved: where its CDP is, and how we would launch it."""

    name: str
    cdp_port: int | None
    cdp_url: str
    attach_only: bool
    remote: bool  # a configured cdpUrl: "Remote CDP ... is not reachable at <cdpUrl>"
    user_data_dir: Path
    executable_path: str | None  # configured (expanded), None = detect
    executable_key: str  # the config key executable_path came from, for error messages
    headless: bool
    headless_forced_off: bool  # OPENCLAW_BROWSER_HEADLESS=0: headed even without a display
    no_sandbox: bool
    extra_args: tuple[str, ...] = ()
    driver: str = "openclaw"
    color: str | None = None
    launch_timeout_ms: int = 15_000
    ready_timeout_ms: int = 8_000
    remote_timeout_ms: int = 1_500
    notes: tuple[str, ...] = field(default=())

    @property
    def managed(self) -> bool:
        return not self.attach_only and self.driver not in UNSUPPORTED_DRIVERS

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "driver": self.driver, "cdpPort": self.cdp_port, "cdpUrl": self.cdp_url,
                "attachOnly": self.attach_only, "userDataDir": str(self.user_data_dir),
                "executablePath": self.executable_path, "headless": self.headless, "noSandbox": self.no_sandbox,
                "color": self.color}


def _port_of(url: str) -> int | None:
    from urllib.parse import urlsplit

    with contextlib.suppress(ValueError):
        u = urlsplit(url)
        return u.port or (443 if u.scheme in ("https", "wss") else 80)
    return None


def _loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def browser_profiles(browser: Mapping[str, Any], gateway_port: int, state_dir: Path,
                     env: Mapping[str, str] | None = None) -> dict[str, BrowserProfile]:
    """Every profile of the `browser` section, the default one (`openclaw`) auto-created when absent.

    Profiles without a cdpPort get the lowest free port of the managed range (gateway port + 11 .. + 110, or
    `cdpPortRangeStart` .. + 99), skipping ports other profiles pin and 9222; the allocation depends only on
    the config, so a profile keeps its port across restarts.
    """
    env = os.environ if env is None else env
    cfg = dict(browser)
    configured = {str(k): _dict(v) for k, v in _dict(cfg.get("profiles")).items()}
    default_name = str(cfg.get("defaultProfile") or DEFAULT_PROFILE)
    if default_name not in configured:
        configured = {default_name: {}, **configured}
    first = cfg.get("cdpPortRangeStart") or derived_ports(gateway_port)["cdpFirst"]
    pinned = {int(p["cdpPort"]) for p in configured.values() if isinstance(p.get("cdpPort"), int)}
    free = (p for p in range(int(first), int(first) + CDP_RANGE) if p not in pinned and p not in AVOIDED_PORTS)
    env_headless = env.get("OPENCLAW_BROWSER_HEADLESS", "").strip()
    display = has_display(env)
    out: dict[str, BrowserProfile] = {}
    for name, p in configured.items():
        legacy_url = cfg.get("cdpUrl") if name == default_name else None
        cdp_url = str(p.get("cdpUrl") or legacy_url or "")
        # upstream: a loopback cdpUrl is still a managed profile on that port unless attachOnly says otherwise
        attach_only = bool(p.get("attachOnly", cfg.get("attachOnly", False))) or (bool(cdp_url) and not _loopback(
            cdp_url))
        port = p.get("cdpPort") if isinstance(p.get("cdpPort"), int) else None
        if cdp_url:
            port = _port_of(cdp_url)
        elif port is None:
            port = next(free, None)
        if not cdp_url and port is not None:
            cdp_url = f"http://127.0.0.1:{port}"
        exe_key = f"browser.profiles.{name}.executablePath" if p.get("executablePath") else "browser.executablePath"
        exe = p.get("executablePath") or cfg.get("executablePath")
        explicit = p.get("headless", cfg.get("headless"))
        if env_headless in ("0", "1"):
            headless = env_headless == "1"
        elif not display:
            headless = True
        else:
            headless = bool(explicit)
        out[name] = BrowserProfile(
            name=name, cdp_port=port, cdp_url=cdp_url, attach_only=attach_only,
            remote=bool(p.get("cdpUrl") or legacy_url),
            user_data_dir=state_dir / "browser" / name / "user-data",
            executable_path=str(Path(str(exe)).expanduser()) if exe else None, executable_key=exe_key,
            headless=headless, headless_forced_off=env_headless == "0" and not display,
            no_sandbox=bool(cfg.get("noSandbox", False)),
            extra_args=tuple(str(a) for a in cfg.get("extraArgs") or () if isinstance(a, str)),
            driver=str(p.get("driver") or "openclaw"), color=p.get("color") or cfg.get("color"),
            launch_timeout_ms=int(cfg.get("localLaunchTimeoutMs") or 15_000),
            ready_timeout_ms=int(cfg.get("localCdpReadyTimeoutMs") or 8_000),
            remote_timeout_ms=int(cfg.get("remoteCdpTimeoutMs") or 1_500),
        )
    return out


def default_profile_name(browser: Mapping[str, Any]) -> str:
    return str(browser.get("defaultProfile") or DEFAULT_PROFILE)


# ================================================================ Chromium's Singleton* lock files

def lock_owner(user_data_dir: Path) -> tuple[str, int] | None:
    """`SingletonLock` is a symlink to `<hostname>-<pid>`; None when there is none or it is unreadable."""
    with contextlib.suppress(OSError, ValueError):
        target = os.readlink(user_data_dir / "SingletonLock")
        host, _, pid = target.rpartition("-")
        return host, int(pid)
    return None


def stale_locks(user_data_dir: Path) -> list[Path]:
    """The Singleton* files of a user-data dir unless a live process of this host owns them.

    A lock naming another host counts as stale: the dir lives in this gateway's state dir, and the usual
    cause is a container whose hostname changed, after which Chromium refuses the profile forever.
    """
    present = [user_data_dir / n for n in SINGLETON_FILES if os.path.lexists(user_data_dir / n)]
    if not present:
        return []
    owner = lock_owner(user_data_dir)
    if owner is not None and owner[0] == socket.gethostname() and pid_alive(owner[1]):
        return []
    return present


def clear_locks(paths: list[Path]) -> list[str]:
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.name)
    return removed
