"""Engines and sessions for the store: SQLite by default, PostgreSQL by URL.

Nothing is built at import: callers make an engine with :func:`create_engine_for` and sessions with
:func:`session_factory`. Connection failures become :class:`~labgpu.errors.Unavailable` with one line
naming the server (never the password) through :func:`connect` or :func:`unavailable`.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from labgpu.errors import ConfigError, Unavailable
from labgpu.settings import Settings

# How long a SQLite writer waits for another one to finish before giving up ("database is locked").
SQLITE_BUSY_TIMEOUT_MS = 30_000
# How long to wait for a PostgreSQL server that does not answer at all (a firewalled host).
POSTGRES_CONNECT_TIMEOUT_S = 10

_URL_EXAMPLES = "sqlite:////var/lib/labgpu/labgpu.db or postgresql+psycopg://user:password@host/dbname"


def database_url(settings: Settings) -> URL:
    """The store's URL from the settings, checked and with the PostgreSQL driver filled in.

    Raises ConfigError for a URL that is not one or names a database labgpu does not support.
    """
    try:
        url = make_url(settings.effective_database_url)
    except ArgumentError:
        # The value may hold a password: do not repeat it.
        raise ConfigError(f"database_url is not a database URL; expected e.g. {_URL_EXAMPLES}") from None
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql") and url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")  # the driver labgpu ships with, not psycopg2
    elif backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database_url uses {backend!r}; labgpu supports SQLite and PostgreSQL ({_URL_EXAMPLES})"
        )
    return url


def describe_url(url: URL | str) -> str:
    """The URL as it may be shown to people and logs: the password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database or another backend."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def create_engine_for(settings: Settings) -> Engine:
    """An engine for the store the settings name. Does not connect yet.

    SQLite: creates the folder of the database file (the state dir by default), turns foreign keys on,
    uses WAL journaling (readers do not block the writer) and waits up to SQLITE_BUSY_TIMEOUT_MS for a lock.
    PostgreSQL: pings pooled connections before use and gives up connecting after a timeout.

    Raises ConfigError for a bad URL, a missing driver or a state dir that cannot be created.
    """
    url = database_url(settings)
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            is_state_dir = settings.database_url is None
            _ensure_folder(path.parent, what="state_dir" if is_state_dir else "the SQLite database's folder")
        engine = _create(url)
        _configure_sqlite(engine, in_memory=path is None)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    if "application_name" not in url.query:
        connect_args["application_name"] = "labgpu"
    return _create(url, pool_pre_ping=True, connect_args=connect_args)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``. Objects stay readable after commit (the reconciler uses them)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """A connection to the store, or Unavailable with one line saying which server did not answer."""
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        raise unavailable(exc, engine.url) from exc
    with conn:
        yield conn


@contextmanager
def replaceable_writes(engine: Engine) -> Iterator[Connection]:
    """One transaction (committed when the block ends) for frequent writes that the next ones make
    good, such as the GPU samples written every minute: its commit does not wait for the disk.

    SQLite (WAL): ``synchronous=NORMAL`` for this transaction only (the connection gets its own level
    back before it returns to the pool). PostgreSQL: ``SET LOCAL synchronous_commit TO OFF``. Either
    way a crash of labgpu loses nothing and the database is never corrupted; only a power cut or an
    operating-system crash within about a second of the commit may lose this transaction (and, on
    SQLite, whatever other transaction the same WAL sync would have carried). Every other write of the
    store keeps waiting for the disk. Raises Unavailable when the store cannot be reached or written."""
    with connect(engine) as conn:
        sqlite = conn.dialect.name == "sqlite"
        level = None
        try:
            if sqlite:
                # A PRAGMA outside a transaction (pysqlite begins one only before a write): SQLite
                # refuses to change the level inside one.
                level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
                conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
                conn.commit()
            with conn.begin():
                if not sqlite:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield conn
        except OperationalError as exc:
            raise unavailable(exc, engine.url, doing="write") from exc
        finally:
            if level is not None:
                try:
                    conn.exec_driver_sql(f"PRAGMA synchronous={int(level)}")
                    conn.commit()
                except DBAPIError:
                    conn.invalidate()  # never hand a less durable connection to the next writer


def unavailable(exc: BaseException, url: URL | str, *, doing: str = "open") -> Unavailable:
    """The Unavailable error for a failed connection to ``url`` (or a write: ``doing="write"``): names
    the server, not the password; for SQLite on a full disk, says so and how much is free."""
    url = make_url(url)
    reason = _reason(exc)
    path = sqlite_path(url)
    if url.get_backend_name() == "sqlite":
        where = f"the SQLite database {path}" if path else "the in-memory SQLite database"
        message = f"cannot {doing} {where}: {reason}{_disk_note(path, reason)}"
    else:
        server = f"{url.host or 'localhost'}:{url.port or 5432}"
        message = (
            f"cannot connect to PostgreSQL at {server} (database {url.database or '?'}, "
            f"user {url.username or '?'}): {reason}"
        )
    return Unavailable(message, log_message=f"{message} [{describe_url(url)}] {exc!r}")


_DISK_ERRORS = ("disk i/o error", "database or disk is full", "no space left")


def _disk_note(path: Path | None, reason: str) -> str:
    """Why SQLite says 'disk I/O error' most often: the state dir's disk is full."""
    if path is None or not any(e in reason.lower() for e in _DISK_ERRORS):
        return ""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return ""
    if free > 1024 * 1024:
        return ""
    return (
        f" ({path.parent} has {free} bytes free: the disk is full; free some space, then try again;"
        " the change was not saved)"
    )


def violated_constraint(exc: IntegrityError) -> str | None:
    """The name of the constraint an INSERT/UPDATE broke, on SQLite and PostgreSQL alike.

    Services use it to turn a clash into a Conflict that says what clashed, e.g.
    ``"uq_port_maps_host_port"`` or ``"uq_members_name"``. None when the backend does not say (a foreign
    key or NOT NULL failure on SQLite).
    """
    orig = exc.orig
    diag = getattr(orig, "diag", None)  # psycopg
    name = getattr(diag, "constraint_name", None)
    if isinstance(name, str):
        return name
    text = str(orig)
    m = re.search(r"CHECK constraint failed: (\w+)", text)
    if m:
        return m.group(1)
    m = re.search(r"UNIQUE constraint failed: (.+)$", text, re.MULTILINE)
    if m:
        return _unique_constraint_by_columns(m.group(1))
    return None


def _unique_constraint_by_columns(columns_text: str) -> str | None:
    # SQLite says "UNIQUE constraint failed: t.a, t.b"; find the constraint on exactly those columns.
    from labgpu.store.models import Base

    pairs = [c.strip().split(".", 1) for c in columns_text.split(",")]
    if not pairs or any(len(p) != 2 for p in pairs):
        return None
    tables = {t for t, _ in pairs}
    if len(tables) != 1:
        return None
    table = Base.metadata.tables.get(tables.pop())
    if table is None:
        return None
    wanted = {c for _, c in pairs}
    for constraint in table.constraints:
        if (
            isinstance(constraint, sa.UniqueConstraint | sa.PrimaryKeyConstraint)
            and {c.name for c in constraint.columns} == wanted
            and isinstance(constraint.name, str)
        ):
            return str(constraint.name)
    return None


def _reason(exc: BaseException) -> str:
    """The driver's own words, cut to one line: 'connection refused', 'password authentication failed...'."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    if not lines:
        return type(orig).__name__
    line = lines[0]
    # psycopg: 'connection failed: connection to server at "h", port 5432 failed: FATAL:  <reason>'
    if "failed: " in line:
        line = line.rsplit("failed: ", 1)[1]
    line = re.sub(r"^(FATAL|ERROR):\s*", "", line).strip()
    return line[:1].lower() + line[1:]


def _create(url: URL, **kwargs: Any) -> Engine:
    try:
        return sa.create_engine(url, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        if url.get_backend_name() == "postgresql":
            raise ConfigError(
                f"the PostgreSQL driver for {url.drivername} is not installed",
                hint="install psycopg 3 (labgpu's 'postgres' extra) and use a postgresql+psycopg:// URL",
            ) from exc
        raise ConfigError(f"cannot use database driver {url.drivername}: {exc}") from exc
    except ArgumentError as exc:
        raise ConfigError(f"database_url {describe_url(url)} is not usable: {exc}") from exc


def _ensure_folder(folder: Path, *, what: str) -> None:
    if folder.is_dir():
        return
    try:
        # Only the labgpu service reads its state (the database, the secret key).
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"{what} {folder} does not exist and cannot be created: {reason.lower()}",
            hint="set LABGPU_STATE_DIR (or database_url) to a folder labgpu can write, or run as root",
        ) from None


def _configure_sqlite(engine: Engine, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # SQLite leaves foreign keys off unless each connection asks.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if not in_memory:
                _use_wal(cursor)
        finally:
            cursor.close()


def _use_wal(cursor: Any) -> None:
    # WAL is a property of the database file, so this only changes something the first time. Switching
    # needs an exclusive lock and does not wait on the busy timeout: when two processes open a new
    # database together, one of them is told "locked" and finds WAL already on after a short wait.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            # Answers the mode now in force: "wal", or another one where the file system allows no WAL
            # (then SQLite's default journal is used, which is correct, only slower with many readers).
            cursor.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
