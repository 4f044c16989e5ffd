"""Delivering a run's result: `announce` to a channel worker over the bus, or `webhook` as an HTTP POST.

A delivery failure never turns a run into an error: the run stays `ok`, its `deliveryStatus` is
`not-delivered` with the reason in `deliveryError`, and its completion is `failed`. The webhook token is
sent only in the Authorization header and never appears in a log line or a run entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openclaw_sup.config.record import record
from openclaw_sup.workers.lazy import LazyModule
from openclaw_sup.workers.runtime import RequestError, WorkerContext

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = LazyModule("aiohttp")  # imported on the first HTTP call

CHANNEL_TIMEOUT_S = 30.0
WEBHOOK_TIMEOUT_S = 10.0
DEFAULT_ACCOUNT = "default"


@record(frozen=True)
class Delivered:
    status: str
    error: str | None = None
    message_id: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "not-delivered"


NOT_REQUESTED = Delivered("not-requested")


def channel_worker(channel: str, account_id: str | None) -> str:
    return f"channel:{channel}:{account_id or DEFAULT_ACCOUNT}"


def is_missing_worker(exc: RequestError) -> bool:
    """The supervisor's answer for a worker the config does not have (as opposed to one that is down)."""
    return exc.code == "UNAVAILABLE" and str(exc).startswith("no worker named")


async def announce(ctx: WorkerContext, *, channel: str, account_id: str | None, to: str | None,
                   thread_id: str | None, text: str, source: dict[str, Any]) -> Delivered:
    worker = channel_worker(channel, account_id)
    params: dict[str, Any] = {"text": text, "source": source, "idempotencyKey": source.get("runId")}
    if to:
        params["to"] = to
    if thread_id:
        params["threadId"] = thread_id
    try:
        answer = await ctx.request("channel.send", params, to=worker, timeout=CHANNEL_TIMEOUT_S)
    except RequestError as exc:
        why = f"no channel account {worker} (not configured or disabled)" if is_missing_worker(exc) else str(exc)
        return Delivered("not-delivered", f"channel.send to {worker} failed: {why}")
    except TimeoutError:
        return Delivered("not-delivered", f"channel.send to {worker}: no answer within {CHANNEL_TIMEOUT_S:g}s")
    if isinstance(answer, dict) and answer.get("ok") is False:
        return Delivered("not-delivered", f"channel.send to {worker}: {answer.get('error') or 'refused'}")
    message_id = answer.get("messageId") if isinstance(answer, dict) else None
    return Delivered("delivered", message_id=str(message_id) if message_id is not None else None)


async def webhook(url: str, body: dict[str, Any], token: str | None) -> Delivered:
    headers = {"Content-Type": "application/json", "User-Agent": "openclaw-sup-cron"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)) as session, \
                session.post(url, json=body, headers=headers, allow_redirects=False) as resp:
            if 200 <= resp.status < 300:
                return Delivered("delivered")
            return Delivered("not-delivered", f"webhook answered HTTP {resp.status}")
    except TimeoutError:
        return Delivered("not-delivered", f"webhook: no answer within {WEBHOOK_TIMEOUT_S:g}s")
    except aiohttp.ClientError as exc:
        return Delivered("not-delivered", f"webhook: {type(exc).__name__}: {exc}"[:500])
