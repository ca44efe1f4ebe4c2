"""The store on a real database: SQLite always, PostgreSQL when LABGPU_TEST_POSTGRES_URL is set.

Every test taking ``settings`` (or ``engine``/``sessions``) runs once per backend, each time on an empty
database. PostgreSQL runs get a fresh, uniquely named database for the session, dropped at the end.
Set LABGPU_REQUIRE_POSTGRES=1 (CI does) to make a missing LABGPU_TEST_POSTGRES_URL an error, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from labgpu.cli.main import run
from labgpu.errors import ConfigError, Unavailable
from labgpu.settings import Settings
from labgpu.store import (
    MigrationError,
    create_engine_for,
    current_revision,
    database_url,
    head_revision,
    require_current,
    session_factory,
    upgrade,
    violated_constraint,
)
from labgpu.store.models import (
    AuditEvent,
    Base,
    Host,
    HostKind,
    Member,
    PortMap,
    PortPurpose,
    Role,
    Share,
    SshKey,
)
from tests.postgres import empty_postgres

TABLES = {"hosts", "members", "port_maps", "shares", "member_shares", "ssh_keys", "audit_events"}
# Nothing listens on port 1; the connection is refused at once.
UNREACHABLE_URL = "postgresql+psycopg://labgpu:s3cret-pw@127.0.0.1:1/labgpu"


# Backends ----------------------------------------------------------------------------------------------


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings naming an empty database: the default SQLite file in a new state dir, or PostgreSQL."""
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    return Settings(state_dir=tmp_path / "state", database_url=url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = create_engine_for(settings)
    upgrade(settings, engine=eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def _host(session: Session, name: str = "gpu1") -> Host:
    host = Host(name=name, kind=HostKind.LXD)
    session.add(host)
    session.flush()
    return host


def _member(session: Session, name: str, uid: int, host: Host | None = None) -> Member:
    member = Member(name=name, uid=uid, host=host)
    session.add(member)
    session.flush()
    return member


def _port(
    member: Member, host: Host, port: int, purpose: PortPurpose = PortPurpose.SSH, **kw: str
) -> PortMap:
    return PortMap(
        member=member,
        host=host,
        listen_address=kw.get("listen_address", "0.0.0.0"),
        host_port=port,
        container_port=22,
        purpose=purpose,
    )


# Migrations --------------------------------------------------------------------------------------------


def test_upgrade_creates_the_schema_and_a_second_upgrade_changes_nothing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the migrations are found from the package, not the working folder
    assert current_revision(settings) is None

    first = upgrade(settings)
    assert (first.before, first.after, first.changed) == (None, head_revision(), True)
    eng = create_engine_for(settings)
    try:
        assert set(sa.inspect(eng).get_table_names()) >= TABLES
    finally:
        eng.dispose()

    second = upgrade(settings)
    assert (second.before, second.after, second.changed) == (head_revision(), head_revision(), False)
    assert current_revision(settings) == head_revision()


def test_the_models_match_the_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_the_database_names_its_constraints_as_the_models_do(engine: Engine) -> None:
    # compare_metadata does not look at constraint names or CHECKs; services rely on both
    # (violated_constraint), so compare them here.
    def names(kind: str, tables: dict[str, list[str]]) -> set[tuple[str, str]]:
        return {(kind, f"{t}.{n}") for t, ns in tables.items() for n in ns}

    inspector = sa.inspect(engine)
    in_db: set[tuple[str, str]] = set()
    in_models: set[tuple[str, str]] = set()
    for table in Base.metadata.sorted_tables:
        t = table.name
        in_db |= names("uq", {t: [c["name"] or "?" for c in inspector.get_unique_constraints(t)]})
        in_db |= names("ck", {t: [c["name"] or "?" for c in inspector.get_check_constraints(t)]})
        in_db |= names("fk", {t: [c["name"] or "?" for c in inspector.get_foreign_keys(t)]})
        in_db |= names("ix", {t: [i["name"] or "?" for i in inspector.get_indexes(t) if not i.get("unique")]})
        for c in table.constraints:
            kind = {sa.UniqueConstraint: "uq", sa.CheckConstraint: "ck", sa.ForeignKeyConstraint: "fk"}.get(
                type(c)
            )
            if kind:
                in_models.add((kind, f"{t}.{c.name}"))
        in_models |= {("ix", f"{t}.{i.name}") for i in table.indexes if not i.unique}
    # PostgreSQL reports NOT NULL and the like as CHECKs on some versions; compare only labgpu's own.
    in_db = {(k, n) for k, n in in_db if k != "ck" or ".ck_" in n}
    assert in_db == in_models


def test_concurrent_upgrades_all_succeed_and_migrate_once(settings: Settings) -> None:
    results, errors = [], []

    def go() -> None:
        try:
            results.append(upgrade(settings))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.changed for r in results) == 1
    assert current_revision(settings) == head_revision()


def test_commands_refuse_an_outdated_schema_until_upgraded(settings: Settings) -> None:
    eng = create_engine_for(settings)
    try:
        with pytest.raises(
            MigrationError, match=r"revision none, this labgpu needs .*: run `labgpu db upgrade`"
        ):
            require_current(eng)
        upgrade(settings, engine=eng)
        require_current(eng)
    finally:
        eng.dispose()


def test_a_database_from_a_newer_labgpu_is_refused_clearly(engine: Engine, settings: Settings) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(MigrationError, match="9999, which this labgpu does not know"):
        upgrade(settings)
    assert current_revision(settings) == "9999"  # and it was left alone


# Constraints -------------------------------------------------------------------------------------------


def test_member_names_are_unique(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        _member(s, "alice", 200001)
    with pytest.raises(IntegrityError) as err, sessions.begin() as s:
        _member(s, "alice", 200002)
    assert violated_constraint(err.value) == "uq_members_name"


def test_host_uids_are_unique(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        _member(s, "alice", 200001)
        # Accounts without a host uid (portal-only admins) do not clash with each other.
        s.add_all([Member(name="root1", role=Role.ADMIN), Member(name="root2", role=Role.ADMIN)])
    with pytest.raises(IntegrityError) as err, sessions.begin() as s:
        _member(s, "bob", 200001)
    assert violated_constraint(err.value) == "uq_members_uid"


def test_a_host_port_is_taken_once_per_listen_address_and_host(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        gpu1, gpu2 = _host(s, "gpu1"), _host(s, "gpu2")
        alice, bob = _member(s, "alice", 200001, gpu1), _member(s, "bob", 200002, gpu1)
        s.add(_port(alice, gpu1, 22000))
        s.add(_port(bob, gpu1, 22000, listen_address="10.0.0.5"))  # another address: another socket
        s.add(_port(bob, gpu2, 22001, PortPurpose.RDP))
        carol = _member(s, "carol", 200003, gpu2)
        s.add(_port(carol, gpu2, 22000))  # another host: another socket
    with pytest.raises(IntegrityError) as err, sessions.begin() as s:
        dave = _member(s, "dave", 200004, s.get(Host, gpu1.id))
        s.add(_port(dave, s.get_one(Host, gpu1.id), 22000))
    assert violated_constraint(err.value) == "uq_port_maps_host_port"


def test_a_member_has_one_port_per_purpose(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        host = _host(s)
        alice = _member(s, "alice", 200001, host)
        s.add(_port(alice, host, 22000, PortPurpose.SSH))
        s.add(_port(alice, host, 22001, PortPurpose.RDP))
    with pytest.raises(IntegrityError) as err, sessions.begin() as s:
        s.add(_port(s.get_one(Member, alice.id), s.get_one(Host, host.id), 22002, PortPurpose.SSH))
    assert violated_constraint(err.value) == "uq_port_maps_member_purpose"


def test_values_outside_the_vocabulary_are_refused_by_the_database(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError) as err, sessions.begin() as s:
        s.execute(sa.text("INSERT INTO members (name, role) VALUES ('eve', 'root')"))
    assert violated_constraint(err.value) == "ck_members_role"
    with pytest.raises(IntegrityError), sessions.begin() as s:
        host = _host(s)
        s.add(_port(_member(s, "alice", 200001, host), host, 70000))


def test_foreign_keys_are_enforced(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), sessions.begin() as s:
        host = _host(s)
        s.add(
            PortMap(
                member_id=999,
                host_id=host.id,
                listen_address="0.0.0.0",
                host_port=22000,
                container_port=22,
                purpose=PortPurpose.SSH,
            )
        )


def test_removing_a_member_frees_its_ports_keys_and_share_links(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        host = _host(s)
        alice = _member(s, "alice", 200001, host)
        s.add(_port(alice, host, 22000))
        s.add(SshKey(member=alice, public_key="ssh-ed25519 AAAA alice@laptop", fingerprint="SHA256:abc"))
        alice.shares.append(Share(name="datasets", source="/data", path="/data"))
    with sessions.begin() as s:
        s.execute(sa.delete(Member).where(Member.name == "alice"))  # in SQL: the database cascades
    with sessions() as s:
        assert s.scalars(sa.select(PortMap)).all() == []
        assert s.scalars(sa.select(SshKey)).all() == []
        assert s.scalar(sa.select(sa.func.count()).select_from(sa.table("member_shares"))) == 0
        assert s.scalars(sa.select(Share.name)).all() == ["datasets"]  # the share itself stays
    with sessions.begin() as s:  # and the port can be given again
        s.add(_port(_member(s, "bob", 200002, s.get_one(Host, host.id)), s.get_one(Host, host.id), 22000))


def test_a_host_with_members_cannot_be_deleted(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        _member(s, "alice", 200001, _host(s))
    with pytest.raises(IntegrityError), sessions.begin() as s:
        s.execute(sa.delete(Host))


def test_an_ssh_key_is_stored_once_per_member(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        alice, bob = _member(s, "alice", 200001), _member(s, "bob", 200002)
        s.add(SshKey(member=alice, public_key="ssh-ed25519 AAAA shared", fingerprint="SHA256:same"))
        s.add(SshKey(member=bob, public_key="ssh-ed25519 AAAA shared", fingerprint="SHA256:same"))
    with pytest.raises(IntegrityError) as err, sessions.begin() as s:
        s.add(SshKey(member_id=alice.id, public_key="ssh-ed25519 AAAA shared", fingerprint="SHA256:same"))
    assert violated_constraint(err.value) == "uq_ssh_keys_member_fingerprint"


# Values ------------------------------------------------------------------------------------------------


def test_times_come_back_timezone_aware_in_utc(sessions: sessionmaker[Session]) -> None:
    beijing = timezone(timedelta(hours=8))
    at = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=beijing)
    with sessions.begin() as s:
        s.add(
            AuditEvent(
                at=at,
                actor="root@cli",
                action="member.add",
                target="alice",
                detail={"gpus": [0, 1], "note": "首次"},
            )
        )
        _member(s, "alice", 200001)
    with sessions() as s:
        event = s.scalars(sa.select(AuditEvent)).one()
        assert event.at == at and event.at.utcoffset() == timedelta(0)
        assert event.at.hour == 1
        assert event.detail == {"gpus": [0, 1], "note": "首次"}
        member = s.scalars(sa.select(Member)).one()
        assert member.created_at.tzinfo is not None
        assert abs(datetime.now(UTC) - member.created_at) < timedelta(minutes=5)
        assert member.role is Role.MEMBER


def test_naive_times_are_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), sessions.begin() as s:
        s.add(AuditEvent(at=datetime(2026, 3, 1, 9, 30), actor="root@cli", action="member.add"))


def test_the_audit_log_is_append_only(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        s.add(AuditEvent(actor="root@cli", action="member.add", target="alice", source_address="10.0.0.9"))
    with pytest.raises(DBAPIError, match="append-only"), sessions.begin() as s:
        s.execute(sa.update(AuditEvent).values(actor="someone-else"))
    with pytest.raises(DBAPIError, match="append-only"), sessions.begin() as s:
        s.execute(sa.delete(AuditEvent))
    with sessions() as s:
        assert s.scalars(sa.select(AuditEvent.actor)).all() == ["root@cli"]


# Engine and settings -----------------------------------------------------------------------------------


def test_sqlite_is_set_up_for_a_shared_service(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "new" / "state", database_url=None)
    eng = create_engine_for(settings)
    try:
        assert (tmp_path / "new" / "state").is_dir()  # created on demand
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert (tmp_path / "new" / "state" / "labgpu.db").exists()
    finally:
        eng.dispose()


def test_a_state_dir_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"state_dir .*a-file/state does not exist and cannot be created"):
        create_engine_for(Settings(state_dir=blocker / "state", database_url=None))


def test_database_urls_are_checked_without_echoing_passwords(tmp_path: Path) -> None:
    def url(value: str) -> str:
        return str(database_url(Settings(state_dir=tmp_path, database_url=value)).drivername)

    assert url("postgresql://u:p@h/db") == "postgresql+psycopg"
    assert url("postgres://u:p@h/db") == "postgresql+psycopg"
    assert url("sqlite:////tmp/x.db") == "sqlite"
    with pytest.raises(ConfigError, match="supports SQLite and PostgreSQL"):
        url("mysql://u:p@h/db")
    with pytest.raises(ConfigError) as err:
        url("not a url with pass-word-123")
    assert "pass-word-123" not in str(err.value)


def test_an_unreachable_server_is_unavailable_naming_the_host_not_the_password(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, database_url=UNREACHABLE_URL)
    with pytest.raises(Unavailable) as err:
        upgrade(settings)
    message = str(err.value)
    assert "127.0.0.1:1" in message and "connection refused" in message.lower()
    assert "s3cret-pw" not in message and "\n" not in message


# CLI ---------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No config file, no stray LABGPU_* database settings from the caller's environment."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    monkeypatch.setenv("LABGPU_CONFIG", str(config))
    monkeypatch.delenv("LABGPU_DATABASE_URL", raising=False)
    return monkeypatch


def _use(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("LABGPU_STATE_DIR", str(settings.state_dir))
    if settings.database_url:
        monkeypatch.setenv("LABGPU_DATABASE_URL", settings.database_url)


def test_cli_db_upgrade_then_current_reports_the_head(
    settings: Settings, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(cli_env, settings)
    head = head_revision()

    assert run(["db", "current"]) == 0
    assert "none (empty database" in capsys.readouterr().out

    assert run(["db", "upgrade"]) == 0
    assert f"upgraded from empty to {head}" in capsys.readouterr().out
    assert run(["db", "upgrade"]) == 0
    assert "nothing to do" in capsys.readouterr().out

    assert run(["db", "current"]) == 0
    assert f"{head} (head)" in capsys.readouterr().out
    assert run(["db", "current", "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["current"] == head and data["head"] == head and data["up_to_date"] is True
    assert "labgpu-test" not in out  # the password of the test server, if any, is hidden


def test_cli_db_upgrade_with_an_unreachable_server_prints_one_line_and_exits_1(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.setenv("LABGPU_STATE_DIR", str(tmp_path))
    cli_env.setenv("LABGPU_DATABASE_URL", UNREACHABLE_URL)
    assert run(["db", "upgrade"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "127.0.0.1:1" in lines[0] and "s3cret-pw" not in captured.err + captured.out


def test_cli_db_upgrade_with_a_malformed_url_exits_2(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.setenv("LABGPU_STATE_DIR", str(tmp_path))
    cli_env.setenv("LABGPU_DATABASE_URL", "not-a-url")
    assert run(["db", "upgrade"]) == 2
    assert "database_url is not a database URL" in capsys.readouterr().err


def test_the_labgpu_command_reports_an_unreachable_database_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    env = {
        **os.environ,
        "LABGPU_CONFIG": str(config),
        "LABGPU_STATE_DIR": str(tmp_path),
        "LABGPU_DATABASE_URL": UNREACHABLE_URL,
        "COLUMNS": "80",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from labgpu.cli.main import main; main()", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        "error: cannot connect to PostgreSQL at 127.0.0.1:1 (database labgpu, user labgpu): connection refused"
    ]


def test_a_gpu_slot_is_held_by_one_booking_only(sessions: sessionmaker[Session]) -> None:
    from datetime import UTC, datetime

    from labgpu.store.models import Booking, BookingSlot, BookingStatus

    t0 = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    t1 = datetime(2026, 12, 1, 14, 15, tzinfo=UTC)
    t2 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
    with sessions.begin() as s:
        host = _host(s)
        alice, bob = _member(s, "alice", 200001, host), _member(s, "bob", 200002, host)
        a = Booking(
            member=alice, host_id=host.id, gpus="0", start_at=t0, end_at=t2, status=BookingStatus.APPROVED
        )
        a.slots = [BookingSlot(host_id=host.id, gpu_index=0, slot_start=t) for t in (t0, t1)]
        s.add(a)
        # The same time on another GPU is fine.
        b = Booking(member=bob, host_id=host.id, gpus="1", start_at=t0, end_at=t1)
        b.slots = [BookingSlot(host_id=host.id, gpu_index=1, slot_start=t0)]
        s.add(b)
    with pytest.raises(IntegrityError) as err, sessions.begin() as s:
        c = Booking(member_id=bob.id, host_id=host.id, gpus="0", start_at=t1, end_at=t2)
        c.slots = [BookingSlot(host_id=host.id, gpu_index=0, slot_start=t1)]
        s.add(c)
    assert violated_constraint(err.value) == "pk_booking_slots"
    with pytest.raises(IntegrityError), sessions.begin() as s:
        s.add(Booking(member_id=bob.id, host_id=host.id, gpus="2", start_at=t2, end_at=t0))
    # Cancelling frees the slots (they go with the booking's rows).
    with sessions.begin() as s:
        s.delete(s.get_one(Booking, a.id))
    with sessions.begin() as s:
        c = Booking(member_id=bob.id, host_id=host.id, gpus="0", start_at=t1, end_at=t2)
        c.slots = [BookingSlot(host_id=host.id, gpu_index=0, slot_start=t1)]
        s.add(c)
