"""Web apps in containers on other hosts: the portal relays through the daemon's exec API (runtime/relay.py).

A member's container on the standalone daemon s1 (reached over HTTPS with labgpu's client certificate) or on
the cluster member c2 (reached through the cluster), made from the tools test image (python3 inside), with an
app the template declares: a small HTTP server with a WebSocket echo (stdlib python3), started by the portal
as the container user's systemd unit. The real portal and apps origin (in-process ASGI apps) open it, proxy
HTTP both ways (a 3 MB upload, a 20 MB answer) and a WebSocket, through a socket of the portal's own that
relays every connection through the daemon, with no proxy device in the container and no port on any host.
The real JupyterLab (templates/jupyter.yaml) on s1 runs a notebook cell in Chromium through the same relay.
The authorization checks hold: another member cannot open it, the apps origin refuses a request without the
app cookie and a WebSocket from another origin.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

from labgpu.domain import apps as rules
from labgpu.runtime.client import RuntimeClient
from labgpu.services.hosts._remote import add_host, set_drained
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal._accounts import create_account, set_password
from labgpu.store.models import AuditEvent, Role
from labgpu.web.app import create_app
from labgpu.web.routes.apps.origin import create_apps_app
from tests.browser.conftest import labgpu_serve, log_in
from tests.browser.test_jupyter_apps import ensure_jupyter_template, open_app, run_a_cell
from tests.conftest import (
    TOOLS_IMAGE,
    LabgpuEnv,
    _ensure_test_image,
    ensure_test_pool,
    ensure_test_profile,
    unique_name,
)
from tests.integration.multihost.conftest import HostsEnv, local_host_name
from tests.web.conftest import csrf_from, login

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PASSWORD = "quiet-walnut-58-harbor"
APP = rules.AppDef(
    name="web",
    title="Test web app",
    port=18123,
    base_path="prefix",
    command=("python3", "/opt/labgpu-test-app.py", "{port}", "{base_url}"),
)
PORTAL, APPS = "http://127.0.0.1:8000", "http://127.0.0.1:8001"
WS_ORIGIN = "http://testserver"  # the test client's WebSockets go to Host: testserver
BIG = 20 * 1024 * 1024

# The app: HTTP (GET answers who and where it is, /big a 20 MB body, POST the size and digest of the body)
# and a WebSocket echo, standard library only.
APP_SOURCE = r"""
import base64, hashlib, http.server, json, os, socket, socketserver, struct, sys
PORT, BASE = int(sys.argv[1]), sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, body, kind="application/json"):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith(BASE + "ws"):
            return self.websocket()
        if self.path.startswith(BASE + "big"):
            self.send_response(200)
            self.send_header("Content-Length", str(20 * 1024 * 1024))
            self.end_headers()
            for _ in range(20):
                self.wfile.write(b"z" * (1024 * 1024))
            return
        seen = {"host": socket.gethostname(), "path": self.path, "peer": self.client_address[0],
                "cookie": self.headers.get("cookie"), "user": os.getuid()}
        self.answer(json.dumps(seen).encode())

    def do_POST(self):
        left, digest = int(self.headers["Content-Length"]), hashlib.sha256()
        size = left
        while left:
            chunk = self.rfile.read(min(left, 65536))
            digest.update(chunk)
            left -= len(chunk)
        self.answer(json.dumps({"size": size, "sha256": digest.hexdigest()}).encode())

    def frame(self, op, data):
        n = len(data)
        head = bytes([0x80 | op]) + (bytes([n]) if n < 126 else b"\x7e" + struct.pack(">H", n))
        self.wfile.write(head + data)
        self.wfile.flush()

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            op, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(self.rfile.read(n)))
            if op == 8:
                self.frame(8, data[:2])
                return
            if op in (1, 2):
                self.frame(op, b"echo:" + data)

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

Server(("127.0.0.1", PORT), Handler).serve_forever()
"""


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    folder = Path("/tmp") / f"lgra-{secrets.token_hex(3)}"  # a socket path has at most 107 bytes
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _wait_booted(runtime: RuntimeClient, container: str) -> None:
    """systemd in the container is up (the app is started with systemd-run)."""
    deadline = time.monotonic() + 120
    while True:
        state = runtime.instances.exec(
            container, ["systemctl", "is-system-running"], timeout=30
        ).stdout.strip()
        if state in ("running", "degraded"):
            return
        assert time.monotonic() < deadline, f"systemd in {container} did not come up ({state})"
        time.sleep(1)


def _open(portal: TestClient, apps: TestClient, member: str) -> None:
    """Press the app's open button on the portal (a POST with the CSRF token) and follow it to the apps origin,
    which trades the one-time ticket for the app cookie."""
    token = csrf_from(portal.get("/me").text)
    opened = portal.post(
        f"/members/{member}/apps/{APP.name}/open", data={"csrf_token": token}, follow_redirects=False
    )
    assert opened.status_code == 303, opened.text[:500]
    location = opened.headers["location"]
    assert location.startswith(APPS + "/_labgpu/enter?ticket=")
    entered = apps.get(location.removeprefix(APPS), follow_redirects=False)
    assert entered.status_code == 303 and entered.headers["location"] == rules.base_url(member, APP.name)


def _cookies(client: TestClient) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)


@pytest.mark.parametrize("host", ["s1", "c2"])
def test_an_app_on_another_host_is_proxied_through_the_daemon(
    hosts_env: HostsEnv, socket_dir: Path, host: str
) -> None:
    d = hosts_env.daemons
    member, other_member = unique_name("ra"), unique_name("rb")
    base = rules.base_url(member, APP.name)
    hosts_env.overrides.update({"apps_socket_dir": str(socket_dir), "jobs_in_serve": "false"})
    svc = hosts_env.services()
    daemon = d["s1"] if host == "s1" else d["c1"]  # c1 answers for the cluster
    _ensure_test_image(daemon.client, "tools")
    if host == "s1":
        add_host(svc, "s1", d["s1"].url, token=d["s1"].token())
    else:
        add_host(svc, "lab", d["c1"].url, token=d["c1"].token())
    set_drained(svc, local_host_name(svc), True)

    sheet = add_member(
        svc, validate_request(svc, name=member, template=TOOLS_IMAGE, host=host), wait_ssh=False
    )
    container = sheet.container
    hosts_env.instances.append((daemon.name, container))
    runtime = daemon.client
    assert runtime.instances.get(container).location in ("", "none", host)
    # The template's apps, as the daemon copies them from the image into the container (image.labgpu.apps).
    runtime.instances.update(container, config={rules.APPS_CONFIG_KEY: rules.encode_apps([APP])})
    runtime.instances.push_file(container, "/opt/labgpu-test-app.py", APP_SOURCE.encode(), mode=0o644)
    _wait_booted(runtime, container)
    set_password(svc, name=member, password=PASSWORD)
    create_account(svc, name=other_member, password=PASSWORD, role=Role.MEMBER)

    settings = hosts_env.settings()
    portal_app = create_app(settings)
    apps_app = create_apps_app(settings, portal_app.state.services)
    proxy = apps_app.state.proxy
    with (
        TestClient(portal_app, base_url=PORTAL) as portal,
        TestClient(apps_app, base_url=APPS) as apps,
        TestClient(portal_app, base_url=PORTAL) as other,
    ):
        assert apps.get(base).status_code == 403  # no app cookie yet
        assert login(portal, member, PASSWORD).status_code == 303
        _open(portal, apps, member)

        # HTTP: the page comes from the app in the container, over its loopback, as the container's user.
        deadline = time.monotonic() + 60
        while (page := apps.get(base)).status_code == 502 and time.monotonic() < deadline:
            time.sleep(0.5)  # the app is starting
        assert page.status_code == 200, page.text[:500]
        seen = page.json()
        assert seen["host"] == container and seen["path"] == base and seen["peer"] == "127.0.0.1"
        assert seen["user"] == 1000 and "labgpu" not in (seen["cookie"] or "")
        body = secrets.token_bytes(3_000_000)
        posted = apps.post(base + "upload", content=body)
        assert posted.status_code == 200 and posted.json() == {
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        big = apps.get(base + "big")
        assert big.status_code == 200 and len(big.content) == BIG and big.content.count(b"z") == BIG

        # Kept-alive connections are reused: ten more requests, hardly any new relay.
        before = proxy.relays.opened
        for _ in range(10):
            assert apps.get(base).status_code == 200
        assert proxy.relays.opened - before <= 2

        # A WebSocket, both ways.
        headers = {"origin": WS_ORIGIN, "cookie": _cookies(apps)}
        with apps.websocket_connect(base + "ws", headers=headers) as ws:
            ws.send_text("你好 over the relay")
            assert ws.receive_text() == "echo:你好 over the relay"
            ws.send_bytes(b"\x00\xff" * 1000)
            assert ws.receive_bytes() == b"echo:" + b"\x00\xff" * 1000

        # Not through a device or a port: no app device in the container, the portal's own socket (0600).
        assert rules.DEVICE_PREFIX + APP.name not in runtime.instances.get(container).devices
        relay_sockets = list(socket_dir.glob("r*.sock"))
        assert len(relay_sockets) == 1
        assert stat.S_IMODE(relay_sockets[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700

        # The checks hold: another member cannot open it, nor use it without the app cookie; a page of
        # another origin cannot open its WebSocket.
        assert login(other, other_member, PASSWORD).status_code == 303
        token = csrf_from(other.get("/me").text)
        refused = other.post(
            f"/members/{member}/apps/{APP.name}/open", data={"csrf_token": token}, follow_redirects=False
        )
        assert refused.status_code == 404
        assert TestClient(apps_app, base_url=APPS).get(base).status_code == 403  # no cookie
        with (
            pytest.raises(WebSocketDisconnect),
            apps.websocket_connect(base + "ws", headers={**headers, "origin": "http://evil.example"}) as ws,
        ):
            ws.receive_text()

    with svc.session() as session:
        opens = session.scalars(select(AuditEvent.target).where(AuditEvent.action == "app.open")).all()
    assert opens == [member]


def test_an_app_on_another_host_without_python3_is_refused_clearly(
    hosts_env: HostsEnv, socket_dir: Path
) -> None:
    """The ssh test image has no python3: opening an app there says what is missing (409), and adds nothing."""
    from labgpu.services import apps
    from tests.conftest import TEST_IMAGE_ALIASES

    d = hosts_env.daemons
    member = unique_name("ra")
    # A short folder: the state dir's under pytest's (with xdist's worker folder) is too long for a unix socket.
    hosts_env.overrides["apps_socket_dir"] = str(socket_dir)
    svc = hosts_env.services()
    add_host(svc, "s1", d["s1"].url, token=d["s1"].token())
    set_drained(svc, local_host_name(svc), True)
    request = validate_request(svc, name=member, template=TEST_IMAGE_ALIASES["ssh"], host="s1")
    container = add_member(svc, request, wait_ssh=False).container
    hosts_env.instances.append(("s1", container))
    runtime = d["s1"].client
    runtime.instances.update(container, config={rules.APPS_CONFIG_KEY: rules.encode_apps([APP])})
    with pytest.raises(apps.AppsUnavailable) as refused:
        apps.start_app(svc, member, APP.name)
    assert refused.value.status == 409
    assert "need python3 in the container" in refused.value.message
    assert not [k for k in runtime.instances.get(container).devices if k.startswith(rules.DEVICE_PREFIX)]
    with svc.session() as session:
        assert not session.scalars(select(AuditEvent).where(AuditEvent.action == "app.open")).all()


@pytest.mark.timeout(3600)  # on a machine without the jupyter template's export, it is built first
def test_real_jupyterlab_on_another_host_runs_a_cell_in_the_browser(
    hosts_env: HostsEnv, socket_dir: Path, tmp_path: Path, browser: Any
) -> None:
    """The real thing through the relay: JupyterLab from templates/jupyter.yaml in a container on s1, opened
    in Chromium from a real `labgpu serve`; its many parallel requests and the kernel's WebSockets all go
    through the portal's relay socket and s1's exec API. A notebook cell runs in that container."""
    d = hosts_env.daemons
    member = unique_name("rj")
    hosts_env.overrides.update(
        {"apps_socket_dir": str(socket_dir), "jobs_in_serve": "false", "trusted_proxies": ""}
    )
    # Built (when no export of the recipe is cached yet) as tests/browser/test_jupyter_apps.py builds it: on
    # the main Incus, in the test pool and profile, without a network; then imported on s1.
    local = hosts_env.local
    pool = ensure_test_pool(local)
    builder = LabgpuEnv(
        overrides={
            "state_dir": str(tmp_path / "build"),
            "home_base": str(tmp_path / "build-home"),
            "runtime_url": f"unix://{local.endpoint.socket_path}",
            "profile_name": ensure_test_profile(local, pool),
            "storage_pool": pool,
            "network_mode": "none",
        },
        runtime=local,
    )
    template = ensure_jupyter_template(d["s1"].client, builder, tmp_path)
    svc = hosts_env.services()
    add_host(svc, "s1", d["s1"].url, token=d["s1"].token())
    set_drained(svc, local_host_name(svc), True)
    request = validate_request(svc, name=member, template=template, host="s1")
    container = add_member(svc, request, wait_ssh=False).container
    hosts_env.instances.append(("s1", container))
    set_password(svc, name=member, password=PASSWORD)
    with labgpu_serve(hosts_env.env(), tmp_path) as (url, apps_url, _, log):
        context = browser.new_context()
        page = context.new_page()
        log_in(page, url, member, PASSWORD)
        lab_tab = open_app(page, url, "jupyterlab")
        assert lab_tab.url.startswith(f"{apps_url}/m/{member}/jupyterlab/"), lab_tab.url
        output = run_a_cell(lab_tab)
        assert f"42 from {container}" in output, output
        context.close()
        # Relayed: no app device in the container, only the portal's own socket (0600).
        devices = d["s1"].client.instances.get(container).devices
        assert not [k for k in devices if k.startswith(rules.DEVICE_PREFIX)], devices
        relay_sockets = list(socket_dir.glob("r*.sock"))
        assert len(relay_sockets) == 1, log.read_text()[-2000:]
        assert stat.S_IMODE(relay_sockets[0].stat().st_mode) == 0o600
