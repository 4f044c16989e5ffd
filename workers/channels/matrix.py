"""Matrix adapter (client-server API v3): login, `/sync` long-polling, DMs and rooms, invites, typing and read
receipts, `whoami` for the probe.

Why our own client rather than a library. matrix-nio 0.26.0 and mautrix 0.21.1 both point at any homeserver
URL and both could serve here (each lets us pass `since` and read `next_batch`, each takes a transaction id),
but a worker imports them after it is forked, and measured that way (fork from a process holding the same
preloads as our fork server, then import and build a client; `bench/channel_libs.py` prints it) a worker's
unique memory grows by 17.0 MB with matrix-nio and 10.6 MB with mautrix, against 2.9 MB for the worker itself on
aiohttp, which the fork server already shares. With one worker per account that is paid per account. The
slice of the API a bot needs is small (ten endpoints), so this module speaks it over the shared aiohttp.

Config (`channels.matrix`, upstream's keys): `homeserver`, `accessToken` or `userId` + `password` (the token a
password login mints is cached in the account's ingress database and reused, so a restart keeps the device),
`deviceId`, `deviceName`, env `MATRIX_*` (named accounts: `MATRIX_<ID>_*`, punctuation hex-escaped),
`network.dangerouslyAllowPrivateNetwork` (needed for a loopback or LAN homeserver), `autoJoin` (`off` default |
`always` | `allowlist` + `autoJoinAllowlist`), `dm.{enabled, policy, allowFrom}`, `groupPolicy`,
`groupAllowFrom`, `groups` (legacy `rooms`) `{<room>: {enabled, requireMention, autoReply, users, account}}`,
`allowlistOnly`, `textChunkLimit`.

Durability: the `since` token of each `/sync` answer is committed in the same transaction as the messages of that
answer, so a kill before the commit replays them (their event ids dedupe) and one after it loses nothing.
Replies are sent with `PUT .../send/m.room.message/<txnId>` where the txnId is the outbox row's id: the
homeserver answers a repeated txnId with the first event, so a reply cut short by a kill is resent safely.

End-to-end encryption is not supported yet: an encrypted room's messages cannot be read, so each such room is
named in `channels status` (an issue with the count of unread messages) and in the log, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from openclaw_sup.config.restart import Backoff
from openclaw_sup.workers.channels.adapter import Adapter, SendError
from openclaw_sup.workers.channels.httpjson import HttpJson, private_host
from openclaw_sup.workers.channels.policy import Inbound

SYNC_TIMEOUT_MS = 30_000
TEXT_LIMIT = 4000
CLIENT = "/_matrix/client/v3"
ENCRYPTED_NOTE = "end-to-end encryption is not supported yet; its messages cannot be read"


class MatrixError(Exception):
    def __init__(self, status: int, errcode: str, error: str, retry_after_ms: int | None = None) -> None:
        super().__init__(f"{status} {errcode}: {error}" if errcode else f"{status} {error}")
        self.status, self.errcode, self.error, self.retry_after_ms = status, errcode, error, retry_after_ms

    @property
    def auth(self) -> bool:
        return self.status == 401 or self.errcode in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_USER_DEACTIVATED")


def env_prefix(account_id: str) -> str:
    """`MATRIX_` for the default account, `MATRIX_<ID>_` otherwise (`ops-prod` -> `MATRIX_OPS_X2D_PROD_`)."""
    if account_id == "default":
        return "MATRIX_"
    token = "".join(c.upper() if c.isalnum() else f"_X{ord(c):02X}_" for c in account_id)
    return f"MATRIX_{token}_"


def room_target(target: str) -> str:
    """`room:!x`, `matrix:room:!x`, `user:@u`, `channel:#a` -> the bare id or alias."""
    for prefix in ("matrix:", "room:", "user:", "channel:"):
        if target.startswith(prefix):
            target = target[len(prefix):]
    return target


class MatrixAdapter(Adapter):
    channel = "matrix"
    group_noun = "room"
    idempotent_send = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        env = env_prefix(self.account_id)

        def setting(key: str, suffix: str) -> str:
            value = self.cfg.get(key)
            return str(value).strip() if isinstance(value, str) and value.strip() else os.environ.get(
                env + suffix, "").strip()

        self.homeserver = setting("homeserver", "HOMESERVER").rstrip("/")
        self.config_token = setting("accessToken", "ACCESS_TOKEN")
        self.token_source = "config" if isinstance(self.cfg.get("accessToken"), str) else (
            "env" if self.config_token else "none")
        self.user_id = setting("userId", "USER_ID")
        self.password = setting("password", "PASSWORD")
        self.device_id = setting("deviceId", "DEVICE_ID") or None
        self.device_name = setting("deviceName", "DEVICE_NAME") or "OpenClaw Gateway"
        self.token = self.config_token
        who = self.user_id or hashlib.sha256(self.config_token.encode()).hexdigest()[:16]
        self.state_key = f"{self.homeserver}|{who}"  # the since token and cached login belong to this pair
        self.api = HttpJson(self.homeserver)
        self.direct_rooms: dict[str, set[str]] = {}  # m.direct: user -> rooms
        self.member_counts: dict[str, int] = {}
        self.encrypted: dict[str, int] = {}  # room -> messages that could not be read
        self.display_name: str | None = None
        self._typing: set[str] = set()
        self._bg: set[asyncio.Task[Any]] = set()

    # -- config -------------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        return bool(self.homeserver and (self.config_token or (self.user_id and self.password)))

    def secrets(self) -> list[str]:
        return [self.config_token, self.password, self.token]

    @classmethod
    def policy_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        dm = cfg.get("dm") if isinstance(cfg.get("dm"), dict) else {}
        dm_policy = "disabled" if dm.get("enabled") is False else (dm.get("policy") or "pairing")
        group_policy = cfg.get("groupPolicy") or "allowlist"
        if cfg.get("allowlistOnly") is True:
            dm_policy = "allowlist" if dm_policy in ("pairing", "open") else dm_policy
            group_policy = "allowlist" if group_policy == "open" else group_policy
        rooms = cfg.get("groups") if isinstance(cfg.get("groups"), dict) else cfg.get("rooms")
        groups: dict[str, dict[str, Any]] = {}
        for room, entry in (rooms.items() if isinstance(rooms, dict) else ()):
            if not isinstance(entry, dict) or entry.get("account") not in (None, cfg.get("accountId")):
                continue
            view: dict[str, Any] = {k: entry[k] for k in ("enabled", "requireMention") if k in entry}
            if isinstance(entry.get("autoReply"), bool):
                view["requireMention"] = not entry["autoReply"]
            if isinstance(entry.get("users"), list):
                view["allowFrom"] = entry["users"]
            groups[str(room)] = view
        return {**cfg, "dmPolicy": dm_policy, "allowFrom": dm.get("allowFrom") or [], "groupPolicy": group_policy,
                "groups": groups, "mentionPatterns": []}

    def reply_target(self, msg: Inbound) -> str:
        return msg.chat_id  # a DM is a room too

    def _config_problem(self) -> str | None:
        if not self.configured:
            return ("not configured: set channels.matrix.homeserver and accessToken (or userId and password), "
                    "or MATRIX_HOMESERVER / MATRIX_ACCESS_TOKEN")
        url = urlsplit(self.homeserver)
        if url.scheme not in ("http", "https") or not url.hostname:
            return f"channels.matrix.homeserver must be an http(s) URL (got {self.homeserver!r})"
        allow_private = bool((self.cfg.get("network") or {}).get("dangerouslyAllowPrivateNetwork"))
        if private_host(self.homeserver):
            if not allow_private:
                return (f"homeserver {self.homeserver} is a private or loopback address; set channels.matrix."
                        "network.dangerouslyAllowPrivateNetwork: true to allow it")
        elif url.scheme == "http":
            return f"homeserver {self.homeserver} uses plain http on a public address; use https"
        return None

    def _meta_key(self, what: str) -> str:
        return f"matrix.{what}:{self.state_key}"

    # -- HTTP ---------------------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                   timeout: float = 30.0, auth: bool = True) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else None
        status, _, data = await self.api.call(method, path if path.startswith("/_") else CLIENT + path,
                                              body=body, params=params, headers=headers, timeout=timeout)
        if 200 <= status < 300:
            return data if isinstance(data, dict) else {}
        data = data if isinstance(data, dict) else {}
        retry = data.get("retry_after_ms")
        raise MatrixError(status, str(data.get("errcode") or ""), str(data.get("error") or data.get("_raw") or ""),
                          int(retry) if isinstance(retry, (int, float)) else None)

    # -- session ------------------------------------------------------------------------------------

    async def _authenticate(self) -> None:
        """A configured token as is; else the cached token from an earlier password login; else log in."""
        if not self.config_token and not self.token:
            cached = self.meta(self._meta_key("session"))
            if cached:
                session = orjson.loads(cached)
                self.token, self.device_id = session["accessToken"], session.get("deviceId") or self.device_id
                self.token_source = "cache"
        if self.token:
            try:
                me = await self.call("GET", "/account/whoami", timeout=15)
            except MatrixError as exc:
                if not (exc.auth and not self.config_token and self.password):
                    raise
                self.log.warning("matrix: cached access token rejected (%s); logging in again", exc.errcode)
                self.token = ""
            else:
                self.user_id, self.device_id = str(me.get("user_id") or self.user_id), me.get("device_id")
                return
        body: dict[str, Any] = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": self.user_id},
                                "password": self.password, "initial_device_display_name": self.device_name}
        if self.device_id:
            body["device_id"] = self.device_id
        res = await self.call("POST", "/login", body, auth=False, timeout=20)
        self.token, self.device_id = str(res["access_token"]), res.get("device_id")
        self.user_id = str(res.get("user_id") or self.user_id)
        self.token_source = "login"
        await self.sink([], {self._meta_key("session"): orjson.dumps(
            {"accessToken": self.token, "deviceId": self.device_id, "userId": self.user_id}).decode()})
        self.log.info("matrix: logged in as %s (device %s); token cached for restarts", self.user_id, self.device_id)

    async def _load_direct(self) -> None:
        try:
            data = await self.call("GET", f"/user/{quote(self.user_id)}/account_data/m.direct")
        except MatrixError as exc:
            if exc.errcode != "M_NOT_FOUND":
                raise
            data = {}
        self._set_direct(data)

    def _set_direct(self, content: dict[str, Any]) -> None:
        self.direct_rooms = {u: set(rooms) for u, rooms in content.items() if isinstance(rooms, list)}

    async def _mark_direct(self, user: str, room_id: str) -> None:
        self.direct_rooms.setdefault(user, set()).add(room_id)
        await self.call("PUT", f"/user/{quote(self.user_id)}/account_data/m.direct",
                        {u: sorted(r) for u, r in self.direct_rooms.items()})

    async def _profile(self) -> None:
        with contextlib.suppress(MatrixError):
            prof = await self.call("GET", f"/profile/{quote(self.user_id)}/displayname")
            self.display_name = prof.get("displayname")

    # -- the loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        problem = self._config_problem()
        if problem:
            self.set_error(problem)
            self.log.error("matrix: %s", self.last_error)
            await asyncio.Event().wait()
        if self.cfg.get("encryption") is True:
            self.log.warning("matrix: channels.matrix.encryption is set, but %s; encrypted rooms are reported in "
                             "channels status", ENCRYPTED_NOTE)
        backoff = Backoff(base=1.0, cap=60.0)
        while not self.closed:
            try:
                if not self.connected:
                    await self._authenticate()
                    await self._load_direct()
                    await self._profile()
                    self.log.info("matrix: syncing as %s on %s", self.user_id, self.homeserver)
                    self.mark_connected(True)
                await self._sync_once()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except MatrixError as exc:
                self.mark_connected(False)
                if exc.status == 429:
                    delay = (exc.retry_after_ms or 1000) / 1000
                    self.log.warning("matrix: rate limited (429 M_LIMIT_EXCEEDED); retrying after %gs", delay)
                    await asyncio.sleep(delay)
                    continue
                self._report(exc)
                if exc.auth and not self.config_token:
                    self.token = ""
                await asyncio.sleep(backoff.next())
            except Exception as exc:  # network, or the ingress write failing: the since token stays put
                self.mark_connected(False)
                self.set_error(f"matrix: sync failed: {type(exc).__name__}: {exc}")
                self.log.error("%s", self.last_error)
                await asyncio.sleep(backoff.next())

    def _report(self, exc: MatrixError) -> None:
        hint = (" (auth error: check channels.matrix.accessToken, or userId and password)" if exc.auth else "")
        self.set_error(f"matrix: {exc}{hint}")
        self.log.error("%s", self.last_error)

    def _filter(self) -> str:
        limit = int(self.cfg.get("initialSyncLimit") or 50)
        return orjson.dumps({
            "presence": {"types": []},
            "account_data": {"types": ["m.direct"]},
            "room": {"timeline": {"limit": limit}, "ephemeral": {"types": []},
                     "state": {"types": ["m.room.encryption", "m.room.member"], "lazy_load_members": True},
                     "account_data": {"types": []}},
        }).decode()

    async def _sync_once(self) -> None:
        since_key = self._meta_key("since")
        since = self.meta(since_key)
        params = {"timeout": str(SYNC_TIMEOUT_MS if since else 0), "filter": self._filter()}
        if since:
            params["since"] = since
        res = await self.call("GET", "/sync", params=params, timeout=SYNC_TIMEOUT_MS / 1000 + 15)
        for ev in (res.get("account_data") or {}).get("events") or []:
            if ev.get("type") == "m.direct" and isinstance(ev.get("content"), dict):
                self._set_direct(ev["content"])
        rooms = res.get("rooms") or {}
        for room_id, room in (rooms.get("invite") or {}).items():
            await self._on_invite(room_id, room)
        msgs: list[Inbound] = []
        last_event: dict[str, str] = {}
        for room_id, room in (rooms.get("join") or {}).items():
            summary = room.get("summary") or {}
            if isinstance(summary.get("m.joined_member_count"), int):
                self.member_counts[room_id] = summary["m.joined_member_count"]
            for ev in [*((room.get("state") or {}).get("events") or []),
                       *((room.get("timeline") or {}).get("events") or [])]:
                if ev.get("type") == "m.room.encryption":
                    self.encrypted.setdefault(room_id, 0)
            if not since:  # the first sync is a snapshot of history: never answer old messages
                continue
            for ev in (room.get("timeline") or {}).get("events") or []:
                msg = await self._inbound(room_id, ev)
                if msg is not None:
                    msgs.append(msg)
                    last_event[room_id] = str(ev["event_id"])
        await self.sink(msgs, {since_key: str(res["next_batch"])})
        for room_id, event_id in last_event.items():
            self._background(self.call("POST", f"/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}", {}))

    async def _on_invite(self, room_id: str, room: dict[str, Any]) -> None:
        events = (room.get("invite_state") or {}).get("events") or []
        mine = next((e for e in events if e.get("type") == "m.room.member" and e.get("state_key") == self.user_id),
                    {})
        inviter = str(mine.get("sender") or "?")
        direct = bool((mine.get("content") or {}).get("is_direct"))
        mode = self.cfg.get("autoJoin") or "off"
        allowed = mode == "always" or (mode == "allowlist" and await self._invite_allowed(room_id))
        if not allowed:
            self.log.info("matrix: invite to %s from %s ignored (autoJoin=%s)", room_id, inviter, mode)
            return
        await self.call("POST", f"/join/{quote(room_id)}", {})
        self.log.info("matrix: joined %s (invited by %s%s)", room_id, inviter, ", direct" if direct else "")
        if direct:
            await self._mark_direct(inviter, room_id)

    async def _invite_allowed(self, room_id: str) -> bool:
        for entry in self.cfg.get("autoJoinAllowlist") or []:
            entry = str(entry)
            if entry in ("*", room_id):
                return True
            if entry.startswith("#"):
                with contextlib.suppress(MatrixError):
                    res = await self.call("GET", f"/directory/room/{quote(entry)}")
                    if res.get("room_id") == room_id:
                        return True
        return False

    async def _is_direct(self, room_id: str) -> bool:
        if any(room_id in rooms for rooms in self.direct_rooms.values()):
            return True
        if room_id not in self.member_counts:
            res = await self.call("GET", f"/rooms/{quote(room_id)}/joined_members")
            self.member_counts[room_id] = len(res.get("joined") or {})
        return self.member_counts[room_id] == 2

    async def _inbound(self, room_id: str, ev: dict[str, Any]) -> Inbound | None:
        sender = str(ev.get("sender") or "")
        if sender == self.user_id or "event_id" not in ev:
            return None
        if ev.get("type") == "m.room.encrypted":
            self.encrypted[room_id] = self.encrypted.get(room_id, 0) + 1
            self.log.warning("matrix: message %s from %s in %s not read: the room is encrypted and %s",
                             ev["event_id"], sender, room_id, ENCRYPTED_NOTE)
            return None
        content = ev.get("content") if isinstance(ev.get("content"), dict) else {}
        body = content.get("body")
        if ev.get("type") != "m.room.message" or not isinstance(body, str) or "m.new_content" in content:
            return None
        direct = await self._is_direct(room_id)
        return Inbound(message_id=f"mx:{ev['event_id']}", sender_id=sender, text=body,
                       chat_type="direct" if direct else "group", chat_id=room_id, sender_name=sender,
                       mentioned=not direct and self._mentions_me(content, body),
                       ts=float(ev.get("origin_server_ts") or time.time() * 1000) / 1000)

    def _mentions_me(self, content: dict[str, Any], body: str) -> bool:
        mentions = content.get("m.mentions")
        if isinstance(mentions, dict) and self.user_id in (mentions.get("user_ids") or []):
            return True
        if self.user_id in body or f"matrix.to/#/{self.user_id}" in str(content.get("formatted_body") or ""):
            return True
        names = {self.display_name, self.user_id.split(":")[0].lstrip("@")} - {None, ""}
        return any(re.search(rf"(?<![\w-]){re.escape(str(n))}(?![\w-])", body, re.IGNORECASE) for n in names)

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(lambda t: (self._bg.discard(t), t.cancelled() or t.exception()))

    # -- sending ------------------------------------------------------------------------------------

    async def _room_for(self, target: str) -> str:
        target = room_target(target)
        if target.startswith("!"):
            return target
        if target.startswith("#"):
            return str((await self.call("GET", f"/directory/room/{quote(target)}"))["room_id"])
        if target.startswith("@"):
            for room_id in sorted(self.direct_rooms.get(target, ())):
                return room_id
            res = await self.call("POST", "/createRoom", {"invite": [target], "is_direct": True,
                                                          "preset": "trusted_private_chat"})
            await self._mark_direct(target, str(res["room_id"]))
            return str(res["room_id"])
        raise SendError(f"not a Matrix target: {target!r} (use !room:server, #alias:server or @user:server)",
                        retryable=False)

    async def send_keyed(self, key: str, target: str, text: str) -> str | None:
        if not self.token:
            raise SendError("not logged in to the homeserver")
        limit = int(self.cfg.get("textChunkLimit") or TEXT_LIMIT)
        try:
            room_id = await self._room_for(target)
            event_id = None
            for i, start in enumerate(range(0, len(text), limit)):
                txn = quote(f"{key}.{i}", safe="")
                res = await self.call("PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{txn}",
                                      {"msgtype": "m.text", "body": text[start:start + limit]})
                event_id = res.get("event_id")
        except MatrixError as exc:
            if exc.status == 429:
                raise SendError(str(exc), retry_after=(exc.retry_after_ms or 1000) / 1000) from None
            if exc.auth:
                raise SendError(f"{exc} (auth error: check channels.matrix.accessToken)", auth=True) from None
            raise SendError(str(exc), retryable=exc.status >= 500) from None
        except (OSError, TimeoutError) as exc:
            raise SendError(self.redact(f"{type(exc).__name__}: {exc}")) from None
        if room_id in self._typing:
            self._typing.discard(room_id)
            self._background(self._set_typing(room_id, False))
        return event_id

    async def send(self, target: str, text: str) -> str | None:
        return await self.send_keyed(f"send.{time.time_ns()}", target, text)

    async def _set_typing(self, room_id: str, on: bool) -> None:
        body: dict[str, Any] = {"typing": on, **({"timeout": 30_000} if on else {})}
        await self.call("PUT", f"/rooms/{quote(room_id)}/typing/{quote(self.user_id)}", body)

    def turn_started(self, msg: Inbound) -> None:
        if self.connected:
            self._typing.add(msg.chat_id)
            self._background(self._set_typing(msg.chat_id, True))

    # -- status -------------------------------------------------------------------------------------

    async def probe(self, timeout: float) -> dict[str, Any]:
        problem = self._config_problem()
        if problem:
            return {"ok": False, "error": problem}
        if not self.token:
            return {"ok": False, "error": self.last_error or "not logged in yet"}
        t0 = time.monotonic()
        try:
            me = await self.call("GET", "/account/whoami", timeout=timeout)
        except MatrixError as exc:
            return {"ok": False, "status": exc.status, "error": self.redact(str(exc)), "auth": exc.auth}
        except (OSError, TimeoutError) as exc:
            return {"ok": False, "error": self.redact(f"{type(exc).__name__}: {exc}")}
        return {"ok": True, "elapsedMs": round((time.monotonic() - t0) * 1000, 1),
                "bot": {"id": me.get("user_id"), "username": me.get("user_id")}, "deviceId": me.get("device_id")}

    def status_extra(self) -> dict[str, Any]:
        issues = [{"kind": "config", "message": f"room {room} is end-to-end encrypted: {ENCRYPTED_NOTE} "
                   f"({n} message(s) not read so far)", "fix": "use an unencrypted room or DM with the bot"}
                  for room, n in sorted(self.encrypted.items())]
        if self.cfg.get("encryption") is True:
            issues.append({"kind": "config", "message": "channels.matrix.encryption is set: UNAVAILABLE: "
                           "end-to-end encryption is not supported yet", "fix": "set encryption: false"})
        if self.last_error and ("auth error" in self.last_error or "not configured" in self.last_error):
            issues.append({"kind": "auth" if "auth" in self.last_error else "config", "message": self.last_error})
        return {"mode": "sync", "homeserver": self.homeserver, "baseUrl": self.homeserver,
                "bot": {"id": self.user_id, "username": self.user_id} if self.user_id else None,
                "deviceId": self.device_id, "tokenSource": self.token_source,
                "encryptedRooms": sorted(self.encrypted), "issues": issues}

    async def logout(self) -> bool:
        """Ends the session a password login made (and forgets its cached token); a configured token stays."""
        if self.config_token or not self.token:
            return False
        with contextlib.suppress(MatrixError, OSError, TimeoutError):
            await self.call("POST", "/logout", {}, timeout=10)
        self.token = ""
        await self.sink([], {self._meta_key("session"): "", self._meta_key("since"): ""})
        return True

    async def close(self) -> None:
        self.closed = True
        for task in list(self._bg):
            task.cancel()
        await self.api.close()
