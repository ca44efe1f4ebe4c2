"""Fixtures for the many-hosts tests: labgpu's own Incus daemons (``scripts/start-test-cluster``).

Four incusd run in their own network namespaces on the bridge lgmhbr0, like four machines:

- ``c1`` (10.231.0.11) and ``c2`` (10.231.0.12): a two-member cluster;
- ``s1`` (10.231.0.13) and ``s2`` (10.231.0.14): standalone daemons.

The main LXD and Incus daemons are only read (labgpu's local daemon here is the main Incus, drained in
tests that place containers). Proxy devices on these daemons listen on 0.0.0.0 INSIDE each namespace,
so a member's SSH port is reached at the daemon's address, exactly as on separate machines. Homes live
in the test's tmp folder, which every daemon sees (one filesystem): the "shared storage" setup.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labgpu.runtime.certs import certificate_fingerprint
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.runtime.errors import RuntimeNotFound
from tests.conftest import (
    TEST_IMAGE_ALIASES,
    TEST_PROFILE,
    _ensure_test_image,
    _require,
    _socket_ok,
    daemon_lock,
    port_block,
)

HOSTS_DIR = Path(os.environ.get("LABGPU_TEST_HOSTS_DIR", "/var/lib/labgpu-test"))
ADDRESSES = {"c1": "10.231.0.11", "c2": "10.231.0.12", "s1": "10.231.0.13", "s2": "10.231.0.14"}
MAIN_INCUS = Path(os.environ.get("LABGPU_TEST_INCUS_SOCKET", "/var/lib/incus/unix.socket"))


@dataclass
class Daemon:
    """One of the test daemons, driven through its unix socket (the test's own back door)."""

    name: str
    address: str
    client: RuntimeClient

    @property
    def socket(self) -> Path:
        return HOSTS_DIR / f"incus-{self.name}" / "unix.socket"

    @property
    def url(self) -> str:
        return f"https://{self.address}:8443"

    def incus(self, *args: str) -> str:
        env = dict(os.environ, INCUS_DIR=str(HOSTS_DIR / f"incus-{self.name}"))
        return subprocess.run(
            ["incus", *args], env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def token(self, name: str = "labgpu") -> str:
        """A one-time trust token, as `incus config trust add NAME` prints it."""
        return self.incus("config", "trust", "add", f"{name}-{secrets.token_hex(3)}", "--quiet").strip()

    def fingerprint(self) -> str:
        return self.client.server(refresh=True).certificate_fingerprint

    def instances(self, *, here_only: bool = True) -> dict[str, Any]:
        """name -> Instance on this daemon (a cluster member: only those located on it)."""
        out = {}
        for inst in self.client.instances.all(with_state=False):
            if not here_only or inst.location in ("", "none", self.name):
                out[inst.name] = inst
        return out

    def untrust(self, cert_pem_path: Path) -> None:
        if not cert_pem_path.is_file():
            return
        fp = certificate_fingerprint(cert_pem_path.read_text())
        with contextlib.suppress(RuntimeNotFound):
            self.client.untrust_certificate(fp)

    def delete_instance(self, name: str) -> None:
        try:
            inst = self.client.instances.get(name)
        except RuntimeNotFound:
            return
        if inst.status != "Stopped":
            self.client.instances.stop(name, force=True)
        self.client.instances.delete(name)


def ensure_default_pool_profile(client: RuntimeClient) -> None:
    """The test profile on one of labgpu's own test daemons (root disk on its pool ``default``)."""
    with daemon_lock(client):
        if client.profiles.find(TEST_PROFILE) is None:
            client.profiles.create(
                TEST_PROFILE,
                config={"boot.autostart": "true"},
                devices={"root": {"type": "disk", "path": "/", "pool": "default"}},
                description="labgpu tests",
            )


@pytest.fixture(scope="session")
def test_daemons() -> Iterator[dict[str, Daemon]]:
    """The four test daemons, with the test images and the test profile on each."""
    daemons = {}
    for name, address in ADDRESSES.items():
        sock = HOSTS_DIR / f"incus-{name}" / "unix.socket"
        if not _socket_ok(sock):
            _require(f"test daemon {name} ({sock}) is not running; run scripts/start-test-cluster")
        client = RuntimeClient(Endpoint.unix(sock), timeout=30, operation_timeout=300)
        try:
            client.server()
        except Exception as exc:
            _require(f"test daemon {name} at {sock} does not answer: {exc}")
        daemons[name] = Daemon(name, address, client)
    for name in ("c1", "s1", "s2"):  # c1 stands for the whole cluster
        client = daemons[name].client
        for kind in TEST_IMAGE_ALIASES:
            _ensure_test_image(client, kind)
        ensure_default_pool_profile(client)
    yield daemons
    for d in daemons.values():
        d.client.close()


@dataclass
class HostsEnv:
    """One test's labgpu with many hosts: its settings (env vars for the in-process CLI), its
    services, and what to clean up."""

    overrides: dict[str, str]
    local: RuntimeClient
    daemons: dict[str, Daemon]
    tmp: Path
    instances: list[tuple[str, str]] = field(default_factory=list)  # (daemon, instance) to delete

    def settings(self):  # type: ignore[no-untyped-def]
        from labgpu.settings import load_settings

        return load_settings(**self.overrides)

    def services(self, **kw: Any):  # type: ignore[no-untyped-def]
        from labgpu.services.context import Actor, Services
        from labgpu.store.db import create_engine_for, session_factory
        from labgpu.store.migrate import upgrade

        settings = self.settings()
        engine = create_engine_for(settings)
        upgrade(settings, engine=engine)
        return Services(
            settings=settings,
            runtime=self.local,
            sessions=session_factory(engine),
            actor=Actor("test@cli"),
            **kw,
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
        env.update({f"LABGPU_{k.upper()}": v for k, v in self.overrides.items()})
        return env

    @property
    def client_cert(self) -> Path:
        return Path(self.overrides["state_dir"]) / "certs" / "client.crt"


@pytest.fixture
def hosts_env(
    test_daemons: dict[str, Daemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HostsEnv]:
    """Settings for one test (also set as LABGPU_* variables for the in-process CLI): own store, state
    and homes in tmp, the main Incus as the local daemon, proxies on 0.0.0.0 of each test daemon's
    namespace in a random port range. At teardown: containers of the store's members are deleted on
    every test daemon, and labgpu's certificate is dropped from their trust lists."""
    if not _socket_ok(MAIN_INCUS):
        _require(f"the main Incus daemon ({MAIN_INCUS}) is not running; run scripts/start-daemons incus")
    start, end = port_block(40000, 59999)
    overrides = {
        "state_dir": str(tmp_path / "state"),
        "home_base": str(tmp_path / "home"),
        "home_archive": str(tmp_path / "archive"),
        "runtime_url": f"unix://{MAIN_INCUS}",
        "listen_address": "0.0.0.0",
        "port_range_start": str(start),
        "port_range_end": str(end),
        "default_template": TEST_IMAGE_ALIASES["ssh"],
        "profile_name": TEST_PROFILE,
        "default_gpus": "none",
        "ssh_ready_timeout": "180",
        "host_timeout": "5",
        "homes_shared": "true",
    }
    for var in ("LABGPU_CONFIG", "LABGPU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    for key, value in overrides.items():
        monkeypatch.setenv(f"LABGPU_{key.upper()}", value)
    local = RuntimeClient(Endpoint.unix(MAIN_INCUS), timeout=30, operation_timeout=300)
    env = HostsEnv(overrides=overrides, local=local, daemons=test_daemons, tmp=tmp_path)
    yield env
    # Member containers left behind, wherever they are.
    names: set[str] = {name for _, name in env.instances}
    try:
        from sqlalchemy import select

        from labgpu.store.models import Member

        svc = env.services()
        with svc.session() as session:
            names |= {c for c in session.scalars(select(Member.container)) if c}
    except Exception:
        pass
    for daemon in test_daemons.values():
        if daemon.name == "c2":
            continue  # c1 answers for the cluster
        for name in names:
            try:
                daemon.delete_instance(name)
            except Exception as exc:
                print(f"cleanup {daemon.name}/{name}: {exc}")
        daemon.untrust(env.client_cert)
    local.close()


def local_host_name(svc: Any) -> str:
    from labgpu.services.hosts._inventory import known_hosts

    return next(h.name for h in known_hosts(svc) if h.url is None)


def add_test_hosts(env: HostsEnv, svc: Any, *, s2_by_socket: bool = True) -> dict[str, str]:
    """Add s1 (HTTPS, token), s2 (its unix socket, public address given, or HTTPS) and the cluster
    "lab" through c1 (hosts c1 and c2); drain the local daemon so that nothing lands there.
    Returns host name -> the address members connect to."""
    from labgpu.services.hosts._remote import add_host, set_drained

    d = env.daemons
    add_host(svc, "s1", d["s1"].url, token=d["s1"].token())
    if s2_by_socket:
        add_host(svc, "s2", f"unix://{d['s2'].socket}", public_address=d["s2"].address)
    else:
        add_host(svc, "s2", d["s2"].url, token=d["s2"].token())
    add_host(svc, "lab", d["c1"].url, token=d["c1"].token())
    set_drained(svc, local_host_name(svc), True)
    return {name: d[name].address for name in ("s1", "s2", "c1", "c2")}
