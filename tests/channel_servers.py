"""Network peers for the channel tests: a private Debian `ngircd` on loopback with a tiny IRC client, and a local
Telegram Bot API server (the one remote service that cannot run here) following the documented shapes:
`GET` or `POST /bot<token>/<method>` with parameters in the query string, a JSON or a urlencoded body, answers
`{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description", "parameters"?: {"retry_after"}}`;
`getUpdates` long-polls and an `offset` confirms every update below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from conftest import Gateway, free_port, wait_for
from openclaw_sup.gateway.client import GatewayClient

NGIRCD = shutil.which("ngircd") or "/usr/sbin/ngircd"


class Ngircd:
    """One ngircd in the foreground (`-n`) with its own config file and port; restartable on the same port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = root / "ngircd.conf"
        self.conf.write_text(
            "[Global]\n\tName = irc.test.local\n\tInfo = openclaw-sup tests\n\tListen = 127.0.0.1\n"
            f"\tPorts = {self.port}\n\tMotdPhrase = test\n"
            "[Limits]\n\tMaxNickLength = 30\n\tPingTimeout = 120\n\tPongTimeout = 20\n"
            "[Options]\n\tDNS = no\n\tIdent = no\n\tPAM = no\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Ngircd:
        out = (self.root / "ngircd.out").open("ab")
        self.proc = subprocess.Popen([NGIRCD, "-n", "-f", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        out.close()

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True

        wait_for(listening, 10, what=f"ngircd listening on {self.port}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class IrcClient:
    """A blocking IRC user: a reader thread keeps every line; `expect` waits for one matching a predicate."""

    def __init__(self, port: int, nick: str) -> None:
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(None)  # the reader waits as long as the user idles (and answers the server's PINGs)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        self.expect(lambda ln: f" 001 {nick} " in ln, what="registration")

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            *complete, buf = buf.split(b"\r\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace")
                if line.startswith("PING"):
                    with contextlib.suppress(OSError):
                        self.sock.sendall(("PONG" + line[4:] + "\r\n").encode())
                with self._lock:
                    self.lines.append(line)

    def send(self, *lines: str) -> None:
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

    def privmsg(self, target: str, text: str) -> None:
        self.send(f"PRIVMSG {target} :{text}")

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def expect(self, pred: Any, timeout: float = 15, what: str = "") -> str:
        return wait_for(lambda: next((ln for ln in self.snapshot() if pred(ln)), None), timeout, what=what)

    def messages_from(self, nick: str, target: str | None = None) -> list[str]:
        """Texts of the PRIVMSGs `nick` sent (to `target`, default this user)."""
        target = target or self.nick
        out = []
        for ln in self.snapshot():
            if ln.startswith(f":{nick}!") and f" PRIVMSG {target} :" in ln:
                out.append(ln.split(f" PRIVMSG {target} :", 1)[1])
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("QUIT :bye")
        self.sock.close()


# Bot API methods documented to return True on success that a bot calls around its messages (set-up, typing, reactions).
TRUE_METHODS = frozenset({"deleteWebhook", "setMyCommands", "deleteMyCommands", "sendChatAction", "setMessageReaction"})


class FakeTelegram:
    """A Bot API server in a thread: tests push updates, read what the bot sent, and script error answers."""

    def __init__(self, token: str, bot_username: str = "claw_bot") -> None:
        self.token = token
        self.bot = {"id": 999, "is_bot": True, "first_name": "Claw", "username": bot_username}
        self.port = free_port()
        self.updates: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.confirmed = 0  # every update_id below this was confirmed by an offset
        self.fail_next: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._new = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 keep-alive, by hand: a request whose bytes arrived is handled even if the client is gone
        by then (aiohttp's server would drop it), which is what a real server that read the request does."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                verb, path, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (ln.partition(":") for ln in header_lines if ln)}
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                status, payload = await self._handle(verb, path, body, headers.get("content-type", ""))
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: "
                             f"{len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError,
                asyncio.CancelledError):  # a long poll still open when the server closes
            pass
        finally:
            writer.close()

    def push_text(self, chat_id: int, text: str, *, sender_id: int | None = None, chat_type: str = "private",
                  entities: list[dict[str, Any]] | None = None) -> int:
        with self._lock:
            uid = self._next_id
            self._next_id += 1
            msg: dict[str, Any] = {
                "message_id": uid, "date": int(time.time()), "text": text,
                "from": {"id": sender_id or chat_id, "is_bot": False, "first_name": f"u{sender_id or chat_id}"},
                "chat": {"id": chat_id, "type": chat_type},
            }
            if entities:
                msg["entities"] = entities
            self.updates.append({"update_id": uid, "message": msg})
        self._loop.call_soon_threadsafe(self._new.set)
        return uid

    def fail(self, method: str, status: int, body: dict[str, Any]) -> None:
        """The next call of `method` answers HTTP `status` with `body`."""
        with self._lock:
            self.fail_next.setdefault(method, []).append((status, body))

    def sent_texts(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(str(m["chat_id"]), m["text"]) for m in self.sent]

    async def _handle(self, verb: str, path: str, raw: bytes, content_type: str = "application/json"
                      ) -> tuple[int, dict[str, Any]]:
        path, _, query = path.partition("?")
        parts = path.split("/")
        if verb not in ("GET", "POST") or len(parts) != 3 or not parts[1].startswith("bot"):
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        token, method = parts[1][3:], parts[2]
        body: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
        if content_type.startswith("application/x-www-form-urlencoded"):
            body.update(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
        elif raw:
            with contextlib.suppress(ValueError):
                body.update(json.loads(raw))
        with self._lock:
            self.calls.append((method, body))
            scripted = self.fail_next.get(method)
            failure = scripted.pop(0) if scripted and token == self.token else None
        if token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if failure is not None:
            return failure
        if method == "getMe":
            return 200, {"ok": True, "result": self.bot}
        if method == "getUpdates":
            return 200, {"ok": True, "result": await self._get_updates(body)}
        if method in TRUE_METHODS:
            return 200, {"ok": True, "result": True}
        if method == "sendMessage":
            with self._lock:
                self.sent.append(body)
                mid = 100_000 + len(self.sent)
            return 200, {"ok": True, "result": {"message_id": mid, "date": int(time.time()),
                                                "chat": {"id": body.get("chat_id")}, "text": body.get("text")}}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}

    async def _get_updates(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(body.get("offset") or 0)
        deadline = time.monotonic() + min(float(body.get("timeout") or 0), 2.0)
        while True:
            with self._lock:
                if offset:
                    self.confirmed = max(self.confirmed, offset)
                    self.updates = [u for u in self.updates if u["update_id"] >= offset]
                batch = self.updates[:100]
            if batch or time.monotonic() >= deadline:
                return batch
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), max(0.01, deadline - time.monotonic()))

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def history(gw: Gateway, session_key: str, token: str) -> list[str]:
    """User messages the agent recorded for a session (what reached the agent)."""
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=token)
    c.connect()
    try:
        res = c.request("chat.history", {"sessionKey": session_key, "limit": 50})
    finally:
        c.close()
    return [m["content"] if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
            for m in res.get("messages", []) if m.get("role") == "user"]


def channel_account(gw: Gateway, token: str, channel: str, probe: bool = False, index: int = 0) -> dict[str, Any]:
    """One account's entry of `channels.status` (with `--probe` when asked)."""
    c = GatewayClient(f"ws://127.0.0.1:{gw.port}", token=token)
    c.connect()
    try:
        return c.request("channels.status", {"probe": probe, "timeoutMs": 5000})["channelAccounts"][channel][index]
    finally:
        c.close()
