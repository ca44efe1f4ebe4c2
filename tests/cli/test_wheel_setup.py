"""labgpu as an admin installs it without a checkout: the wheel built from this tree, installed into a fresh
virtualenv outside the checkout (its dependencies from requirements/labgpu.lock, checked by hash), then
`labgpu setup` against the test Incus daemon, twice (the second run changes nothing), and the portal served
by the installed package: /healthz, a page in Chinese, its static files.

Isolated from the other tests: its own state folder, a profile of its own, the test pool and image (both
exist: unchanged), copies of /etc/subuid and /etc/subgid and a stand-in /proc/sys (host init changes
neither the machine's files nor its kernel limits), no network (network_mode none), --no-serve.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from labgpu.runtime.client import RuntimeClient
from tests.conftest import fake_sysctl, unique_name

# Its own lane: it runs host init (a profile of its own on the shared daemon) and takes a minute.
pytestmark = [pytest.mark.integration, pytest.mark.lane("wheel-setup")]

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], *, env: dict[str, str], cwd: Path, timeout: int = 900) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    """No LABGPU_* setting and no PYTHONPATH: nothing of this checkout reaches the installed labgpu."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_") and k not in ("PYTHONPATH",)}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel of this tree and the locked dependencies."""
    where = tmp_path_factory.mktemp("installed")
    env = _clean_env()
    started = time.monotonic()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(where / "dist"), str(ROOT)],
        env=env,
        cwd=where,
    )
    (wheel,) = (where / "dist").glob("labgpu-*.whl")
    # The venv without pip of its own, filled by this pip (--python: no ensurepip), without compiling
    # every module up front: about half the time.
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(where / "venv")], env=env, cwd=where)
    pip = [sys.executable, "-m", "pip", "--python", str(where / "venv/bin/python"), "install", "-q"]
    pip += ["--disable-pip-version-check", "--no-compile"]
    _run([*pip, "--require-hashes", "-r", str(ROOT / "requirements/labgpu.lock")], env=env, cwd=where)
    _run([*pip, "--no-deps", str(wheel)], env=env, cwd=where)
    print(f"wheel built and installed in {time.monotonic() - started:.1f}s")
    return where / "venv"


@pytest.mark.parametrize("daemon_kind", ["incus"], indirect=True, scope="session")
def test_setup_from_the_installed_wheel(
    venv: Path, runtime: RuntimeClient, test_pool: str, ssh_image: str, tmp_path: Path
) -> None:
    env = _clean_env()
    labgpu = str(venv / "bin/labgpu")
    where = _run(
        [str(venv / "bin/python"), "-c", "import labgpu; print(labgpu.__file__)"], env=env, cwd=tmp_path
    )
    assert where.startswith(str(venv)), where  # the installed package, not this checkout

    profile = unique_name("lgwheel")
    for name in ("subuid", "subgid"):
        shutil.copy(f"/etc/{name}", tmp_path / name)
    sysctl = fake_sysctl(tmp_path / "sysctl")
    env.update(
        LABGPU_STATE_DIR=str(tmp_path / "state"),
        LABGPU_HOME_BASE=str(tmp_path / "home"),
        LABGPU_RUNTIME_URL=f"unix://{runtime.endpoint.socket_path}",
        LABGPU_PROFILE_NAME=profile,
        LABGPU_STORAGE_POOL=test_pool,
        LABGPU_NETWORK_MODE="none",
        LABGPU_DEFAULT_TEMPLATE=ssh_image,  # the same recipe as the minimal template: cached, published
    )
    hidden = [
        "--subuid-file", str(tmp_path / "subuid"), "--subgid-file", str(tmp_path / "subgid"),
        "--sysctl-root", str(sysctl),
    ]  # fmt: skip
    try:
        first = json.loads(_run([labgpu, "setup", "--no-serve", "--json", *hidden], env=env, cwd=tmp_path))
        status = {s["name"]: s["status"] for s in first["steps"]}
        assert status == {
            "packages": "unchanged",  # scripts/install-deps installed them
            "daemon": "unchanged",
            "database": "done",
            "host": "done",
            "template": "unchanged",
            "tls": "unchanged",  # loopback: plain HTTP, no certificate
            "services": "skipped",  # no systemd here
        }, first
        assert first["runtime"].startswith("Incus ")
        host_lines = next(s["lines"] for s in first["steps"] if s["name"] == "host")
        assert any(f"created: profile {profile}" in line for line in host_lines), host_lines
        assert runtime.profiles.get(profile).devices["root"]["pool"] == test_pool

        again = json.loads(_run([labgpu, "setup", "--no-serve", "--json", *hidden], env=env, cwd=tmp_path))
        assert {s["status"] for s in again["steps"]} <= {"unchanged", "skipped"}, again

        # The portal, served by the installed package.
        port = _free_port()
        log = (tmp_path / "serve.log").open("w")
        proc = subprocess.Popen(
            [labgpu, "serve", "--host", "127.0.0.1", "--port", str(port), "--apps-port", "0"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            health = _wait_for(url + "/healthz", proc, tmp_path / "serve.log")
            assert health.json()["checks"]["runtime"]["kind"] == "incus"
            page = httpx.get(url + "/login", headers={"Accept-Language": "zh-CN"}, timeout=10)
            assert page.status_code == 200 and "登录" in page.text
            for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text):
                got = httpx.get(url + asset, timeout=10)
                assert got.status_code == 200 and got.content, asset
            assert "/static/style.css" in page.text
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    finally:
        with contextlib.suppress(Exception):
            runtime.profiles.delete(profile)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("labgpu serve did not start:\n" + log.read_text()[-2000:]) from None
            time.sleep(0.2)
