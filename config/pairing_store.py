"""The DM pairing store: pending pairing requests and approved senders, per channel account.

Shared by the channel workers (they create requests and read the allow list on every DM) and the CLI
(`openclaw-sup pairing list|approve`, which works whether or not the gateway is up). It lives where upstream
keeps it: `<stateDir>/state/openclaw.sqlite`, tables `channel_pairing_requests` and
`channel_pairing_allow_entries`, keyed by channel + account. SQLite in WAL mode with a busy timeout makes the
few concurrent writers (one worker per account, the CLI) safe; every write is one short transaction.

Rules (operations spec section 7): codes are 8 characters from an alphabet without 0/O/1/I, a request expires
after one hour, an account has at most three pending requests (extras are ignored), and a sender with a
pending request gets no new code message until it expires.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openclaw_sup.config import sqlitedb
from openclaw_sup.config.sqlitedb import immediate

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
REQUEST_TTL_MS = 3_600_000
MAX_PENDING_PER_ACCOUNT = 3
APPROVED_NOTICE = "OpenClaw: your access request was approved. You can talk to the bot now."
"""What an approved sender is told when the operator asks to notify them."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_pairing_requests (
    channel TEXT NOT NULL,
    account_id TEXT NOT NULL,
    code TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    sender_name TEXT,
    chat_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (channel, account_id, sender_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS channel_pairing_requests_code ON channel_pairing_requests (channel, code);
CREATE TABLE IF NOT EXISTS channel_pairing_allow_entries (
    channel TEXT NOT NULL,
    account_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    approved_at INTEGER NOT NULL,
    source TEXT,
    PRIMARY KEY (channel, account_id, sender_id)
);
"""


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def store_path(state_dir: Path) -> Path:
    return state_dir / "state" / "openclaw.sqlite"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RequestOutcome:
    """What `request` did: `created` (send the code), `pending` (one exists: stay silent), `full` (ignored)."""

    status: str
    request: PairingRequest | None = None


class PairingError(Exception):
    """An approval that cannot be done (unknown or expired code); the message says what to do."""


class PairingStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.db = sqlitedb.connect(path)
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _expire(self, now: int) -> None:
        self.db.execute("DELETE FROM channel_pairing_requests WHERE expires_at <= ?", (now,))

    def is_allowed(self, channel: str, account_id: str, sender_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM channel_pairing_allow_entries WHERE channel=? AND account_id=? AND sender_id=?",
            (channel, account_id, sender_id)).fetchone()
        return row is not None

    def allowed(self, channel: str, account_id: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT sender_id FROM channel_pairing_allow_entries WHERE channel=? AND account_id=? ORDER BY approved_at",
            (channel, account_id))]

    def request(self, channel: str, account_id: str, sender_id: str, sender_name: str | None = None,
                chat_id: str | None = None, now: int | None = None) -> RequestOutcome:
        """Record a pairing request for an unknown DM sender, unless one is pending or the account is full."""
        now = now_ms() if now is None else now
        with self._tx():
            self._expire(now)
            row = self.db.execute(
                "SELECT * FROM channel_pairing_requests WHERE channel=? AND account_id=? AND sender_id=?",
                (channel, account_id, sender_id)).fetchone()
            if row is not None:
                return RequestOutcome("pending", PairingRequest(*row))
            (count,) = self.db.execute(
                "SELECT COUNT(*) FROM channel_pairing_requests WHERE channel=? AND account_id=?",
                (channel, account_id)).fetchone()
            if count >= MAX_PENDING_PER_ACCOUNT:
                return RequestOutcome("full")
            while True:
                code = new_code()
                taken = self.db.execute("SELECT 1 FROM channel_pairing_requests WHERE channel=? AND code=?",
                                        (channel, code)).fetchone()
                if not taken:
                    break
            req = PairingRequest(channel, account_id, code, sender_id, sender_name, chat_id, now,
                                 now + REQUEST_TTL_MS)
            self.db.execute("INSERT INTO channel_pairing_requests VALUES (?,?,?,?,?,?,?,?)",
                            (req.channel, req.account_id, req.code, req.sender_id, req.sender_name, req.chat_id,
                             req.created_at, req.expires_at))
            return RequestOutcome("created", req)

    def pending(self, channel: str | None = None, account_id: str | None = None,
                now: int | None = None) -> list[PairingRequest]:
        now = now_ms() if now is None else now
        sql = "SELECT * FROM channel_pairing_requests WHERE expires_at > ?"
        args: list[Any] = [now]
        if channel:
            sql += " AND channel=?"
            args.append(channel)
        if account_id:
            sql += " AND account_id=?"
            args.append(account_id)
        return [PairingRequest(*r) for r in self.db.execute(sql + " ORDER BY created_at", args)]

    def approve(self, channel: str, code: str, account_id: str | None = None, now: int | None = None,
                source: str = "cli") -> PairingRequest:
        """Move the request with `code` to the allow list; raise PairingError naming the fix when there is none."""
        now = now_ms() if now is None else now
        code = code.strip().upper()
        with self._tx():
            self._expire(now)
            sql, args = "SELECT * FROM channel_pairing_requests WHERE channel=? AND code=?", [channel, code]
            if account_id:
                sql += " AND account_id=?"
                args.append(account_id)
            row = self.db.execute(sql, args).fetchone()
            if row is None:
                raise PairingError(f"No pending pairing request found for code: {code} (channel {channel}); "
                                   f"codes expire after 1 hour - list them with `openclaw-sup pairing list "
                                   f"{channel}`")
            req = PairingRequest(*row)
            self.db.execute("DELETE FROM channel_pairing_requests WHERE channel=? AND account_id=? AND sender_id=?",
                            (req.channel, req.account_id, req.sender_id))
            self.db.execute("INSERT OR REPLACE INTO channel_pairing_allow_entries VALUES (?,?,?,?,?)",
                            (req.channel, req.account_id, req.sender_id, now, source))
            return req

    def dismiss(self, channel: str, account_id: str, sender_id: str, now: int | None = None) -> PairingRequest | None:
        """Drop a pending request without approving it (the sender may ask again); None when there is none."""
        now = now_ms() if now is None else now
        with self._tx():
            self._expire(now)
            row = self.db.execute(
                "SELECT * FROM channel_pairing_requests WHERE channel=? AND account_id=? AND sender_id=?",
                (channel, account_id, sender_id)).fetchone()
            if row is None:
                return None
            self.db.execute("DELETE FROM channel_pairing_requests WHERE channel=? AND account_id=? AND sender_id=?",
                            (channel, account_id, sender_id))
            return PairingRequest(*row)

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate(self.db)

