"""Members' own templates: images a member published from a snapshot of their container.

Revision ID: 0008_my_template
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_my_template"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=40), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("snapshot", sa.String(length=63), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_member_templates_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_member_templates_host_id_hosts"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_templates")),
        sa.UniqueConstraint("alias", name=op.f("uq_member_templates_alias")),
        sa.UniqueConstraint("member_id", "label", name="uq_member_templates_member_label"),
    )
    with op.batch_alter_table("member_templates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_templates_member_id"), ["member_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_templates_host_id"), ["host_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("member_templates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_templates_host_id"))
        batch_op.drop_index(batch_op.f("ix_member_templates_member_id"))
    op.drop_table("member_templates")
