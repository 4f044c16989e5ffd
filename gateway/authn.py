"""Shared-secret authentication, the failed-auth limiter and scope math of the gateway's `connect` handshake.

Pure logic: nothing here does I/O, and every time-dependent call takes `now` in epoch milliseconds so that the
WebSocket handler and the tests drive the clock. Error objects and message texts follow the real gateway's, because
clients branch on `details.code` and older ones still match the `unauthorized: ...` texts.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any

from openclaw_sup.config.record import record

AUTH_MODES = ("none", "token", "password")
SHARED_SECRET_CLASS = "shared-secret"
DEVICE_TOKEN_CLASS = "device-token"

OPERATOR_ADMIN = "operator.admin"
OPERATOR_WRITE = "operator.write"
OPERATOR_READ = "operator.read"
OPERATOR_TALK = "operator.talk"
_WRITE_IMPLIES = frozenset({OPERATOR_READ, OPERATOR_TALK})

_SCOPED_DEVICELESS_CLIENTS = frozenset({("cli", "cli"), ("gateway-client", "backend")})
_UI_CLIENT_IDS = frozenset({"openclaw-control-ui", "webchat-ui", "webchat"})

_DETAIL_CODES = {
    "token_missing": "AUTH_TOKEN_MISSING",
    "token_mismatch": "AUTH_TOKEN_MISMATCH",
    "token_missing_config": "AUTH_TOKEN_NOT_CONFIGURED",
    "password_missing": "AUTH_PASSWORD_MISSING",
    "password_mismatch": "AUTH_PASSWORD_MISMATCH",
    "password_missing_config": "AUTH_PASSWORD_NOT_CONFIGURED",
}
_NEXT_STEPS = {
    "token_missing": "update_auth_configuration",
    "token_missing_config": "update_auth_configuration",
    "password_missing": "update_auth_configuration",
    "password_missing_config": "update_auth_configuration",
    "token_mismatch": "update_auth_credentials",
    "password_mismatch": "update_auth_credentials",
}


@record(frozen=True)
class AuthConfig:
    """The resolved `gateway.auth` block; secrets stay out of `repr` so a logged config never leaks them."""

    mode: str
    token: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    generated: bool = False
    max_attempts: int = 10
    window_ms: int = 60_000
    lockout_ms: int = 300_000
    exempt_loopback: bool = True

    @classmethod
    def from_config(cls, gateway_cfg: Mapping[str, Any], env: Mapping[str, str]) -> AuthConfig:
        """Resolve mode and secrets the way upstream does, so the same config file means the same thing here.

        Config values win over `OPENCLAW_GATEWAY_TOKEN` / `OPENCLAW_GATEWAY_PASSWORD`. With no secret at all the
        gateway still runs in token mode with a random token that lives only in this process (`generated=True`).
        """
        auth = _mapping(gateway_cfg.get("auth"))
        token = _secret(auth.get("token")) or _secret(env.get("OPENCLAW_GATEWAY_TOKEN"))
        password = _secret(auth.get("password")) or _secret(env.get("OPENCLAW_GATEWAY_PASSWORD"))
        explicit = auth.get("mode")
        if explicit is not None and explicit not in AUTH_MODES:
            raise ValueError(f"gateway.auth.mode {explicit!r} is not supported (use one of: {', '.join(AUTH_MODES)})")
        if explicit is None and token and password:
            raise ValueError("both a gateway token and a gateway password are configured; "
                             "set gateway.auth.mode to \"token\" or \"password\" to choose one")
        mode = explicit or ("password" if password and not token else "token")
        if mode == "password" and not password:
            raise ValueError("gateway.auth.mode is \"password\" but no password is set "
                             "(gateway.auth.password or OPENCLAW_GATEWAY_PASSWORD)")
        generated = False
        if mode == "token" and not token:
            token, generated = secrets.token_urlsafe(32), True
        limits = _mapping(auth.get("rateLimit"))
        return cls(
            mode=mode, token=token, password=password, generated=generated,
            max_attempts=_positive_int(limits.get("maxAttempts"), cls.max_attempts),
            window_ms=_positive_int(limits.get("windowMs"), cls.window_ms),
            lockout_ms=_positive_int(limits.get("lockoutMs"), cls.lockout_ms),
            exempt_loopback=limits.get("exemptLoopback", True) is not False,
        )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _secret(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _positive_int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return default
    return int(value)


@record(frozen=True)
class AuthResult:
    """Outcome of the shared-secret check; `reason` is upstream's `authReason`, `error` the object to send."""

    ok: bool
    method: str | None
    reason: str | None = None
    error: dict[str, Any] | None = None

    @property
    def wrong_credential(self) -> bool:
        """True only for a secret that was sent and is wrong: the one outcome the failed-auth limiter counts."""
        return self.reason in ("token_mismatch", "password_mismatch")


def digest_equal(candidate: str, expected: str) -> bool:
    """Compare fixed-size digests so neither content nor length of the secret leaks through timing. A header
    value with bytes that are not UTF-8 reaches here with surrogates (aiohttp's decoding): they are encoded
    as such, so it is just a wrong secret, not an error."""
    return hmac.compare_digest(hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest())


def _client_hints(client: Mapping[str, Any] | None) -> tuple[str, str]:
    client = client or {}
    cid = str(client.get("id") or "").lower()
    mode = str(client.get("mode") or "").lower()
    if cid == "cli" or mode == "cli":
        return ("set gateway.remote.token to match gateway.auth.token",
                "set gateway.remote.password to match gateway.auth.password")
    if cid in _UI_CLIENT_IDS or mode == "webchat":
        return ("open the dashboard URL and paste the token in Control UI settings",
                "enter the password in Control UI settings")
    return "provide gateway auth token", "provide gateway auth password"


def _failure_message(reason: str, client: Mapping[str, Any] | None) -> str:
    token_hint, password_hint = _client_hints(client)
    return {
        "token_missing": f"unauthorized: gateway token missing ({token_hint})",
        "token_mismatch": f"unauthorized: gateway token mismatch ({token_hint})",
        "token_missing_config": "unauthorized: gateway token not configured on gateway (set gateway.auth.token)",
        "password_missing": f"unauthorized: gateway password missing ({password_hint})",
        "password_mismatch": f"unauthorized: gateway password mismatch ({password_hint})",
        "password_missing_config":
            "unauthorized: gateway password not configured on gateway (set gateway.auth.password)",
    }[reason]


def auth_error(reason: str, *, client: Mapping[str, Any] | None = None,
               can_retry_with_device_token: bool = False) -> dict[str, Any]:
    """Build the `INVALID_REQUEST` error object for a failed shared-secret check (close 1008 with its message)."""
    return {
        "code": "INVALID_REQUEST",
        "message": _failure_message(reason, client),
        "details": {
            "code": _DETAIL_CODES[reason],
            "authReason": reason,
            "canRetryWithDeviceToken": can_retry_with_device_token,
            "recommendedNextStep": "retry_with_device_token" if can_retry_with_device_token else _NEXT_STEPS[reason],
        },
    }


def check_shared_secret(cfg: AuthConfig, auth: Mapping[str, Any] | None, *, device_present: bool = False,
                        client: Mapping[str, Any] | None = None) -> AuthResult:
    """Check `connect.params.auth` against the configured secret.

    The secret is accepted from `auth.token` or `auth.password`, because the real CLI puts a password in `token`
    on some paths. A failed token check tells a client with a device identity, which sent a plain `auth.token` and
    no `auth.deviceToken`, that it may retry once with its cached device token. When `auth.token` may hold a device
    token, verify that before treating a mismatch as final (and before counting it in the limiter).
    """
    if cfg.mode == "none":
        return AuthResult(ok=True, method="none")
    auth = auth or {}
    candidates = [v for v in (auth.get("token"), auth.get("password")) if isinstance(v, str) and v]
    kind = cfg.mode
    expected = cfg.token if kind == "token" else cfg.password
    if not expected:
        reason = f"{kind}_missing_config"
    elif not candidates:
        reason = f"{kind}_missing"
    else:
        matches = [digest_equal(c, expected) for c in candidates]
        if any(matches):
            return AuthResult(ok=True, method=kind)
        reason = f"{kind}_mismatch"
    provided_kind = "password" if auth.get("password") else "token" if auth.get("token") else None
    retry = (reason == "token_mismatch" and device_present and provided_kind == "token" and not auth.get("deviceToken"))
    return AuthResult(ok=False, method=None, reason=reason,
                      error=auth_error(reason, client=client, can_retry_with_device_token=retry))


def rate_limited_error(retry_after_ms: int) -> dict[str, Any]:
    """The lockout error object; `retryAfterMs` lets clients back off instead of hammering the limiter."""
    return {
        "code": "INVALID_REQUEST",
        "message": "unauthorized: too many failed authentication attempts (retry later)",
        "retryable": True,
        "retryAfterMs": max(0, int(retry_after_ms)),
        "details": {"code": "AUTH_RATE_LIMITED", "authReason": "rate_limited",
                    "recommendedNextStep": "wait_then_retry"},
    }


FORWARD_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_direct_loopback(ip: str, headers: Mapping[str, str]) -> bool:
    """A loopback peer that no proxy header speaks for: the local caller the gateway trusts more
    (header names lower-case, or a case-insensitive mapping)."""
    return normalize_ip(ip)[1] and not any(h in headers for h in FORWARD_HEADERS)


@functools.lru_cache(maxsize=4096)
def normalize_ip(ip: str) -> tuple[str, bool]:
    """Canonical limiter key for an address and whether it is loopback.

    IPv4-mapped IPv6 collapses to IPv4 so one client cannot get two budgets; strings that are not addresses
    (e.g. a per-Origin key for browser sockets) are kept verbatim and are never loopback. Remembered per
    string: parsing an address costs tens of microseconds, and every request and handshake asks.
    """
    raw = ip.strip()
    try:
        addr = ipaddress.ip_address(raw.split("%", 1)[0])
    except ValueError:
        return raw, False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr), addr.is_loopback


@record
class _Entry:
    attempts: list[int] = field(default_factory=list)
    locked_until: int | None = None


class FailedAuthLimiter:
    """Sliding-window lockout for wrong credentials, keyed by client address and credential class.

    Limits come from `cfg` (the `gateway.auth.rateLimit` block) unless given explicitly. Only wrong secrets are
    recorded (`fail`); a success clears the key. The table holds at most `max_entries`
    keys: when it is full of live entries, new keys are refused for `lockout_ms` rather than evicting tracked
    attackers, matching upstream's fail-closed choice. Loopback is exempt when configured, so a local CLI with a
    stale token is never locked out of its own gateway.
    """

    def __init__(self, cfg: AuthConfig | None = None, *, max_attempts: int | None = None,
                 window_ms: int | None = None, lockout_ms: int | None = None, exempt_loopback: bool | None = None,
                 max_entries: int = 10_000) -> None:
        base = cfg or AuthConfig(mode="none")
        self.max_attempts = max(1, base.max_attempts if max_attempts is None else max_attempts)
        self.window_ms = max(0, base.window_ms if window_ms is None else window_ms)
        self.lockout_ms = max(0, base.lockout_ms if lockout_ms is None else lockout_ms)
        self.exempt_loopback = base.exempt_loopback if exempt_loopback is None else exempt_loopback
        self.max_entries = max(1, max_entries)
        self._entries: dict[str, _Entry] = {}
        self._overflow_until: int | None = None
        self._last_prune = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, ip: str, cls: str) -> str | None:
        addr, loopback = normalize_ip(ip)
        if loopback and self.exempt_loopback:
            return None
        return f"{cls.strip() or 'default'}:{addr}"

    def _slide(self, entry: _Entry, now: int) -> None:
        cutoff = now - self.window_ms
        entry.attempts = [t for t in entry.attempts if t > cutoff]

    def prune(self, now: int) -> None:
        """Drop keys with no lock and no attempt inside the window."""
        self._last_prune = now
        for key in list(self._entries):
            entry = self._entries[key]
            if entry.locked_until is not None and now < entry.locked_until:
                continue
            entry.locked_until = None
            self._slide(entry, now)
            if not entry.attempts:
                del self._entries[key]

    def _maybe_prune(self, now: int) -> None:
        if now - self._last_prune >= max(self.window_ms, 1_000):
            self.prune(now)

    def check(self, ip: str, cls: str, now: int) -> int | None:
        """Milliseconds until this client may try again, or None when it may try now."""
        key = self._key(ip, cls)
        if key is None:
            return None
        self._maybe_prune(now)
        entry = self._entries.get(key)
        if entry is None:
            return self._overflow_wait(now)
        if entry.locked_until is not None:
            if now < entry.locked_until:
                return entry.locked_until - now
            entry.locked_until, entry.attempts = None, []
        self._slide(entry, now)
        return None

    def _overflow_wait(self, now: int) -> int | None:
        if self._overflow_until is None:
            return None
        if now >= self._overflow_until:
            self._overflow_until = None
            return None
        if len(self._entries) >= self.max_entries:
            self.prune(now)
        if len(self._entries) < self.max_entries:
            self._overflow_until = None
            return None
        return self._overflow_until - now

    def fail(self, ip: str, cls: str, now: int) -> int | None:
        """Record one wrong credential; returns the lockout wait when this attempt triggered (or hit) a lock."""
        key = self._key(ip, cls)
        if key is None:
            return None
        self._maybe_prune(now)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_entries:
                self.prune(now)
            if len(self._entries) >= self.max_entries:
                self._overflow_until = max(self._overflow_until or 0, now + self.lockout_ms)
                return self._overflow_until - now
            entry = self._entries[key] = _Entry()
        if entry.locked_until is not None and now < entry.locked_until:
            return entry.locked_until - now
        self._slide(entry, now)
        entry.attempts.append(now)
        if len(entry.attempts) >= self.max_attempts:
            entry.locked_until = now + self.lockout_ms
            return self.lockout_ms
        return None

    def succeed(self, ip: str, cls: str) -> None:
        """Forget the key: a client that proved the secret is not guessing it."""
        key = self._key(ip, cls)
        if key is not None:
            self._entries.pop(key, None)


def _clean_scopes(scopes: Iterable[Any]) -> list[str]:
    out: dict[str, None] = {}
    for scope in scopes:
        if isinstance(scope, str) and scope.strip():
            out[scope.strip()] = None
    return list(out)


def granted_scopes(client_id: str, client_mode: str, requested: Iterable[Any], *, device: bool,
                   loopback_direct: bool, shared_secret_ok: bool) -> list[str]:
    """Scopes a session actually gets, per the real server's rule for clients without a device identity.

    A device-less client keeps what it asked for only as `cli`/`cli` or `gateway-client`/`backend` on a direct
    loopback socket (no forwarding headers) that presented a valid shared secret; every other device-less client
    gets `[]`. With a verified device the pairing step has already bounded the request, so it passes through.
    """
    scopes = _clean_scopes(requested)
    if device:
        return scopes
    trusted = (client_id.strip().lower(), client_mode.strip().lower()) in _SCOPED_DEVICELESS_CLIENTS
    return scopes if trusted and loopback_direct and shared_secret_ok else []


def skips_self_pairing(client_id: str, client_mode: str, *, loopback_direct: bool, shared_secret_ok: bool) -> bool:
    """Whether a signed `gateway-client`/`backend` connect skips pairing (and gets no device token).

    Upstream treats the gateway's own local backend helpers as trusted once they prove the shared secret on
    loopback; the captured `openclaw-node` hello-ok carries no `deviceToken` for exactly this reason.
    """
    pair = (client_id.strip().lower(), client_mode.strip().lower())
    return pair == ("gateway-client", "backend") and loopback_direct and shared_secret_ok


def has_scope(granted: Iterable[str], required: str) -> bool:
    """Whether `granted` satisfies `required`: admin covers every `operator.*` scope, write covers read and talk."""
    held = set(granted)
    if required in held:
        return True
    if OPERATOR_ADMIN in held and required.startswith("operator."):
        return True
    return required in _WRITE_IMPLIES and OPERATOR_WRITE in held


def scopes_cover(role: str, requested: Iterable[Any], approved: Iterable[Any]) -> bool:
    """Whether an approval for `role` covers every requested scope (operator implications apply).

    Non-operator roles only ever hold scopes in their own `<role>.` namespace, and an approval without scopes
    covers only an empty request.
    """
    wanted = _clean_scopes(requested)
    if not wanted:
        return True
    allowed = _clean_scopes(approved)
    if not allowed:
        return False
    role = role.strip()
    if role == "operator":
        return all(s.startswith("operator.") and has_scope(allowed, s) for s in wanted)
    return all(s.startswith(f"{role}.") and s in allowed for s in wanted)
