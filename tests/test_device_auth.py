"""Handshake authentication: shared secret, failed-auth lockout, scope rule, device proofs, pairing and tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from openclaw_sup.gateway.authn import (
    AuthConfig,
    FailedAuthLimiter,
    check_shared_secret,
    granted_scopes,
    has_scope,
    rate_limited_error,
    scopes_cover,
    skips_self_pairing,
)
from openclaw_sup.gateway.device import (
    PENDING_TTL_MS,
    DeviceMeta,
    DeviceProof,
    DeviceStore,
    NonceRegistry,
    b64url_encode,
    build_payload,
    decide_pairing,
    verify_device,
)

TOKEN_CFG = AuthConfig(mode="token", token="s3cret-token")
PASSWORD_CFG = AuthConfig(mode="password", password="hunter2")
MINUTE = 60_000

CAPTURE_DEVICE: dict[str, Any] = {
    "id": "42f11678eee03d67bd1fc3b020900bb9eb7744b80b30cd3df9f1d79383a9b8be",
    "publicKey": "ODVvYr_GS_OGg1uo5vSiOxllM3QZP7SznmPhKZ0jIZc",
    "signature": "PE_E4kv4mNYUJn-xjYdxqCL_VpoAboZChf8OcMwsw0qhHTMTg6MzR0vSbbhRRS7GJAmIRpguQHk3KE_HzjUCAA",
    "signedAt": 1795457798092,
    "nonce": "4fd0f650-6a87-4d9a-a0ca-1ca106c42e6d",
}
CAPTURE_CLIENT = {"id": "gateway-client", "version": "0.3.0", "platform": "linux", "mode": "backend"}
CAPTURE_SCOPES = ["operator.read", "operator.write"]


# ---- configuration --------------------------------------------------------------------------------------------

def test_config_token_from_file_wins_over_env() -> None:
    cfg = AuthConfig.from_config({"auth": {"token": "file"}}, {"OPENCLAW_GATEWAY_TOKEN": "env"})
    assert (cfg.mode, cfg.token, cfg.generated) == ("token", "file", False)
    assert AuthConfig.from_config({}, {"OPENCLAW_GATEWAY_TOKEN": "env"}).token == "env"


def test_config_password_only_means_password_mode() -> None:
    cfg = AuthConfig.from_config({}, {"OPENCLAW_GATEWAY_PASSWORD": "pw"})
    assert (cfg.mode, cfg.password) == ("password", "pw")


def test_config_both_secrets_need_explicit_mode() -> None:
    with pytest.raises(ValueError, match=r"gateway\.auth\.mode"):
        AuthConfig.from_config({"auth": {"token": "t", "password": "p"}}, {})
    cfg = AuthConfig.from_config({"auth": {"mode": "password", "token": "t"}}, {"OPENCLAW_GATEWAY_PASSWORD": "p"})
    assert (cfg.mode, cfg.password) == ("password", "p")


def test_config_nothing_configured_generates_a_runtime_token() -> None:
    a, b = AuthConfig.from_config({}, {}), AuthConfig.from_config({}, {})
    assert a.mode == "token" and a.generated and len(a.token or "") >= 40 and a.token != b.token
    assert a.token is not None and a.token not in repr(a)


def test_config_rejects_unknown_mode_and_password_mode_without_password() -> None:
    with pytest.raises(ValueError, match="not supported"):
        AuthConfig.from_config({"auth": {"mode": "sometimes"}}, {})
    with pytest.raises(ValueError, match="no password"):
        AuthConfig.from_config({"auth": {"mode": "password"}}, {})


def test_config_rate_limit_keys() -> None:
    cfg = AuthConfig.from_config({"auth": {"token": "t", "rateLimit": {
        "maxAttempts": 3, "windowMs": 1000, "lockoutMs": 5000, "exemptLoopback": False}}}, {})
    assert (cfg.max_attempts, cfg.window_ms, cfg.lockout_ms, cfg.exempt_loopback) == (3, 1000, 5000, False)
    defaults = AuthConfig.from_config({"auth": {"token": "t", "rateLimit": {"maxAttempts": "x"}}}, {})
    assert (defaults.max_attempts, defaults.exempt_loopback) == (10, True)


# ---- shared secret --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["token", "password"])
def test_secret_accepted_in_either_field(field: str) -> None:
    assert check_shared_secret(TOKEN_CFG, {field: "s3cret-token"}).ok
    result = check_shared_secret(PASSWORD_CFG, {field: "hunter2"})
    assert (result.ok, result.method, result.error) == (True, "password", None)


def test_mode_none_accepts_anything() -> None:
    result = check_shared_secret(AuthConfig(mode="none"), None)
    assert (result.ok, result.method) == (True, "none")


@pytest.mark.parametrize(("cfg", "auth", "code", "step"), [
    (TOKEN_CFG, None, "AUTH_TOKEN_MISSING", "update_auth_configuration"),
    (TOKEN_CFG, {"token": ""}, "AUTH_TOKEN_MISSING", "update_auth_configuration"),
    (TOKEN_CFG, {"token": "wrong"}, "AUTH_TOKEN_MISMATCH", "update_auth_credentials"),
    (PASSWORD_CFG, {}, "AUTH_PASSWORD_MISSING", "update_auth_configuration"),
    (PASSWORD_CFG, {"password": "nope"}, "AUTH_PASSWORD_MISMATCH", "update_auth_credentials"),
    (AuthConfig(mode="token"), {"token": "x"}, "AUTH_TOKEN_NOT_CONFIGURED", "update_auth_configuration"),
])
def test_auth_error_codes(cfg: AuthConfig, auth: dict[str, Any] | None, code: str, step: str) -> None:
    result = check_shared_secret(cfg, auth)
    assert not result.ok and result.error is not None
    assert result.error["code"] == "INVALID_REQUEST"
    assert result.error["message"].startswith("unauthorized: gateway ")
    details = result.error["details"]
    assert (details["code"], details["recommendedNextStep"], details["canRetryWithDeviceToken"]) == (code, step, False)
    assert details["authReason"] == result.reason
    assert result.wrong_credential == code.endswith("MISMATCH")


def test_token_mismatch_message_depends_on_client() -> None:
    generic = check_shared_secret(TOKEN_CFG, {"token": "bad"}).error
    cli = check_shared_secret(TOKEN_CFG, {"token": "bad"}, client={"id": "cli", "mode": "cli"}).error
    assert generic and cli
    assert generic["message"] == "unauthorized: gateway token mismatch (provide gateway auth token)"
    assert cli["message"] == ("unauthorized: gateway token mismatch "
                              "(set gateway.remote.token to match gateway.auth.token)")


def test_token_mismatch_with_device_offers_device_token_retry() -> None:
    err = check_shared_secret(TOKEN_CFG, {"token": "stale"}, device_present=True).error
    assert err and err["details"]["canRetryWithDeviceToken"] is True
    assert err["details"]["recommendedNextStep"] == "retry_with_device_token"
    already = check_shared_secret(TOKEN_CFG, {"token": "stale", "deviceToken": "d"}, device_present=True).error
    assert already and already["details"]["canRetryWithDeviceToken"] is False
    by_password = check_shared_secret(TOKEN_CFG, {"password": "stale"}, device_present=True).error
    assert by_password and by_password["details"]["canRetryWithDeviceToken"] is False


def test_secret_compare_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for near_miss in ("s3cret-toke", "s3cret-tokeN", "s3cret-token-", "x"):
        assert not check_shared_secret(TOKEN_CFG, {"token": near_miss}).ok
    assert check_shared_secret(TOKEN_CFG, {"token": "s3cret-token"}).ok
    assert len(calls) == 5 and all(len(a) == len(b) == 32 for a, b in calls)
    calls.clear()
    assert check_shared_secret(TOKEN_CFG, {"token": "s3cret-token", "password": "wrong"}).ok
    assert len(calls) == 2


# ---- failed-auth limiter --------------------------------------------------------------------------------------

def test_limiter_locks_after_ten_failures() -> None:
    lim = FailedAuthLimiter()
    now = 1_000_000
    for i in range(9):
        assert lim.check("203.0.113.9", "shared-secret", now + i) is None
        assert lim.fail("203.0.113.9", "shared-secret", now + i) is None
    assert lim.fail("203.0.113.9", "shared-secret", now + 9) == 300_000
    wait = lim.check("203.0.113.9", "shared-secret", now + 10)
    assert wait is not None and 299_000 <= wait <= 300_000
    err = rate_limited_error(wait)
    assert err["message"] == "unauthorized: too many failed authentication attempts (retry later)"
    assert (err["retryable"], err["retryAfterMs"], err["details"]["code"]) == (True, wait, "AUTH_RATE_LIMITED")
    assert err["details"]["authReason"] == "rate_limited" and err["details"]["recommendedNextStep"] == "wait_then_retry"
    assert lim.check("203.0.113.9", "device-token", now + 10) is None
    assert lim.check("203.0.113.10", "shared-secret", now + 10) is None
    assert lim.check("203.0.113.9", "shared-secret", now + 9 + 300_000) is None


def test_limiter_window_slides() -> None:
    lim = FailedAuthLimiter()
    for i in range(9):
        lim.fail("198.51.100.1", "shared-secret", i)
    for i in range(9):
        assert lim.fail("198.51.100.1", "shared-secret", 61_000 + i) is None
    assert lim.check("198.51.100.1", "shared-secret", 61_010) is None


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_limiter_exempts_loopback(ip: str) -> None:
    lim = FailedAuthLimiter()
    for i in range(50):
        lim.fail(ip, "shared-secret", i)
    assert lim.check(ip, "shared-secret", 60) is None and len(lim) == 0
    strict = FailedAuthLimiter(exempt_loopback=False)
    for i in range(10):
        strict.fail(ip, "shared-secret", i)
    assert strict.check(ip, "shared-secret", 20) is not None


def test_limiter_mapped_ipv6_shares_the_ipv4_budget() -> None:
    lim = FailedAuthLimiter(max_attempts=2)
    lim.fail("192.0.2.7", "shared-secret", 0)
    lim.fail("::ffff:192.0.2.7", "shared-secret", 1)
    assert lim.check("192.0.2.7", "shared-secret", 2) is not None


def test_limiter_success_clears_and_does_not_count() -> None:
    lim = FailedAuthLimiter()
    for i in range(9):
        lim.fail("192.0.2.1", "shared-secret", i)
    lim.succeed("192.0.2.1", "shared-secret")
    for i in range(9):
        assert lim.fail("192.0.2.1", "shared-secret", 100 + i) is None
    assert lim.check("192.0.2.1", "shared-secret", 200) is None


def test_limiter_memory_is_bounded() -> None:
    lim = FailedAuthLimiter(max_entries=100)
    for n in range(100):
        lim.fail(f"10.0.{n // 256}.{n % 256}", "shared-secret", 0)
    assert len(lim) == 100
    assert lim.fail("10.9.9.9", "shared-secret", 1) == 300_000
    assert len(lim) == 100
    assert lim.check("10.9.9.8", "shared-secret", 2) is not None
    assert lim.check("10.9.9.8", "shared-secret", 61_000) is None
    assert len(lim) == 0
    churn = FailedAuthLimiter(max_entries=100)
    for n in range(20_000):
        churn.fail(f"10.{n // 65536}.{(n // 256) % 256}.{n % 256}", "shared-secret", n * 10)
    assert len(churn) <= 100


def test_limiter_from_config() -> None:
    lim = FailedAuthLimiter(AuthConfig(mode="token", token="t", max_attempts=2, lockout_ms=1000))
    lim.fail("192.0.2.2", "shared-secret", 0)
    assert lim.fail("192.0.2.2", "shared-secret", 1) == 1000
    override = FailedAuthLimiter(AuthConfig(mode="token", token="t", max_attempts=2), max_attempts=5)
    assert override.max_attempts == 5 and override.lockout_ms == 300_000


# ---- scopes ---------------------------------------------------------------------------------------------------

READ_WRITE = ["operator.read", "operator.write"]


@pytest.mark.parametrize(("client_id", "mode", "device", "loopback", "secret", "expected"), [
    ("cli", "cli", False, True, True, READ_WRITE),
    ("CLI", "cli", False, True, True, READ_WRITE),
    ("cli", "probe", False, True, True, []),
    ("gateway-client", "backend", False, True, True, READ_WRITE),
    ("gateway-client", "ui", False, True, True, []),
    ("openclaw-control-ui", "webchat", False, True, True, []),
    ("cli", "cli", False, False, True, []),
    ("gateway-client", "backend", False, False, True, []),
    ("cli", "cli", False, True, False, []),
    ("openclaw-tui", "ui", True, False, False, READ_WRITE),
])
def test_scope_rule(client_id: str, mode: str, device: bool, loopback: bool, secret: bool,
                    expected: list[str]) -> None:
    got = granted_scopes(client_id, mode, [*READ_WRITE, " ", "operator.read"], device=device,
                         loopback_direct=loopback, shared_secret_ok=secret)
    assert got == expected


def test_backend_self_pairing_skip() -> None:
    assert skips_self_pairing("gateway-client", "backend", loopback_direct=True, shared_secret_ok=True)
    assert not skips_self_pairing("gateway-client", "backend", loopback_direct=False, shared_secret_ok=True)
    assert not skips_self_pairing("cli", "cli", loopback_direct=True, shared_secret_ok=True)


@pytest.mark.parametrize(("granted", "required", "ok"), [
    (["operator.admin"], "operator.read", True),
    (["operator.admin"], "operator.pairing", True),
    (["operator.admin"], "operator.future.thing", True),
    (["operator.write"], "operator.read", True),
    (["operator.write"], "operator.talk", True),
    (["operator.write"], "operator.admin", False),
    (["operator.write"], "operator.approvals", False),
    (["operator.read"], "operator.write", False),
    (["operator.talk"], "operator.talk.secrets", False),
    (["operator.pairing"], "operator.pairing", True),
    ([], "operator.read", False),
])
def test_has_scope(granted: list[str], required: str, ok: bool) -> None:
    assert has_scope(granted, required) is ok


def test_scopes_cover() -> None:
    assert scopes_cover("operator", [], [])
    assert not scopes_cover("operator", ["operator.read"], [])
    assert scopes_cover("operator", ["operator.read", "operator.talk"], ["operator.write"])
    assert not scopes_cover("operator", ["operator.admin"], ["operator.write"])
    assert not scopes_cover("operator", ["node.camera"], ["operator.admin"])
    assert scopes_cover("node", ["node.camera"], ["node.camera"])
    assert not scopes_cover("node", ["operator.read"], ["operator.read"])


# ---- device proof ---------------------------------------------------------------------------------------------

def test_real_openclaw_node_capture_verifies() -> None:
    proof = verify_device(CAPTURE_DEVICE, nonce_issued=CAPTURE_DEVICE["nonce"], client=CAPTURE_CLIENT,
                          role="operator", scopes=CAPTURE_SCOPES, auth_token="testtoken",
                          now_ms=1795457798092, nonces=NonceRegistry())
    assert proof == DeviceProof(device_id=CAPTURE_DEVICE["id"], public_key_b64=CAPTURE_DEVICE["publicKey"],
                                payload_version="v2")


def test_real_capture_rejects_any_altered_field() -> None:
    base: dict[str, Any] = {"nonce_issued": CAPTURE_DEVICE["nonce"], "client": CAPTURE_CLIENT, "role": "operator",
                            "scopes": CAPTURE_SCOPES, "auth_token": "testtoken", "now_ms": 1795457798092}
    changes: list[dict[str, Any]] = [{"auth_token": "other"}, {"scopes": ["operator.read"]}, {"role": "node"},
                                     {"client": {**CAPTURE_CLIENT, "mode": "cli"}}]
    for change in changes:
        result = verify_device(CAPTURE_DEVICE, **{**base, **change}, nonces=NonceRegistry())
        assert isinstance(result, dict) and result["details"]["code"] == "DEVICE_AUTH_SIGNATURE_INVALID"


class Signer:
    """A fresh Ed25519 device identity that signs connect payloads like a client."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = b64url_encode(self.raw)
        self.device_id = hashlib.sha256(self.raw).hexdigest()

    def device(self, *, version: Literal["v2", "v3"] = "v3", nonce: str = "n-1", signed_at: int = 1_000_000,
               client: dict[str, Any] | None = None, role: str = "operator", scopes: list[str] | None = None,
               token: str | None = "tok") -> dict[str, Any]:
        payload = build_payload(version, device_id=self.device_id, client=client or CLIENT,
                                role=role, scopes=scopes if scopes is not None else READ_WRITE,
                                signed_at_ms=signed_at, token=token, nonce=nonce)
        return {"id": self.device_id, "publicKey": self.public_key,
                "signature": b64url_encode(self.key.sign(payload.encode())), "signedAt": signed_at, "nonce": nonce}


CLIENT = {"id": "openclaw-tui", "version": "1.0", "platform": "  Linux ", "mode": "ui", "deviceFamily": "Desktop"}


def check(device: dict[str, Any], *, nonces: NonceRegistry | None = None, **over: Any) -> DeviceProof | dict[str, Any]:
    args: dict[str, Any] = {"nonce_issued": "n-1", "client": CLIENT, "role": "operator", "scopes": READ_WRITE,
                            "auth_token": "tok", "now_ms": 1_000_000}
    args.update(over)
    return verify_device(device, nonces=nonces or NonceRegistry(), **args)


@pytest.mark.parametrize("version", ["v3", "v2"])
def test_fresh_key_verifies_v3_and_v2(version: Literal["v2", "v3"]) -> None:
    signer = Signer()
    proof = check(signer.device(version=version))
    assert isinstance(proof, DeviceProof)
    assert (proof.device_id, proof.public_key_b64, proof.payload_version) == (
        signer.device_id, signer.public_key, version)


def test_v3_payload_normalizes_platform_and_family() -> None:
    payload = build_payload("v3", device_id="d", client=CLIENT, role="operator", scopes=["a", "b"],
                            signed_at_ms=5, token=None, nonce="n")
    assert payload == "v3|d|openclaw-tui|ui|operator|a,b|5||n|linux|desktop"
    v2 = build_payload("v2", device_id="d", client=CLIENT, role="operator", scopes=[], signed_at_ms=5,
                       token="t", nonce="n")
    assert v2 == "v2|d|openclaw-tui|ui|operator||5|t|n"


def test_pem_public_key_accepted() -> None:
    signer = Signer()
    device = signer.device()
    device["publicKey"] = signer.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    proof = check(device)
    assert isinstance(proof, DeviceProof) and proof.public_key_b64 == signer.public_key


def expect_failure(result: DeviceProof | dict[str, Any], message: str, code: str, reason: str) -> None:
    assert result == {"code": "INVALID_REQUEST", "message": message, "details": {"code": code, "reason": reason}}


def test_bad_signature() -> None:
    device = Signer().device()
    device["signature"] = b64url_encode(bytes(64))
    expect_failure(check(device), "device signature invalid", "DEVICE_AUTH_SIGNATURE_INVALID", "device-signature")
    device["signature"] = "!!not base64!!"
    expect_failure(check(device), "device signature invalid", "DEVICE_AUTH_SIGNATURE_INVALID", "device-signature")
    other = Signer().device(token="different")
    expect_failure(check(other), "device signature invalid", "DEVICE_AUTH_SIGNATURE_INVALID", "device-signature")


@pytest.mark.parametrize("offset", [120_001, -120_001, 600_000])
def test_stale_signed_at(offset: int) -> None:
    device = Signer().device()
    expect_failure(check(device, now_ms=1_000_000 + offset), "device signature expired",
                   "DEVICE_AUTH_SIGNATURE_EXPIRED", "device-signature-stale")


def test_signed_at_edge_of_skew_and_wrong_type() -> None:
    assert isinstance(check(Signer().device(), now_ms=1_120_000), DeviceProof)
    device = Signer().device()
    device["signedAt"] = "1000000"
    expect_failure(check(device), "device signature expired", "DEVICE_AUTH_SIGNATURE_EXPIRED",
                   "device-signature-stale")


def test_wrong_device_id() -> None:
    device = Signer().device()
    device["id"] = Signer().device_id
    expect_failure(check(device), "device identity mismatch", "DEVICE_AUTH_DEVICE_ID_MISMATCH", "device-id-mismatch")
    device["id"] = device["id"].upper()
    expect_failure(check(device), "device identity mismatch", "DEVICE_AUTH_DEVICE_ID_MISMATCH", "device-id-mismatch")


@pytest.mark.parametrize("public_key", ["", "not*base64", b64url_encode(bytes(31)), b64url_encode(bytes(33)), None,
                                        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"])
def test_bad_public_key(public_key: Any) -> None:
    device = Signer().device()
    device["publicKey"] = public_key
    expect_failure(check(device), "device public key invalid", "DEVICE_AUTH_PUBLIC_KEY_INVALID", "device-public-key")


@pytest.mark.parametrize("nonce", [None, "", "   "])
def test_missing_nonce(nonce: Any) -> None:
    device = Signer().device()
    device["nonce"] = nonce
    expect_failure(check(device), "device nonce required", "DEVICE_AUTH_NONCE_REQUIRED", "device-nonce-missing")


def test_wrong_nonce() -> None:
    device = Signer().device(nonce="n-other")
    expect_failure(check(device), "device nonce mismatch", "DEVICE_AUTH_NONCE_MISMATCH", "device-nonce-mismatch")


def test_replayed_nonce() -> None:
    registry = NonceRegistry()
    device = Signer().device()
    assert isinstance(check(device, nonces=registry), DeviceProof)
    expect_failure(check(device, nonces=registry, now_ms=1_000_500), "device nonce mismatch",
                   "DEVICE_AUTH_NONCE_MISMATCH", "device-nonce-mismatch")


def test_nonce_registry_is_bounded_and_expires() -> None:
    registry = NonceRegistry(ttl_ms=1000, capacity=3)
    assert registry.claim("d", "a", 0) and not registry.claim("d", "a", 999)
    assert registry.claim("d", "a", 1000)
    for n in "bcdef":
        registry.claim("d", n, 1001)
    assert len(registry) == 3
    assert registry.claim("d", "b", 1002)


# ---- device store ---------------------------------------------------------------------------------------------

META = DeviceMeta(platform="linux", device_family="desktop", client_id="openclaw-tui", client_mode="ui")


def db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_tokens_are_stored_as_upstream_stores_them(tmp_path: Path) -> None:
    path = tmp_path / "state" / "openclaw.sqlite"
    with DeviceStore(path) as store:
        store.approve("dev1", "pk1", "operator", READ_WRITE, META, now_ms=1)
        raw = store.issue_token("dev1", "operator", READ_WRITE, 10)
        record = store.verify_token(raw, "dev1")
        assert record is not None and (record.device_id, record.role, record.scopes, record.issued_at_ms) == (
            "dev1", "operator", READ_WRITE, 10)
    # upstream's device_pairing_paired.tokens_json: one entry per role, the token as the real gateway compares it
    with sqlite3.connect(path) as db:
        (tokens_json, roles_json, approved) = db.execute(
            "SELECT tokens_json, roles_json, approved_scopes_json FROM device_pairing_paired "
            "WHERE device_id = 'dev1'").fetchone()
    assert json.loads(tokens_json) == {"operator": {"token": raw, "role": "operator", "scopes": READ_WRITE,
                                                    "createdAtMs": 10}}
    assert json.loads(roles_json) == ["operator"] and json.loads(approved) == READ_WRITE
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_token_verify_and_revoke(tmp_path: Path) -> None:
    with DeviceStore(tmp_path / "d.sqlite") as store:
        store.approve("dev1", "pk1", "operator", READ_WRITE, META, now_ms=1)
        store.approve("dev2", "pk2", "operator", READ_WRITE, META, now_ms=1)
        raw = store.issue_token("dev1", "operator", ["operator.read"], 10)
        assert store.verify_token(raw) is not None
        assert store.verify_token(raw, "dev2") is None
        assert store.verify_token(raw + "x") is None and store.verify_token("") is None
        assert store.revoke("dev1", "operator") and not store.revoke("dev1", "operator")
        assert store.verify_token(raw, "dev1") is None


def test_token_issue_requires_approval_reuses_a_covering_token_and_rotates(tmp_path: Path) -> None:
    with DeviceStore(tmp_path / "d.sqlite") as store:
        with pytest.raises(PermissionError):
            store.issue_token("ghost", "operator", [], 1)
        store.approve("dev1", "pk1", "operator", ["operator.read"], META, now_ms=1)
        with pytest.raises(PermissionError):
            store.issue_token("dev1", "operator", ["operator.admin"], 1)
        with pytest.raises(PermissionError):
            store.issue_token("dev1", "node", [], 1)
        # As upstream: the role's live token is handed out again while it covers the request.
        tokens = [store.issue_token("dev1", "operator", ["operator.read"], 10 + i) for i in range(3)]
        assert len(set(tokens)) == 1 and store.verify_token(tokens[0]) is not None
        rotated = store.issue_token("dev1", "operator", ["operator.read"], 20, rotate=True)
        assert rotated != tokens[0]
        record = store.verify_token(rotated)
        assert record is not None and record.issued_at_ms == 20
        assert store.verify_token(tokens[0]) is None
        assert store.revoke("dev1", "operator", 21) and store.verify_token(rotated) is None
        fresh = store.issue_token("dev1", "operator", ["operator.read"], 22)
        assert fresh not in (rotated, tokens[0]) and store.verify_token(fresh) is not None


def test_new_public_key_drops_old_grants_and_tokens(tmp_path: Path) -> None:
    with DeviceStore(tmp_path / "d.sqlite") as store:
        store.approve("dev1", "pk1", "operator", ["operator.admin"], META, now_ms=1)
        raw = store.issue_token("dev1", "operator", ["operator.admin"], 2)
        store.approve("dev1", "pk1", "node", [], META, now_ms=3)
        kept = store.get_pairing("dev1")
        assert kept and kept.roles == ["operator", "node"] and kept.scopes == ["operator.admin"]
        assert store.verify_token(raw) is not None
        store.approve("dev1", "pk-new", "operator", ["operator.read"], META, now_ms=4)
        fresh = store.get_pairing("dev1")
        assert fresh and fresh.roles == ["operator"] and fresh.scopes == ["operator.read"] and fresh.created_ms == 1
        assert store.verify_token(raw) is None


def test_pairing_request_supersede_and_refresh(tmp_path: Path) -> None:
    with DeviceStore(tmp_path / "d.sqlite") as store:
        first = store.request_pairing("dev1", "pk1", "operator", ["operator.read"], META, 0)
        again, created = store.upsert_request("dev1", "pk1", "operator", ["operator.read"], META, 1000)
        assert (again.request_id, created, again.created_ms, again.updated_ms) == (first, False, 0, 1000)
        second = store.request_pairing("dev1", "pk1", "operator", READ_WRITE, META, 2000)
        assert second != first
        assert store.get_request(first, 2000) is None
        assert [r.request_id for r in store.list_pending(2000)] == [second]
        store.request_pairing("dev2", "pk2", "node", [], META, 3000)
        assert len(store.list_pending(3000)) == 2
        assert store.approve_request(first) is None


def test_pairing_request_expires_five_minutes_after_last_retry(tmp_path: Path) -> None:
    with DeviceStore(tmp_path / "d.sqlite") as store:
        rid = store.request_pairing("dev1", "pk1", "operator", [], META, 0)
        assert store.request_pairing("dev1", "pk1", "operator", [], META, 4 * MINUTE) == rid
        assert store.get_request(rid, 4 * MINUTE + PENDING_TTL_MS - 1) is not None
        assert [r.request_id for r in store.list_pending(8 * MINUTE)] == [rid]
        assert store.list_pending(4 * MINUTE + PENDING_TTL_MS) == []
        assert store.approve_request(rid, now_ms=10 * MINUTE) is None
        assert store.request_pairing("dev1", "pk1", "operator", [], META, 10 * MINUTE) != rid


def test_approve_and_reject_requests(tmp_path: Path) -> None:
    with DeviceStore(tmp_path / "d.sqlite") as store:
        rid = store.request_pairing("dev1", "pk1", "operator", READ_WRITE, META, 0)
        rejected = store.reject_request(rid, now_ms=1)
        assert rejected and rejected.device_id == "dev1" and store.get_pairing("dev1") is None
        assert store.reject_request(rid, now_ms=1) is None
        rid = store.request_pairing("dev1", "pk1", "operator", READ_WRITE, META, 2)
        paired = store.approve_request(rid, now_ms=3)
        assert paired and (paired.public_key, paired.roles, paired.scopes, paired.meta) == (
            "pk1", ["operator"], READ_WRITE, META)
        assert store.list_pending(4) == []


def test_store_survives_reopen_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "devices.sqlite"
    with DeviceStore(path) as store:
        store.approve("dev1", "pk1", "operator", READ_WRITE, META, now_ms=1)
        raw = store.issue_token("dev1", "operator", READ_WRITE, 2)
        rid = store.request_pairing("dev2", "pk2", "operator", [], META, 3)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with DeviceStore(path) as store:
        paired = store.get_pairing("dev1")
        assert paired and paired.scopes == READ_WRITE and paired.meta == META
        assert store.verify_token(raw, "dev1") is not None
        pending = store.get_request(rid, 4)
        assert pending and pending.to_wire()["requestId"] == rid and pending.to_wire()["deviceId"] == "dev2"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from openclaw_sup.gateway.device import DeviceMeta, DeviceStore
    store = DeviceStore(Path(sys.argv[1]))
    store.approve("dev1", "pk1", "operator", ["operator.read"], DeviceMeta(), now_ms=1)
    n = 0
    while True:
        n += 1
        raw = store.issue_token("dev1", "operator", ["operator.read"], n, rotate=True)
        store.request_pairing(f"dev{n % 7}", "pk", "operator", [str(n)], DeviceMeta(), n)
        print(raw, flush=True)
""")


@pytest.mark.live
def test_store_survives_sigkill_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "devices.sqlite"
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(200):
        assert child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    printed = [line for line in child.stdout.read().splitlines() if line]
    acknowledged = 200 + len(printed)
    last = printed[-1] if printed else None
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (tokens_json,) = db.execute("SELECT tokens_json FROM device_pairing_paired WHERE device_id = 'dev1'"
                                    ).fetchone()
    live = json.loads(tokens_json)["operator"]
    assert "revokedAtMs" not in live and acknowledged <= live["rotatedAtMs"] <= acknowledged + 1
    with DeviceStore(path) as store:
        assert store.get_pairing("dev1") is not None
        pending = store.list_pending(10**6)
        assert len({r.device_id for r in pending}) == len(pending)
        if last is not None and live["rotatedAtMs"] == acknowledged:
            assert store.verify_token(last) is not None


# ---- pairing decision -----------------------------------------------------------------------------------------

def proof_for(signer: Signer) -> DeviceProof:
    return DeviceProof(device_id=signer.device_id, public_key_b64=signer.public_key, payload_version="v3")


def test_loopback_device_is_auto_approved(tmp_path: Path) -> None:
    signer = Signer()
    with DeviceStore(tmp_path / "d.sqlite") as store:
        decision = decide_pairing(store, proof_for(signer), "operator", READ_WRITE, META, loopback_direct=True,
                                  auto_approve_local=True, now_ms=5)
        assert (decision.status, decision.approved, decision.auto_approved, decision.scopes) == (
            "approved", True, True, READ_WRITE)
        paired = store.get_pairing(signer.device_id)
        assert paired and paired.public_key == signer.public_key and store.list_pending(6) == []
        again = decide_pairing(store, proof_for(signer), "operator", ["operator.read"], META, loopback_direct=False,
                               auto_approve_local=True, now_ms=7)
        assert (again.approved, again.auto_approved, again.scopes) == (True, False, ["operator.read"])


def test_remote_device_gets_not_paired_with_request(tmp_path: Path) -> None:
    signer = Signer()
    with DeviceStore(tmp_path / "d.sqlite") as store:
        decision = decide_pairing(store, proof_for(signer), "operator", READ_WRITE, META, loopback_direct=False,
                                  auto_approve_local=True, now_ms=5)
        assert decision.status == "not_paired" and decision.reason == "not-paired" and decision.request_created
        assert decision.request is not None
        rid = decision.request.request_id
        assert decision.close_reason == f"pairing required (requestId: {rid})"
        event = decision.request_event
        assert event and (event["requestId"], event["deviceId"], event["role"]) == (rid, signer.device_id, "operator")
        assert decision.error == {"code": "NOT_PAIRED", "message": "pairing required", "details": {
            "code": "PAIRING_REQUIRED", "reason": "not-paired", "requestId": rid,
            "remediationHint": f"approve this device with: openclaw devices approve {rid}",
            "recommendedNextStep": "wait_then_retry", "retryable": False, "pauseReconnect": True,
            "waitForResolution": True, "deviceId": signer.device_id, "requestedRole": "operator",
            "requestedScopes": READ_WRITE}}
        retry = decide_pairing(store, proof_for(signer), "operator", READ_WRITE, META, loopback_direct=False,
                               auto_approve_local=True, now_ms=6)
        assert retry.request and retry.request.request_id == rid and not retry.request_created
        assert decide_pairing(store, proof_for(signer), "operator", READ_WRITE, META, loopback_direct=True,
                              auto_approve_local=False, now_ms=7).status == "not_paired"
        assert store.approve_request(rid, now_ms=8) is not None
        assert decide_pairing(store, proof_for(signer), "operator", READ_WRITE, META, loopback_direct=False,
                              auto_approve_local=False, now_ms=9).approved


def test_scope_upgrade_needs_approval_even_on_loopback(tmp_path: Path) -> None:
    signer = Signer()
    with DeviceStore(tmp_path / "d.sqlite") as store:
        store.approve(signer.device_id, signer.public_key, "operator", ["operator.read"], META, now_ms=1)
        decision = decide_pairing(store, proof_for(signer), "operator", ["operator.read", "operator.admin"], META,
                                  loopback_direct=True, auto_approve_local=True, now_ms=5)
        assert (decision.status, decision.reason) == ("not_paired", "scope-upgrade")
        assert decision.error is not None
        details = decision.error["details"]
        assert (details["reason"], details["approvedRoles"], details["approvedScopes"]) == (
            "scope-upgrade", ["operator"], ["operator.read"])
        assert details["requestedScopes"] == ["operator.read", "operator.admin"]
        paired = store.get_pairing(signer.device_id)
        assert paired and paired.scopes == ["operator.read"]


def test_role_upgrade_and_metadata_change(tmp_path: Path) -> None:
    signer = Signer()
    with DeviceStore(tmp_path / "d.sqlite") as store:
        store.approve(signer.device_id, signer.public_key, "operator", ["operator.read"], META, now_ms=1)
        remote = decide_pairing(store, proof_for(signer), "node", [], META, loopback_direct=False,
                                auto_approve_local=True, now_ms=2)
        assert remote.reason == "role-upgrade" and not remote.approved
        local = decide_pairing(store, proof_for(signer), "node", [], META, loopback_direct=True,
                               auto_approve_local=True, now_ms=3)
        assert local.approved and local.auto_approved and local.reason == "role-upgrade"
        moved = DeviceMeta(platform="Darwin", device_family="desktop", client_id="openclaw-tui", client_mode="ui")
        changed = decide_pairing(store, proof_for(signer), "operator", [], moved, loopback_direct=True,
                                 auto_approve_local=True, now_ms=4)
        assert (changed.approved, changed.reason) == (False, "metadata-upgrade")
        same = {"id": "other", "mode": "cli", "platform": " LINUX ", "deviceFamily": "Desktop"}
        assert decide_pairing(store, proof_for(signer), "operator", [], same, loopback_direct=False,
                              auto_approve_local=False, now_ms=5).approved


def test_new_key_for_known_device_id_is_not_paired(tmp_path: Path) -> None:
    signer = Signer()
    with DeviceStore(tmp_path / "d.sqlite") as store:
        store.approve(signer.device_id, "some-other-key", "operator", ["operator.admin"], META, now_ms=1)
        decision = decide_pairing(store, proof_for(signer), "operator", ["operator.read"], META,
                                  loopback_direct=False, auto_approve_local=True, now_ms=2)
        assert decision.reason == "not-paired" and decision.error is not None
        assert "approvedScopes" not in decision.error["details"]
        assert decision.request is not None and decision.request.is_repair
