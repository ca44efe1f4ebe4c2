"""ORM rows: the desired state (hosts, members, port maps, shares, keys) and the audit log.

These are storage rows, not the domain's objects: services convert at the edge. Every rule that two
writers could race on (a name, a uid, a host port per listen address) is a database constraint, so a
clash surfaces as an IntegrityError (see :func:`labgpu.store.db.violated_constraint`) whatever the code
above did. The schema itself is created by the Alembic revisions in ``migrations/versions``, never by
``create_all``; a test checks that these classes and the migrations agree.
Times are timezone-aware UTC on both SQLite and PostgreSQL (:class:`UTCDateTime`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Explicit constraint names, so that migrations (and SQLite's batch mode) can refer to them and services
# can tell which rule a write broke.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that goes in aware and comes out aware, in UTC, on every backend.

    SQLite has no time zones (SQLAlchemy stores naive text there) and PostgreSQL answers in the session's
    zone; both are normalised here. Naive datetimes are refused: their meaning depends on the machine.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: labgpu stores timezone-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class HostKind(enum.StrEnum):
    LXD = "lxd"
    INCUS = "incus"


class Role(enum.StrEnum):
    MEMBER = "member"
    ADMIN = "admin"


class MemberState(enum.StrEnum):
    """What the member's container should be; the reconciler makes it so."""

    PROVISIONING = "provisioning"  # desired state written, container not (fully) made yet
    RUNNING = "running"
    STOPPED = "stopped"
    REMOVING = "removing"  # `member rm` started; the row goes once the container is gone


class PortPurpose(enum.StrEnum):
    SSH = "ssh"
    RDP = "rdp"
    VNC = "vnc"


def _enum(cls: type[enum.StrEnum]) -> sa.Enum:
    # Stored as plain text (no PostgreSQL ENUM type, which is awkward to extend); the allowed values are
    # pinned by the named CHECK constraints in each table's __table_args__.
    return sa.Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        validate_strings=True,
        values_callable=lambda e: [m.value for m in e],
    )


def _check_in(column: str, cls: type[enum.StrEnum]) -> sa.CheckConstraint:
    values = ", ".join(f"'{m.value}'" for m in cls)
    return sa.CheckConstraint(f"{column} IN ({values})", name=column)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy's declared hook


class Host(Base):
    """One LXD/Incus server (standalone) or one member of a cluster."""

    __tablename__ = "hosts"
    __table_args__ = (
        _check_in("kind", HostKind),
        sa.CheckConstraint("gpu_mode IN ('shared', 'assigned', 'booked')", name="gpu_mode"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63), unique=True)
    # unix:///path or https://host:8443; None: the local daemon, auto-detected.
    url: Mapped[str | None] = mapped_column(sa.String(255))
    kind: Mapped[HostKind] = mapped_column(_enum(HostKind))
    # What members are told to connect to; None: settings.public_address, else the host's name.
    public_address: Mapped[str | None] = mapped_column(sa.String(255))
    # A drained host keeps its members but gets no new ones.
    drained: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    # How this host's GPUs are shared (revision 0003): shared, assigned or booked.
    gpu_mode: Mapped[str] = mapped_column(sa.String(16), default="shared", server_default="shared")
    # Where this host's `labgpu agent` answers (GPU usage); None: the local one or none.
    agent_url: Mapped[str | None] = mapped_column(sa.String(255))

    members: Mapped[list[Member]] = relationship(back_populates="host")

    def __repr__(self) -> str:
        return f"Host(id={self.id!r}, name={self.name!r}, kind={self.kind!r})"


class Member(Base):
    """A person with an account, and the desired spec of their container."""

    __tablename__ = "members"
    __table_args__ = (
        _check_in("role", Role),
        _check_in("state", MemberState),
        sa.CheckConstraint("cpu_limit IS NULL OR cpu_limit > 0", name="cpu_limit_positive"),
        sa.CheckConstraint(
            "memory_limit_bytes IS NULL OR memory_limit_bytes > 0", name="memory_limit_positive"
        ),
        sa.CheckConstraint("disk_size_bytes IS NULL OR disk_size_bytes > 0", name="disk_size_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # A Linux user name: at most 32 characters.
    name: Mapped[str] = mapped_column(sa.String(32), unique=True)
    email: Mapped[str | None] = mapped_column(sa.String(254))
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.MEMBER, server_default=Role.MEMBER.value)
    # The host uid/gid the member's home belongs to (mapped into the container with raw.idmap). None for
    # an account without a home on any host (an admin who only uses the portal).
    uid: Mapped[int | None] = mapped_column(unique=True)
    # Where the container lives; None until it is placed.
    host_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hosts.id", ondelete="RESTRICT"), index=True)
    container: Mapped[str | None] = mapped_column(sa.String(63))
    state: Mapped[MemberState] = mapped_column(
        _enum(MemberState), default=MemberState.PROVISIONING, server_default=MemberState.PROVISIONING.value
    )
    # Template alias (optionally alias/version) the container is built from; None: settings default.
    template: Mapped[str | None] = mapped_column(sa.String(255))
    # Limits; None means "the policy default".
    cpu_limit: Mapped[int | None]
    memory_limit_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    disk_size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    # "all", "none" or GPU indexes such as "0,2"; None: the policy's GPU mode decides.
    gpu_spec: Mapped[str | None] = mapped_column(sa.String(255))
    no_gpu: Mapped[bool] = mapped_column(default=False, server_default=sa.false())  # GPUs off (no-GPU mode)
    # Bumped whenever the container's desired spec changes; written to user.labgpu.* on the instance so
    # the reconciler can tell a stale container.
    spec_version: Mapped[int] = mapped_column(default=1, server_default=sa.text("1"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )

    host: Mapped[Host | None] = relationship(back_populates="members")
    port_maps: Mapped[list[PortMap]] = relationship(
        back_populates="member", cascade="all, delete-orphan", passive_deletes=True
    )
    ssh_keys: Mapped[list[SshKey]] = relationship(
        back_populates="member", cascade="all, delete-orphan", passive_deletes=True
    )
    shares: Mapped[list[Share]] = relationship(
        secondary="member_shares", back_populates="members", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Member(id={self.id!r}, name={self.name!r}, state={self.state!r})"


class PortMap(Base):
    """A host port forwarded to a container port by an LXD/Incus proxy device."""

    __tablename__ = "port_maps"
    __table_args__ = (
        # A socket is (host, listen address, port): the same port on another host is a different socket.
        sa.UniqueConstraint("host_id", "listen_address", "host_port", name="uq_port_maps_host_port"),
        sa.UniqueConstraint("member_id", "purpose", name="uq_port_maps_member_purpose"),
        _check_in("purpose", PortPurpose),
        sa.CheckConstraint("host_port BETWEEN 1 AND 65535", name="host_port_range"),
        sa.CheckConstraint("container_port BETWEEN 1 AND 65535", name="container_port_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Lookups by member use uq_port_maps_member_purpose's index.
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"))
    host_id: Mapped[int] = mapped_column(sa.ForeignKey("hosts.id", ondelete="RESTRICT"))
    listen_address: Mapped[str] = mapped_column(sa.String(64))
    host_port: Mapped[int]
    container_port: Mapped[int]
    purpose: Mapped[PortPurpose] = mapped_column(_enum(PortPurpose))

    member: Mapped[Member] = relationship(back_populates="port_maps")
    host: Mapped[Host] = relationship()

    def __repr__(self) -> str:
        return (
            f"PortMap(member_id={self.member_id!r}, {self.purpose!s} "
            f"{self.listen_address}:{self.host_port}->{self.container_port})"
        )


class Share(Base):
    """A host folder mounted into containers (datasets, toolkits), read-only unless said otherwise."""

    __tablename__ = "shares"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63), unique=True)
    source: Mapped[str] = mapped_column(sa.String(4096))  # path on the host
    path: Mapped[str] = mapped_column(sa.String(4096))  # mount point inside the container
    readonly: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    # Attached to every member (through the profile) rather than to those in member_shares.
    all_members: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())

    members: Mapped[list[Member]] = relationship(
        secondary="member_shares", back_populates="shares", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Share(id={self.id!r}, name={self.name!r})"


member_shares = sa.Table(
    "member_shares",
    Base.metadata,
    sa.Column("member_id", sa.ForeignKey("members.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("share_id", sa.ForeignKey("shares.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class SshKey(Base):
    """An SSH public key installed in a member's container."""

    __tablename__ = "ssh_keys"
    __table_args__ = (sa.UniqueConstraint("member_id", "fingerprint", name="uq_ssh_keys_member_fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"))
    public_key: Mapped[str] = mapped_column(sa.Text)
    fingerprint: Mapped[str] = mapped_column(sa.String(128))  # "SHA256:..." as ssh-keygen -l prints it
    comment: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())

    member: Mapped[Member] = relationship(back_populates="ssh_keys")

    def __repr__(self) -> str:
        return f"SshKey(member_id={self.member_id!r}, fingerprint={self.fingerprint!r})"


class AuditEvent(Base):
    """Who changed what, when, from where. Append-only: the database refuses UPDATE and DELETE.

    Actor and target are names, not foreign keys, so the log outlives the members it talks about.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), index=True)
    actor: Mapped[str] = mapped_column(sa.String(64))  # member name, or e.g. "root@cli", "system"
    action: Mapped[str] = mapped_column(sa.String(64))  # e.g. "member.add"
    target: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    source_address: Mapped[str | None] = mapped_column(sa.String(64))  # client IP, or None for the CLI

    def __repr__(self) -> str:
        return f"AuditEvent(id={self.id!r}, actor={self.actor!r}, action={self.action!r})"


# Portal accounts (revision 0002) -------------------------------------------------------------------


class Account(Base):
    """A member's portal credentials: a password hash and whether the account may log in.

    A member added on the command line has no row here (and so no portal password) until one is set.
    Kept apart from :class:`Member`, which describes the container, so that the reconciler never reads
    a password hash.
    """

    __tablename__ = "accounts"

    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    # argon2id in PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash); None: no portal password.
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    password_changed_at: Mapped[datetime | None]
    # Set while the account is disabled: no login, no session, no API token works.
    disabled_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())

    member: Mapped[Member] = relationship()

    def __repr__(self) -> str:
        return f"Account(member_id={self.member_id!r}, disabled={self.disabled_at is not None})"


class LoginSession(Base):
    """A logged-in browser. The cookie holds a random token; only its SHA-256 is stored here."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # hex SHA-256 of the cookie's token
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    expires_at: Mapped[datetime]  # the absolute limit; the idle limit is last_seen_at + the setting
    source_address: Mapped[str | None] = mapped_column(sa.String(64))
    user_agent: Mapped[str | None] = mapped_column(sa.String(255))
    revoked_at: Mapped[datetime | None]

    member: Mapped[Member] = relationship()

    def __repr__(self) -> str:
        return f"LoginSession(id={self.id[:8]!r}..., member_id={self.member_id!r})"


class ApiToken(Base):
    """A personal API token (``lgp_...``) for scripts. Only its SHA-256 is stored; it is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(64))  # what the member calls it ("laptop", "ci")
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The first characters, so that a member can tell their tokens apart.
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    member: Mapped[Member] = relationship()

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, member_id={self.member_id!r}, prefix={self.prefix!r})"


class LoginAttempt(Base):
    """One login try, kept for the throttle's window (in the store, so it holds across restarts and
    workers). ``account`` is the name as typed (it may name nobody)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        sa.Index("ix_login_attempts_account_at", "account", "at"),
        sa.Index("ix_login_attempts_source_address_at", "source_address", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), index=True)
    account: Mapped[str] = mapped_column(sa.String(64))
    source_address: Mapped[str] = mapped_column(sa.String(64))
    succeeded: Mapped[bool]

    def __repr__(self) -> str:
        return f"LoginAttempt(account={self.account!r}, ok={self.succeeded!r})"


# Applications, GPU bookings, jobs, notices (revision 0003) ------------------------------------------


class ApplicationStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for an admin
    APPROVED = "approved"  # approved; the container is being provisioned (see ``progress``)
    DONE = "done"  # provisioned: the member exists
    FAILED = "failed"  # approved but provisioning failed (``progress`` says why); can be retried
    REJECTED = "rejected"


class Application(Base):
    """A sign-up request from the portal, waiting for an admin to approve or reject it.

    The applicant's chosen portal password is kept only as its argon2id hash and moves to the account
    on approval. Several applications may carry the same name over time (one rejected, one later), but
    only one may be pending: checked in the service under the member-name constraint at approval.
    """

    __tablename__ = "applications"
    __table_args__ = (
        _check_in("status", ApplicationStatus),
        sa.Index("ix_applications_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(32), index=True)  # the member name asked for
    email: Mapped[str] = mapped_column(sa.String(254))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    supervisor: Mapped[str | None] = mapped_column(sa.String(128))
    group_name: Mapped[str | None] = mapped_column(sa.String(128))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[ApplicationStatus] = mapped_column(
        _enum(ApplicationStatus),
        default=ApplicationStatus.PENDING,
        server_default=ApplicationStatus.PENDING.value,
    )
    # What the admin approved (may differ from the defaults); None: the defaults.
    template: Mapped[str | None] = mapped_column(sa.String(255))
    cpu_limit: Mapped[int | None]
    memory_limit_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    gpu_spec: Mapped[str | None] = mapped_column(sa.String(255))
    decided_by: Mapped[str | None] = mapped_column(sa.String(64))
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(sa.Text)  # shown to the applicant on rejection
    # Human-readable provisioning progress ("creating the container", "waiting for sshd", an error).
    progress: Mapped[str | None] = mapped_column(sa.String(255))
    source_address: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )

    def __repr__(self) -> str:
        return f"Application(id={self.id!r}, name={self.name!r}, status={self.status!r})"


class GpuMode(enum.StrEnum):
    SHARED = "shared"  # every container gets every GPU (the seeds' default)
    ASSIGNED = "assigned"  # the admin attaches chosen GPUs to each member
    BOOKED = "booked"  # members book GPUs for a time window


class BookingStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for an admin (when policy asks for approval); holds its slots
    APPROVED = "approved"  # will be attached at its start
    ACTIVE = "active"  # attached now
    ENDED = "ended"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Booking(Base):
    """A time-boxed claim of GPUs on one host by a member (half-open window [start_at, end_at))."""

    __tablename__ = "bookings"
    __table_args__ = (
        _check_in("status", BookingStatus),
        sa.CheckConstraint("end_at > start_at", name="window"),
        sa.Index("ix_bookings_status_start_at", "status", "start_at"),
        sa.Index("ix_bookings_status_end_at", "status", "end_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int] = mapped_column(sa.ForeignKey("hosts.id", ondelete="RESTRICT"))
    # The GPU indexes, comma-separated ("0,2"): the slots below are what the constraint checks.
    gpus: Mapped[str] = mapped_column(sa.String(255))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    status: Mapped[BookingStatus] = mapped_column(
        _enum(BookingStatus), default=BookingStatus.APPROVED, server_default=BookingStatus.APPROVED.value
    )
    note: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )

    member: Mapped[Member] = relationship()
    slots: Mapped[list[BookingSlot]] = relationship(
        back_populates="booking", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Booking(id={self.id!r}, member_id={self.member_id!r}, gpus={self.gpus!r}, status={self.status!r})"


class BookingSlot(Base):
    """One GPU for one fixed-length time slot, held by a live booking.

    The primary key (host, GPU, slot start) makes two overlapping bookings of a GPU impossible on every
    backend, whatever the code above did. A booking holds one row per GPU per slot while it is pending,
    approved or active; its rows are deleted when it is cancelled, rejected or ends early.
    """

    __tablename__ = "booking_slots"

    host_id: Mapped[int] = mapped_column(sa.ForeignKey("hosts.id", ondelete="RESTRICT"), primary_key=True)
    gpu_index: Mapped[int] = mapped_column(primary_key=True)
    slot_start: Mapped[datetime] = mapped_column(primary_key=True)
    booking_id: Mapped[int] = mapped_column(sa.ForeignKey("bookings.id", ondelete="CASCADE"), index=True)

    booking: Mapped[Booking] = relationship(back_populates="slots")


class GpuSample(Base):
    """A GPU's utilization at one moment, kept for idle detection and the portal's charts."""

    __tablename__ = "gpu_samples"
    __table_args__ = (sa.Index("ix_gpu_samples_host_id_gpu_index_at", "host_id", "gpu_index", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    host_id: Mapped[int] = mapped_column(sa.ForeignKey("hosts.id", ondelete="CASCADE"))
    gpu_index: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    utilization: Mapped[int | None]  # percent
    memory_used: Mapped[int | None] = mapped_column(sa.BigInteger)  # bytes
    member: Mapped[str | None] = mapped_column(sa.String(32))  # who had processes on it, if anyone


class JobState(Base):
    """The last and next run of a periodic job (booking starts/ends, idle checks, reconcile), and a lease
    so that only one runner works on a job at a time. Kept in the store: jobs survive restarts."""

    __tablename__ = "job_states"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    last_started_at: Mapped[datetime | None]
    last_finished_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(sa.String(16))  # ok, failed
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    next_run_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_until: Mapped[datetime | None]


class Notice(Base):
    """A maintenance notice from an admin, shown in the login banner and the portal while active."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    message: Mapped[str] = mapped_column(sa.Text)
    starts_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    ends_at: Mapped[datetime | None]  # None: until removed
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


# Two-factor log-in: TOTP (revision 0004; services/portal/_totp.py) --------------------------------
class TotpCredential(Base):
    """TOTP secret (as is: codes need it), one being set up, the step of the last code taken (no replay)."""

    __tablename__ = "totp_credentials"

    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str | None] = mapped_column(sa.String(64))  # base32
    enabled_at: Mapped[datetime | None]
    pending_secret: Mapped[str | None] = mapped_column(sa.String(64))
    last_step: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class TotpRecoveryCode(Base):
    """A one-time recovery code: its argon2id hash only, like a password."""

    __tablename__ = "totp_recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(sa.String(255))
    used_at: Mapped[datetime | None]


class PendingLogin(Base):
    """A right password waiting for its code: NOT a login session (id: SHA-256 of the cookie's token)."""

    __tablename__ = "pending_logins"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime]
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    used_at: Mapped[datetime | None]
