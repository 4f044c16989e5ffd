"""The DM pairing store: pending pairing requests and approved senders, per channel account.

Shared by the channel workers (they create requests and read the allow list on every DM) and the CLI
(`openclaw-sup pairing list|approve`, which works whether or not the gateway is up). It lives where upstream
keeps it and in its format, so `openclaw pairing list|approve` and the real gateway share it with us: the state
database `<stateDir>/state/openclaw.sqlite` (config/statedb.py), tables `channel_pairing_requests` (one row per
sender: `request_id` is the sender id, ISO-8601 `created_at`/`last_seen_at`, `meta_json` with `accountId`) and
`channel_pairing_allow_entries` (the approved sender ids of an account, in approval order). Channel and account
keys are lower-cased as upstream writes them. Every write is one short IMMEDIATE transaction; WAL and the busy
timeout make the few concurrent writers (one worker per account, our CLI, the real CLI) safe.

Rules (operations spec section 7, the same as upstream's): codes are 8 characters from an alphabet without
0/O/1/I, unique within a channel; a request expires one hour after it was created; an account has at most three
pending requests (extras are ignored); a sender with a pending request gets no new code until it expires (its
`last_seen_at` moves on).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from openclaw_sup.config import statedb, sup_layout
from openclaw_sup.config.record import record

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
REQUEST_TTL_MS = 3_600_000
MAX_PENDING_PER_ACCOUNT = 3
_UNSAFE_KEY = re.compile(r'[\\/:*?"<>|]')
APPROVED_NOTICE = "OpenClaw: your access request was approved. You can talk to the bot now."
"""What an approved sender is told when the operator asks to notify them."""


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def store_path(state_dir: Path) -> Path:
    return statedb.state_db_path(state_dir)


def now_ms() -> int:
    return int(time.time() * 1000)


def key(value: str) -> str:
    """A channel or account key as upstream stores it: trimmed, lower-case, no path characters."""
    return _UNSAFE_KEY.sub("_", value.strip().lower()).replace("..", "_")


def iso(ms: int) -> str:
    """Milliseconds as JavaScript's `Date.toISOString()` writes them."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_ms(text: str) -> int | None:
    try:
        return int(dt.datetime.fromisoformat(text).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


@record(frozen=True)
class PairingRequest:
    channel: str
    account_id: str
    code: str
    sender_id: str
    sender_name: str | None
    chat_id: str | None
    created_at: int
    expires_at: int

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "accountId": self.account_id, "code": self.code, "id": self.sender_id,
                "senderId": self.sender_id, "name": self.sender_name, "chatId": self.chat_id,
                "createdAt": self.created_at, "expiresAt": self.expires_at}


@record(frozen=True)
class RequestOutcome:
    """What `request` did: `created` (send the code), `pending` (one exists: stay silent), `full` (ignored)."""

    status: str
    request: PairingRequest | None = None


class PairingError(Exception):
    """An approval that cannot be done (unknown or expired code); the message says what to do."""


_COLUMNS = "channel_key, account_id, request_id, code, created_at, last_seen_at, meta_json"


def _request(row: tuple[Any, ...]) -> PairingRequest | None:
    """A stored row as a request; None for a row upstream would also skip (no readable creation time)."""
    channel, account, sender, code, created, _seen, meta_json = row
    created_ms = iso_ms(created)
    if created_ms is None or not code or not sender:
        return None
    meta: dict[str, Any] = {}
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        loaded = orjson.loads(meta_json) if meta_json else {}
        meta = loaded if isinstance(loaded, dict) else {}
    name, chat = meta.get("name"), meta.get("chatId")
    return PairingRequest(channel, account, str(code), str(sender), name if isinstance(name, str) else None,
                          chat if isinstance(chat, str) else None, created_ms, created_ms + REQUEST_TTL_MS)


class PairingStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = statedb.open_state_db(path)
        sup_layout.import_once(path.parent / sup_layout.SUP_PAIRING, "channel_pairing_requests", self._import)

    def _import(self, old: sqlite3.Connection) -> None:
        """Requests and approved senders of openclaw-sup's earlier pairing tables (config/sup_layout.py)."""
        requests = old.execute("SELECT channel, account_id, code, sender_id, sender_name, chat_id, created_at "
                               "FROM channel_pairing_requests").fetchall()
        allowed = old.execute("SELECT channel, account_id, sender_id, approved_at FROM "
                              "channel_pairing_allow_entries ORDER BY approved_at").fetchall()
        with self._tx():
            for channel, account, code, sender, name, chat, created in requests:
                meta = {k: v for k, v in (("name", name), ("chatId", chat)) if v and v != sender}
                self.db.execute(f"INSERT OR IGNORE INTO channel_pairing_requests ({_COLUMNS}) VALUES "
                                "(?, ?, ?, ?, ?, ?, ?)", (key(channel), key(account) or "default", sender, code,
                                                          iso(created), iso(created),
                                                          orjson.dumps({**meta, "accountId": key(account)}).decode()))
            for channel, account, sender, approved in allowed:
                self._allow(key(channel), key(account) or "default", sender, approved)

    def _allow(self, ch: str, acct: str, sender: str, now: int) -> None:
        self.db.execute(
            "INSERT INTO channel_pairing_allow_entries (channel_key, account_id, entry, sort_order, updated_at) "
            "VALUES (?, ?, ?, (SELECT coalesce(max(sort_order) + 1, 0) FROM channel_pairing_allow_entries "
            "WHERE channel_key = ? AND account_id = ?), ?) ON CONFLICT DO NOTHING", (ch, acct, sender, ch, acct, now))

    def close(self) -> None:
        self.db.close()

    def _expire(self, channel_key: str | None, now: int) -> None:
        """Drop requests an hour old (upstream prunes them on every read and write too)."""
        where, args = "", []
        if channel_key is not None:
            where, args = " AND channel_key = ?", [channel_key]
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM channel_pairing_requests WHERE 1{where}", args).fetchall()
        for row in rows:
            req = _request(row)
            if req is None or req.expires_at <= now:
                self.db.execute("DELETE FROM channel_pairing_requests WHERE channel_key=? AND account_id=? AND "
                                "request_id=?", row[:3])

    def is_allowed(self, channel: str, account_id: str, sender_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM channel_pairing_allow_entries WHERE channel_key=? AND account_id=? AND entry=?",
            (key(channel), key(account_id) or "default", sender_id)).fetchone()
        return row is not None

    def allowed(self, channel: str, account_id: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT entry FROM channel_pairing_allow_entries WHERE channel_key=? AND account_id=? "
            "ORDER BY sort_order, entry", (key(channel), key(account_id) or "default"))]

    def request(self, channel: str, account_id: str, sender_id: str, sender_name: str | None = None,
                chat_id: str | None = None, now: int | None = None) -> RequestOutcome:
        """Record a pairing request for an unknown DM sender, unless one is pending or the account is full."""
        now = now_ms() if now is None else now
        ch, acct = key(channel), key(account_id) or "default"
        with self._tx():
            self._expire(ch, now)
            row = self.db.execute(f"SELECT {_COLUMNS} FROM channel_pairing_requests WHERE channel_key=? AND "
                                  "account_id=? AND request_id=?", (ch, acct, sender_id)).fetchone()
            existing = _request(row) if row else None
            if existing is not None:
                self.db.execute("UPDATE channel_pairing_requests SET last_seen_at=? WHERE channel_key=? AND "
                                "account_id=? AND request_id=?", (iso(now), ch, acct, sender_id))
                return RequestOutcome("pending", existing)
            (count,) = self.db.execute("SELECT COUNT(*) FROM channel_pairing_requests WHERE channel_key=? AND "
                                       "account_id=?", (ch, acct)).fetchone()
            if count >= MAX_PENDING_PER_ACCOUNT:
                return RequestOutcome("full")
            taken = {str(c).upper() for (c,) in self.db.execute(
                "SELECT code FROM channel_pairing_requests WHERE channel_key=?", (ch,))}
            code = new_code()
            while code in taken:
                code = new_code()
            meta = {k: v for k, v in (("name", sender_name), ("chatId", chat_id)) if v and v != sender_id}
            self.db.execute(f"INSERT INTO channel_pairing_requests ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (ch, acct, sender_id, code, iso(now), iso(now),
                             orjson.dumps({**meta, "accountId": acct}).decode()))
            return RequestOutcome("created", PairingRequest(ch, acct, code, sender_id, sender_name, chat_id, now,
                                                            now + REQUEST_TTL_MS))

    def pending(self, channel: str | None = None, account_id: str | None = None,
                now: int | None = None) -> list[PairingRequest]:
        now = now_ms() if now is None else now
        sql = f"SELECT {_COLUMNS} FROM channel_pairing_requests WHERE 1"
        args: list[Any] = []
        if channel:
            sql += " AND channel_key=?"
            args.append(key(channel))
        if account_id:
            sql += " AND account_id=?"
            args.append(key(account_id))
        reqs = [r for row in self.db.execute(sql, args) if (r := _request(row)) and r.expires_at > now]
        return sorted(reqs, key=lambda r: (r.created_at, r.account_id, r.sender_id))

    def approve(self, channel: str, code: str, account_id: str | None = None, now: int | None = None,
                source: str = "cli") -> PairingRequest:
        """Move the request with `code` to the allow list; raise PairingError naming the fix when there is none.

        `source` is kept for callers; upstream's allow list records no origin."""
        now = now_ms() if now is None else now
        code = code.strip().upper()
        ch = key(channel)
        with self._tx():
            self._expire(ch, now)
            sql, args = f"SELECT {_COLUMNS} FROM channel_pairing_requests WHERE channel_key=? AND upper(code)=?", \
                [ch, code]
            if account_id:
                sql += " AND account_id=?"
                args.append(key(account_id))
            row = self.db.execute(sql, args).fetchone()
            req = _request(row) if row else None
            if req is None:
                raise PairingError(f"No pending pairing request found for code: {code} (channel {channel}); "
                                   f"codes expire after 1 hour - list them with `openclaw-sup pairing list "
                                   f"{channel}`")
            self.db.execute("DELETE FROM channel_pairing_requests WHERE channel_key=? AND account_id=? AND "
                            "request_id=?", (ch, req.account_id, req.sender_id))
            self._allow(ch, req.account_id, req.sender_id, now)
            return req

    def dismiss(self, channel: str, account_id: str, sender_id: str, now: int | None = None) -> PairingRequest | None:
        """Drop a pending request without approving it (the sender may ask again); None when there is none."""
        now = now_ms() if now is None else now
        ch, acct = key(channel), key(account_id) or "default"
        with self._tx():
            self._expire(ch, now)
            row = self.db.execute(f"SELECT {_COLUMNS} FROM channel_pairing_requests WHERE channel_key=? AND "
                                  "account_id=? AND request_id=?", (ch, acct, sender_id)).fetchone()
            if row is None:
                return None
            self.db.execute("DELETE FROM channel_pairing_requests WHERE channel_key=? AND account_id=? AND "
                            "request_id=?", (ch, acct, sender_id))
            return _request(row)

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self.db.write()
