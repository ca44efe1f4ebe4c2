"""The GPU samples' transaction (store.replaceable_writes): its commit does not wait for the disk, it
commits or rolls back like any other, and the connection goes back to the pool as durable as it came."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from labgpu.store import replaceable_writes
from labgpu.store.models import JobState
from tests.unit.gpu_store import GpuStore


def _level(conn) -> str:  # type: ignore[no-untyped-def]
    if conn.dialect.name == "sqlite":
        return str(conn.exec_driver_sql("PRAGMA synchronous").scalar())
    return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())


def test_samples_commit_without_waiting_and_the_pool_gets_its_durable_connection_back(
    gpu_store: GpuStore,
) -> None:
    engine = gpu_store.engine
    with engine.connect() as conn:
        durable = _level(conn)
    assert durable in ("2", "on")  # SQLite FULL; PostgreSQL on: every other write waits for the disk
    with replaceable_writes(engine) as conn:
        assert _level(conn) in ("1", "off")  # SQLite NORMAL (WAL); PostgreSQL off, for this transaction
        conn.execute(insert(JobState), [{"name": "sample:a"}, {"name": "sample:b"}])
    with pytest.raises(RuntimeError), replaceable_writes(engine) as conn:
        conn.execute(insert(JobState), [{"name": "sample:c"}])
        raise RuntimeError("the run failed half-way")
    with engine.connect() as conn:
        assert _level(conn) == durable
        names = conn.execute(select(JobState.name).where(JobState.name.startswith("sample:"))).scalars()
        assert sorted(names) == ["sample:a", "sample:b"]  # committed; the failed one rolled back
