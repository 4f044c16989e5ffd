"""The health probes, `/health(z)`, `/ready(z)`, `/startup(z)`, GET and HEAD, with the spec's bodies.

Probes are what service managers, load balancers and Kubernetes ask all day, so they are answered on the
raw transport (`gateway/port.py`): no framework request, and aiohttp is not even imported for them. A probe
that arrives on a connection aiohttp already owns is answered by its route (`gateway/http_app.py`); both
build the answer here, so they say the same thing byte for byte. Details (version, uptime, workers; for
`/readyz` what is failing and the event loop's health, as upstream's) go to a direct loopback caller, or to one
whose `Authorization` the HTTP API accepts (that one is answered by the route).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from openclaw_sup.config.restart import SERVING_STATES

KINDS = {"/health": "live", "/healthz": "live", "/ready": "ready", "/readyz": "ready", "/startup": "startup",
         "/startupz": "startup"}
METHODS = ("GET", "HEAD")
REASONS = {200: "OK", 503: "Service Unavailable"}


class ProbeHost(Protocol):
    """What a probe reads of the gateway."""

    started: float
    version: str
    draining: bool
    readiness: Callable[[], dict[str, Any]]
    core: Any


def kind_of(path: str) -> str | None:
    """`live`, `ready` or `startup` for a probe path (the query string is ignored), else None."""
    return KINDS.get(path.split("?", 1)[0])


def verdict(host: ProbeHost, kind: str, detailed: bool) -> tuple[int, bytes]:
    """(status, JSON body) of probe `kind`."""
    body: dict[str, Any]
    detail: dict[str, Any] = {}
    if kind == "live":
        ok, body = True, {"ok": True, "status": "live"}
    elif kind == "startup":
        r = host.readiness()
        if host.draining:
            ok, body = False, {"ok": False, "status": "draining"}
        elif not r["started"]:
            ok, body = False, {"ok": False, "status": "starting"}
            detail["pendingReason"] = r.get("pending")
        else:
            ok, body = True, {"ok": True, "status": "started"}
    else:
        r = host.readiness()
        failing = _failing(host, r)
        ok, body = not failing, {"ready": not failing}
        if detailed:
            loop = host.core.loop_health.snapshot() if host.core is not None else None
            body.update(failing=failing, uptimeMs=int((time.monotonic() - host.started) * 1000),
                        workers=r.get("workers"), **({"eventLoop": loop} if loop is not None else {}))
        return (200 if ok else 503), orjson.dumps(body)
    if detailed:
        body.update(version=host.version, uptimeMs=int((time.monotonic() - host.started) * 1000), **detail)
    return (200 if ok else 503), orjson.dumps(body)


def _failing(host: ProbeHost, r: dict[str, Any]) -> list[str]:
    """Upstream's `failing` list: a channel by its id (`irc`), other workers by name (`scheduler`)."""
    if host.draining:
        return ["gateway-draining"]
    if not r["started"]:
        return ["startup-sidecars"]
    names = (n.split(":")[1] if n.startswith("channel:") else n
             for n, state in (r.get("workers") or {}).items() if state not in SERVING_STATES)
    return list(dict.fromkeys(names))


_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The `Date` header's value, made once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
    return _date[1]


def response(status: int, body: bytes, *, head: bool, close: bool) -> bytes:
    """A whole HTTP/1.1 answer; HEAD gets the same head (its Content-Length too) and no body."""
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\nDate: %s\r\n%s\r\n" % (
                status, REASONS[status].encode(), len(body), http_date(),
                b"Connection: close\r\n" if close else b"")) + (b"" if head else body)


def answerable(method: str, headers: Mapping[str, str]) -> bool:
    """Whether the raw transport answers this probe request itself: a GET or HEAD with no body and no
    upgrade. Anything else (a body, an odd method) goes to aiohttp, which answers it as it answers any request."""
    if method not in METHODS or "upgrade" in headers or "transfer-encoding" in headers:
        return False
    return headers.get("content-length", "0").strip() in ("0", "")
