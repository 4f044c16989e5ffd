"""Device identity for the `connect` handshake: Ed25519 proofs, the pairing store and device tokens.

A device proves possession of its key by signing a payload that binds the connection's challenge nonce, the
client identity, role, scopes and the token it authenticates with. The pairing store remembers which devices an
operator approved (roles, scopes, pinned platform metadata), the pending requests awaiting approval, and the
device token of each approved role handed out in `hello-ok`, in upstream's tables (see DeviceStore).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from openclaw_sup.config import sqlitedb, statedb, sup_layout
from openclaw_sup.config.record import record
from openclaw_sup.gateway.authn import scopes_cover

DEFAULT_SKEW_MS = 120_000
PENDING_TTL_MS = 300_000
MAX_LIVE_TOKENS_PER_ROLE = 4
_NATIVE_APP_IDS = frozenset({"openclaw-macos", "openclaw-ios", "openclaw-android"})

_PROOF_FAILURES = {
    "device-nonce-missing": ("device nonce required", "DEVICE_AUTH_NONCE_REQUIRED"),
    "device-nonce-mismatch": ("device nonce mismatch", "DEVICE_AUTH_NONCE_MISMATCH"),
    "device-signature": ("device signature invalid", "DEVICE_AUTH_SIGNATURE_INVALID"),
    "device-signature-stale": ("device signature expired", "DEVICE_AUTH_SIGNATURE_EXPIRED"),
    "device-id-mismatch": ("device identity mismatch", "DEVICE_AUTH_DEVICE_ID_MISMATCH"),
    "device-public-key": ("device public key invalid", "DEVICE_AUTH_PUBLIC_KEY_INVALID"),
}


def device_auth_error(reason: str) -> dict[str, Any]:
    """The `INVALID_REQUEST` object for a failed device proof (sent, then close 1008 with its message)."""
    message, code = _PROOF_FAILURES[reason]
    return {"code": "INVALID_REQUEST", "message": message, "details": {"code": code, "reason": reason}}


def b64url_decode(text: str) -> bytes:
    """Decode base64url, tolerating padding and the standard alphabet as Node's decoder does."""
    s = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def raw_public_key(public_key: Any) -> bytes | None:
    """The raw 32-byte Ed25519 key from base64url or PEM SubjectPublicKeyInfo text, or None if neither."""
    if not isinstance(public_key, str) or not public_key.strip():
        return None
    if "-----BEGIN" in public_key:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

        try:
            key = load_pem_public_key(public_key.strip().encode())
        except ValueError:
            return None
        if not isinstance(key, Ed25519PublicKey):
            return None
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        raw = b64url_decode(public_key)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def device_id_for(raw_key: bytes) -> str:
    return hashlib.sha256(raw_key).hexdigest()


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalize_metadata(value: Any) -> str:
    """Trim and ASCII-lowercase platform/deviceFamily, as both signer and pairing pin compare them."""
    if not isinstance(value, str):
        return ""
    return value.strip().translate(_ASCII_LOWER)



def signature_token(auth: Mapping[str, Any] | None) -> str | None:
    """The token a client signs into its payload: `auth.token`, else `auth.deviceToken`, else bootstrap token."""
    auth = auth or {}
    for key in ("token", "deviceToken", "bootstrapToken"):
        value = auth.get(key)
        if isinstance(value, str):
            return value
    return None


def build_payload(version: Literal["v2", "v3"], *, device_id: str, client: Mapping[str, Any], role: str,
                  scopes: Iterable[str], signed_at_ms: int, token: str | None, nonce: str) -> str:
    """The exact text a device signs; v3 also pins platform and device family."""
    fields = [version, device_id, str(client.get("id", "")), str(client.get("mode", "")), role,
              ",".join(scopes), str(signed_at_ms), token or "", nonce]
    if version == "v3":
        fields += [normalize_metadata(client.get("platform")), normalize_metadata(client.get("deviceFamily"))]
    return "|".join(fields)


class NonceRegistry:
    """Recently accepted (deviceId, nonce) pairs, so a captured proof cannot be replayed within its skew window.

    Bounded: entries expire after `ttl_ms` and the oldest are dropped beyond `capacity`.
    """

    def __init__(self, *, ttl_ms: int = 2 * DEFAULT_SKEW_MS, capacity: int = 10_000) -> None:
        self.ttl_ms = ttl_ms
        self.capacity = max(1, capacity)
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, device_id: str, nonce: str, now_ms: int) -> bool:
        """Record the pair; False when it was already used and has not expired."""
        with self._lock:
            while self._seen:
                oldest_key, expires = next(iter(self._seen.items()))
                if expires > now_ms:
                    break
                del self._seen[oldest_key]
            key = (device_id, nonce)
            if key in self._seen:
                return False
            self._seen[key] = now_ms + self.ttl_ms
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return True


DEFAULT_NONCES = NonceRegistry()


@record(frozen=True)
class DeviceProof:
    """A verified device identity: the id, its key as unpadded base64url raw bytes, and the payload version."""

    device_id: str
    public_key_b64: str
    payload_version: str


def _signed_at(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def verify_device(device: Mapping[str, Any], *, nonce_issued: str, client: Mapping[str, Any], role: str,
                  scopes: list[str], auth_token: str | None, now_ms: int, skew_ms: int = DEFAULT_SKEW_MS,
                  nonces: NonceRegistry | None = None) -> DeviceProof | dict[str, Any]:
    """Check a `connect.params.device` proof; returns the proof or the error object to send.

    `auth_token` is what the client signed (see `signature_token`); `role`/`scopes` are the resolved ones the
    session will use. Checks run in upstream's order (key, id, freshness, nonce, signature) so a client sees the
    same failure it would from the real gateway. A verified (deviceId, nonce) pair is claimed in `nonces` (the
    process-wide registry by default) and a second use fails as a nonce mismatch.
    """
    raw = raw_public_key(device.get("publicKey"))
    if raw is None:
        return device_auth_error("device-public-key")
    device_id = device.get("id")
    if not isinstance(device_id, str) or not hmac.compare_digest(device_id.encode(), device_id_for(raw).encode()):
        return device_auth_error("device-id-mismatch")
    signed_at = _signed_at(device.get("signedAt"))
    if signed_at is None or abs(now_ms - signed_at) > skew_ms:
        return device_auth_error("device-signature-stale")
    nonce = device.get("nonce")
    nonce = nonce.strip() if isinstance(nonce, str) else ""
    if not nonce:
        return device_auth_error("device-nonce-missing")
    if not hmac.compare_digest(nonce.encode(), nonce_issued.encode()):
        return device_auth_error("device-nonce-mismatch")
    encoded = device.get("signature")
    try:
        signature = b64url_decode(encoded) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError):
        return device_auth_error("device-signature")
    # Imported here: most connections carry no device, and this import is a fifth of the gateway's start-up.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(raw)
    version = None
    for candidate in ("v3", "v2"):
        payload = build_payload(candidate, device_id=device_id, client=client, role=role, scopes=scopes,
                                signed_at_ms=signed_at, token=auth_token, nonce=nonce)
        try:
            key.verify(signature, payload.encode())
        except InvalidSignature:
            continue
        version = candidate
        break
    if version is None:
        return device_auth_error("device-signature")
    if not (nonces or DEFAULT_NONCES).claim(device_id, nonce, now_ms):
        return device_auth_error("device-nonce-mismatch")
    return DeviceProof(device_id=device_id, public_key_b64=b64url_encode(raw), payload_version=version)


@record(frozen=True)
class DeviceMeta:
    """Client-reported metadata kept with a pairing; platform and device family are pinned once approved."""

    platform: str | None = None
    device_family: str | None = None
    client_id: str | None = None
    client_mode: str | None = None
    display_name: str | None = None

    @classmethod
    def from_client(cls, client: Mapping[str, Any]) -> DeviceMeta:
        """Take the metadata from `connect.params.client`."""
        def text(key: str) -> str | None:
            value = client.get(key)
            return value if isinstance(value, str) and value else None

        return cls(platform=text("platform"), device_family=text("deviceFamily"), client_id=text("id"),
                   client_mode=text("mode"), display_name=text("displayName"))


@record(frozen=True)
class PairedDevice:
    device_id: str
    public_key: str
    roles: list[str]
    scopes: list[str]
    meta: DeviceMeta
    created_ms: int
    updated_ms: int

    def to_wire(self) -> dict[str, Any]:
        """Shape used by `device.pair.list`."""
        return _drop_none({
            "deviceId": self.device_id, "publicKey": self.public_key, "displayName": self.meta.display_name,
            "platform": self.meta.platform, "deviceFamily": self.meta.device_family,
            "clientId": self.meta.client_id, "clientMode": self.meta.client_mode,
            "role": self.roles[-1] if self.roles else None, "roles": self.roles, "scopes": self.scopes,
            "approvedScopes": self.scopes, "createdAtMs": self.created_ms, "approvedAtMs": self.updated_ms,
        })


@record(frozen=True)
class PendingRequest:
    request_id: str
    device_id: str
    public_key: str
    role: str
    scopes: list[str]
    meta: DeviceMeta
    is_repair: bool
    created_ms: int
    updated_ms: int

    def to_wire(self) -> dict[str, Any]:
        """Payload of `device.pair.requested` and rows of `device.pair.list`."""
        return _drop_none({
            "requestId": self.request_id, "deviceId": self.device_id, "publicKey": self.public_key,
            "displayName": self.meta.display_name, "platform": self.meta.platform,
            "deviceFamily": self.meta.device_family, "clientId": self.meta.client_id,
            "clientMode": self.meta.client_mode, "role": self.role, "roles": [self.role], "scopes": self.scopes,
            "isRepair": self.is_repair, "ts": self.updated_ms,
        })


@record(frozen=True)
class TokenRecord:
    device_id: str
    role: str
    scopes: list[str]
    issued_at_ms: int


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _scopes(scopes: Iterable[Any]) -> list[str]:
    out: dict[str, None] = {}
    for scope in scopes:
        if isinstance(scope, str) and scope.strip():
            out[scope.strip()] = None
    return list(out)


_PAIRED_COLUMNS = ("device_id, public_key, display_name, platform, device_family, client_id, client_mode, role, "
                   "roles_json, scopes_json, approved_scopes_json, tokens_json, approved_via, created_at_ms, "
                   "approved_at_ms")
_OLD_META = "platform, device_family, client_id, client_mode, display_name"
_PENDING_COLUMNS = ("request_id, device_id, public_key, display_name, platform, device_family, client_id, "
                    "client_mode, role, scopes_json, is_repair, ts, refreshed_at_ms")


def _json_list(text: str | None) -> list[str]:
    value = json.loads(text) if text else None
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _tokens(text: str | None) -> dict[str, dict[str, Any]]:
    """upstream's `tokens_json`: one token per role, `{role: {token, role, scopes, createdAtMs, rotatedAtMs?,
    revokedAtMs?, lastUsedAtMs?}}`."""
    value = json.loads(text) if text else None
    if not isinstance(value, dict):
        return {}
    return {role: entry for role, entry in value.items() if isinstance(entry, dict)}


class DeviceStore:
    """Pairings, pending requests and device tokens, in upstream's tables of the shared state database.

    `device_pairing_paired` (one row per approved device: roles, approved scopes, platform metadata, and
    `tokens_json`, the device token of each role) and `device_pairing_pending` (requests awaiting approval, `ts`
    their creation, `refreshed_at_ms` their last retry) of `<stateDir>/state/openclaw.sqlite` (config/statedb.py),
    so `openclaw devices list|approve` and the real gateway see the same devices we do. As upstream, a device
    token is stored as issued (the file is owner-only): a device keeps working when the operator moves between
    the real gateway and this one. Every mutation is one IMMEDIATE transaction (WAL, synchronous=NORMAL): a
    SIGKILL at any instant leaves the old or the new state. One connection is shared behind a lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        earlier = self.path.parent / sup_layout.SUP_DEVICES
        self._state = statedb.OnFirstUse(self.path, lambda: sup_layout.import_once(earlier, "paired_devices",
                                                                                   self._import), (earlier,))
        self._state.open_if_there()

    @property
    def _db(self) -> statedb.StateConnection:
        return self._state.get()

    def _import(self, old: sqlite3.Connection) -> None:
        """Pairings and pending requests of openclaw-sup's earlier `state/gateway-devices.sqlite`. Its device
        tokens were kept only as hashes and cannot be carried over: a device gets a new one at its next connect
        with the gateway token (one that only ever held its device token is approved again)."""
        paired = old.execute(f"SELECT device_id, public_key, roles, scopes, {_OLD_META}, created_ms, updated_ms "
                             "FROM paired_devices").fetchall()
        pending = old.execute(f"SELECT request_id, device_id, public_key, role, scopes, {_OLD_META}, is_repair, "
                              "created_ms, updated_ms FROM pairing_requests").fetchall()
        with self._tx() as db:
            for device_id, key, roles, scopes, *meta, created, updated in paired:
                db.execute(f"INSERT OR IGNORE INTO device_pairing_paired ({_PAIRED_COLUMNS}) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 'owner', ?, ?)",
                           (device_id, key, meta[4], *meta[:4], (json.loads(roles) or [None])[-1], roles, scopes,
                            scopes, created, updated))
            for request_id, device_id, key, role, scopes, *meta, repair, created, updated in pending:
                db.execute("INSERT OR IGNORE INTO device_pairing_pending (request_id, device_id, public_key, "
                           "display_name, platform, device_family, client_id, client_mode, role, roles_json, "
                           "scopes_json, is_repair, ts, refreshed_at_ms) VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (request_id, device_id, key, meta[4], *meta[:4], role, json.dumps([role]), scopes, repair,
                            created, updated))

    def _restrict_companions(self) -> None:
        sqlitedb.make_private(self.path)

    def release_idle(self, idle_s: float) -> bool:
        with self._lock:  # not between a transaction's statements
            return self._state.release_idle(idle_s)

    def close(self) -> None:
        with self._lock:
            self._state.close()

    def __enter__(self) -> DeviceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: read-modify-write sequences see no interleaved writer."""
        with self._lock, self._db.write():
            yield self._db

    @staticmethod
    def _meta(row: tuple[Any, ...], display: int) -> DeviceMeta:
        """The metadata columns: display name, then platform, device family, client id and mode."""
        return DeviceMeta(*row[display + 1:display + 5], display_name=row[display])

    def _paired_row(self, db: sqlite3.Connection, device_id: str) -> tuple[Any, ...] | None:
        return db.execute(f"SELECT {_PAIRED_COLUMNS} FROM device_pairing_paired WHERE device_id = ?",
                          (device_id,)).fetchone()

    def _paired(self, row: tuple[Any, ...]) -> PairedDevice:
        roles = _json_list(row[8]) or ([row[7]] if row[7] else [])
        scopes = _json_list(row[10]) if row[10] is not None else _json_list(row[9])
        return PairedDevice(device_id=row[0], public_key=row[1], roles=roles, scopes=scopes,
                            meta=self._meta(row, 2), created_ms=row[13],
                            updated_ms=row[14])

    def get_pairing(self, device_id: str) -> PairedDevice | None:
        with self._lock:
            row = self._paired_row(self._db, device_id)
        return self._paired(row) if row else None

    def list_paired(self) -> list[PairedDevice]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_PAIRED_COLUMNS} FROM device_pairing_paired "
                                    "ORDER BY approved_at_ms DESC, device_id").fetchall()
        return [self._paired(r) for r in rows]

    def _approve(self, db: sqlite3.Connection, device_id: str, public_key: str, role: str, scopes: Iterable[Any],
                 meta: DeviceMeta, now_ms: int, via: str | None) -> PairedDevice:
        row = self._paired_row(db, device_id)
        existing = self._paired(row) if row else None
        same_key = existing is not None and existing.public_key == public_key
        roles = list(dict.fromkeys([*(existing.roles if same_key and existing else []), role]))
        merged = _scopes([*(existing.scopes if same_key and existing else []), *scopes])
        created = existing.created_ms if existing else now_ms
        tokens = _tokens(row[11]) if row and same_key else {}
        db.execute(f"INSERT OR REPLACE INTO device_pairing_paired ({_PAIRED_COLUMNS}) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (device_id, public_key, meta.display_name, meta.platform, meta.device_family, meta.client_id,
                    meta.client_mode, role, json.dumps(roles), json.dumps(merged), json.dumps(merged),
                    json.dumps(tokens) if tokens else None, via, created, now_ms))
        return PairedDevice(device_id, public_key, roles, merged, meta, created, now_ms)

    def approve(self, device_id: str, public_key: str, role: str, scopes: Iterable[Any], meta: DeviceMeta, *,
                now_ms: int | None = None, via: str | None = "owner") -> PairedDevice:
        """Approve a device for `role` and `scopes`, merged into an earlier approval of the same key.

        A different public key replaces the old approval outright and drops its device tokens: the old key's
        grants must not carry over to a new key. `via` is upstream's `approved_via` (`owner`, `silent`, ...).
        """
        with self._tx() as db:
            paired = self._approve(db, device_id, public_key, role, scopes, meta,
                                   _now_ms() if now_ms is None else now_ms, via)
            db.execute("DELETE FROM device_pairing_pending WHERE device_id = ?", (device_id,))
        self._restrict_companions()
        return paired

    def remove_device(self, device_id: str) -> bool:
        """Forget a pairing together with its tokens and pending requests."""
        with self._tx() as db:
            gone = db.execute("DELETE FROM device_pairing_paired WHERE device_id = ?", (device_id,)).rowcount > 0
            db.execute("DELETE FROM device_pairing_pending WHERE device_id = ?", (device_id,))
        return gone

    def _set_tokens(self, db: sqlite3.Connection, device_id: str, tokens: dict[str, dict[str, Any]]) -> None:
        db.execute("UPDATE device_pairing_paired SET tokens_json = ? WHERE device_id = ?",
                   (json.dumps(tokens) if tokens else None, device_id))

    def issue_token(self, device_id: str, role: str, scopes: Iterable[Any], now_ms: int, *,
                    rotate: bool = False) -> str:
        """The device token of a paired device's role, minted when it has none that covers `scopes`.

        As upstream does, a live token whose scopes cover the request is handed out again (a device's concurrent
        connections share it); a new one replaces it otherwise, and `rotate` always replaces it
        (`device.token.rotate`): the previous token stops working.
        """
        wanted = _scopes(scopes)
        with self._tx() as db:
            row = self._paired_row(db, device_id)
            paired = self._paired(row) if row else None
            if paired is None or role not in paired.roles or not scopes_cover(role, wanted, paired.scopes):
                raise PermissionError(f"device {device_id} is not approved for role {role!r} with scopes {wanted}")
            tokens = _tokens(row[11]) if row else {}
            current = tokens.get(role)
            if (not rotate and current and not current.get("revokedAtMs") and isinstance(current.get("token"), str)
                    and scopes_cover(role, wanted, _json_list(json.dumps(current.get("scopes"))))
                    and scopes_cover(role, _json_list(json.dumps(current.get("scopes"))), paired.scopes)):
                return str(current["token"])
            entry: dict[str, Any] = {"token": secrets.token_urlsafe(32), "role": role, "scopes": wanted,
                                     "createdAtMs": (current or {}).get("createdAtMs", now_ms)}
            if current:
                entry["rotatedAtMs"] = now_ms
                if current.get("lastUsedAtMs"):
                    entry["lastUsedAtMs"] = current["lastUsedAtMs"]
            tokens[role] = entry
            self._set_tokens(db, device_id, tokens)
        self._restrict_companions()
        return str(entry["token"])

    def verify_token(self, raw: str, device_id: str | None = None) -> TokenRecord | None:
        """Resolve a presented device token; None when unknown, revoked, for another device, or its device is gone.

        Compared in constant time against each candidate (a device has one token per role)."""
        if not isinstance(raw, str) or not raw.strip():
            return None
        with self._lock:
            if device_id is not None:
                rows = [r for r in [self._paired_row(self._db, device_id)] if r]
            else:
                rows = self._db.execute(f"SELECT {_PAIRED_COLUMNS} FROM device_pairing_paired "
                                        "WHERE tokens_json IS NOT NULL").fetchall()
        for row in rows:
            paired = self._paired(row)
            for role, entry in _tokens(row[11]).items():
                token = entry.get("token")
                if not isinstance(token, str) or entry.get("revokedAtMs") or role not in paired.roles:
                    continue
                if hmac.compare_digest(token.encode(), raw.encode()):
                    issued = entry.get("rotatedAtMs") or entry.get("createdAtMs") or 0
                    return TokenRecord(device_id=paired.device_id, role=role,
                                       scopes=_json_list(json.dumps(entry.get("scopes"))), issued_at_ms=int(issued))
        return None

    def revoke(self, device_id: str, role: str, now_ms: int | None = None) -> bool:
        """Revoke the live token of (device, role); True when one was live."""
        with self._tx() as db:
            row = self._paired_row(db, device_id)
            tokens = _tokens(row[11]) if row else {}
            entry = tokens.get(role)
            if not entry or entry.get("revokedAtMs"):
                return False
            entry["revokedAtMs"] = _now_ms() if now_ms is None else now_ms
            self._set_tokens(db, device_id, tokens)
        return True

    def _expire(self, db: sqlite3.Connection, now_ms: int) -> None:
        db.execute("DELETE FROM device_pairing_pending WHERE coalesce(refreshed_at_ms, ts) + ? <= ?",
                   (PENDING_TTL_MS, now_ms))

    def _pending(self, row: tuple[Any, ...]) -> PendingRequest:
        return PendingRequest(request_id=row[0], device_id=row[1], public_key=row[2], role=row[8] or "",
                              scopes=_json_list(row[9]), meta=self._meta(row, 3),
                              is_repair=bool(row[10]), created_ms=row[11],
                              updated_ms=row[12] if row[12] is not None else row[11])

    def upsert_request(self, device_id: str, public_key: str, role: str, scopes: Iterable[Any], meta: DeviceMeta,
                       now_ms: int) -> tuple[PendingRequest, bool]:
        """Record a pairing request; returns it and whether it is new (new ones are broadcast to approvers).

        A retry asking for the same key, role and scopes refreshes the single pending request (keeping its id and
        its five-minute lifetime running from this retry); anything else supersedes all of the device's pending
        requests with a new id.
        """
        wanted = _scopes(scopes)
        with self._tx() as db:
            self._expire(db, now_ms)
            rows = db.execute(f"SELECT {_PENDING_COLUMNS} FROM device_pairing_pending WHERE device_id = ? "
                              "ORDER BY coalesce(refreshed_at_ms, ts) DESC", (device_id,)).fetchall()
            current = [self._pending(r) for r in rows]
            if len(current) == 1 and current[0].public_key == public_key and current[0].role == role \
                    and set(current[0].scopes) == set(wanted):
                db.execute("UPDATE device_pairing_pending SET display_name = ?, platform = ?, device_family = ?, "
                           "client_id = ?, client_mode = ?, refreshed_at_ms = ? WHERE request_id = ?",
                           (meta.display_name, meta.platform, meta.device_family, meta.client_id, meta.client_mode,
                            now_ms, current[0].request_id))
                refreshed = PendingRequest(current[0].request_id, device_id, public_key, role, current[0].scopes,
                                           meta, current[0].is_repair, current[0].created_ms, now_ms)
                return refreshed, False
            db.execute("DELETE FROM device_pairing_pending WHERE device_id = ?", (device_id,))
            is_repair = self._paired_row(db, device_id) is not None
            request = PendingRequest(str(uuid.uuid4()), device_id, public_key, role, wanted, meta, is_repair,
                                     now_ms, now_ms)
            db.execute("INSERT INTO device_pairing_pending (request_id, device_id, public_key, display_name, "
                       "platform, device_family, client_id, client_mode, role, roles_json, scopes_json, is_repair, "
                       "ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (request.request_id, device_id, public_key, meta.display_name, meta.platform,
                        meta.device_family, meta.client_id, meta.client_mode, role, json.dumps([role]),
                        json.dumps(wanted), int(is_repair), now_ms))
        self._restrict_companions()
        return request, True

    def request_pairing(self, device_id: str, public_key: str, role: str, scopes: Iterable[Any], meta: DeviceMeta,
                        now_ms: int) -> str:
        """`upsert_request` for callers that only need the request id."""
        return self.upsert_request(device_id, public_key, role, scopes, meta, now_ms)[0].request_id

    def get_request(self, request_id: str, now_ms: int) -> PendingRequest | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_PENDING_COLUMNS} FROM device_pairing_pending WHERE request_id = ? "
                                   "AND coalesce(refreshed_at_ms, ts) + ? > ?",
                                   (request_id, PENDING_TTL_MS, now_ms)).fetchone()
        return self._pending(row) if row else None

    def list_pending(self, now_ms: int) -> list[PendingRequest]:
        """Unexpired requests, newest first; expired ones are deleted on the way."""
        with self._tx() as db:
            self._expire(db, now_ms)
            rows = db.execute(f"SELECT {_PENDING_COLUMNS} FROM device_pairing_pending "
                              "ORDER BY coalesce(refreshed_at_ms, ts) DESC").fetchall()
        return [self._pending(r) for r in rows]

    def approve_request(self, request_id: str, *, now_ms: int | None = None) -> PairedDevice | None:
        """Turn a live pending request into an approval; None when it is unknown, superseded or expired."""
        now = _now_ms() if now_ms is None else now_ms
        with self._tx() as db:
            self._expire(db, now)
            row = db.execute(f"SELECT {_PENDING_COLUMNS} FROM device_pairing_pending WHERE request_id = ?",
                             (request_id,)).fetchone()
            if row is None:
                return None
            req = self._pending(row)
            paired = self._approve(db, req.device_id, req.public_key, req.role, req.scopes, req.meta, now, "owner")
            db.execute("DELETE FROM device_pairing_pending WHERE device_id = ?", (req.device_id,))
        self._restrict_companions()
        return paired

    def reject_request(self, request_id: str, *, now_ms: int | None = None) -> PendingRequest | None:
        """Drop a pending request; an existing approval of the device stays as it was."""
        with self._tx() as db:
            self._expire(db, _now_ms() if now_ms is None else now_ms)
            row = db.execute(f"SELECT {_PENDING_COLUMNS} FROM device_pairing_pending WHERE request_id = ?",
                             (request_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM device_pairing_pending WHERE request_id = ?", (request_id,))
        return self._pending(row)


PairingReason = Literal["not-paired", "role-upgrade", "scope-upgrade", "metadata-upgrade"]


@record(frozen=True)
class PairingDecision:
    """Result of the pairing gate for a verified device.

    Approved: `scopes` are the session's scopes (the request, which the approval covers) and `auto_approved` says
    the approval happened just now. Not paired: `error` and `close_reason` are what to send (close 1008), and
    `request`, when `request_created`, is broadcast as `device.pair.requested`.
    """

    approved: bool
    scopes: list[str]
    device: PairedDevice | None = None
    auto_approved: bool = False
    reason: PairingReason | None = None
    request: PendingRequest | None = None
    request_created: bool = False
    error: dict[str, Any] | None = None
    close_reason: str | None = None

    @property
    def status(self) -> str:
        return "approved" if self.approved else "not_paired"

    @property
    def request_event(self) -> dict[str, Any] | None:
        """Payload for `device.pair.requested`; upstream broadcasts it only when `request_created`."""
        return self.request.to_wire() if self.request else None


def _pairing_reason(paired: PairedDevice | None, proof: DeviceProof, role: str, scopes: list[str],
                    meta: DeviceMeta) -> PairingReason | None:
    if paired is None or paired.public_key != proof.public_key_b64:
        return "not-paired"
    for pinned, claimed in ((paired.meta.platform, meta.platform), (paired.meta.device_family, meta.device_family)):
        if normalize_metadata(pinned) and normalize_metadata(pinned) != normalize_metadata(claimed):
            return "metadata-upgrade"
    if role not in paired.roles:
        return "role-upgrade"
    if not scopes_cover(role, scopes, paired.scopes):
        return "scope-upgrade"
    return None


def _silent_allowed(reason: PairingReason, meta: DeviceMeta) -> bool:
    """Upstream never auto-approves scope upgrades, and re-approves changed metadata silently only for apps."""
    if reason == "scope-upgrade":
        return False
    if reason == "metadata-upgrade":
        return meta.client_mode == "ui" and (meta.client_id or "").lower() in _NATIVE_APP_IDS
    return True


def pairing_required_error(reason: PairingReason, request: PendingRequest, role: str, scopes: list[str],
                           paired: PairedDevice | None) -> dict[str, Any]:
    """The `NOT_PAIRED` error object; approved roles/scopes are shown only for the same key's approval."""
    same_key = paired is not None and paired.public_key == request.public_key
    details: dict[str, Any] = {
        "code": "PAIRING_REQUIRED",
        "reason": reason,
        "requestId": request.request_id,
        "remediationHint": f"approve this device with: openclaw devices approve {request.request_id}",
        "recommendedNextStep": "wait_then_retry",
        "retryable": False,
        "pauseReconnect": True,
        "waitForResolution": True,
        "deviceId": request.device_id,
        "requestedRole": role,
        "requestedScopes": scopes,
    }
    if same_key and paired is not None:
        if paired.roles:
            details["approvedRoles"] = paired.roles
        if paired.scopes:
            details["approvedScopes"] = paired.scopes
    return {"code": "NOT_PAIRED", "message": "pairing required", "details": details}


def decide_pairing(store: DeviceStore, proof: DeviceProof, role: str, scopes: list[str],
                   meta: DeviceMeta | Mapping[str, Any], *, loopback_direct: bool, auto_approve_local: bool,
                   now_ms: int) -> PairingDecision:
    """Gate a verified device on its pairing, creating or refreshing an approval request when it falls short.

    `loopback_direct` must mean a loopback socket without forwarding headers (and, for browsers, a Control UI
    origin); with `auto_approve_local` such devices are approved silently, except for scope upgrades and, for
    non-app clients, changed platform metadata, which always wait for an operator as upstream does. `meta` may be
    the `connect.params.client` object itself.
    """
    if not isinstance(meta, DeviceMeta):
        meta = DeviceMeta.from_client(meta)
    wanted = _scopes(scopes)
    paired = store.get_pairing(proof.device_id)
    reason = _pairing_reason(paired, proof, role, wanted, meta)
    if reason is None:
        return PairingDecision(approved=True, scopes=wanted, device=paired)
    if loopback_direct and auto_approve_local and _silent_allowed(reason, meta):
        approved = store.approve(proof.device_id, proof.public_key_b64, role, wanted, meta, now_ms=now_ms,
                                 via="silent")
        return PairingDecision(approved=True, scopes=wanted, device=approved, auto_approved=True, reason=reason)
    request, created = store.upsert_request(proof.device_id, proof.public_key_b64, role, wanted, meta, now_ms)
    return PairingDecision(
        approved=False, scopes=[], device=paired, reason=reason, request=request, request_created=created,
        error=pairing_required_error(reason, request, role, wanted, paired),
        close_reason=f"pairing required (requestId: {request.request_id})",
    )
