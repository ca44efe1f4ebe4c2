"""Members reach the portal over TLS on the host's address: `labgpu serve` on a non-loopback address of this
machine makes a self-signed certificate, prints its SHA-256 fingerprint (doctor shows the same), and Chromium
that trusts exactly that certificate (by the hash of its public key, as an admin's members would after
comparing the fingerprint) loads the login page over https, logs in and gets a Secure session cookie. The
same Chromium without that trust refuses the page, so trust is what makes it work, not a lax browser."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import ADMIN_PASSWORD, _free_port, screenshot
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, LabgpuEnv

pytestmark = pytest.mark.integration


def _host_address() -> str:
    """An IPv4 address of this machine that is not loopback (its own eth address, say)."""
    done = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True
    )
    for link in json.loads(done.stdout or "[]"):
        for info in link.get("addr_info", []):
            if info.get("local") and link.get("operstate") in ("UP", "UNKNOWN"):
                return str(info["local"])
    pytest.fail("this machine has no global IPv4 address to serve the portal on")


def _spki_sha256(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def served_tls(labgpu_env: LabgpuEnv, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    address, port = _host_address(), _free_port()
    env = labgpu_env.env()
    labgpu = shutil.which("labgpu", path=str(Path(os.sys.executable).parent)) or "labgpu"
    subprocess.run(
        [labgpu, "admin", "create", "boss", "--email", "boss@lab.test", "--password-stdin"],
        input=ADMIN_PASSWORD + "\n",
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [labgpu, "serve", "--host", address, "--port", str(port), "--apps-port", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"https://{address}:{port}"
    cert = Path(labgpu_env.overrides["state_dir"]) / "tls/portal.crt"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz", timeout=2, verify=ssl.create_default_context(cafile=cert))
                break
            except (httpx.HTTPError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("labgpu serve did not start:\n" + log.read_text()[-2000:]) from None
                time.sleep(0.2)
        yield url, env, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize("daemon_kind", ["incus"], indirect=True, scope="session")
def test_members_reach_the_portal_over_tls_on_the_hosts_address(
    served_tls: tuple[str, dict[str, str], Path], labgpu_env: LabgpuEnv, browser: object
) -> None:
    from playwright.sync_api import Error

    from labgpu.system.tls import fingerprint_of

    url, env, log = served_tls
    cert_pem = (Path(labgpu_env.overrides["state_dir"]) / "tls/portal.crt").read_bytes()
    fingerprint = fingerprint_of(cert_pem)
    assert fingerprint in log.read_text()  # serve printed it for the admin to hand out
    labgpu = shutil.which("labgpu", path=str(Path(os.sys.executable).parent)) or "labgpu"
    env_doctor = {**env, "LABGPU_WEB_HOST": url.split("//")[1].rsplit(":", 1)[0]}
    doctor = subprocess.run([labgpu, "doctor", "--json"], env=env_doctor, capture_output=True, text=True)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert fingerprint in checks["portal-tls"]["detail"] and checks["portal-tls"]["ok"]

    # Without trusting the certificate, Chromium refuses the page.
    context = browser.new_context()  # type: ignore[attr-defined]
    try:
        with pytest.raises(Error, match="ERR_CERT"):
            context.new_page().goto(url + "/login")
    finally:
        context.close()

    # Trusting exactly this certificate (its public key's hash), the page loads over https and logs in.
    trust = f"--ignore-certificate-errors-spki-list={_spki_sha256(cert_pem)}"
    # A second Chromium of the session's Playwright, launched with that trust.
    chromium = browser.browser_type.launch(  # type: ignore[attr-defined]
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, trust], headless=True
    )
    try:
        context = chromium.new_context(locale="zh-CN")
        page = context.new_page()
        page.goto(url + "/login")
        assert page.url.startswith("https://")
        assert "登录" in page.content()  # the page in Chinese, its static files from the server
        page.fill("#name", "boss")
        page.fill("#password", ADMIN_PASSWORD)
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(url + "/me")
        screenshot(page, "portal-tls")
        cookies = context.cookies()
        session = [c for c in cookies if "session" in c["name"]]
        assert session and all(c["secure"] for c in session), cookies
    finally:
        chromium.close()
