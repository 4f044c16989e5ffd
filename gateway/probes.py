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
from typing import Any, NamedTuple, Protocol

import orjson

from openclaw_sup.config.restart import SERVING_STATES
from openclaw_sup.gateway.authn import FORWARD_HEADERS

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
    answers: dict[str, Made]
    """The last answer made for each `Plan.keys` entry (see `answer`)."""


class Plan(NamedTuple):
    """What a probe request asks, read once from its head (a prober sends the same head every time)."""

    kind: str
    head: bool
    close: bool
    forwarded: bool
    """A proxy header speaks for the caller: not a direct loopback one, whatever its address."""
    authorized: bool
    """It carries `Authorization`: from a caller that is not direct loopback, the HTTP API's route checks it."""
    keys: tuple[str, str]
    """Where its answer is kept, plain and detailed."""


class Made(NamedTuple):
    second: int
    uptime_ms: int
    body: bytes
    whole: bytes


def kind_of(path: str) -> str | None:
    """`live`, `ready` or `startup` for a probe path (the query string is ignored), else None."""
    return KINDS.get(path.split("?", 1)[0])


def plan(method: str, target: str, headers: Mapping[str, str]) -> Plan | None:
    """The plan of a probe the raw transport answers itself, or None if this request is not one."""
    kind = kind_of(target)
    if kind is None or not answerable(method, headers):
        return None
    close = "close" in headers.get("connection", "").lower()
    key = f"{kind} {method}{' close' if close else ''}"
    return Plan(kind, method == "HEAD", close, any(h in headers for h in FORWARD_HEADERS), "authorization" in headers,
                (key, f"{key} detailed"))


def answer(host: ProbeHost, plan: Plan, detailed: bool) -> bytes:
    """The whole answer to `plan`, made again only when what it says changes: the `Date` second, and the body
    (a live probe's depends on nothing else than the uptime's millisecond, so it is not even rebuilt to compare;
    the others ask `readiness()` every time, and a body that differs is a new answer)."""
    key = plan.keys[detailed]
    made = host.answers.get(key)
    second = int(time.time())
    uptime_ms = int((time.monotonic() - host.started) * 1000) if detailed else 0
    if plan.kind == "live":
        if made is not None and made.second == second and made.uptime_ms == uptime_ms:
            return made.whole
        status, body = verdict(host, "live", detailed, uptime_ms)
    else:
        status, body = verdict(host, plan.kind, detailed, uptime_ms)
        if made is not None and made.second == second and made.body == body:
            return made.whole
    whole = response(status, body, head=plan.head, close=plan.close, second=second)
    host.answers[key] = Made(second, uptime_ms, body, whole)
    return whole


def verdict(host: ProbeHost, kind: str, detailed: bool, uptime_ms: int | None = None) -> tuple[int, bytes]:
    """(status, JSON body) of probe `kind`; a detailed one says `uptime_ms` (default: now)."""
    if detailed and uptime_ms is None:
        uptime_ms = int((time.monotonic() - host.started) * 1000)
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
            body.update(failing=failing, uptimeMs=uptime_ms, workers=r.get("workers"),
                        **({"eventLoop": loop} if loop is not None else {}))
        return (200 if ok else 503), orjson.dumps(body)
    if detailed:
        body.update(version=host.version, uptimeMs=uptime_ms, **detail)
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


def http_date(now: int | None = None) -> bytes:
    """The `Date` header's value for second `now` (default: this one), made once a second."""
    global _date
    if now is None:
        now = int(time.time())
    if _date[0] != now:
        _date = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
    return _date[1]


def response(status: int, body: bytes, *, head: bool, close: bool, second: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer dated `second` (default: now); HEAD gets the same head (its Content-Length too)
    and no body."""
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\nDate: %s\r\n%s\r\n" % (
                status, REASONS[status].encode(), len(body), http_date(second),
                b"Connection: close\r\n" if close else b"")) + (b"" if head else body)


def answerable(method: str, headers: Mapping[str, str]) -> bool:
    """Whether the raw transport answers this probe request itself: a GET or HEAD with no body and no
    upgrade. Anything else (a body, an odd method) goes to aiohttp, which answers it as it answers any request."""
    if method not in METHODS or "upgrade" in headers or "transfer-encoding" in headers:
        return False
    return headers.get("content-length", "0").strip() in ("0", "")
