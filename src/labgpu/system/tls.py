"""The portal's TLS: which certificate `labgpu serve` uses, and the self-signed one it makes when the admin
has none.

``web_tls`` decides (docs/admin/portal.md):

- ``auto`` (the default): plain HTTP on a loopback address; on any other address HTTPS, with the admin's
  certificate (``web_tls_cert`` and ``web_tls_key``) or else a self-signed one generated once into
  ``state_dir/tls/`` and kept (members check its SHA-256 fingerprint, which setup, serve and doctor show);
- ``on``: HTTPS on every address, loopback too;
- ``proxy``: plain HTTP on any address because a reverse proxy in front terminates TLS (cookies are then
  always marked Secure);
- ``off``: plain HTTP, refused on an address other than loopback (passwords would cross the network in
  the clear).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from labgpu.errors import ConfigError
from labgpu.settings import Settings

CERT_NAME = "portal.crt"
KEY_NAME = "portal.key"
VALID_DAYS = 3650


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to listen on) is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class PortalTls:
    """How the portal serves on one address."""

    https: bool
    certfile: Path | None = None
    keyfile: Path | None = None
    fingerprint: str = ""  # SHA-256 of the certificate, AA:BB:... ("" without one)
    source: str = "none"  # "admin" (web_tls_cert), "generated" (state_dir/tls), "proxy", "none"
    generated_now: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"


def tls_dir(settings: Settings) -> Path:
    return settings.state_dir / "tls"


def fingerprint_of(cert_pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as browsers show it (AA:BB:...)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def _names_in(cert_pem: bytes) -> set[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    return names | {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def _host_names(bind: str) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the certificate should name: this machine's names, loopback, and the
    address it listens on (when it is one address, not all)."""
    dns = {"localhost"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name.strip("."):
            dns.add(name.strip("."))
    ips = {"127.0.0.1", "::1"}
    try:
        address = ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        if bind and bind not in ("0.0.0.0", "::"):  # noqa: S104 - names the wildcard, binds nothing
            dns.add(bind)
    else:
        if not address.is_unspecified:
            ips.add(str(address))
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            ips.add(str(info[4][0]))
    except OSError:
        pass
    return sorted(d for d in dns if d), sorted(ips)


def _generate(cert: Path, key: Path, bind: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    dns, ips = _host_names(bind)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"labgpu portal {dns[-1] if dns else ''}".strip())]
    )
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    cert.parent.chmod(0o700)
    tmp_key = key.with_name(f".{key.name}.tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    tmp_cert = cert.with_name(f".{cert.name}.tmp")
    tmp_cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    tmp_key.replace(key)
    tmp_cert.replace(cert)


def self_signed(settings: Settings, bind: str) -> tuple[Path, Path, bool]:
    """The generated certificate and key in ``state_dir/tls/`` (made when missing, or made again when it
    does not name the address ``bind``); the bool says whether it was made now. Raises ConfigError when
    the state folder cannot be written."""
    folder = tls_dir(settings)
    cert, key = folder / CERT_NAME, folder / KEY_NAME
    try:
        if cert.is_file() and key.is_file():
            names = _names_in(cert.read_bytes())
            wanted = bind.strip("[]")
            if is_loopback(bind) or wanted in ("0.0.0.0", "::") or wanted in names:  # noqa: S104
                return cert, key, False
        _generate(cert, key, bind)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the portal's certificate in {folder}: {exc.strerror or exc}"
        ) from None
    return cert, key, True


def portal_tls(settings: Settings, bind: str, *, create: bool = True) -> PortalTls:
    """How `labgpu serve` serves on ``bind``: see the module's docstring. ``create``: make the self-signed
    certificate when it is needed and missing (doctor only looks). Raises ConfigError for plain HTTP on an
    address other than loopback without ``web_tls = "proxy"``, and for a certificate without its key."""
    mode = settings.web_tls
    if (settings.web_tls_cert is None) != (settings.web_tls_key is None):
        raise ConfigError(
            "web_tls_cert and web_tls_key go together: one of them is not set",
            hint="set both (the certificate chain and its private key, PEM), or neither",
        )
    if mode == "proxy":
        return PortalTls(https=False, source="proxy")
    loopback = is_loopback(bind)
    if mode == "off" or (mode == "auto" and loopback):
        if not loopback and mode == "off":
            raise ConfigError(
                f"the portal would serve plain HTTP on {bind}, which is not a loopback address: passwords "
                "and session cookies would cross the network unencrypted",
                hint='set web_tls = "auto" (HTTPS, the certificate in web_tls_cert or a generated one), or '
                'web_tls = "proxy" when a reverse proxy in front terminates TLS, or listen on 127.0.0.1',
            )
        return PortalTls(https=False)
    if settings.web_tls_cert is not None and settings.web_tls_key is not None:
        cert, key = settings.web_tls_cert, settings.web_tls_key
        try:
            pem = cert.read_bytes()
            key.stat()
        except OSError as exc:
            raise ConfigError(f"cannot read the portal's certificate or key: {exc.strerror or exc}") from None
        try:
            fp = fingerprint_of(pem)
        except ValueError:
            raise ConfigError(f"web_tls_cert {cert} is not a PEM certificate") from None
        return PortalTls(https=True, certfile=cert, keyfile=key, fingerprint=fp, source="admin")
    if not create:
        cert = tls_dir(settings) / CERT_NAME
        fp = fingerprint_of(cert.read_bytes()) if cert.is_file() else ""
        return PortalTls(
            https=True,
            certfile=cert,
            keyfile=tls_dir(settings) / KEY_NAME,
            fingerprint=fp,
            source="generated",
        )
    cert, key, made = self_signed(settings, bind)
    return PortalTls(
        https=True,
        certfile=cert,
        keyfile=key,
        fingerprint=fingerprint_of(cert.read_bytes()),
        source="generated",
        generated_now=made,
    )
