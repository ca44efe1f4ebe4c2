"""Two-factor log-in (TOTP): authenticators, recovery codes, log-ins waiting for their code.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _member_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["member_id"], ["members.id"], name=op.f(f"fk_{table}_member_id_members"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "totp_credentials",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(64), nullable=True),
        sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_secret", sa.String(64), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_totp_credentials")),
        _member_fk("totp_credentials"),
    )

    op.create_table(
        "totp_recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(255), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_totp_recovery_codes")),
        _member_fk("totp_recovery_codes"),
    )
    op.create_index(op.f("ix_totp_recovery_codes_member_id"), "totp_recovery_codes", ["member_id"])

    op.create_table(
        "pending_logins",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_logins")),
        _member_fk("pending_logins"),
    )
    op.create_index(op.f("ix_pending_logins_member_id"), "pending_logins", ["member_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_logins_member_id"), table_name="pending_logins")
    op.drop_table("pending_logins")
    op.drop_index(op.f("ix_totp_recovery_codes_member_id"), table_name="totp_recovery_codes")
    op.drop_table("totp_recovery_codes")
    op.drop_table("totp_credentials")
