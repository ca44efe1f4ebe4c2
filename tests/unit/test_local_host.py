"""The local daemon's host row, made on first use: several requests meeting an empty store together
(the portal provisioning a class's applications in parallel) all get the same row, on real SQLite and
PostgreSQL. The daemon is a stand-in that only answers its name (the real one: every integration test)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from labgpu.errors import Conflict
from labgpu.services.hosts._records import local_host
from labgpu.settings import Settings
from labgpu.store import create_engine_for, session_factory, upgrade
from labgpu.store.models import Host, HostKind
from tests.postgres import empty_postgres


class DaemonName:
    """Stands in for the runtime client: answers GET /1.0 with a server name, slowly (as over a network)."""

    def server(self) -> SimpleNamespace:
        threading.Event().wait(0.05)
        return SimpleNamespace(server_name="gpu1", kind="incus")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    settings = Settings(state_dir=tmp_path / "state", database_url=url)
    engine = create_engine_for(settings)
    upgrade(settings, engine=engine)
    yield session_factory(engine)
    engine.dispose()


def test_concurrent_first_uses_all_get_the_one_row(sessions) -> None:  # type: ignore[no-untyped-def]
    barrier = threading.Barrier(8)
    ids: list[int] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            barrier.wait()
            with sessions.begin() as session:
                ids.append(local_host(session, DaemonName()).id)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(ids) == 8 and len(set(ids)) == 1
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Host)) == 1


def test_a_remote_host_with_the_daemons_name_is_a_clear_conflict(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        session.add(Host(name="gpu1", url="https://10.0.0.2:8443", kind=HostKind.INCUS))
    with (
        sessions.begin() as session,
        pytest.raises(Conflict, match="already in the store for another daemon"),
    ):
        local_host(session, DaemonName())  # type: ignore[arg-type]


def test_made_inside_a_transaction_that_already_holds_the_write_lock(sessions) -> None:  # type: ignore[no-untyped-def]
    # As `gpu mode` does under the bookings lock: the caller holds the write lock when the row is made.
    with sessions.begin() as session:
        session.add(Host(name="gpu2", url="https://10.0.0.2:8443", kind=HostKind.INCUS))
        session.flush()
        assert local_host(session, DaemonName()).name == "gpu1"  # type: ignore[arg-type]
    with sessions.begin() as session:
        assert sorted(session.scalars(select(Host.name))) == ["gpu1", "gpu2"]
