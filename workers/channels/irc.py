"""IRC adapter (RFC 1459/2812 client): TLS, server PASS, SASL PLAIN (IRCv3 CAP), NickServ IDENTIFY, nick-in-use
fallback, PING/PONG both ways, reconnect with backoff, and flood control on what it sends.

Config (`channels.irc` or an account): `host`, `port` (6667, or 6697 with `tls`), `tls`, `nick`, `username`,
`realname`, `password`/`passwordFile` (server password; env `IRC_PASSWORD` for the default account), `sasl`
`{username, password, mechanism: PLAIN}`, `nickserv` `{password, service?}`, `channels` (to join).
A PRIVMSG to the bot's nick is a DM; one to a channel is a group message, "mentioned" when it starts with
`<nick>:` / `<nick>,` or names the nick as a word. IRC has no delivery receipts: a line is admitted to the
ingress queue as soon as it is read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import ssl
import time
from pathlib import Path
from typing import Any

from openclaw_sup.config.restart import Backoff
from openclaw_sup.workers.channels.adapter import Adapter, SendError
from openclaw_sup.workers.channels.policy import Inbound

CONNECT_TIMEOUT_S = 15.0
IDLE_PING_S = 90.0
FLOOD_BURST = 10
FLOOD_RATE = 2.0  # lines per second once the burst is spent
LINE_BYTES = 400  # text bytes per PRIVMSG, leaving room for the prefix the server adds (512 in all)


class IrcError(Exception):
    pass


def parse_line(line: str) -> tuple[dict[str, str], str, str, list[str]]:
    """`@tags :prefix COMMAND params :trailing` -> (tags, prefix, command, params)."""
    tags: dict[str, str] = {}
    if line.startswith("@"):
        raw, _, line = line.partition(" ")
        for item in raw[1:].split(";"):
            k, _, v = item.partition("=")
            tags[k] = v
    prefix = ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    trailing = None
    if " :" in line:
        line, _, trailing = line.partition(" :")
    parts = line.split()
    command = parts[0].upper() if parts else ""
    params = parts[1:]
    if trailing is not None:
        params.append(trailing)
    return tags, prefix, command, params


def split_text(text: str, limit: int = LINE_BYTES) -> list[str]:
    """Lines of at most `limit` UTF-8 bytes, split at newlines, then spaces, never inside a character."""
    out: list[str] = []
    for para in text.replace("\r", "").split("\n"):
        para = para.rstrip()
        while len(para.encode()) > limit:
            cut = limit
            while len(para[:cut].encode()) > limit:
                cut -= 1
            space = para.rfind(" ", 0, cut)
            cut = space if space > limit // 2 else cut
            out.append(para[:cut])
            para = para[cut:].lstrip()
        if para:
            out.append(para)
    return out


class IrcAdapter(Adapter):
    channel = "irc"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        cfg = self.cfg
        self.host = str(cfg.get("host") or "")
        self.tls = bool(cfg.get("tls"))
        self.port = int(cfg.get("port") or (6697 if self.tls else 6667))
        self.base_nick = str(cfg.get("nick") or "")
        self.nick = self.base_nick
        self.username = str(cfg.get("username") or self.base_nick or "openclaw")
        self.realname = str(cfg.get("realname") or "OpenClaw")
        self.password = self._password()
        sasl = cfg.get("sasl") if isinstance(cfg.get("sasl"), dict) else {}
        self.sasl_user = str(sasl.get("username") or self.username) if sasl.get("password") else ""
        self.sasl_password = str(sasl.get("password") or "")
        nickserv = cfg.get("nickserv") if isinstance(cfg.get("nickserv"), dict) else {}
        self.nickserv_password = str(nickserv.get("password") or "")
        self.nickserv_service = str(nickserv.get("service") or "NickServ")
        self.join_channels = [str(c) for c in cfg.get("channels") or []]
        self.writer: asyncio.StreamWriter | None = None
        self.server_name: str | None = None
        self._seq = itertools.count(1)
        self._tokens = float(FLOOD_BURST)
        self._tokens_at = time.monotonic()
        self._pongs: dict[str, asyncio.Future[float]] = {}
        self._sasl_failed = False

    def _password(self) -> str:
        if self.cfg.get("password"):
            return str(self.cfg["password"])
        if self.cfg.get("passwordFile"):
            with contextlib.suppress(OSError):
                return Path(str(self.cfg["passwordFile"])).expanduser().read_text().strip()
        if self.account_id == "default":
            return os.environ.get("IRC_PASSWORD", "")
        return ""

    @property
    def configured(self) -> bool:
        return bool(self.host and self.base_nick)

    def secrets(self) -> list[str]:
        return [self.password, self.sasl_password, self.nickserv_password]

    def status_extra(self) -> dict[str, Any]:
        return {"mode": "irc", "host": self.host, "port": self.port, "tls": self.tls, "nick": self.nick,
                "channels": self.join_channels}

    # -- connection ----------------------------------------------------------------------------------

    async def run(self) -> None:
        if not self.configured:
            self.set_error("not configured: set channels.irc.host and channels.irc.nick")
            self.log.error("irc: %s", self.last_error)
            await asyncio.Event().wait()
        backoff = Backoff(base=0.5, cap=15.0)
        while not self.closed:
            started = time.monotonic()
            try:
                await self._session(backoff)
                self.set_error("connection closed by the server")
            except Exception as exc:  # network errors, or the ingress write failing: reconnect either way
                self.set_error(f"{type(exc).__name__}: {exc}" if not isinstance(exc, IrcError) else str(exc))
            finally:
                self.mark_connected(False)
                await self._drop_writer()
            if self.closed:
                return
            if time.monotonic() - started > 60:
                backoff.reset()
            delay = backoff.next()
            self.log.warning("irc: disconnected from %s:%d (%s); reconnecting in %.1fs", self.host, self.port,
                             self.last_error, delay)
            await asyncio.sleep(delay)

    async def _drop_writer(self) -> None:
        writer, self.writer = self.writer, None
        for fut in self._pongs.values():
            if not fut.done():
                fut.set_exception(IrcError("disconnected"))
        self._pongs.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    def _write(self, *lines: str) -> None:
        if self.writer is None or self.writer.is_closing():
            raise SendError("not connected to the IRC server")
        self.writer.write(b"".join(line.encode() + b"\r\n" for line in lines))

    async def _session(self, backoff: Backoff) -> None:
        context = ssl.create_default_context() if self.tls else None
        reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=context, server_hostname=self.host if self.tls else None),
            CONNECT_TIMEOUT_S)
        self.nick = self.base_nick
        self._sasl_failed = False
        if self.sasl_password:
            self._write("CAP LS 302")
        if self.password:
            self._write(f"PASS {self.password}")
        self._write(f"NICK {self.nick}", f"USER {self.username} 0 * :{self.realname}")
        waited_ping = False
        while True:
            try:
                raw = await asyncio.wait_for(reader.readline(), IDLE_PING_S)
            except TimeoutError:
                if waited_ping:
                    raise IrcError(f"no answer from the server for {2 * IDLE_PING_S:.0f}s") from None
                waited_ping = True
                self._write("PING :keepalive")
                continue
            if not raw:
                return
            waited_ping = False
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                await self._on_line(line, backoff)

    async def _on_line(self, line: str, backoff: Backoff) -> None:
        tags, prefix, cmd, params = parse_line(line)
        if cmd == "PING":
            self._write(f"PONG :{params[-1] if params else ''}")
        elif cmd == "PONG":
            fut = self._pongs.pop(params[-1] if params else "", None)
            if fut is not None and not fut.done():
                fut.set_result(time.monotonic())
        elif cmd == "CAP":
            self._on_cap(params)
        elif cmd == "AUTHENTICATE" and params and params[0] == "+":
            blob = f"{self.sasl_user}\0{self.sasl_user}\0{self.sasl_password}".encode()
            self._write(f"AUTHENTICATE {base64.b64encode(blob).decode()}")
        elif cmd in ("903", "907"):
            self._write("CAP END")
        elif cmd in ("902", "904", "905", "906"):
            self._sasl_failed = True
            self.log.error("irc: SASL authentication failed (%s %s); check channels.irc.sasl", cmd,
                           params[-1] if params else "")
            self._write("CAP END")
        elif cmd in ("432", "433", "436", "437") and not self.connected:
            self.nick = self._next_nick()
            self.log.warning("irc: nick %s unavailable (%s); trying %s", params[1] if len(params) > 1 else "?",
                             cmd, self.nick)
            self._write(f"NICK {self.nick}")
        elif cmd == "001":
            self.nick = params[0] if params else self.nick
            self.server_name = prefix
            backoff.reset()
            if self.nickserv_password:
                self._write(f"PRIVMSG {self.nickserv_service} :IDENTIFY {self.nickserv_password}")
            for ch in self.join_channels:
                self._write(f"JOIN {ch}")
            self.log.info("irc: connected to %s:%d as %s", self.host, self.port, self.nick)
            self.mark_connected(True)
        elif cmd == "NICK" and prefix.split("!")[0].lower() == self.nick.lower() and params:
            self.nick = params[0]
        elif cmd == "ERROR":
            raise IrcError(f"server closed the link: {params[-1] if params else ''}")
        elif cmd == "464":
            self.set_error("server password rejected (464); check channels.irc.password")
        elif cmd == "PRIVMSG" and len(params) >= 2:
            await self._on_privmsg(tags, prefix, params[0], params[1])

    def _on_cap(self, params: list[str]) -> None:
        sub = params[1].upper() if len(params) > 1 else ""
        caps = params[-1].split() if params else []
        if sub == "LS":
            if "sasl" in [c.split("=")[0] for c in caps]:
                self._write("CAP REQ :sasl")
            elif not (len(params) > 2 and params[2] == "*"):
                self.log.error("irc: the server does not offer SASL; connecting without it")
                self._write("CAP END")
        elif sub == "ACK" and "sasl" in caps:
            self._write("AUTHENTICATE PLAIN")
        elif sub == "NAK":
            self._write("CAP END")

    def _next_nick(self) -> str:
        if self.nick == self.base_nick:
            return f"{self.base_nick}_"
        m = re.match(rf"^{re.escape(self.base_nick)}_(\d*)$", self.nick)
        n = int(m.group(1)) + 1 if m and m.group(1) else 2
        return f"{self.base_nick}_{n}"

    async def _on_privmsg(self, tags: dict[str, str], prefix: str, target: str, text: str) -> None:
        sender = prefix.split("!")[0]
        if text.startswith("\x01"):  # CTCP (VERSION, ACTION...): not a message to answer
            return
        direct = target.lower() == self.nick.lower()
        mentioned = False
        if not direct:
            addressed = re.match(rf"^\s*{re.escape(self.nick)}\s*[:,]\s*", text, re.IGNORECASE)
            if addressed:
                mentioned, text = True, text[addressed.end():]
            elif re.search(rf"(?<![\w-]){re.escape(self.nick)}(?![\w-])", text, re.IGNORECASE):
                mentioned = True
        msg_id = tags.get("msgid") or f"irc:{time.time_ns()}:{next(self._seq)}"
        await self.sink([Inbound(message_id=msg_id, sender_id=sender, text=text,
                                 chat_type="direct" if direct else "group", chat_id=sender if direct else target,
                                 sender_name=prefix, mentioned=mentioned, ts=time.time())], None)

    # -- sending -------------------------------------------------------------------------------------

    async def before_send(self, target: str, text: str) -> None:
        """Token bucket: FLOOD_BURST lines at once, then FLOOD_RATE lines a second."""
        need = max(1, len(split_text(text, LINE_BYTES - len(target.encode()))))
        while True:
            now = time.monotonic()
            self._tokens = min(float(FLOOD_BURST), self._tokens + (now - self._tokens_at) * FLOOD_RATE)
            self._tokens_at = now
            if self._tokens >= min(need, FLOOD_BURST):
                self._tokens -= need
                return
            await asyncio.sleep((min(need, FLOOD_BURST) - self._tokens) / FLOOD_RATE)

    async def send(self, target: str, text: str) -> str | None:
        lines = split_text(text, LINE_BYTES - len(target.encode()))
        self._write(*(f"PRIVMSG {target} :{line}" for line in lines))
        return None

    async def probe(self, timeout: float) -> dict[str, Any]:
        if not self.configured:
            return {"ok": False, "error": self.last_error}
        if not self.connected:
            return {"ok": False, "error": self.last_error or "not connected"}
        token = f"probe-{next(self._seq)}"
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pongs[token] = fut
        t0 = time.monotonic()
        try:
            self._write(f"PING :{token}")
            t1 = await asyncio.wait_for(fut, timeout)
        except (SendError, IrcError, TimeoutError) as exc:
            return {"ok": False, "error": str(exc) or "no PONG before the timeout"}
        finally:
            self._pongs.pop(token, None)
        return {"ok": True, "elapsedMs": round((t1 - t0) * 1000, 1), "server": self.server_name, "nick": self.nick}

    async def close(self) -> None:
        self.closed = True
        if self.writer is not None and not self.writer.is_closing():
            with contextlib.suppress(Exception):
                self._write("QUIT :bye")
                await asyncio.wait_for(self.writer.drain(), 1)
        await self._drop_writer()
