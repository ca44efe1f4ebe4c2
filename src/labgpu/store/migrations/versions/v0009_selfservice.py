"""Members' self-service: the no-GPU mode of a member's container (members.no_gpu) and requests to be told
when GPUs are free (gpu_free_requests).

Revision ID: 0009
Revises: 0008_my_template
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008_my_template"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("no_gpu", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "gpu_free_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("free_gpus", sa.String(length=255), nullable=True),
        sa.CheckConstraint("count > 0", name=op.f("ck_gpu_free_requests_count_positive")),
        sa.CheckConstraint(
            "status IN ('waiting', 'sent', 'expired', 'cancelled')", name=op.f("ck_gpu_free_requests_status")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_gpu_free_requests_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_gpu_free_requests_host_id_hosts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpu_free_requests")),
    )
    with op.batch_alter_table("gpu_free_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gpu_free_requests_member_id"), ["member_id"], unique=False)
        batch_op.create_index(
            "ix_gpu_free_requests_status_expires_at", ["status", "expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("gpu_free_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_gpu_free_requests_status_expires_at")
        batch_op.drop_index(batch_op.f("ix_gpu_free_requests_member_id"))
    op.drop_table("gpu_free_requests")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("no_gpu")
