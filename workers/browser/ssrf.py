"""`browser.ssrfPolicy`: where `open` and `navigate` may go. Strict by default, as upstream: a URL whose host is
(or resolves to) a private, loopback, link-local or otherwise non-public address is refused unless
`dangerouslyAllowPrivateNetwork` (legacy `allowPrivateNetwork`) is true or the host is in `allowedHostnames`;
`blockedHostnames` is refused first. Patterns: `example.com` exactly, `*.example.com` its subdomains (not the apex).
Only the URL asked for is checked (a redirect to a private address is not intercepted).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from openclaw_sup.workers.runtime import RequestError

UNCHECKED_SCHEMES = ("about", "data")


def host_matches(host: str, patterns: Iterable[Any]) -> bool:
    host = host.lower().rstrip(".")
    for raw in patterns:
        pattern = str(raw).lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _private(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global


class SsrfPolicy:
    def __init__(self, cfg: Any) -> None:
        cfg = cfg if isinstance(cfg, dict) else {}
        self.allow_private = bool(cfg.get("dangerouslyAllowPrivateNetwork", cfg.get("allowPrivateNetwork", False)))
        self.allowed = [h for h in cfg.get("allowedHostnames") or () if isinstance(h, str)]
        self.blocked = [h for h in cfg.get("blockedHostnames") or () if isinstance(h, str)]

    async def check(self, url: str) -> None:
        """Raise INVALID_REQUEST when the policy refuses `url`."""
        u = urlsplit(url)
        if u.scheme.lower() in UNCHECKED_SCHEMES:
            return
        host = (u.hostname or "").lower()
        if not host:
            raise RequestError("INVALID_REQUEST", f"url {url!r} has no host")
        if host_matches(host, self.blocked):
            raise RequestError("INVALID_REQUEST", f"Navigation to {host} is blocked by browser.ssrfPolicy."
                               "blockedHostnames")
        if self.allow_private or host_matches(host, self.allowed):
            return
        try:
            addrs = [host] if _is_ip(host) else [info[4][0] for info in await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM)]
        except OSError as exc:
            raise RequestError("INVALID_REQUEST", f"cannot resolve {host}: {exc}") from None
        if any(_private(a) for a in addrs):
            raise RequestError(
                "INVALID_REQUEST", f"Navigation to {host} is blocked by browser.ssrfPolicy (private network address); "
                "add it to browser.ssrfPolicy.allowedHostnames or set "
                "browser.ssrfPolicy.dangerouslyAllowPrivateNetwork true", {"host": host})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True
