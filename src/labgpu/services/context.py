"""What every use case gets: settings, the runtime, the store and who is acting."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from labgpu.runtime.client import RuntimeClient
from labgpu.services.clients import HostClients
from labgpu.settings import Settings
from labgpu.store.db import unavailable
from labgpu.store.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, and from where (for the audit log)."""

    name: str
    source_address: str | None = None
    is_admin: bool = True

    @classmethod
    def cli(cls) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        sudo_user = os.environ.get("SUDO_USER")
        who = f"{sudo_user}(sudo)" if sudo_user and user == "root" else user
        return cls(name=f"{who}@cli")


SYSTEM = Actor("system")


@dataclass
class Services:
    """The dependencies of the use cases, built once per CLI call or web app."""

    settings: Settings
    runtime: RuntimeClient
    sessions: sessionmaker[Session]
    actor: Actor = field(default_factory=Actor.cli)
    # Clients for the other hosts (services.host_clients.runtime_for), shared by copies of this object.
    clients: HostClients = field(default_factory=HostClients)

    @property
    def engine(self) -> Engine:
        """The store's engine, the one ``sessions`` is bound to (to dispose of it when the owner is done).

        Raises TypeError when ``sessions`` is not bound to an engine (a programming error)."""
        bind = self.sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("Services.sessions is not bound to an engine")
        return bind

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on error.

        Raises Unavailable (one line) when the store cannot be reached or written, e.g. on a full disk."""
        try:
            with self.sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            bind = self.sessions.kw.get("bind")
            raise unavailable(exc, bind.url if bind is not None else "sqlite://", doing="write") from exc

    def audit(self, session: Session, action: str, target: str | None, **detail: Any) -> None:
        """Record a state change by a person (never edited afterwards)."""
        session.add(
            AuditEvent(
                actor=self.actor.name,
                action=action,
                target=target,
                detail=detail or None,
                source_address=self.actor.source_address,
            )
        )
