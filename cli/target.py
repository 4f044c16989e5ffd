"""Which gateway a client command talks to, with which credentials and which TLS trust: upstream's precedence.

- `--url` never reuses stored credentials (`--token`/`--password` are required with it).
- `OPENCLAW_GATEWAY_URL` uses environment credentials only.
- `gateway.mode: "remote"`: `gateway.remote.url`; token `remote.token` -> env -> `auth.token`; password env ->
  `remote.password` -> `auth.password`; trust pinned by `gateway.remote.tlsFingerprint` when set.
- local mode: `ws://127.0.0.1:<port>` (`wss://` when `gateway.tls.enabled`); token `auth.token` -> env ->
  `remote.token`; password `auth.password` -> env -> `remote.password`; a loopback `wss://` target is pinned
  to the local gateway's own certificate (`gateway.tls.certPath` or `<stateDir>/gateway/tls/gateway-cert.pem`),
  as upstream's clients do, so a self-signed local gateway needs no CA.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from openclaw_sup.config.paths import DEFAULT_PORT, DEV_PORT, ProfilePaths


class TargetError(ValueError):
    """A target that cannot be reached as configured; the message says what to set."""


@dataclass
class Target:
    url: str
    token: str | None
    password: str | None
    source: str
    tls_fingerprint: str | None = None


def local_cert_path(paths: ProfilePaths, cfg: dict[str, Any]) -> Path:
    tls = (cfg.get("gateway") or {}).get("tls") or {}
    cert = tls.get("certPath")
    return Path(cert).expanduser() if isinstance(cert, str) and cert else paths.state_dir / "gateway" / "tls" / \
        "gateway-cert.pem"


def local_pin(paths: ProfilePaths, cfg: dict[str, Any]) -> str | None:
    """The SHA-256 of the local gateway's certificate (first PEM block), or None when there is none to read."""
    try:
        pem = local_cert_path(paths, cfg).read_text()
        der = ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE-----"):])
    except (OSError, ValueError):
        return None
    return hashlib.sha256(der).hexdigest()


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _pin_for(url: str, paths: ProfilePaths, cfg: dict[str, Any]) -> str | None:
    remote = (cfg.get("gateway") or {}).get("remote") or {}
    if not url.startswith("wss://"):
        return None
    if remote.get("url") and url.rstrip("/") == str(remote["url"]).rstrip("/") and remote.get("tlsFingerprint"):
        return str(remote["tlsFingerprint"])
    return local_pin(paths, cfg) if _is_loopback(url) else None


def _first(*values: Any) -> str | None:
    return next((v for v in values if isinstance(v, str) and v), None)


def resolve_target(paths: ProfilePaths, cfg: dict[str, Any], url: str | None, token: str | None,
                   password: str | None) -> Target:
    env = os.environ
    gw = cfg.get("gateway") or {}
    auth, remote = gw.get("auth") or {}, gw.get("remote") or {}
    if url:
        if not token and not password:
            raise TargetError("gateway url override requires explicit credentials (--token or --password)")
        return Target(url, token, password, "explicit", _pin_for(url, paths, cfg))
    if env.get("OPENCLAW_GATEWAY_URL"):
        env_url = env["OPENCLAW_GATEWAY_URL"]
        return Target(env_url, _first(token, env.get("OPENCLAW_GATEWAY_TOKEN")),
                      _first(password, env.get("OPENCLAW_GATEWAY_PASSWORD")), "env", _pin_for(env_url, paths, cfg))
    if gw.get("mode") == "remote":
        remote_url = remote.get("url")
        if not remote_url:
            raise TargetError("gateway.mode is remote but gateway.remote.url is not set; SSH transport is not "
                              "supported yet by openclaw-sup: forward the port (ssh -N -L 18789:127.0.0.1:18789 "
                              "<host>) and set gateway.remote.url to ws://127.0.0.1:18789")
        return Target(str(remote_url),
                      _first(token, remote.get("token"), env.get("OPENCLAW_GATEWAY_TOKEN"), auth.get("token")),
                      _first(password, env.get("OPENCLAW_GATEWAY_PASSWORD"), remote.get("password"),
                             auth.get("password")),
                      "remote", _first(remote.get("tlsFingerprint")))
    port = env.get("OPENCLAW_GATEWAY_PORT") or gw.get("port") or (DEV_PORT if paths.dev else DEFAULT_PORT)
    scheme = "wss" if (gw.get("tls") or {}).get("enabled") else "ws"
    local_url = f"{scheme}://127.0.0.1:{port}"
    return Target(local_url,
                  _first(token, auth.get("token"), env.get("OPENCLAW_GATEWAY_TOKEN"), remote.get("token")),
                  _first(password, auth.get("password"), env.get("OPENCLAW_GATEWAY_PASSWORD"), remote.get("password")),
                  "config", _pin_for(local_url, paths, cfg))
