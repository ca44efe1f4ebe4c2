"""Initial schema: hosts, members, port maps, shares, SSH keys, the audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


# Every name is wrapped in op.f(): it is final, and the naming convention (which env.py's target_metadata
# carries) must not be applied to it again.


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("url", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("public_address", sa.String(255), nullable=True),
        sa.Column("drained", sa.Boolean(), server_default=sa.false(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("name", name=op.f("uq_hosts_name")),
        sa.CheckConstraint("kind IN ('lxd', 'incus')", name=op.f("ck_hosts_kind")),
    )

    op.create_table(
        "members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("role", sa.String(16), server_default="member", nullable=False),
        sa.Column("uid", sa.Integer(), nullable=True),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("container", sa.String(63), nullable=True),
        sa.Column("state", sa.String(16), server_default="provisioning", nullable=False),
        sa.Column("template", sa.String(255), nullable=True),
        sa.Column("cpu_limit", sa.Integer(), nullable=True),
        sa.Column("memory_limit_bytes", sa.BigInteger(), nullable=True),
        sa.Column("disk_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("gpu_spec", sa.String(255), nullable=True),
        sa.Column("spec_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        sa.UniqueConstraint("name", name=op.f("uq_members_name")),
        sa.UniqueConstraint("uid", name=op.f("uq_members_uid")),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_members_host_id_hosts"), ondelete="RESTRICT"
        ),
        sa.CheckConstraint("role IN ('member', 'admin')", name=op.f("ck_members_role")),
        sa.CheckConstraint(
            "state IN ('provisioning', 'running', 'stopped', 'removing')", name=op.f("ck_members_state")
        ),
        sa.CheckConstraint("cpu_limit IS NULL OR cpu_limit > 0", name=op.f("ck_members_cpu_limit_positive")),
        sa.CheckConstraint(
            "memory_limit_bytes IS NULL OR memory_limit_bytes > 0",
            name=op.f("ck_members_memory_limit_positive"),
        ),
        sa.CheckConstraint(
            "disk_size_bytes IS NULL OR disk_size_bytes > 0", name=op.f("ck_members_disk_size_positive")
        ),
    )
    op.create_index(op.f("ix_members_host_id"), "members", ["host_id"])

    op.create_table(
        "port_maps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("listen_address", sa.String(64), nullable=False),
        sa.Column("host_port", sa.Integer(), nullable=False),
        sa.Column("container_port", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_port_maps")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_port_maps_member_id_members"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_port_maps_host_id_hosts"), ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("host_id", "listen_address", "host_port", name=op.f("uq_port_maps_host_port")),
        sa.UniqueConstraint("member_id", "purpose", name=op.f("uq_port_maps_member_purpose")),
        sa.CheckConstraint("purpose IN ('ssh', 'rdp', 'vnc')", name=op.f("ck_port_maps_purpose")),
        sa.CheckConstraint("host_port BETWEEN 1 AND 65535", name=op.f("ck_port_maps_host_port_range")),
        sa.CheckConstraint(
            "container_port BETWEEN 1 AND 65535", name=op.f("ck_port_maps_container_port_range")
        ),
    )

    op.create_table(
        "shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("source", sa.String(4096), nullable=False),
        sa.Column("path", sa.String(4096), nullable=False),
        sa.Column("readonly", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("all_members", sa.Boolean(), server_default=sa.false(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shares")),
        sa.UniqueConstraint("name", name=op.f("uq_shares_name")),
    )

    op.create_table(
        "member_shares",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("share_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "share_id", name=op.f("pk_member_shares")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_shares_member_id_members"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["share_id"], ["shares.id"], name=op.f("fk_member_shares_share_id_shares"), ondelete="CASCADE"
        ),
    )
    op.create_index(op.f("ix_member_shares_share_id"), "member_shares", ["share_id"])

    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("comment", sa.String(255), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssh_keys")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_ssh_keys_member_id_members"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("member_id", "fingerprint", name=op.f("uq_ssh_keys_member_fingerprint")),
    )

    op.create_table(
        "audit_events",
        # SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("source_address", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"])
    op.create_index(op.f("ix_audit_events_target"), "audit_events", ["target"])
    _make_audit_append_only()


def _make_audit_append_only() -> None:
    # The audit log is evidence: the database itself refuses to change or delete it, whatever the code does.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION labgpu_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP;
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION labgpu_audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION labgpu_audit_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
                f"BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: {verb} refused'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS labgpu_audit_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    op.drop_table("audit_events")
    op.drop_table("ssh_keys")
    op.drop_index("ix_member_shares_share_id", table_name="member_shares")
    op.drop_table("member_shares")
    op.drop_table("shares")
    op.drop_table("port_maps")
    op.drop_index("ix_members_host_id", table_name="members")
    op.drop_table("members")
    op.drop_table("hosts")
