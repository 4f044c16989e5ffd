"""Where the listener binds (`gateway.bind`) and the start-up guard against unauthenticated exposure."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

MODES = ("loopback", "lan", "tailnet", "custom", "auto")
TAILNET = ipaddress.ip_network("100.64.0.0/10")


class BindRefused(RuntimeError):
    pass


def _in_container() -> bool:
    return os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")


def _tailnet_ipv4() -> str | None:
    try:
        import psutil
    except ImportError:
        return None
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and ipaddress.ip_address(a.address) in TAILNET:
                return a.address
    return None


def resolve_host(gateway_cfg: dict[str, Any]) -> str:
    mode = gateway_cfg.get("bind") or "loopback"
    if mode not in MODES:
        raise BindRefused(f"gateway.bind {mode!r} is not one of {', '.join(MODES)}")
    if mode == "lan":
        return "0.0.0.0"
    if mode == "tailnet":
        return _tailnet_ipv4() or "127.0.0.1"
    if mode == "custom":
        host = gateway_cfg.get("customBindHost")
        try:
            ipaddress.IPv4Address(str(host))
        except ValueError:
            raise BindRefused(f"gateway.customBindHost {host!r} must be an IPv4 address when gateway.bind is "
                              "custom") from None
        return str(host)
    if mode == "auto":
        return "0.0.0.0" if _in_container() else "127.0.0.1"
    return "127.0.0.1"


def guard(host: str, port: int, has_shared_secret: bool) -> None:
    """Refuse a non-loopback bind without a token or password (upstream's exact words)."""
    if not ipaddress.ip_address(host).is_loopback and not has_shared_secret:
        raise BindRefused(f"refusing to bind gateway to {host}:{port} without auth (set gateway.auth.token or "
                          "gateway.auth.password, or OPENCLAW_GATEWAY_TOKEN)")
