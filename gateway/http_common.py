"""Shared pieces of the gateway's HTTP API: bearer auth, bounded JSON bodies, upstream's error bodies, SSE.

Error bodies, status codes and texts are upstream's (`http-common`): the OpenAI-compatible routes answer
`{"error": {"message", "type"}}`, a wrong or missing credential is `401 {"error": {"message": "Unauthorized",
"type": "unauthorized"}}`, a locked-out client `429` with `Retry-After`. Wrong secrets count in the same
failed-auth limiter as the WebSocket handshake (per client address, shared-secret class).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from openclaw_sup.gateway import authn

if TYPE_CHECKING:
    from openclaw_sup.gateway.core import GatewayCore

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
BODY_TIMEOUT_S = 30.0
DISCONNECT_POLL_S = 0.5


class BodyError(Exception):
    """A request body that cannot be used; `status` is 400, 408 or 413."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def now_ms() -> int:
    return int(time.time() * 1000)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", charset="utf-8",
                        headers=headers)


def openai_error(status: int, message: str, type_: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": {"message": message, "type": type_}}, headers)


def invalid_request(message: str) -> web.Response:
    return openai_error(400, message, "invalid_request_error")


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8", headers=headers)


def not_found() -> web.Response:
    return plain(404, "Not Found")


def method_not_allowed(allow: str) -> web.Response:
    return plain(405, "Method Not Allowed", {"Allow": allow})


def unauthorized() -> web.Response:
    return openai_error(401, "Unauthorized", "unauthorized")


def rate_limited(retry_after_ms: int) -> web.Response:
    headers = {"Retry-After": str(max(1, -(-retry_after_ms // 1000)))} if retry_after_ms > 0 else None
    return openai_error(429, "Too many failed authentication attempts. Please try again later.", "rate_limited",
                        headers)


def bearer_token(request: web.Request) -> str | None:
    raw = request.headers.get("Authorization", "").strip()
    if not raw.lower().startswith("bearer "):
        return None
    return raw[7:].strip() or None


def authorize(request: web.Request, core: GatewayCore) -> web.Response | None:
    """Check `Authorization: Bearer <token|password>`; None when the caller may go on, else the answer to send.

    A shared secret makes the caller a full operator (upstream ignores `x-openclaw-scopes` for it), so no scope
    check follows. Only a secret that was sent and is wrong counts as a failure in the limiter.
    """
    auth = core.auth
    if auth.mode == "none":
        return None
    ip = request.remote or ""
    now = now_ms()
    wait = core.limiter.check(ip, authn.SHARED_SECRET_CLASS, now)
    if wait is not None:
        return rate_limited(wait)
    token = bearer_token(request)
    result = authn.check_shared_secret(auth, {"token": token, "password": token} if token else None)
    if result.ok:
        core.limiter.succeed(ip, authn.SHARED_SECRET_CLASS)
        return None
    if result.wrong_credential:
        locked = core.limiter.fail(ip, authn.SHARED_SECRET_CLASS, now)
        if locked is not None:
            core.log("warning", f"http: too many failed authentication attempts from {ip}; locked out for "
                                f"{locked // 1000}s")
    return unauthorized()


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, refused early by Content-Length and again while streaming past `max_bytes`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BodyError(413, "Payload too large")
    if request.content.is_eof():  # the whole body came with the head (a small request): no wait, no deadline
        data = request.content.read_nowait()
        if len(data) > max_bytes:
            raise BodyError(413, "Payload too large")
        return data
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise BodyError(413, "Payload too large")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyError(408, "Request body timeout") from None
    return b"".join(chunks)


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The parsed JSON body (an empty body reads as `{}`, as upstream); BodyError when it is unusable."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, f"invalid JSON body: {exc}") from None


def body_error(exc: BodyError) -> web.Response:
    """Upstream's shape for a body refused by the OpenAI-compatible routes and /tools/invoke."""
    return openai_error(exc.status, str(exc), "invalid_request_error")


async def post_json(request: web.Request, core: GatewayCore, max_bytes: int) -> Any:
    """The front every POST endpoint shares: the method, bearer auth, then a JSON body of at most `max_bytes`.

    Returns the parsed body, or the `web.Response` that refuses the request (a JSON body never is one).
    """
    if request.method != "POST":
        return method_not_allowed("POST")
    denied = authorize(request, core)
    if denied is not None:
        return denied
    try:
        return await read_json(request, max_bytes)
    except BodyError as exc:
        return body_error(exc)


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def await_or_disconnect(request: web.Request, task: asyncio.Task[Any]) -> bool:
    """Wait for `task`; False (and the task cancelled) when the client went away first."""
    while not task.done():
        await asyncio.wait([task], timeout=DISCONNECT_POLL_S)
        if not task.done() and client_gone(request):
            task.cancel()
            return False
    return True


class SseStream:
    """A `text/event-stream` answer; `send` returns False once the client is gone (nothing more to write)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(status=200, headers={
            "Content-Type": SSE_CONTENT_TYPE, "Cache-Control": "no-cache", "Connection": "keep-alive"})
        self.open = True

    async def start(self) -> None:
        await self.response.prepare(self.request)

    async def send_raw(self, text: str) -> bool:
        if not self.open:
            return False
        try:
            await self.response.write(text.encode())
        except (ConnectionError, RuntimeError):
            self.open = False
        return self.open

    @staticmethod
    def data_lines(*payloads: Any) -> str:
        """`data:` messages, one per payload."""
        return "".join("data: " + orjson.dumps(p).decode() + "\n\n" for p in payloads)

    @staticmethod
    def event_lines(*payloads: dict[str, Any]) -> str:
        """`event:` + `data:` messages, one per payload (its `type` names the event)."""
        return "".join(f"event: {p['type']}\ndata: " + orjson.dumps(p).decode() + "\n\n" for p in payloads)

    async def data(self, *payloads: Any) -> bool:
        return await self.send_raw(self.data_lines(*payloads))

    async def event(self, *payloads: dict[str, Any]) -> bool:
        return await self.send_raw(self.event_lines(*payloads))

    async def done(self, tail: str = "") -> web.StreamResponse:
        """Write `tail` (the last messages) and `data: [DONE]` at once, then end the response."""
        if await self.send_raw(tail + "data: [DONE]\n\n"):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.response.write_eof()
        return self.response

