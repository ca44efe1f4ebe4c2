"""Hosts known to the store. For now: the local daemon, registered on first use."""

from __future__ import annotations

import socket

from sqlalchemy import select
from sqlalchemy.orm import Session

from labgpu.runtime.client import RuntimeClient
from labgpu.settings import Settings
from labgpu.store.models import Host, HostKind


def local_host(session: Session, runtime: RuntimeClient) -> Host:
    """The store's row for the daemon labgpu talks to by default, created when missing."""
    host = session.scalars(select(Host).where(Host.url.is_(None)).order_by(Host.id)).first()
    if host is not None:
        return host
    info = runtime.server()
    name = info.server_name or socket.gethostname() or "local"
    host = Host(name=name[:63], url=None, kind=HostKind(info.kind), public_address=None)
    session.add(host)
    session.flush()
    return host


def public_address(host: Host, settings: Settings) -> str:
    """The address members connect to for ``host``: its own public address; for a daemon on another
    machine, the address labgpu reaches it at; for this machine, the settings' public address."""
    if host.public_address:
        return host.public_address
    if host.url is not None:
        from labgpu.services.host_clients import parse_host_url

        hostname = parse_host_url(host.url).hostname
        if hostname:
            return hostname
    if settings.public_address:
        return settings.public_address
    if settings.listen_address not in ("0.0.0.0", "::", ""):  # noqa: S104 - a comparison, binds nothing
        return settings.listen_address
    return socket.getfqdn()
