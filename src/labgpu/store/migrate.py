"""Schema migrations, run by Alembic from inside the package (no alembic.ini needed).

The Alembic environment and the revisions live in ``labgpu/store/migrations/`` and ship in the wheel.
:func:`upgrade` is what `labgpu db upgrade` and the start-up of `labgpu serve` call. It is safe to run
from several processes at once: the upgrade holds a lock (an advisory lock on PostgreSQL, the write lock on
SQLite) and runs in one transaction, so a second runner waits and then finds nothing to do.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from labgpu.errors import LabgpuError
from labgpu.settings import Settings
from labgpu.store.db import connect, create_engine_for, describe_url, unavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Key of the PostgreSQL advisory lock that serialises upgrades ("labgpu" in ASCII).
_PG_LOCK_KEY = 0x6C6162677075


class MigrationError(LabgpuError):
    """The schema cannot be brought to (or is not at) the version this labgpu needs."""

    status = 500
    reason = "migration"


@dataclass(frozen=True)
class UpgradeResult:
    """What :func:`upgrade` did: the revision before and after. Equal when there was nothing to do."""

    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the shipped migrations; with ``connection``, env.py migrates through it.

    Without one, env.py builds an engine from labgpu's settings (for developers running Alembic by hand,
    see migrations/README.md).
    """
    cfg = Config()
    # configparser interpolation: a '%' in the install path must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache  # the shipped revisions do not change while labgpu runs
def head_revision() -> str:
    """The newest revision this version of labgpu knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise MigrationError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(settings: Settings, *, engine: Engine | None = None) -> str | None:
    """The revision the database is at; None for a database labgpu has never upgraded.

    Raises Unavailable when the database cannot be reached, ConfigError for bad settings.
    """
    with _engine(settings, engine) as eng, connect(eng) as conn:
        try:
            return _current(conn)
        except SQLAlchemyError as exc:
            raise _failed("reading the schema revision of", eng, exc) from exc


def upgrade(settings: Settings, *, engine: Engine | None = None) -> UpgradeResult:
    """Bring the database's schema to this labgpu's head revision. A no-op when it is there already.

    Uses ``engine`` when given (it is left open), else builds one from ``settings`` and disposes of it.
    Raises Unavailable when the database cannot be reached, MigrationError when the database was
    migrated by a newer labgpu or a migration fails (nothing is half-applied on PostgreSQL; on SQLite the
    upgrade also runs in one transaction).
    """
    with _engine(settings, engine) as eng, connect(eng) as conn:
        try:
            return _upgrade(conn)
        except LabgpuError:
            raise
        except CommandError as exc:  # Alembic's own complaints, e.g. a broken revision chain
            message = f"upgrading the database {describe_url(eng.url)} failed: {exc}"
            raise MigrationError(message.splitlines()[0], log_message=message) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise unavailable(exc, eng.url) from exc
            raise _failed("upgrading", eng, exc) from exc
        except SQLAlchemyError as exc:
            raise _failed("upgrading", eng, exc) from exc


def require_current(engine: Engine) -> None:
    """Raise MigrationError unless the database is at the head revision (commands check this first)."""
    head = head_revision()
    with connect(engine) as conn:
        current = _current(conn)
    if current != head:
        where = describe_url(engine.url)
        raise MigrationError(
            f"the database {where} is at schema revision {current or 'none'}, this labgpu needs {head}: "
            "run `labgpu db upgrade`"
        )


# ---------------------------------------------------------------------------------------------------------


@contextmanager
def _engine(settings: Settings, engine: Engine | None) -> Iterator[Engine]:
    """The caller's engine, or one built for the call and disposed of afterwards."""
    if engine is not None:
        yield engine
        return
    own = create_engine_for(settings)
    try:
        yield own
    finally:
        own.dispose()


def _current(conn: Connection) -> str | None:
    rev = MigrationContext.configure(conn).get_current_revision()
    if conn.in_transaction():
        conn.rollback()  # end the read's implicit transaction; it must not hold locks
    return rev


def _upgrade(conn: Connection) -> UpgradeResult:
    head = head_revision()
    # The common case (every command start-up): already there. Revisions only move forward, so this
    # answer needs no lock, and no writer is held up.
    if _current(conn) == head:
        return UpgradeResult(before=head, after=head)
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        # Must be off while tables are rebuilt (SQLite's batch ALTER drops and re-creates tables, and a
        # DROP TABLE with foreign keys on deletes the rows that reference it). Checked again below.
        # Only takes effect outside a transaction, so it comes before BEGIN.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        if sqlite:
            # Take the write lock now: a concurrent upgrade waits (busy timeout) instead of racing.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
        before = MigrationContext.configure(conn).get_current_revision()
        _check_known(before)
        if before != head:
            # The connection is in a transaction, so env.py's migrations run inside it.
            command.upgrade(alembic_config(conn), "head")
            if sqlite:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise MigrationError(
                        f"the upgrade would leave {len(broken)} rows with dangling references "
                        f"(first: table {broken[0][0]}); nothing was changed"
                    )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    return UpgradeResult(before=before, after=head)


def _check_known(revision: str | None) -> None:
    if revision is None:
        return
    script = ScriptDirectory.from_config(alembic_config())
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise MigrationError(
            f"the database is at schema revision {revision}, which this labgpu does not know "
            "(a newer labgpu upgraded it)",
            hint="run the newer labgpu, or restore the backup taken before it upgraded the database",
        )


def _failed(doing: str, engine: Engine, exc: SQLAlchemyError) -> MigrationError:
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    message = f"{doing} the database {describe_url(engine.url)} failed: {first}"
    return MigrationError(message, log_message=f"{message} ({exc!r})")
