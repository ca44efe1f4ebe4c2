"""Hosts known to the store. For now: the local daemon, registered on first use."""

from __future__ import annotations

import socket

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labgpu.errors import Conflict
from labgpu.runtime.client import RuntimeClient
from labgpu.services.clients import parse_host_url
from labgpu.settings import Settings
from labgpu.store.models import Host, HostKind


def local_host(session: Session, runtime: RuntimeClient) -> Host:
    """The store's row for the daemon labgpu talks to by default, created when missing.

    Several requests may meet an empty store together (the portal provisions a class's applications in
    parallel): the row is added under a savepoint, so the one that loses the race on the unique name
    reads the winner's row without spoiling the caller's transaction. (Not in a transaction of its own:
    a caller that already holds SQLite's write lock, as the bookings lock does, would wait for itself.)"""
    found = recorded_local_host(session)
    if found is not None:
        return found
    info = runtime.server()
    name = (info.server_name or socket.gethostname() or "local")[:63]
    try:
        with session.begin_nested():
            session.add(Host(name=name, url=None, kind=HostKind(info.kind), public_address=None))
    except IntegrityError:
        pass  # made meanwhile by someone else (or the name is another host's: below)
    found = recorded_local_host(session)
    if found is None:  # the name is taken by a host that is not the local daemon
        raise Conflict(
            f"a host named {name} is already in the store for another daemon",
            hint="rename that host (labgpu host rm / add) or set the local daemon's server name",
        )
    return found


def recorded_local_host(session: Session) -> Host | None:
    """The local daemon's host row, or None while it is not recorded yet (:func:`local_host` records it)."""
    return session.scalars(select(Host).where(Host.url.is_(None)).order_by(Host.id)).first()


def public_address(host: Host, settings: Settings) -> str:
    """The address members connect to for ``host``: its own public address; for a daemon on another
    machine, the address labgpu reaches it at; for this machine, the settings' public address."""
    if host.public_address:
        return host.public_address
    if host.url is not None:
        hostname = parse_host_url(host.url).hostname
        if hostname:
            return hostname
    if settings.public_address:
        return settings.public_address
    if settings.listen_address not in ("0.0.0.0", "::", ""):  # noqa: S104 - a comparison, binds nothing
        return settings.listen_address
    return socket.getfqdn()
