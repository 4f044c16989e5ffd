"""What a node host keeps under its own state dir, in upstream's tables of `state/openclaw.sqlite`.

- `device_identities`, row `primary`: the Ed25519 key pair (PEM) and the device id (sha256 of the raw public
  key), created once; the gateway pairs and routes by this id, so it must survive restarts and crashes.
- `device_auth_tokens`: the device token a gateway issued for role `node`.
- `config_machine_state`, key `nodeHost.config`: the instance id, display name and gateway endpoint.

`openclaw node identity --json` reads the same row, so both hosts agree on which machine this is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openclaw_sup.config import statedb

CONFIG_KEY = "nodeHost.config"


def _now() -> int:
    return int(time.time() * 1000)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _ascii_lower(value: Any) -> str:
    return value.strip().translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")) \
        if isinstance(value, str) else ""


def signed_payload(*, device_id: str, client: dict[str, Any], role: str, scopes: list[str], signed_at_ms: int,
                   token: str | None, nonce: str) -> str:
    """The v3 text a device signs in `connect` (protocol spec, section 2)."""
    return "|".join(["v3", device_id, str(client.get("id", "")), str(client.get("mode", "")), role,
                     ",".join(scopes), str(signed_at_ms), token or "", nonce, _ascii_lower(client.get("platform")),
                     _ascii_lower(client.get("deviceFamily"))])


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    public_key_raw: bytes
    private_key_pem: str

    @property
    def public_key(self) -> str:
        return b64url(self.public_key_raw)

    def sign(self, text: str) -> str:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(self.private_key_pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return b64url(key.sign(text.encode()))


class NodeHostState:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "state" / "openclaw.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = statedb.open_state_db(self.path)

    def close(self) -> None:
        self._db.close()

    def identity(self) -> DeviceIdentity:
        """The primary identity, created on first use (in one transaction, so two starters agree)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
            PublicFormat,
            load_pem_public_key,
        )

        with self._db.write():
            row = self._db.execute("SELECT device_id, public_key_pem, private_key_pem FROM device_identities "
                                   "WHERE identity_key = 'primary'").fetchone()
            if row is None:
                key = Ed25519PrivateKey.generate()
                raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                pub_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
                priv_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
                device_id = hashlib.sha256(raw).hexdigest()
                now = _now()
                self._db.execute("INSERT INTO device_identities (identity_key, device_id, public_key_pem, "
                                 "private_key_pem, created_at_ms, updated_at_ms) VALUES ('primary', ?, ?, ?, ?, ?)",
                                 (device_id, pub_pem, priv_pem, now, now))
                return DeviceIdentity(device_id, raw, priv_pem)
        pub = load_pem_public_key(row[1].encode())
        raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return DeviceIdentity(row[0], raw, row[2])

    def token(self, device_id: str, role: str = "node") -> str | None:
        row = self._db.execute("SELECT token FROM device_auth_tokens WHERE device_id = ? AND role = ?",
                               (device_id, role)).fetchone()
        return row[0] if row else None

    def save_token(self, device_id: str, token: str, scopes: list[str], role: str = "node") -> None:
        with self._db.write():
            self._db.execute("INSERT OR REPLACE INTO device_auth_tokens (device_id, role, token, scopes_json, "
                             "updated_at_ms) VALUES (?, ?, ?, ?, ?)", (device_id, role, token, json.dumps(scopes),
                                                                      _now()))

    def forget_token(self, device_id: str, role: str = "node") -> None:
        with self._db.write():
            self._db.execute("DELETE FROM device_auth_tokens WHERE device_id = ? AND role = ?", (device_id, role))

    def config(self, *, display_name: str | None, gateway: dict[str, Any]) -> dict[str, Any]:
        """`nodeHost.config`: the instance id is made once; name and endpoint follow the latest start."""
        with self._db.write():
            row = self._db.execute("SELECT value_json FROM config_machine_state WHERE state_key = ?",
                                   (CONFIG_KEY,)).fetchone()
            try:
                cfg = json.loads(row[0]) if row else {}
            except ValueError:
                cfg = {}
            if not isinstance(cfg, dict):
                cfg = {}
            cfg = {"version": 1, "nodeId": cfg.get("nodeId") or str(uuid.uuid4()),
                   "displayName": display_name or cfg.get("displayName") or os.uname().nodename,
                   "gateway": gateway, "installedAppsSharing": bool(cfg.get("installedAppsSharing", False))}
            self._db.execute("INSERT OR REPLACE INTO config_machine_state (state_key, value_json, updated_at_ms) "
                             "VALUES (?, ?, ?)", (CONFIG_KEY, json.dumps(cfg, separators=(",", ":")), _now()))
        return cfg


def db_error(exc: sqlite3.Error) -> str:
    return f"node host state ({exc.__class__.__name__}): {exc}"
