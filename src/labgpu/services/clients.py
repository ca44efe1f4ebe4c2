"""Which daemon serves which host: one runtime client per host row, built on first use and kept.

A host row's ``url`` says how to reach it:

- None: the local daemon, the one the settings point at (``svc.runtime``);
- ``unix:///path/unix.socket``: another daemon on this machine;
- ``https://address:port``: a standalone daemon, through labgpu's client certificate
  (``state_dir/certs/client.crt``) with the daemon's certificate pinned
  (``state_dir/certs/hosts/NAME.crt``);
- ``https://address:port?cluster=CLUSTER&target=MEMBER``: one member of a cluster, reached at that
  address; requests that place something (a new container, the hardware listing) name the member as
  the runtime's own ``target``.

Building a client does no I/O; the registry is shared by every copy of a :class:`Services`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from labgpu.errors import ConfigError
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint

if TYPE_CHECKING:
    from collections.abc import Callable

    from labgpu.settings import Settings
    from labgpu.store.models import Host


@dataclass(frozen=True)
class HostAddress:
    """A host row's ``url``, taken apart."""

    base: str  # unix:///path or https://address:port, without labgpu's own query
    cluster: str | None = None
    target: str | None = None

    @property
    def is_https(self) -> bool:
        return self.base.startswith("https://")

    @property
    def hostname(self) -> str | None:
        return urlparse(self.base).hostname if self.is_https else None

    def to_url(self) -> str:
        query = {k: v for k, v in (("cluster", self.cluster), ("target", self.target)) if v}
        return self.base + ("?" + urlencode(query) if query else "")


def parse_host_url(url: str) -> HostAddress:
    """Split a stored host URL into the daemon's address and the cluster/member it names."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    base = urlunparse(parsed._replace(query="", fragment="")).rstrip("/")
    cluster = query.get("cluster", [""])[0] or None
    target = query.get("target", [""])[0] or None
    return HostAddress(base=base, cluster=cluster, target=target)


def certs_dir(settings: Settings) -> Path:
    return settings.state_dir / "certs"


def client_cert_paths(settings: Settings) -> tuple[Path, Path]:
    """labgpu's own client certificate and key (made once by `host add`)."""
    folder = certs_dir(settings)
    return folder / "client.crt", folder / "client.key"


def server_cert_path(settings: Settings, host_name: str) -> Path:
    """Where the pinned certificate of ``host_name``'s daemon is kept."""
    return certs_dir(settings) / "hosts" / f"{host_name}.crt"


def endpoint_for(settings: Settings, host_name: str, url: str) -> tuple[Endpoint, str | None]:
    """The endpoint and cluster target of a host row. Raises ConfigError for a URL labgpu cannot use."""
    address = parse_host_url(url)
    if address.is_https:
        cert, key = client_cert_paths(settings)
        pinned = server_cert_path(settings, host_name)
        if not pinned.is_file():
            raise ConfigError(
                f"host {host_name}: its pinned certificate {pinned} is missing",
                hint=f"add the host again: labgpu host rm {host_name} && labgpu host add {host_name} URL",
            )
        endpoint = Endpoint.parse(address.base, client_cert=cert, client_key=key, server_cert=pinned)
    else:
        endpoint = Endpoint.parse(address.base)
    return endpoint, address.target


class HostClients:
    """Runtime clients by host, made on first use and cached (thread-safe: the inventory asks all
    hosts at once). ``factory`` builds one; tests give a fake that subclasses RuntimeClient."""

    def __init__(self, factory: Callable[[Settings, Host], RuntimeClient] | None = None) -> None:
        self._factory = factory or default_client
        self._clients: dict[tuple[int, str | None], RuntimeClient] = {}
        self._lock = threading.Lock()

    def get(self, settings: Settings, host: Host) -> RuntimeClient:
        key = (host.id, host.url)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._factory(settings, host)
                self._clients[key] = client
            return client

    def forget(self, host_id: int) -> None:
        with self._lock:
            for key in [k for k in self._clients if k[0] == host_id]:
                self._clients.pop(key).close()

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def default_client(settings: Settings, host: Host) -> RuntimeClient:
    """A client for a host row (no I/O)."""
    assert host.url is not None
    endpoint, target = endpoint_for(settings, host.name, host.url)
    return RuntimeClient(
        endpoint,
        timeout=settings.runtime_timeout,
        operation_timeout=settings.operation_timeout,
        project=settings.runtime_project,
        target=target,
    )
