"""Alembic environment for labgpu's store.

labgpu runs migrations through :func:`labgpu.store.migrate.upgrade`, which hands a connection (already in
a transaction, already locked) to this script in ``config.attributes["connection"]``. Without one (a
developer running Alembic by hand, see README.md here) an engine is built from labgpu's settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from labgpu.store import (
    models_my_templates,  # noqa: F401 - its table, on Base.metadata
    models_notify,  # noqa: F401 - its tables, on Base.metadata
    models_selfservice,  # noqa: F401 - its table, on Base.metadata
    models_signon,  # noqa: F401 - its table, on Base.metadata
)
from labgpu.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: let autogenerate write batch operations there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    from labgpu.settings import load_settings
    from labgpu.store.db import create_engine_for

    engine = create_engine_for(load_settings())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("labgpu's migrations run against a database; offline (--sql) mode is not supported")
run_online()
