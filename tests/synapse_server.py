"""A real Matrix homeserver for the channel tests: Synapse (PyPI `matrix-synapse`) on loopback, SQLite, its own
directory, no federation and no outbound traffic (spec/test-servers.md), rate limits raised so a test's quick
logins and messages are never refused. Users are registered with the shared-secret admin API, and
`MatrixUser` is a real Matrix client (matrix-nio, an independent implementation from the worker's) acting as a
person: it creates rooms, invites, sends, and reads what the bot answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import free_port, wait_for

SHARED_SECRET = "synapse-test-registration-secret"
SERVER_NAME = "localhost"
LOOSE = {"per_second": 1000, "burst_count": 1000}


def homeserver_yaml(root: Path, port: int) -> str:
    """Synapse's config as JSON (a YAML subset), offline and permissive for tests."""
    cfg = {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(root / "homeserver.pid"),
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                       "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "sqlite3", "args": {"database": str(root / "homeserver.db")}},
        "media_store_path": str(root / "media"),
        "signing_key_path": str(root / "signing.key"),
        "log_config": str(root / "log.yaml"),
        "registration_shared_secret": SHARED_SECRET,
        "enable_registration": False,
        "report_stats": False,
        "trusted_key_servers": [],
        "federation_domain_whitelist": [],
        "url_preview_enabled": False,
        "enable_metrics": False,
        "suppress_key_server_warning": True,
        "bcrypt_rounds": 4,
        "rc_message": LOOSE,
        "rc_registration": LOOSE,
        "rc_login": {"address": LOOSE, "account": LOOSE, "failed_attempts": LOOSE},
        "rc_joins": {"local": LOOSE, "remote": LOOSE},
        "rc_joins_per_room": LOOSE,
        "rc_invites": {"per_room": LOOSE, "per_user": LOOSE, "per_issuer": LOOSE},
        "rc_room_creation": LOOSE,
        "rc_presence": {"per_user": LOOSE},
        "rc_admin_redaction": LOOSE,
        "rc_3pid_validation": LOOSE,
        "rc_delayed_event_mgmt": LOOSE,
        "rc_reports": LOOSE,
    }
    return json.dumps(cfg)


LOG_YAML = """version: 1
formatters:
  plain: {format: '%(asctime)s %(levelname)s %(name)s %(message)s'}
handlers:
  file: {class: logging.FileHandler, formatter: plain, filename: LOGFILE}
root: {level: WARNING, handlers: [file]}
disable_existing_loggers: false
"""


class Synapse:
    """One Synapse process in the foreground; `kill` and `start` again keep its data (same port, same db)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "media").mkdir(exist_ok=True)
        self.port = free_port()
        self.conf = root / "homeserver.yaml"
        self.conf.write_text(homeserver_yaml(root, self.port))
        (root / "log.yaml").write_text(LOG_YAML.replace("LOGFILE", str(root / "homeserver.log")))
        key = root / "signing.key"
        if not key.exists():
            gen = Path(sys.executable).parent / "generate_signing_key"
            key.write_text(subprocess.run([str(gen)], capture_output=True, text=True, check=True).stdout)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Synapse:
        out = (self.root / "stdout.txt").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.conf)],
                                     stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                     env={**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"})
        out.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"synapse exited {self.proc.returncode}: "
                                     f"{(self.root / 'stdout.txt').read_text()[-2000:]}")
            with urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=1) as r:
                return r.status == 200

        wait_for(up, 60, interval=0.1, what="synapse answering /versions")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def _post(self, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def register(self, localpart: str, password: str, admin: bool = False) -> dict[str, Any]:
        """Shared-secret registration (`/_synapse/admin/v1/register`): nonce first, then the HMAC-SHA1."""
        with urllib.request.urlopen(f"{self.url}/_synapse/admin/v1/register", timeout=10) as r:
            nonce = json.loads(r.read())["nonce"]
        mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        return self._post("/_synapse/admin/v1/register", {"nonce": nonce, "username": localpart,
                                                          "password": password, "admin": admin,
                                                          "mac": mac.hexdigest()})

    def login(self, localpart: str, password: str) -> dict[str, Any]:
        return self._post("/_matrix/client/v3/login", {"type": "m.login.password", "password": password,
                                                       "identifier": {"type": "m.id.user", "user": localpart}})


class MatrixUser:
    """A person on the homeserver, driven by matrix-nio in a thread of its own (the tests are synchronous)."""

    def __init__(self, hs: Synapse, localpart: str, password: str = "user-password-1") -> None:
        import nio

        self.nio = nio
        hs.register(localpart, password)
        self.user_id = f"@{localpart}:{SERVER_NAME}"
        self.timeline: list[tuple[str, str, str]] = []  # (room_id, sender, body) of every message seen
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.client = self.call(self._login(hs.url, localpart, password))
        self._sync_task = asyncio.run_coroutine_threadsafe(self._sync_forever(), self._loop)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _login(self, url: str, localpart: str, password: str) -> Any:
        client = self.nio.AsyncClient(url, self.user_id)
        res = await client.login(password, device_name="test-user")
        assert isinstance(res, self.nio.LoginResponse), res
        first = await client.sync(timeout=0, full_state=True)
        assert isinstance(first, self.nio.SyncResponse), first
        return client

    async def _sync_forever(self) -> None:
        while True:
            res = await self.client.sync(timeout=1000)
            if not isinstance(res, self.nio.SyncResponse):
                await asyncio.sleep(0.2)
                continue
            with self._lock:
                for room_id, room in res.rooms.join.items():
                    for ev in room.timeline.events:
                        if isinstance(ev, self.nio.RoomMessageText):
                            self.timeline.append((room_id, ev.sender, ev.body))
            for room_id in res.rooms.invite:
                with contextlib.suppress(Exception):
                    await self.client.join(room_id)

    def create_room(self, *, invite: list[str] = (), direct: bool = False, name: str | None = None,
                    encrypted: bool = False) -> str:
        initial = [{"type": "m.room.encryption", "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"}}] if encrypted else []
        res = self.call(self.client.room_create(
            invite=list(invite), is_direct=direct, name=name,
            preset=self.nio.RoomPreset.trusted_private_chat if direct else self.nio.RoomPreset.private_chat,
            initial_state=initial))
        assert isinstance(res, self.nio.RoomCreateResponse), res
        return res.room_id

    def invite(self, room_id: str, user_id: str) -> None:
        res = self.call(self.client.room_invite(room_id, user_id))
        assert isinstance(res, self.nio.RoomInviteResponse), res

    def send(self, room_id: str, body: str, mentions: list[str] | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if mentions is not None:
            content["m.mentions"] = {"user_ids": mentions}
        res = self.call(self.client.room_send(room_id, "m.room.message", content))
        assert isinstance(res, self.nio.RoomSendResponse), res
        return res.event_id

    def members(self, room_id: str) -> list[str]:
        res = self.call(self.client.joined_members(room_id))
        return [m.user_id for m in getattr(res, "members", [])]

    def messages_from(self, sender: str, room_id: str | None = None) -> list[str]:
        with self._lock:
            return [b for r, s, b in self.timeline if s == sender and (room_id is None or r == room_id)]

    def expect(self, sender: str, pred: Any, room_id: str | None = None, timeout: float = 20,
               what: str = "") -> str:
        return wait_for(lambda: next((b for b in self.messages_from(sender, room_id) if pred(b)), None), timeout,
                        interval=0.05, what=what or f"a message from {sender}")

    def close(self) -> None:
        self._sync_task.cancel()
        with contextlib.suppress(Exception):
            self.call(self.client.close(), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def wait_until_joined(user: MatrixUser, room_id: str, member: str, timeout: float = 20) -> None:
    wait_for(lambda: member in user.members(room_id), timeout, interval=0.1, what=f"{member} joined {room_id}")


def now_ms() -> int:
    return int(time.time() * 1000)
