"""`gateway.tls`: the port served over TLS (WebSocket, HTTP API, probes and dashboard alike), as upstream does.

Paths default to `<stateDir>/gateway/tls/gateway-cert.pem` and `gateway-key.pem`, where upstream's clients look
for the local certificate to pin. `autoGenerate` (upstream's default) makes a self-signed pair only when both
files are missing; an existing partial pair is left untouched and start-up fails, naming it. Generated files are
published with link(2), so a file that appeared meanwhile is never overwritten.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TlsError(ValueError):
    """TLS material that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class TlsSettings:
    cert_path: Path
    key_path: Path
    ca_path: Path | None
    auto_generate: bool

    @classmethod
    def from_config(cls, gateway_cfg: dict[str, Any], state_dir: Path) -> TlsSettings | None:
        tls = gateway_cfg.get("tls") or {}
        if not tls.get("enabled"):
            return None
        base = state_dir / "gateway" / "tls"

        def path(key: str, default: Path) -> Path:
            value = tls.get(key)
            return Path(value).expanduser() if isinstance(value, str) and value else default

        ca = tls.get("caPath")
        return cls(path("certPath", base / "gateway-cert.pem"), path("keyPath", base / "gateway-key.pem"),
                   Path(ca).expanduser() if isinstance(ca, str) and ca else None, tls.get("autoGenerate", True))

    def ensure_material(self) -> bool:
        """Generate the pair when both files are missing and autoGenerate is on; True when generated."""
        have_cert, have_key = self.cert_path.exists(), self.key_path.exists()
        if have_cert and have_key:
            return False
        if have_cert or have_key:
            present, missing = (self.cert_path, self.key_path) if have_cert else (self.key_path, self.cert_path)
            raise TlsError(f"gateway.tls: found {present} but not {missing}; an existing partial pair is left "
                           "untouched: provide both files or remove the one that is there")
        if not self.auto_generate:
            raise TlsError(f"gateway.tls: {self.cert_path} and {self.key_path} do not exist; provide them "
                           "(certPath, keyPath) or set gateway.tls.autoGenerate to true")
        cert_pem, key_pem = self_signed_pair()
        for target, data, mode in ((self.key_path, key_pem, 0o600), (self.cert_path, cert_pem, 0o644)):
            publish(target, data, mode)
        return True

    def server_context(self) -> ssl.SSLContext:
        """The listener's context; raises TlsError naming the file when the pair cannot be loaded."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"gateway.tls: cannot load {self.cert_path} with {self.key_path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
        if self.ca_path is not None:
            try:
                ctx.load_verify_locations(cafile=self.ca_path)
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(f"gateway.tls.caPath: cannot load {self.ca_path}: {exc}") from None
        return ctx

    def fingerprint(self) -> str:
        """The served certificate's SHA-256 as `AA:BB:...` (what gateway.remote.tlsFingerprint pins)."""
        pem = self.cert_path.read_text()
        der = ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE-----"):])
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


def publish(target: Path, data: bytes, mode: int) -> None:
    """Write beside the target, fsync, then link into place: never overwrites a file that appeared meanwhile."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise TlsError(f"gateway.tls: {target} appeared while generating; start again to use it") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def self_signed_pair(days: int = 3650) -> tuple[bytes, bytes]:
    """A P-256 key and a self-signed certificate for this host's names and loopback addresses (local/dev use,
    as upstream's autoGenerate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "localhost"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"openclaw gateway ({host})")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(host),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_tls(gateway_cfg: dict[str, Any], state_dir: Path) -> ssl.SSLContext | None:
    """The listener's TLS context for this config (generating the pair first when allowed), or None for
    plaintext. Raises TlsError naming what is wrong."""
    settings = TlsSettings.from_config(gateway_cfg, state_dir)
    if settings is None:
        return None
    settings.ensure_material()
    return settings.server_context()
