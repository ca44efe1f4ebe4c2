"""The store: desired state in SQL (SQLite by default, PostgreSQL by URL), schema by Alembic.

Nothing is built at import. Typical use::

    engine = create_engine_for(settings)
    upgrade(settings, engine=engine)          # or require_current(engine)
    Session = session_factory(engine)
    with Session.begin() as session:
        session.add(Member(name="alice", uid=200001))
"""

from labgpu.store import (
    models_my_templates,  # noqa: F401 - registers its table on Base.metadata
    models_notify,  # noqa: F401 - registers its tables on Base.metadata
    models_selfservice,  # noqa: F401 - registers its table on Base.metadata
    models_signon,  # noqa: F401 - registers its table on Base.metadata
    usage_models,  # noqa: F401  (its tables in Base.metadata)
)
from labgpu.store.db import (
    connect,
    create_engine_for,
    database_url,
    describe_url,
    replaceable_writes,
    session_factory,
    unavailable,
    violated_constraint,
)
from labgpu.store.migrate import (
    MigrationError,
    UpgradeResult,
    current_revision,
    head_revision,
    require_current,
    upgrade,
)

__all__ = [
    "MigrationError",
    "UpgradeResult",
    "connect",
    "create_engine_for",
    "current_revision",
    "database_url",
    "describe_url",
    "head_revision",
    "replaceable_writes",
    "require_current",
    "session_factory",
    "unavailable",
    "upgrade",
    "violated_constraint",
]
