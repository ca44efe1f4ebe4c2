"""The portal's TLS decisions (labgpu.system.tls): plain HTTP on loopback only, HTTPS elsewhere with the
admin's certificate or one generated once (and reused), refusals that say what to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from labgpu.errors import ConfigError
from labgpu.settings import load_settings
from labgpu.system.tls import fingerprint_of, is_loopback, portal_tls


def settings(tmp_path: Path, **values: str):  # type: ignore[no-untyped-def]
    return load_settings(state_dir=str(tmp_path / "state"), **values)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("192.0.2.10", False), ("gpu1.lab.example.edu", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_loopback_is_plain_http_and_makes_no_certificate(tmp_path: Path) -> None:
    tls = portal_tls(settings(tmp_path), "127.0.0.1")
    assert not tls.https and tls.scheme == "http"
    assert not (tmp_path / "state/tls").exists()


def test_another_address_gets_a_generated_certificate_once(tmp_path: Path) -> None:
    s = settings(tmp_path)
    first = portal_tls(s, "192.0.2.10")
    assert first.https and first.source == "generated" and first.generated_now
    assert first.certfile is not None and first.keyfile is not None
    assert first.fingerprint == fingerprint_of(first.certfile.read_bytes())
    assert len(first.fingerprint.split(":")) == 32
    assert first.keyfile.stat().st_mode & 0o077 == 0  # the key is root's alone

    again = portal_tls(s, "192.0.2.10")
    assert not again.generated_now and again.fingerprint == first.fingerprint  # members' trust holds
    assert portal_tls(s, "0.0.0.0").fingerprint == first.fingerprint
    # An address the certificate does not name: a new one (browsers would refuse the old one there).
    moved = portal_tls(s, "198.51.100.7")
    assert moved.generated_now and moved.fingerprint != first.fingerprint
    # doctor only looks: the same fingerprint, nothing made.
    assert portal_tls(s, "0.0.0.0", create=False).fingerprint == moved.fingerprint


def test_plain_http_off_loopback_is_refused_unless_a_proxy_terminates_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plain HTTP on 0\.0\.0\.0") as refused:
        portal_tls(settings(tmp_path, web_tls="off"), "0.0.0.0")
    assert 'web_tls = "proxy"' in (refused.value.hint or "")
    assert not portal_tls(settings(tmp_path, web_tls="off"), "127.0.0.1").https
    proxied = portal_tls(settings(tmp_path, web_tls="proxy"), "0.0.0.0")
    assert not proxied.https and proxied.source == "proxy"
    assert portal_tls(settings(tmp_path, web_tls="on"), "127.0.0.1").https


def test_the_admins_certificate_is_used_and_must_come_with_its_key(tmp_path: Path) -> None:
    made = portal_tls(settings(tmp_path / "other"), "192.0.2.10")
    assert made.certfile is not None and made.keyfile is not None
    s = settings(tmp_path, web_tls_cert=str(made.certfile), web_tls_key=str(made.keyfile))
    tls = portal_tls(s, "0.0.0.0")
    assert tls.source == "admin" and tls.certfile == made.certfile and tls.fingerprint == made.fingerprint
    assert not (tmp_path / "state/tls").exists()
    with pytest.raises(ConfigError, match="go together"):
        portal_tls(settings(tmp_path, web_tls_cert=str(made.certfile)), "0.0.0.0")
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello\n")
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        portal_tls(settings(tmp_path, web_tls_cert=str(bad), web_tls_key=str(made.keyfile)), "0.0.0.0")
