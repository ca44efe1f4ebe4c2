"""What every CLI command gets: settings, runtime client and store, built lazily.

Nothing is built before a command needs it, so `labgpu --help` works without a
config file, a database or a daemon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from labgpu.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from labgpu.runtime.client import RuntimeClient
    from labgpu.services.context import Services


@dataclass
class CliContext:
    config_path: Path | None = None
    console: Console = field(default_factory=Console)
    _settings: Settings | None = None
    _runtime: RuntimeClient | None = None
    _engine: Engine | None = None
    _services: Services | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def runtime(self) -> RuntimeClient:
        if self._runtime is None:
            from labgpu.runtime.client import RuntimeClient

            self._runtime = RuntimeClient.from_settings(self.settings)
        return self._runtime

    @property
    def engine(self) -> Engine:
        """The store, migrated to the current schema (idempotent, cheap when nothing is to do)."""
        if self._engine is None:
            from labgpu.store.db import create_engine_for
            from labgpu.store.migrate import upgrade

            engine = create_engine_for(self.settings)
            upgrade(self.settings, engine=engine)
            self._engine = engine
        return self._engine

    @property
    def services(self) -> Services:
        if self._services is None:
            from labgpu.services.context import Services
            from labgpu.store.db import session_factory

            self._services = Services(
                settings=self.settings, runtime=self.runtime, sessions=session_factory(self.engine)
            )
        return self._services

    @property
    def store_services(self) -> Services:
        """The services for commands that need the store only (portal accounts): they work where no
        LXD/Incus daemon is installed or running. The runtime client then points at the first usual
        socket and fails only if something does call the daemon."""
        from labgpu.runtime.errors import RuntimeUnavailable

        try:
            return self.services
        except RuntimeUnavailable:
            from labgpu.runtime.client import RuntimeClient
            from labgpu.runtime.endpoint import Endpoint, candidate_sockets

            self._runtime = RuntimeClient(Endpoint.unix(candidate_sockets()[0]))  # closed with the context
            return self.services

    def close(self) -> None:
        if self._services is not None:
            self._services.clients.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


def get_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliContext):  # a sub-app invoked on its own (tests)
        obj = CliContext()
        ctx.find_root().obj = obj
    return obj


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, no colours, no wrapping."""
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
