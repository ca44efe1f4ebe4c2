"""Client certificates for talking to a daemon over HTTPS, and reading a daemon's certificate."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labgpu.errors import BadInput
from labgpu.runtime.errors import RuntimeUnavailable


def generate_client_certificate(cert_path: Path, key_path: Path, *, common_name: str = "labgpu") -> str:
    """Write a new self-signed client certificate and key (PEM, key mode 0600); return the cert PEM.

    Same shape as the `lxc`/`incus` clients make: ECDSA P-384, valid ten years."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA384())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_text(cert_pem)
    return cert_pem


def fetch_server_certificate(host: str, port: int, *, timeout: float = 10.0) -> str:
    """The PEM certificate a daemon presents (to show its fingerprint and pin it). Trusts nothing."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we only read the certificate, to pin it afterwards
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, ctx.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise RuntimeUnavailable(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    if der is None:
        raise RuntimeUnavailable(f"{host}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)


def certificate_fingerprint(pem: str) -> str:
    """SHA-256 fingerprint in hex, as `lxc config trust list` shows it."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class TrustToken:
    """What a one-time trust token (``incus config trust add`` / ``lxc config trust add``) carries."""

    text: str  # the token as given, sent back to the daemon
    client_name: str
    fingerprint: str  # SHA-256 of the daemon's certificate: pins it without asking anyone
    addresses: tuple[str, ...]
    expires_at: str


def decode_trust_token(text: str) -> TrustToken:
    """Read a trust token (base64 JSON). Raises BadInput when it is not one."""
    raw = text.strip()
    try:
        data = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True))
    except (binascii.Error, ValueError):
        raise BadInput(
            "that is not a trust token: paste the whole line `incus config trust add NAME` printed"
        ) from None
    if not isinstance(data, dict) or not data.get("secret") or not data.get("fingerprint"):
        raise BadInput(
            "that is not a trust token: paste the whole line `incus config trust add NAME` printed"
        )
    if "server_name" in data and "client_name" not in data:
        raise BadInput(
            "that is a cluster join token; give a client trust token (`incus config trust add NAME`)"
        )
    return TrustToken(
        text=raw,
        client_name=str(data.get("client_name") or ""),
        fingerprint=str(data["fingerprint"]).lower(),
        addresses=tuple(str(a) for a in data.get("addresses") or ()),
        expires_at=str(data.get("expires_at") or ""),
    )
