"""`host add` of an LXD 5.0 daemon: its trust token (sent as `password`) and the legacy trust password.

Uses the main LXD, made reachable over HTTPS on 127.0.0.1 for the test only (core.https_address and
core.trust_password are put back as they were, as tests/integration/test_runtime_https.py does).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labgpu.runtime.certs import certificate_fingerprint
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.hosts._inventory import host_facts
from labgpu.services.hosts._remote import add_host, remove_host
from tests.conftest import _require, _socket_ok
from tests.integration.multihost.conftest import HostsEnv

# serial: it changes the main LXD's core.https_address and trust password (as test_runtime_https does) and
# counts all of its containers.
pytestmark = [pytest.mark.integration, pytest.mark.serial]

LXD_SOCKET = Path(os.environ.get("LABGPU_TEST_LXD_SOCKET", "/var/lib/lxd/unix.socket"))


@pytest.fixture
def lxd_over_https() -> Iterator[tuple[RuntimeClient, str]]:
    if not _socket_ok(LXD_SOCKET):
        _require(f"the main LXD daemon ({LXD_SOCKET}) is not running")
    lxd = RuntimeClient(Endpoint.unix(LXD_SOCKET), timeout=30)
    config = lxd.get("/1.0", what="config", project=False).get("config") or {}
    before = config.get("core.https_address")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    lxd.update_server_config({"core.https_address": f"127.0.0.1:{port}"})
    try:
        yield lxd, f"https://127.0.0.1:{port}"
    finally:
        lxd.update_server_config({"core.https_address": before})
        lxd.close()


def _trusted(lxd: RuntimeClient, cert: Path) -> bool:
    fp = certificate_fingerprint(cert.read_text())
    return any(
        c["fingerprint"] == fp for c in lxd.get("/1.0/certificates", what="x", params={"recursion": 1})
    )


def test_lxd_trust_token_then_legacy_password(
    hosts_env: HostsEnv, lxd_over_https: tuple[RuntimeClient, str]
) -> None:
    lxd, url = lxd_over_https
    svc = hosts_env.services()
    token = subprocess.run(
        ["lxc", "config", "trust", "add", "--name", f"labgpu-{secrets.token_hex(3)}", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        added = add_host(svc, "old-lab", url, token=token)
        assert added.kind == "lxd" and added.version.startswith("5.")
        assert added.trusted_now and _trusted(lxd, hosts_env.client_cert)
        (facts,) = [f for f in host_facts(svc) if f.name == "old-lab"]
        assert facts.reachable and facts.kind == "lxd"
        assert facts.containers == len(
            [i for i in lxd.instances.all(with_state=False) if i.type == "container"]
        )
        remove_host(svc, "old-lab")
        assert not _trusted(lxd, hosts_env.client_cert)

        config = lxd.get("/1.0", what="config", project=False).get("config") or {}
        if config.get("core.trust_password"):
            pytest.skip("the main LXD has a trust password of its own; not replaced by a test")
        password = secrets.token_urlsafe(12)
        lxd.update_server_config({"core.trust_password": password})
        try:
            with pytest.raises(Exception, match="refused the trust password"):
                add_host(svc, "old-lab", url, password="wrong", confirm=lambda fp: True)
            added = add_host(svc, "old-lab", url, password=password, confirm=lambda fp: True)
            assert added.trusted_now and _trusted(lxd, hosts_env.client_cert)
        finally:
            lxd.update_server_config({"core.trust_password": None})
        remove_host(svc, "old-lab")
    finally:
        if hosts_env.client_cert.is_file() and _trusted(lxd, hosts_env.client_cert):
            lxd.untrust_certificate(certificate_fingerprint(hosts_env.client_cert.read_text()))
