"""Browser tests: Playwright driving Debian's Chromium (headless) against `labgpu serve` run as a
subprocess on a free loopback port, with a real LXD/Incus daemon (``labgpu_env``) and a real SMTP server
(``smtp_server``); or a portal app served in process (:func:`serve_app`). Screenshots go to
artifacts/screenshots/ (git-ignored). :func:`log_in` is the log-in form, as a person fills it in."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.conftest import LabgpuEnv, MailBox
from tests.web.conftest import PASSWORD

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
ADMIN_PASSWORD = "amber-falcon-62-ledger"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    env: dict[str, str]
    log: Path


@pytest.fixture
def served(labgpu_env: LabgpuEnv, smtp_server: MailBox, tmp_path: Path) -> Iterator[Served]:
    """`labgpu serve` with the test's settings and mail going to ``smtp_server``; an admin `boss`."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    labgpu_env.overrides.update(smtp_server.settings(), portal_url=url + "/", trusted_proxies="")
    env = labgpu_env.env()
    labgpu = shutil.which("labgpu", path=str(Path(os.sys.executable).parent)) or "labgpu"
    subprocess.run([labgpu, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(
        [labgpu, "admin", "create", "boss", "--email", "boss@lab.test", "--password-stdin"],
        input=ADMIN_PASSWORD + "\n",
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    with labgpu_serve(env, tmp_path, port=port, apps=False) as (_, _, _, log):
        yield Served(url=url, env=env, log=log)


@contextmanager
def labgpu_serve(
    env: dict[str, str], folder: Path, *, port: int | None = None, apps: bool = True
) -> Iterator[tuple[str, str | None, subprocess.Popen[bytes], Path]]:
    """`labgpu serve` as a subprocess on a free loopback port (or ``port``), with the settings of ``env``
    (LABGPU_* variables) and, unless ``env`` names one, the portal URL it is reached at; with ``apps``, its
    apps origin on another free port. Yields (portal URL, apps URL or None, process, log) once they answer,
    and stops it afterwards."""
    port = port or _free_port()
    apps_port = _free_port() if apps else 0
    url = f"http://127.0.0.1:{port}"
    apps_url = f"http://127.0.0.1:{apps_port}" if apps else None
    labgpu = shutil.which("labgpu", path=str(Path(os.sys.executable).parent)) or "labgpu"
    log = folder / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [labgpu, "serve", "--host", "127.0.0.1", "--port", str(port), "--apps-port", str(apps_port)],
            env={"LABGPU_PORTAL_URL": url + "/", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz", timeout=2)
                if apps_url:
                    httpx.get(apps_url + "/", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("labgpu serve did not start:\n" + log.read_text()[-3000:]) from None
                time.sleep(0.2)
        yield url, apps_url, proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def screenshot(page: object, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot take signals
        pass


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """``app`` (a portal from create_app) served by uvicorn in a thread on a free loopback port; yields its
    URL, http://127.0.0.1:PORT, and stops it afterwards."""
    port = _free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="test-portal")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the portal did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def log_in(
    page: Any,
    url: str,
    name: str,
    password: str = PASSWORD,
    *,
    next_path: str = "",
    lands: str | None = "/me",
) -> None:
    """Log in through the form as a person does: open /login (with ``?next=`` when given), type the name
    and password, press the button; then wait for the page it lands on (``lands``; None: do not wait,
    e.g. when a second factor is asked next)."""
    page.goto(f"{url}/login" + (f"?next={next_path}" if next_path else ""))
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("form[action='/login'] button[type=submit]")
    if lands is not None:
        page.wait_for_url(url + lands)


@contextmanager
def serve_gpu_site(
    tmp_path: Path, *, members: tuple[str, ...], admins: tuple[str, ...] = ()
) -> Iterator[str]:
    """A portal served at http://127.0.0.1:PORT with host gpu1 (booked mode, its GPUs from a served agent on
    the recorded fake NVML), ``members`` with their containers on gpu1 and ``admins``; no daemon, no jobs."""
    from pydantic import SecretStr

    from labgpu.services.gpus._usage import GpuUsageReader
    from labgpu.settings import load_settings
    from labgpu.store.migrate import upgrade
    from labgpu.store.models import Role
    from labgpu.web.app import create_app
    from tests.web.conftest import Portal
    from tests.web.gpus.helpers import AGENT_TOKEN, add_host, add_member, no_nvml, serve_agent

    with serve_agent(tmp_path) as agent:
        settings = load_settings(
            state_dir=str(tmp_path / "state"),
            runtime_url=f"unix://{tmp_path}/no-daemon.sock",
            trusted_proxies="",
            jobs_in_serve=False,
        ).model_copy(update={"agent_token": SecretStr(AGENT_TOKEN)})
        upgrade(settings)
        app = create_app(settings, background=False, gpu_usage=GpuUsageReader(source=no_nvml))
        portal = Portal(app, settings)
        host_id = add_host(portal, agent_url=agent.url)
        for name in members:
            add_member(portal, name, host_id)
        for name in admins:
            add_member(portal, name, None, role=Role.ADMIN)
        with serve_app(app) as url:
            yield url
