"""PostgreSQL for the tests: fresh databases on the server that LABGPU_TEST_POSTGRES_URL names
(scripts/start-postgres prints one), dropped afterwards.

Without that variable the PostgreSQL variants are skipped, or fail when LABGPU_REQUIRE_POSTGRES=1 (CI sets
it, so that they cannot be skipped there). ``postgres_url`` is a fixture for every test (tests/conftest.py);
a test that needs an empty schema calls :func:`empty_postgres` first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url


def postgres_server() -> str:
    """The server's URL; skips the test (or fails it under LABGPU_REQUIRE_POSTGRES=1) when there is none."""
    base = os.environ.get("LABGPU_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("LABGPU_REQUIRE_POSTGRES") == "1":
            pytest.fail(
                "LABGPU_REQUIRE_POSTGRES=1 but LABGPU_TEST_POSTGRES_URL is not set (scripts/start-postgres)"
            )
        pytest.skip("LABGPU_TEST_POSTGRES_URL is not set (scripts/start-postgres prints one)")
    return base


@contextmanager
def fresh_databases(count: int = 1, *, prefix: str = "labgpu_test") -> Iterator[list[str]]:
    """``count`` new databases on the server, as URLs; dropped on the way out (connections forced off)."""
    base = postgres_server()
    names = [f"{prefix}_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield [make_url(base).set(database=n).render_as_string(hide_password=False) for n in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with fresh_databases() as (url,):
        yield url


def empty_postgres(url: str) -> None:
    """Drop everything in the database's public schema (each test starts from an empty store)."""
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        eng.dispose()
