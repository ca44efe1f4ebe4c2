"""The runtime client over HTTPS with a client certificate and the daemon's certificate pinned, its requests
and the WebSockets of a terminal (interactive exec)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from labgpu.runtime.certs import (
    certificate_fingerprint,
    fetch_server_certificate,
    generate_client_certificate,
)
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.runtime.errors import RuntimeForbidden, RuntimeUnavailable
from labgpu.runtime.terminal import ExecStream, InteractiveExec, start_interactive
from tests.conftest import Cleanup, unique_name

# serial: it changes the daemon's core.https_address and compares two listings of all its instances.
pytestmark = [pytest.mark.integration, pytest.mark.serial]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _terminal_over(client: RuntimeClient, started: InteractiveExec) -> bytes:
    stream = await ExecStream.connect(client, started)
    try:
        await stream.send(b"stty size; echo done-$((6*7))\n")
        seen = b""
        while b"done-42" not in seen:
            data = await asyncio.wait_for(stream.recv(), 30)
            assert data is not None, seen
            seen += data
        return seen
    finally:
        await stream.close()


def test_https_with_client_certificate_and_pinned_server(
    runtime: RuntimeClient, tmp_path: Path, busybox_image: str, test_profile: str, cleanup: Cleanup
) -> None:
    port = _free_port()
    before = runtime.get("/1.0", what="config", project=False)["config"].get("core.https_address")
    runtime.update_server_config({"core.https_address": f"127.0.0.1:{port}"})
    fingerprint = None
    try:
        server_pem = fetch_server_certificate("127.0.0.1", port)
        (tmp_path / "server.crt").write_text(server_pem)
        assert len(certificate_fingerprint(server_pem)) == 64
        cert_pem = generate_client_certificate(tmp_path / "client.crt", tmp_path / "client.key")
        assert oct((tmp_path / "client.key").stat().st_mode & 0o777) == "0o600"
        url = f"https://127.0.0.1:{port}"

        # Not yet trusted: the daemon answers but says so, and refuses to list.
        endpoint = Endpoint.parse(
            url,
            client_cert=tmp_path / "client.crt",
            client_key=tmp_path / "client.key",
            server_cert=tmp_path / "server.crt",
        )
        with RuntimeClient(endpoint, timeout=10) as untrusted:
            assert untrusted.server().trusted is False
            with pytest.raises(RuntimeForbidden):
                untrusted.instances.all()

        fingerprint = runtime.trust_certificate(cert_pem, name=unique_name("labgpu-test"))
        with RuntimeClient(endpoint, timeout=10) as client:
            info = client.server()
            assert info.trusted and info.kind == runtime.server().kind
            names = {i.name for i in client.instances.all()}
            assert names == {i.name for i in runtime.instances.all()}

            # A terminal's WebSockets go over HTTPS too (wss, with the same client certificate).
            box = cleanup.instance(unique_name("tls"))
            runtime.instances.create(box, image=busybox_image, profiles=[test_profile], start=True)
            shown = asyncio.run(
                _terminal_over(client, start_interactive(client, box, ["sh"], cols=91, rows=27))
            )
            assert b"27 91" in shown

        # A different server certificate pinned: the connection is refused.
        other = tmp_path / "other.crt"
        generate_client_certificate(other, tmp_path / "other.key", common_name="impostor")
        bad = Endpoint.parse(
            url, client_cert=tmp_path / "client.crt", client_key=tmp_path / "client.key", server_cert=other
        )
        with RuntimeClient(bad, timeout=5) as client, pytest.raises(RuntimeUnavailable, match=str(port)):
            client.server()
    finally:
        if fingerprint:
            runtime.untrust_certificate(fingerprint)
        runtime.update_server_config({"core.https_address": before})
