"""A real store (SQLite, and PostgreSQL when LABGPU_TEST_POSTGRES_URL is set) with a host in booked mode
and three members, for the booking, job and idle service tests. No daemon: the runtime client points
at a socket that does not exist, so anything that would reach the daemon fails as "unavailable"."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.context import Actor, Services
from labgpu.settings import Settings
from labgpu.store import create_engine_for, session_factory, upgrade
from labgpu.store.models import Host, HostKind, Member
from tests.postgres import empty_postgres

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, on a slot boundary
H = timedelta(hours=1)
MIN = timedelta(minutes=1)
GPUS = {0: "0000:1b:00.0", 1: "0000:3b:00.0", 2: "0000:5e:00.0", 3: "0000:86:00.0"}
MEMBERS = ("alice", "bob", "carol")


@dataclass
class GpuStore:
    """Services over a fresh store; ``svc(...)`` gives services with other settings or another actor."""

    settings: Settings
    engine: sa.Engine
    backend: str

    def svc(self, *, actor: Actor | None = None, **overrides: Any) -> Services:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        runtime = RuntimeClient(Endpoint.unix(Path("/nonexistent/labgpu-test.socket")), timeout=2)
        return Services(
            settings=settings,
            runtime=runtime,
            sessions=session_factory(self.engine),
            actor=actor or Actor("admin@cli"),
        )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def gpu_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GpuStore]:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    settings = Settings(
        state_dir=tmp_path / "state",
        database_url=url,
        booking_advance_days=14,
        booking_min_minutes=30,
        booking_max_hours=72,
    )
    engine = create_engine_for(settings)
    upgrade(settings, engine=engine)
    with session_factory(engine).begin() as session:
        host = Host(name="gpu1", url=None, kind=HostKind.LXD, gpu_mode="booked")
        session.add(host)
        session.flush()
        for uid, name in enumerate(MEMBERS, start=70001):
            session.add(
                Member(
                    name=name,
                    uid=uid,
                    host_id=host.id,
                    container=name,
                    email=f"{name}@lab.test",
                    gpu_spec="none",
                )
            )
    yield GpuStore(settings=settings, engine=engine, backend=request.param)
    engine.dispose()
