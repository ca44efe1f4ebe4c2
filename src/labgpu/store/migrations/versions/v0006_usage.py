"""GPU usage history (raw samples, hourly and daily rollups) and members' fair-use settings.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("member", sa.String(length=32), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.Column("memory_mib_seconds", sa.BigInteger(), nullable=False),
        sa.Column("util_seconds", sa.BigInteger(), nullable=False),
        sa.Column("util_known_seconds", sa.BigInteger(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "host", "gpu_index", "member", name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    op.create_table(
        "usage_samples",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("member", sa.String(length=32), nullable=False),
        sa.Column("seconds", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("utilization", sa.Integer(), nullable=True),
        sa.Column("processes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_samples")),
    )
    with op.batch_alter_table("usage_samples", schema=None) as batch_op:
        batch_op.create_index("ix_usage_samples_at", ["at"], unique=False)
    _rollup("usage_hourly")
    _rollup("usage_daily")
    op.create_table(
        "usage_members",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.Column("max_gpu_hours_week", sa.Float(), nullable=True),
        sa.Column("weekly_report", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_usage_members_member_id_members"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_usage_members")),
    )


def downgrade() -> None:
    op.drop_table("usage_members")
    op.drop_table("usage_daily")
    op.drop_table("usage_hourly")
    with op.batch_alter_table("usage_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_samples_at")
    op.drop_table("usage_samples")
