"""What the HTTP providers share: a POST that retries 429/5xx honouring `retry-after`, and an SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from openclaw_sup.workers.agent.providers import ProviderError, Target
from openclaw_sup.workers.lazy import LazyModule

if TYPE_CHECKING:
    import email.utils as email_utils

    import aiohttp
else:
    aiohttp = LazyModule("aiohttp")  # imported on the first HTTP call
    email_utils = LazyModule("email.utils")  # an HTTP-date `retry-after` only: 10 modules an idle agent never uses

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_ATTEMPTS = 3
BACKOFF_S = (0.5, 1.0, 2.0)
MAX_RETRY_WAIT_S = 60.0
ERROR_BODY_CHARS = 300


def retry_delay(headers: Any, attempt: int) -> float:
    """Seconds to wait before the next attempt: `retry-after-ms`, then `retry-after` (seconds or an HTTP
    date), else a short exponential backoff."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            when = email_utils.parsedate_to_datetime(raw) if raw.strip() else None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    return BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]


def _error_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:ERROR_BODY_CHARS]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])[:ERROR_BODY_CHARS]
    if isinstance(err, str):
        return err[:ERROR_BODY_CHARS]
    return body.decode("utf-8", "replace").strip()[:ERROR_BODY_CHARS]


def _fix_for(target: Target, status: int) -> str:
    if status in (401, 403):
        return (f"; check the credential: `openclaw-sup models auth paste-token --provider {target.provider}` "
                f"or set {target.provider.upper()}_API_KEY")
    if status == 404:
        return f"; check the model id {target.model!r} and models.providers.{target.provider}.baseUrl"
    return ""


async def post_stream(session: aiohttp.ClientSession, target: Target, url: str, headers: dict[str, str],
                      body: dict[str, Any]) -> aiohttp.ClientResponse:
    """POST `body` and return the open 2xx response; retry what a server says is transient."""
    payload = orjson.dumps(body)
    for attempt in range(MAX_ATTEMPTS):
        try:
            resp = await session.post(url, data=payload, headers={"content-type": "application/json", **headers})
        except aiohttp.ClientError as exc:
            if attempt + 1 < MAX_ATTEMPTS:
                await asyncio.sleep(BACKOFF_S[attempt])
                continue
            raise ProviderError(f"model provider {target.where()} is unreachable: {type(exc).__name__}: {exc} "
                                f"(check models.providers.{target.provider}.baseUrl and that the server runs)"
                                ) from None
        if resp.status < 400:
            return resp
        text = _error_text(await resp.read())
        if target.api_key:
            text = text.replace(target.api_key, "***")  # a server that echoes the credential back
        resp.release()
        if resp.status in RETRY_STATUSES and attempt + 1 < MAX_ATTEMPTS:
            delay = retry_delay(resp.headers, attempt)
            if delay <= MAX_RETRY_WAIT_S:
                await asyncio.sleep(delay)
                continue
        kind = "rate_limit" if resp.status == 429 else "unknown"
        code = "INVALID_REQUEST" if resp.status in (400, 404, 422) else "UNAVAILABLE"
        raise ProviderError(f"model provider {target.where()} answered HTTP {resp.status}: {text}"
                            f"{_fix_for(target, resp.status)}", code=code, kind=kind)
    raise AssertionError("unreachable")


async def drain(resp: aiohttp.ClientResponse, within_s: float = 2.0) -> None:
    """After the stream's last event, read the rest of the body (normally just its end) so the connection goes
    back to the pool for the next turn; a server that keeps talking loses the connection instead."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        await asyncio.wait_for(resp.content.read(), within_s)


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """`(event, data)` pairs of a text/event-stream body (multi-line data joined with newlines)."""
    buf = b""
    event: str | None = None
    data: list[str] = []
    async for chunk in resp.content.iter_any():
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield event or "message", "\n".join(data)
                event, data = None, []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event or "message", "\n".join(data)


def json_of(target: Target, data: str) -> dict[str, Any]:
    try:
        out = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError(f"model provider {target.where()} sent a stream event that is not JSON: "
                            f"{data[:ERROR_BODY_CHARS]!r}") from None
    if not isinstance(out, dict):
        raise ProviderError(f"model provider {target.where()} sent a stream event that is not an object")
    return out


_pool: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None


def pooled_session() -> aiohttp.ClientSession:
    """The worker's one HTTP session: keep-alive connections to each provider outlive a turn, so a turn does
    not pay a new TCP and TLS handshake. Bound to the running loop (a new loop gets a new session)."""
    global _pool
    loop = asyncio.get_running_loop()
    if _pool is None or _pool[0] is not loop or _pool[1].closed:
        _pool = (loop, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=30)))
    return _pool[1]


async def close_pool() -> None:
    global _pool
    if _pool is not None:
        pool, _pool = _pool, None
        await pool[1].close()
