"""Telegram Bot API adapter: long-polling `getUpdates`, `sendMessage`, `getMe` for the probe.

Config: `botToken` or `tokenFile` (env `TELEGRAM_BOT_TOKEN` for the default account only), `apiBaseUrl` /
`apiRoot` (default https://api.telegram.org; tests point it at a local server). The update `offset` (which
acknowledges every earlier update to Telegram) is stored in the ingress queue in the same transaction as the
messages it covers, so it only advances once they are durable. `429` waits `parameters.retry_after`;
`401`/`403`/`404` on the bot's own calls are reported as auth errors (the token is wrong or revoked).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from openclaw_sup.config.restart import Backoff
from openclaw_sup.workers.channels.adapter import Adapter, SendError
from openclaw_sup.workers.channels.policy import Inbound
from openclaw_sup.workers.lazy import LazyModule

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = LazyModule("aiohttp")  # the fork server imports it first (kinds.SHARED_IMPORTS)

DEFAULT_API = "https://api.telegram.org"
POLL_TIMEOUT_S = 25
TEXT_LIMIT = 4096
OFFSET_KEY = "telegram.offset"


class TelegramError(Exception):
    def __init__(self, code: int, description: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description
        self.retry_after = retry_after

    @property
    def auth(self) -> bool:
        return self.code in (401, 403, 404)


class KeepAliveConnection:
    """One keep-alive HTTP/1.1 connection for `sendMessage`, opened ahead of time (`ensure`) so that `post` hands
    the request to the kernel synchronously, right after the outbox committed the reply as `sending`: a SIGKILL
    then cannot land between "marked sending" and "bytes gone", and a reply is neither lost nor sent twice."""

    def __init__(self, base: str) -> None:
        url = urlsplit(base)
        self.tls = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.tls else 80)
        self.prefix = url.path.rstrip("/")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def open(self) -> bool:
        return self.writer is not None and not self.writer.is_closing() and not self.reader.at_eof()

    async def ensure(self, timeout: float = 10.0) -> None:
        if not self.open:
            self.close()
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(
                self.host, self.port, ssl=ssl.create_default_context() if self.tls else None), timeout)

    def post(self, path: str, payload: dict[str, Any]) -> None:
        if not self.open:
            raise ConnectionError("connection to the Bot API is not open")
        body = orjson.dumps(payload)
        head = (f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
        self.writer.write(head.encode() + body)

    async def response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        status = int((await self.reader.readline()).split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                body += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
        else:
            body = await self.reader.read()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class TelegramAdapter(Adapter):
    channel = "telegram"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.token = self._token()
        self.base = str(self.cfg.get("apiBaseUrl") or self.cfg.get("apiRoot") or DEFAULT_API).rstrip("/")
        self.bot_id: int | None = None
        self.bot_username: str | None = None
        self.session: aiohttp.ClientSession | None = None
        self.sender = KeepAliveConnection(self.base)

    def _token(self) -> str:
        if self.cfg.get("botToken"):
            return str(self.cfg["botToken"]).strip()
        if self.cfg.get("tokenFile"):
            with contextlib.suppress(OSError):
                return Path(str(self.cfg["tokenFile"])).expanduser().read_text().strip()
        if self.account_id == "default":
            return os.environ.get("TELEGRAM_BOT_TOKEN", "").strip()
        return ""

    @property
    def configured(self) -> bool:
        return bool(self.token)

    def secrets(self) -> list[str]:
        return [self.token]

    def status_extra(self) -> dict[str, Any]:
        return {"mode": "polling", "bot": {"id": self.bot_id, "username": self.bot_username}
                if self.bot_id else None, "tokenSource": "config" if self.cfg.get("botToken") else
                "tokenFile" if self.cfg.get("tokenFile") else "env" if self.token else "none"}

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self.session

    async def call(self, method: str, payload: dict[str, Any], timeout: float = 30.0) -> Any:
        """One Bot API call; raises TelegramError for `ok: false` answers, aiohttp errors for the network."""
        url = f"{self.base}/bot{self.token}/{method}"
        async with self._session().post(url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            try:
                data = await r.json(content_type=None)
            except ValueError:
                raise TelegramError(r.status, f"non-JSON answer (HTTP {r.status})") from None
        if isinstance(data, dict) and data.get("ok") is True:
            return data.get("result")
        raise self._error(r.status, data, r.reason or "")

    @staticmethod
    def _error(status: int, data: Any, reason: str) -> TelegramError:
        data = data if isinstance(data, dict) else {}
        params = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
        retry = params.get("retry_after")
        return TelegramError(int(data.get("error_code") or status), str(data.get("description") or reason),
                             float(retry) if isinstance(retry, (int, float)) else None)

    def _report(self, what: str, exc: BaseException) -> None:
        if isinstance(exc, TelegramError) and exc.auth:
            text = (f"telegram: {what} failed: {exc.code} {exc.description} (auth error: check "
                    f"channels.telegram.botToken / TELEGRAM_BOT_TOKEN)")
        else:
            text = f"telegram: {what} failed: {type(exc).__name__}: {exc}"
        self.set_error(text)
        self.log.error("%s", self.last_error)

    async def run(self) -> None:
        if not self.configured:
            self.set_error("not configured: set channels.telegram.botToken (or tokenFile, or TELEGRAM_BOT_TOKEN)")
            self.log.error("telegram: %s", self.last_error)
            await asyncio.Event().wait()
        backoff = Backoff(base=1.0, cap=60.0)
        while not self.closed:
            try:
                if self.bot_id is None:
                    me = await self.call("getMe", {}, timeout=15)
                    self.bot_id, self.bot_username = int(me["id"]), me.get("username")
                    self.log.info("telegram: polling as @%s", self.bot_username)
                if not self.connected:
                    self.mark_connected(True)
                await self._poll_once()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except TelegramError as exc:
                self.mark_connected(False)
                if exc.code == 429 and exc.retry_after is not None:
                    self.log.warning("telegram: rate limited (429); retrying after %gs", exc.retry_after)
                    await asyncio.sleep(exc.retry_after)
                    continue
                self._report("getUpdates" if self.bot_id else "getMe", exc)
                await asyncio.sleep(backoff.next())
            except Exception as exc:  # network, bad answers, or the ingress write failing: the offset stays put
                self.mark_connected(False)
                self._report("getUpdates" if self.bot_id else "getMe", exc)
                await asyncio.sleep(backoff.next())

    async def _poll_once(self) -> None:
        offset = self.meta(OFFSET_KEY)
        payload: dict[str, Any] = {"timeout": POLL_TIMEOUT_S, "allowed_updates": ["message"]}
        if offset is not None:
            payload["offset"] = int(offset)
        updates = await self.call("getUpdates", payload, timeout=POLL_TIMEOUT_S + 10)
        if not isinstance(updates, list) or not updates:
            return
        msgs = [m for m in (self._inbound(u) for u in updates if isinstance(u, dict)) if m is not None]
        next_offset = max(int(u["update_id"]) for u in updates) + 1
        await self.sink(msgs, {OFFSET_KEY: str(next_offset)})

    def _inbound(self, update: dict[str, Any]) -> Inbound | None:
        msg = update.get("message")
        if not isinstance(msg, dict):
            return None
        text = msg.get("text") if isinstance(msg.get("text"), str) else msg.get("caption")
        sender = msg.get("from") if isinstance(msg.get("from"), dict) else {}
        chat = msg.get("chat") if isinstance(msg.get("chat"), dict) else {}
        if not isinstance(text, str) or not sender or sender.get("is_bot") or "id" not in chat:
            return None
        group = chat.get("type") in ("group", "supergroup")
        return Inbound(message_id=f"tg:{update['update_id']}", sender_id=str(sender.get("id")), text=text,
                       chat_type="group" if group else "direct", chat_id=str(chat["id"]),
                       sender_name=sender.get("username") or sender.get("first_name"),
                       mentioned=group and self._mentions_bot(msg, text), ts=float(msg.get("date") or time.time()))

    def _mentions_bot(self, msg: dict[str, Any], text: str) -> bool:
        reply_to = msg.get("reply_to_message") if isinstance(msg.get("reply_to_message"), dict) else {}
        if (reply_to.get("from") or {}).get("id") == self.bot_id:
            return True
        for ent in msg.get("entities") or []:
            if not isinstance(ent, dict):
                continue
            if ent.get("type") == "text_mention" and (ent.get("user") or {}).get("id") == self.bot_id:
                return True
            if ent.get("type") == "mention" and self.bot_username:
                start, length = int(ent.get("offset", 0)), int(ent.get("length", 0))
                if text[start:start + length].lower() == f"@{self.bot_username.lower()}":
                    return True
        return False

    async def before_send(self, target: str, text: str) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await self.sender.ensure()

    async def send(self, target: str, text: str) -> str | None:
        last: str | None = None
        for start in range(0, len(text), TEXT_LIMIT):
            try:
                if start:
                    await self.sender.ensure()
                self.sender.post(f"/bot{self.token}/sendMessage",
                                 {"chat_id": target, "text": text[start:start + TEXT_LIMIT]})
                async with asyncio.timeout(30):  # in this task: wait_for would start one per message
                    status, body = await self.sender.response()
                data = orjson.loads(body)
            except (OSError, TimeoutError, EOFError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                self.sender.close()
                raise SendError(self.redact(f"{type(exc).__name__}: {exc}")) from None
            if not (isinstance(data, dict) and data.get("ok") is True):
                exc = self._error(status, data, "")
                if exc.code == 429:
                    raise SendError(str(exc), retry_after=exc.retry_after or 1.0)
                if exc.code in (401, 404):
                    raise SendError(f"{exc} (auth error: check channels.telegram.botToken)", auth=True)
                raise SendError(str(exc), retryable=exc.code >= 500, auth=exc.code == 403)
            res = data.get("result")
            last = str(res.get("message_id")) if isinstance(res, dict) else None
        return last

    async def probe(self, timeout: float) -> dict[str, Any]:
        if not self.configured:
            return {"ok": False, "error": self.last_error or "not configured"}
        t0 = time.monotonic()
        try:
            me = await self.call("getMe", {}, timeout=timeout)
        except TelegramError as exc:
            return {"ok": False, "status": exc.code, "error": self.redact(str(exc)), "auth": exc.auth}
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return {"ok": False, "error": self.redact(f"{type(exc).__name__}: {exc}")}
        return {"ok": True, "elapsedMs": round((time.monotonic() - t0) * 1000, 1),
                "bot": {"id": me.get("id"), "username": me.get("username")}}

    async def close(self) -> None:
        self.closed = True
        self.sender.close()
        if self.session is not None:
            await self.session.close()
            self.session = None
