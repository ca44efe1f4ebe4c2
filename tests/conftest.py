"""Shared fixtures.

Integration tests talk to REAL LXD and Incus daemons (``scripts/test`` installs
and starts both). Each test gets uniquely named objects and a ``cleanup`` that
removes them even when the test fails. When ``LABGPU_REQUIRE_DAEMONS=1`` (set by
``scripts/test`` and CI) a missing daemon fails the run instead of skipping.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.runtime.errors import RuntimeBadRequest, RuntimeNotFound
from tests import lanes
from tests.postgres import postgres_url  # noqa: F401 - the fixture, for every test
from tests.servers.fixtures import idp_server, ldap_server  # noqa: F401 - sign-on servers, started when asked for
from tests.webhooks import webhook_server  # noqa: F401 - the fixture, for every test

DAEMON_SOCKETS = {
    "lxd": Path(os.environ.get("LABGPU_TEST_LXD_SOCKET", "/var/lib/lxd/unix.socket")),
    "incus": Path(os.environ.get("LABGPU_TEST_INCUS_SOCKET", "/var/lib/incus/unix.socket")),
}
TEST_IMAGE_ALIASES = {"busybox": "labgpu-test-busybox", "ssh": "labgpu-test-ssh"}
# The ssh image plus what a few tests need inside a container: python3 (a small app for the apps proxy),
# vim, htop and tmux (full-screen programs in the browser terminal). Its own alias, built on first use only
# by the tests that ask for it (tools_image, ensure_tools_image), so the other images and runs are unchanged.
TOOLS_IMAGE = "labgpu-test-tools"
TOOLS_PACKAGES = ("python3", "vim-tiny", "htop", "tmux")


def _require(what: str) -> None:
    if os.environ.get("LABGPU_REQUIRE_DAEMONS") == "1":
        pytest.fail(f"{what} (LABGPU_REQUIRE_DAEMONS=1: nothing may be skipped)")
    pytest.skip(what)


def _socket_ok(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


DEBIAN_SYSCTL_DEFAULTS = {
    "fs/inotify/max_user_instances": 128,
    "fs/inotify/max_user_watches": 8192,
    "fs/inotify/max_queued_events": 16384,
    "vm/max_map_count": 65530,
}


def fake_sysctl(root: Path, values: dict[str, int] | None = None) -> Path:
    """A stand-in for /proc/sys (and an empty etc/sysctl.d) under ``root``, with Debian 12's defaults: for
    `host init` tests, which must not change the kernel limits of the machine they run on."""
    for key, value in (values or DEBIAN_SYSCTL_DEFAULTS).items():
        path = root / "proc/sys" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return root


def unique_name(prefix: str = "t") -> str:
    """A name valid for instances, profiles, pools and Linux users."""
    return f"{prefix}-{secrets.token_hex(4)}"


def port_block(first: int, last: int, span: int = 100) -> tuple[int, int]:
    """A random block of ``span`` host ports in [first, last] for one test's port range.

    Under pytest-xdist, worker gwN picks only among the blocks whose index is N modulo the number of
    workers, so two tests of the same run never get the same block (a port both allocate at once would
    leave one proxy device unable to listen). Other people's runs on the machine still pick at random."""
    blocks = (last - first + 1) // span
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    start = first + secrets.choice(range(worker % count, blocks, count)) * span
    return start, start + span - 1


LOCK_DIR = Path(tempfile.gettempdir()) / "labgpu-test-locks"


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one process of this machine at a time (pytest-xdist workers, other people's runs): for
    the set-up of what test runs share on a daemon (the test pool, profile and images), which two
    processes must not make at once ("already exists")."""
    LOCK_DIR.mkdir(mode=0o1777, exist_ok=True)
    with (LOCK_DIR / f"{name}.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def daemon_lock(runtime: RuntimeClient) -> contextlib.AbstractContextManager[None]:
    """:func:`machine_lock` for the set-up of one daemon."""
    where = str(runtime.endpoint.describe())
    return machine_lock("daemon-" + "".join(c if c.isalnum() else "_" for c in where).strip("_"))


# Parallel runs (pytest-xdist, as scripts/test does): lanes (tests/lanes.py) and serial tests ----------


def pytest_configure(config: pytest.Config) -> None:
    lanes.share_lanes_with_workers(config)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lanes.write_lanes(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    return lanes.make_scheduler(config, log)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("serial") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.fail(
            "marked serial: it must not run beside other tests; run it without -n (scripts/test runs the "
            "parallel part with -m 'not serial', then -m serial alone)",
            pytrace=False,
        )


@pytest.fixture(scope="session", params=["lxd", "incus"])
def daemon_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def runtime(daemon_kind: str) -> Iterator[RuntimeClient]:
    """A client for the real daemon of this parametrization (LXD, then Incus)."""
    sock = DAEMON_SOCKETS[daemon_kind]
    if not _socket_ok(sock):
        _require(f"{daemon_kind} daemon socket {sock} not found; run scripts/start-daemons lxd incus")
    client = RuntimeClient(Endpoint.unix(sock), timeout=30, operation_timeout=300)
    try:
        client.server()
    except Exception as exc:
        _require(f"{daemon_kind} daemon at {sock} does not answer: {exc}")
    yield client
    client.close()


@dataclass
class Cleanup:
    """Objects a test made, deleted in reverse order at teardown, failures ignored."""

    runtime: RuntimeClient
    actions: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def add(self, what: str, fn: Callable[[], object]) -> None:
        self.actions.append((what, fn))

    def instance(self, name: str) -> str:
        def rm() -> None:
            try:
                inst = self.runtime.instances.get(name)
            except RuntimeNotFound:
                return
            if inst.status != "Stopped":
                self.runtime.instances.stop(name, force=True)
            self.runtime.instances.delete(name)

        self.add(f"instance {name}", rm)
        return name

    def profile(self, name: str) -> str:
        self.add(f"profile {name}", lambda: self.runtime.profiles.delete(name))
        return name

    def pool(self, name: str) -> str:
        self.add(f"pool {name}", lambda: self.runtime.storage_pools.delete(name))
        return name

    def network(self, name: str) -> str:
        self.add(f"network {name}", lambda: self.runtime.networks.delete(name))
        return name

    def image(self, fingerprint: str) -> str:
        self.add(f"image {fingerprint[:12]}", lambda: self.runtime.images.delete(fingerprint))
        return fingerprint

    def run(self) -> list[str]:
        errors = []
        for what, fn in reversed(self.actions):
            try:
                fn()
            except RuntimeNotFound:
                pass
            except Exception as exc:
                errors.append(f"{what}: {exc}")
        self.actions.clear()
        return errors


@pytest.fixture
def cleanup(runtime: RuntimeClient) -> Iterator[Cleanup]:
    c = Cleanup(runtime)
    yield c
    errors = c.run()
    if errors:
        print("cleanup problems:", errors)


def _ensure_test_image(runtime: RuntimeClient, kind: str) -> str:
    """Import the cached test image under its alias unless the same recipe is already there."""
    from labgpu.system import base_image

    if kind == "busybox":
        recipe = base_image.busybox_recipe()
    elif kind == "tools":
        recipe = base_image.debootstrap_recipe(include=(*base_image.DEFAULT_INCLUDE, *TOOLS_PACKAGES))
    else:
        recipe = base_image.debootstrap_recipe()
    alias = TOOLS_IMAGE if kind == "tools" else TEST_IMAGE_ALIASES[kind]
    built = base_image.build_image(recipe, cache_dir=base_image.resolve_cache_dir())  # locked by itself
    with daemon_lock(runtime):
        current = runtime.images.get_by_alias(alias)
        if current is not None and current.properties.get("labgpu.recipe") == built.recipe_hash:
            return alias
        runtime.images.import_tarballs(
            built.meta, built.rootfs, aliases=[alias], properties={"labgpu.recipe": built.recipe_hash}
        )
    return alias


@pytest.fixture(scope="session")
def busybox_image(runtime: RuntimeClient) -> str:
    """Alias of a tiny real image (busybox init): a running container, no SSH."""
    return _ensure_test_image(runtime, "busybox")


@pytest.fixture(scope="session")
def ssh_image(runtime: RuntimeClient) -> str:
    """Alias of the offline-built Debian image with sshd and the `ubuntu` user."""
    return _ensure_test_image(runtime, "ssh")


@pytest.fixture(scope="session")
def tools_image(runtime: RuntimeClient) -> str:
    """Alias of the ssh image with python3, vim, htop and tmux (TOOLS_PACKAGES)."""
    return _ensure_test_image(runtime, "tools")


# Members: services wired to a real daemon, a private store and private host folders --------------

TEST_PROFILE = "labgpu-test"
TEST_POOL = "labgpu-test"


def _btrfs_usable() -> bool:
    try:
        in_kernel = "btrfs" in Path("/proc/filesystems").read_text()
    except OSError:
        return False
    return in_kernel and shutil.which("mkfs.btrfs") is not None


def ensure_test_pool(runtime: RuntimeClient) -> str:
    """The pool the test containers live on: a copy-on-write btrfs loop pool where the kernel has btrfs.

    On a dir pool every container creation unpacks the whole image (gzip + tar, about 3 s of CPU on the
    test machine); on btrfs the image is unpacked once and each container is a snapshot of it (0.2 s).
    Without btrfs the daemon's ``default`` pool is used. Size: $LABGPU_TEST_POOL_SIZE (default 30GiB, a
    sparse file)."""
    with daemon_lock(runtime):
        if runtime.storage_pools.find(TEST_POOL) is not None:
            return TEST_POOL
        if not _btrfs_usable():
            return "default"
        size = os.environ.get("LABGPU_TEST_POOL_SIZE", "30GiB")
        runtime.storage_pools.create(
            TEST_POOL, driver="btrfs", config={"size": size}, description="labgpu tests"
        )
    return TEST_POOL


def ensure_test_profile(runtime: RuntimeClient, pool: str) -> str:
    """A labgpu-style profile (root disk on ``pool``) shared by the member tests; an older one that
    points elsewhere is re-pointed (refused while instances use it: then it stays as it is)."""
    devices = {"root": {"type": "disk", "path": "/", "pool": pool}}
    config = {"boot.autostart": "true"}
    with daemon_lock(runtime):
        found = runtime.profiles.find(TEST_PROFILE)
        if found is None:
            runtime.profiles.create(TEST_PROFILE, config=config, devices=devices, description="labgpu tests")
        elif found.devices.get("root", {}).get("pool") != pool:
            with contextlib.suppress(RuntimeBadRequest):
                runtime.profiles.replace(
                    TEST_PROFILE, config=config, devices=devices, description="labgpu tests"
                )
    return TEST_PROFILE


@pytest.fixture(scope="session")
def test_pool(runtime: RuntimeClient) -> str:
    return ensure_test_pool(runtime)


@pytest.fixture(scope="session")
def test_profile(runtime: RuntimeClient, test_pool: str) -> str:
    return ensure_test_profile(runtime, test_pool)


@dataclass
class LabgpuEnv:
    """One test's labgpu: settings overrides, its Services, and the env for CLI subprocesses."""

    overrides: dict[str, str]
    runtime: RuntimeClient

    def settings(self):  # type: ignore[no-untyped-def]
        from labgpu.settings import load_settings

        return load_settings(**self.overrides)

    def services(self):  # type: ignore[no-untyped-def]
        from labgpu.services.context import Actor, Services
        from labgpu.store.db import create_engine_for, session_factory
        from labgpu.store.migrate import upgrade

        settings = self.settings()
        engine = create_engine_for(settings)
        upgrade(settings, engine=engine)
        return Services(
            settings=settings, runtime=self.runtime, sessions=session_factory(engine), actor=Actor("test@cli")
        )

    def env(self) -> dict[str, str]:
        """Environment for `labgpu` run as a subprocess with the same settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
        env.update({f"LABGPU_{k.upper()}": v for k, v in self.overrides.items()})
        return env


@pytest.fixture
def labgpu_env(
    runtime: RuntimeClient,
    tmp_path: Path,
    test_profile: str,
    test_pool: str,
    ssh_image: str,
    cleanup: Cleanup,
) -> Iterator[LabgpuEnv]:
    """Settings for one test: own SQLite store and home folders, proxies on 127.0.0.1 in a
    random port range, the offline-built SSH image as the default template, the test profile.
    Containers made for members in the store are deleted at teardown (homes are tmp)."""
    # Below the kernel's ephemeral ports (32768-60999 by default): a proxy port in that range can be taken
    # at any moment by an outgoing connection of the test run itself ("address already in use").
    start, end = port_block(20000, 31999)
    sock = runtime.endpoint.socket_path
    overrides = {
        "state_dir": str(tmp_path / "state"),
        "home_base": str(tmp_path / "home"),
        "home_archive": str(tmp_path / "archive"),
        "runtime_url": f"unix://{sock}",
        "listen_address": "127.0.0.1",
        "port_range_start": str(start),
        "port_range_end": str(end),
        "default_template": ssh_image,
        "profile_name": test_profile,
        "storage_pool": test_pool,
        "ssh_ready_timeout": "180",
        # The test profile has no NIC (proxies on 127.0.0.1 only); tests of the bridge make their own.
        "network_mode": "none",
    }
    env = LabgpuEnv(overrides=overrides, runtime=runtime)
    yield env
    # Whatever member containers the test left behind.
    try:
        from sqlalchemy import select

        from labgpu.store.models import Member

        svc = env.services()
        with svc.session() as session:
            names = [c for c in session.scalars(select(Member.container)) if c]
    except Exception:
        names = []
    for name in names:
        cleanup.instance(name)


# Chromium (Playwright), for tests/browser and the browser checks elsewhere -------------------------------

CHROMIUM = os.environ.get("LABGPU_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, one per test process (Playwright's sync API allows one at a time)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/install-deps --test)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


# Mail: a real SMTP server (aiosmtpd) on loopback ----------------------------------------------------


@dataclass
class MailBox:
    host: str
    port: int
    messages: list[Any] = field(default_factory=list)

    def to(self, address: str) -> list[Any]:
        return [m for m in self.messages if address in (m["To"] or "")]

    def wait_for(self, address: str, count: int = 1, timeout: float = 30.0) -> list[Any]:
        """The messages to ``address`` once there are ``count`` (notifications are delivered in the
        background: an action returns before its mail is sent), or what came within ``timeout``."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.to(address)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.to(address)

    def settings(self) -> dict[str, str]:
        return {"smtp_host": self.host, "smtp_port": str(self.port), "mail_from": "labgpu@lab.test"}


@pytest.fixture
def smtp_server() -> Iterator[MailBox]:
    """A real SMTP server on 127.0.0.1 collecting every message it receives (parsed)."""
    import socket
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    with socket.socket() as probe:  # aiosmtpd needs a fixed port to check its own start-up
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    box = MailBox(host="127.0.0.1", port=port)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
