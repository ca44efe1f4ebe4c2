"""JupyterLab, VS Code (code-server) and TensorBoard through the portal, in real Chromium, on a container made
from templates/jupyter.yaml (built offline: wheels and Node packages fetched on the host), and the home's files
up- and downloaded in the browser.

The template is built once per recipe: an image of the same spec hash already on the daemon is used as it
is, else an export of it in the image cache is imported, else it is built (many minutes: wheels and a
code-server install) and exported to the cache. Everything here shares ONE container, ONE portal and ONE
browser (module fixtures), in one lane (tests/lanes.py), on Incus.

What a user would notice: a notebook kernel starts and runs a cell; VS Code's editor loads; TensorBoard
answers; another member, a visitor and a page of another origin get nothing (HTTP and WebSocket); logging out
ends the app's access; the portal's cookies never reach the app; a 100 MB upload and download round-trip
byte for byte, while the portal's memory is measured (printed, not asserted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from labgpu.runtime.client import RuntimeClient
from labgpu.services.templates._build import build_template
from labgpu.services.templates._catalog import PROP_SPEC_HASH, PROP_TEMPLATE, export_template, import_template
from labgpu.services.templates._spec_loading import load_spec
from labgpu.system.base_image import resolve_cache_dir
from tests.browser.conftest import ADMIN_PASSWORD, labgpu_serve, log_in, screenshot
from tests.conftest import LabgpuEnv, machine_lock, port_block

pytestmark = [
    pytest.mark.integration,
    pytest.mark.lane("jupyter"),
    pytest.mark.parametrize("daemon_kind", ["incus"], indirect=True),
    pytest.mark.timeout(3600),
]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "labgpu-test-jupyter"
MEMBER, OTHER = "ana", "ben"
PASSWORD = "quiet-walnut-58-harbor"
HOME = f"/home/ubuntu/{MEMBER}"  # the container_home setting's default


def jupyter_spec(folder: Path) -> Path:
    """templates/jupyter.yaml under the test's template name (the name is part of the recipe hash)."""
    lines = [
        f"name: {TEMPLATE}" if line.startswith("name:") else line
        for line in (ROOT / "templates" / "jupyter.yaml").read_text().splitlines()
    ]
    path = folder / f"{TEMPLATE}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def ensure_jupyter_template(runtime: RuntimeClient, env: LabgpuEnv, folder: Path) -> str:
    """The template on ``runtime``'s daemon, built at most once per recipe (see the module). ``env``'s
    services build it (on their own daemon) when the image cache has no export of this recipe yet; one
    process of the machine builds at a time (another one waits, then imports the export)."""
    loaded = load_spec(jupyter_spec(folder))
    spec_hash = loaded.spec_hash()
    for image in runtime.images.all():
        if (
            image.properties.get(PROP_TEMPLATE) == TEMPLATE
            and image.properties.get(PROP_SPEC_HASH) == spec_hash
        ):
            runtime.images.set_alias(TEMPLATE, image.fingerprint)
            return TEMPLATE
    cached = resolve_cache_dir() / "templates" / f"{TEMPLATE}-{spec_hash}.tar"
    svc = env.services()
    with machine_lock("jupyter-template"):
        if not cached.is_file():
            build_template(svc, loaded, network="none")
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(cached.name + ".part")
            partial.unlink(missing_ok=True)
            export_template(svc.runtime, TEMPLATE, partial, overwrite=True)
            partial.replace(cached)
            if svc.runtime.endpoint == runtime.endpoint:
                return TEMPLATE
    import_template(dataclasses.replace(svc, runtime=runtime), [cached])
    return TEMPLATE


@dataclass
class Lab:
    url: str
    apps_url: str
    env: dict[str, str]
    pid: int
    runtime: RuntimeClient
    container: str
    log: Path


@contextlib.contextmanager
def running_lab(runtime: RuntimeClient, profile: str, pool: str, folder: Path) -> Iterator[Lab]:
    """The jupyter template on the daemon, a member with a container from it, another member, an admin, and
    `labgpu serve` with its apps origin (also used by bench/browser.py)."""
    from labgpu.services.members._add import add_member, validate_request
    from labgpu.services.portal._accounts import create_account, set_password
    from labgpu.store.models import Role

    sockets = Path("/tmp") / f"lgpa-{secrets.token_hex(3)}"  # a socket path has at most 107 bytes
    start, end = port_block(20000, 31999)
    env = LabgpuEnv(
        overrides={
            "state_dir": str(folder / "state"),
            "home_base": str(folder / "home"),
            "home_archive": str(folder / "archive"),
            "runtime_url": f"unix://{runtime.endpoint.socket_path}",
            "listen_address": "127.0.0.1",
            "port_range_start": str(start),
            "port_range_end": str(end),
            "profile_name": profile,
            "storage_pool": pool,
            "network_mode": "none",
            "ssh_ready_timeout": "180",
            "apps_socket_dir": str(sockets),
            "trusted_proxies": "",
            "jobs_in_serve": "false",
        },
        runtime=runtime,
    )
    env.overrides["default_template"] = ensure_jupyter_template(runtime, env, folder)
    svc = env.services()
    container = None
    try:
        sheet = add_member(svc, validate_request(svc, name=MEMBER, template=TEMPLATE))
        container = sheet.container
        set_password(svc, name=MEMBER, password=PASSWORD)
        create_account(svc, name=OTHER, password=PASSWORD, role=Role.MEMBER)
        create_account(svc, name="boss", password=ADMIN_PASSWORD, role=Role.ADMIN)
        with labgpu_serve(env.env(), folder) as (url, apps_url, proc, log):
            assert apps_url is not None
            yield Lab(url, apps_url, env.env(), proc.pid, runtime, container, log)
    finally:
        if container:
            with contextlib.suppress(Exception):
                runtime.instances.stop(container, force=True)
            with contextlib.suppress(Exception):
                runtime.instances.delete(container)
        shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(
    runtime: RuntimeClient, test_profile: str, test_pool: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    with running_lab(runtime, test_profile, test_pool, tmp_path_factory.mktemp("jupyter")) as running:
        yield running


def open_app(page: Any, url: str, app: str, *, timeout: float = 120_000) -> Any:
    """Click the app's button on "My container" (of the portal at ``url``); return the new tab once the app's
    page answers."""
    page.goto(url + "/me")
    page.wait_for_selector(f"#open-{app}", timeout=30_000)
    with page.context.expect_page(timeout=timeout) as new:
        page.click(f"#open-{app}")
    tab = new.value
    tab.wait_for_load_state()
    deadline = time.monotonic() + timeout / 1000
    while "The app is starting" in (tab.content() or "") and time.monotonic() < deadline:
        tab.wait_for_timeout(1000)
        tab.reload()
    return tab


def run_a_cell(lab_tab: Any) -> str:
    """In JupyterLab's tab: a new notebook from the launcher, a cell that prints 42 and the host name, run;
    returns the cell's output once it is there. Waits as a person does: for the kernel to say Idle before
    typing (on a loaded machine it takes a while to start), for the typed code to be in the cell before
    running it, and runs the cell once more (Ctrl+Enter, in place) when a minute passes without output."""
    code = "print(6 * 7, 'from', __import__('socket').gethostname())"
    lab_tab.wait_for_selector(".jp-LauncherCard", timeout=120_000)
    lab_tab.click(".jp-LauncherCard[data-category='Notebook']")
    lab_tab.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=240_000)
    cell = lab_tab.locator(".jp-Notebook .jp-Cell .cm-content").first
    cell.wait_for(timeout=60_000)
    lab_tab.wait_for_timeout(1000)  # the notebook settles (its first cell is drawn again once)
    cell.click()
    lab_tab.keyboard.type(code)
    deadline = time.monotonic() + 30
    while code not in cell.inner_text() and time.monotonic() < deadline:
        lab_tab.wait_for_timeout(300)
    assert code in cell.inner_text(), f"the code did not reach the cell: {cell.inner_text()!r}"
    lab_tab.keyboard.press("Shift+Enter")
    output = lab_tab.locator(".jp-OutputArea-output").first
    for attempt in range(3):
        try:
            output.wait_for(timeout=60_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            cell.click()
            lab_tab.keyboard.press("Control+Enter")
    return str(output.inner_text())


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_jupyterlab_runs_a_cell_vscode_loads_and_tensorboard_answers(lab: Lab, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    log_in(page, lab.url, MEMBER, PASSWORD)
    page.goto(lab.url + "/me")
    page.wait_for_selector("#open-jupyterlab", timeout=30_000)
    assert page.is_visible("#open-code-server") and page.is_visible("#open-tensorboard")
    screenshot(page, "apps-my-container")

    # JupyterLab: a new notebook's kernel starts and runs a cell (its WebSockets go through the proxy).
    lab_tab = open_app(page, lab.url, "jupyterlab")
    assert lab_tab.url.startswith(lab.apps_url + f"/m/{MEMBER}/jupyterlab/")
    assert f"42 from {lab.container}" in run_a_cell(lab_tab)
    screenshot(lab_tab, "apps-jupyterlab")
    # The app cookie is scoped to this app's path (the proxy keeps it and the portal's from the app).
    assert "labgpu_app" in {c["name"] for c in context.cookies(lab.apps_url + f"/m/{MEMBER}/jupyterlab/")}
    assert "labgpu_app" not in {
        c["name"] for c in context.cookies(lab.apps_url + f"/m/{MEMBER}/tensorboard/")
    }

    # VS Code: the workbench loads (its own WebSocket included).
    code_tab = open_app(page, lab.url, "code-server")
    code_tab.wait_for_selector(".monaco-workbench", timeout=180_000)
    screenshot(code_tab, "apps-vscode")

    # TensorBoard answers under its prefix.
    board_tab = open_app(page, lab.url, "tensorboard")
    board_tab.wait_for_selector("text=TensorBoard", timeout=120_000)
    page.goto(lab.url + "/me")
    page.wait_for_selector("#app-jupyterlab [data-app-state='running']", timeout=30_000)
    context.close()


def test_only_the_member_and_admins_get_through_and_never_from_another_origin(lab: Lab, browser: Any) -> None:
    base = f"{lab.apps_url}/m/{MEMBER}/jupyterlab"
    # A visitor (no cookie at all) and a forged cookie: refused, HTTP and WebSocket.
    assert httpx.get(base + "/api/status").status_code == 403
    assert httpx.get(base + "/api/status", cookies={"labgpu_app": "x.y"}).status_code == 403
    assert _ws_status(lab, f"/m/{MEMBER}/jupyterlab/api/events/subscribe", {}, origin=lab.apps_url) != 101
    # The portal's own routes: another member gets the 404 of a member that does not exist.
    other = httpx.Client(base_url=lab.url)
    token = _login_client(other, OTHER)
    for r in (
        other.get(f"/members/{MEMBER}/apps"),
        other.post(f"/members/{MEMBER}/apps/jupyterlab/open", data={"csrf_token": token}),
        other.get(f"/members/{MEMBER}/files"),
        other.get(f"/members/{MEMBER}/files/download", params={"path": ".bashrc"}),
    ):
        assert r.status_code == 404 and f"no member named {MEMBER}" in r.text
    # Another member's own app ticket does not open ana's app, and a cookie for one app is not for another.
    mine = httpx.Client(base_url=lab.url)
    token = _login_client(mine, MEMBER)
    opened = mine.post(f"/members/{MEMBER}/apps/jupyterlab/open", data={"csrf_token": token})
    assert opened.status_code == 303
    apps = httpx.Client()
    entered = apps.get(opened.headers["location"])
    assert entered.status_code == 303 and entered.headers["location"] == f"/m/{MEMBER}/jupyterlab/"
    cookie = entered.cookies["labgpu_app"]
    assert apps.get(opened.headers["location"]).status_code == 403  # a ticket is used once
    # The portal's cookies sent along never reach the app; the app cookie only works on its own app's path.
    with_portal = {"labgpu_app": cookie, "labgpu_session": mine.cookies["labgpu_session"]}
    status = httpx.get(base + "/api/status", cookies=with_portal)
    assert status.status_code == 200, status.text
    assert (
        httpx.get(f"{lab.apps_url}/m/{MEMBER}/tensorboard/", cookies={"labgpu_app": cookie}).status_code
        == 403
    )
    assert (
        httpx.get(f"{lab.apps_url}/m/{OTHER}/jupyterlab/", cookies={"labgpu_app": cookie}).status_code == 403
    )
    # No way out of the prefix.
    for path in (
        "/m/ana/jupyterlab/%2e%2e/%2e%2e/ben/jupyterlab/",
        "/m/ana/jupyterlab/..%2Fx",
        "/etc/passwd",
    ):
        r = httpx.get(lab.apps_url + path, cookies={"labgpu_app": cookie})
        assert r.status_code in (403, 404), path
    # WebSocket: this origin with the cookie opens; another origin (the portal's, or another port's) does not.
    kernel_ws = f"/m/{MEMBER}/jupyterlab/api/events/subscribe"
    assert _ws_status(lab, kernel_ws, {"labgpu_app": cookie}, origin=lab.apps_url) == 101
    assert _ws_status(lab, kernel_ws, {"labgpu_app": cookie}, origin=lab.url) != 101
    assert _ws_status(lab, kernel_ws, {"labgpu_app": cookie}, origin="http://127.0.0.1:1") != 101
    # An admin may open a member's app (from the admin's member page), audited.
    admin = httpx.Client(base_url=lab.url)
    token = _login_client(admin, "boss", ADMIN_PASSWORD)
    assert "open-jupyterlab" in admin.get(f"/members/{MEMBER}/apps").text
    assert (
        admin.post(f"/members/{MEMBER}/apps/tensorboard/open", data={"csrf_token": token}).status_code == 303
    )
    # Logging out ends the app cookie's worth at once (well, within the 5 s the proxy caches a login).
    mine.post("/logout", data={"csrf_token": _page_token(mine)})
    deadline = time.monotonic() + 15
    while httpx.get(base + "/api/status", cookies={"labgpu_app": cookie}).status_code != 403:
        assert time.monotonic() < deadline, "the app cookie outlived the login"
        time.sleep(1)
    assert _ws_status(lab, kernel_ws, {"labgpu_app": cookie}, origin=lab.apps_url) != 101


def test_a_100_mb_file_goes_up_and_down_in_the_browser_with_the_portals_memory_flat(
    lab: Lab, browser: Any, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    log_in(page, lab.url, MEMBER, PASSWORD)
    page.goto(lab.url + f"/members/{MEMBER}/files")
    before = _rss_kb(lab.pid)
    peak = before
    page.set_input_files("#upload-file", str(big))
    page.click("#upload-button")
    deadline = time.monotonic() + 300
    while page.url.endswith("/files") and not page.is_visible("a[data-file='big.bin']"):
        peak = max(peak, _rss_kb(lab.pid))
        assert "failed" not in (page.text_content("#upload-status") or "").lower()
        assert time.monotonic() < deadline, "upload did not finish"
        page.wait_for_timeout(200)
    after_upload = _rss_kb(lab.pid)
    inside = lab.runtime.instances.exec(lab.container, ["sha256sum", f"{HOME}/big.bin"])
    assert inside.stdout.split()[0] == digest
    owner = lab.runtime.instances.exec(lab.container, ["stat", "-c", "%U", f"{HOME}/big.bin"])
    assert owner.stdout.strip() == "ubuntu"
    with page.expect_download(timeout=300_000) as got:
        page.click("a[data-file='big.bin']")
    saved = tmp_path / "down.bin"
    got.value.save_as(saved)
    peak = max(peak, _rss_kb(lab.pid))
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    print(
        f"\nportal RSS: before {before // 1024} MiB, peak {peak // 1024} MiB during the 100 MB upload/download, "
        f"after the upload {after_upload // 1024} MiB, at the end {_rss_kb(lab.pid) // 1024} MiB"
    )
    lab.runtime.instances.exec(lab.container, ["rm", "-f", f"{HOME}/big.bin"])
    context.close()


def _page_token(client: httpx.Client, path: str = "/account") -> str:
    from tests.web.conftest import csrf_from

    return csrf_from(client.get(path).text)


def _login_client(client: httpx.Client, name: str, password: str = PASSWORD) -> str:
    from tests.web.conftest import csrf_from

    token = csrf_from(client.get("/login").text)
    r = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
    assert r.status_code == 303, r.text[:300]
    return _page_token(client)


def _ws_status(lab: Lab, path: str, cookies: dict[str, str], *, origin: str) -> int:
    """The status of a WebSocket handshake to the apps origin (101 when it opened)."""
    import base64
    import socket

    host = lab.apps_url.split("//", 1)[1]
    key = base64.b64encode(os.urandom(16)).decode()
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
        + (f"Cookie: {cookie}\r\n" if cookie else "")
        + "\r\n"
    )
    hostname, port = host.split(":")
    with socket.create_connection((hostname, int(port)), timeout=30) as s:
        s.sendall(request.encode())
        head = s.recv(4096).decode("latin-1")
    return int(head.split()[1]) if head.startswith("HTTP/") else 0
