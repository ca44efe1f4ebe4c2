"""ORM rows of notifications (members' channels, the delivery queue) and of the job runs' history
(revision 0005). Apart from models.py, which is at its size limit; registered on the same
``Base.metadata`` (labgpu.store imports this module, so the migrations and checks see these tables).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from labgpu.store.models import Base, BigIntId, JSONType, utcnow


class NotifyChannel(Base):
    """A member's own notification channel: an Apprise URL (may hold a key: shown masked) and its kinds."""

    __tablename__ = "notify_channels"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(sa.String(64))
    url: Mapped[str] = mapped_column(sa.Text)
    kinds: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class NotifyDelivery(Base):
    """One notification to one channel, queued, leased by one runner at a time, retried with backoff.
    ``target``: ``mail:ADDRESS``, ``lab:HASH`` (one of notify_urls) or ``channel:ID``; never a secret."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
        sa.Index("ix_notify_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    kind: Mapped[str] = mapped_column(sa.String(32))
    recipient: Mapped[str] = mapped_column(sa.String(254))  # a member, "admins", or an applicant's address
    target: Mapped[str] = mapped_column(sa.String(320))
    channel_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("notify_channels.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str | None] = mapped_column(sa.String(255), index=True)  # a repeated key is not sent again
    subject: Mapped[str] = mapped_column(sa.Text)
    body: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_until: Mapped[datetime | None]


class JobRunRecord(Base):
    """One run of a periodic job by one runner (two portals on one store must run each job once)."""

    __tablename__ = "job_runs"
    __table_args__ = (sa.Index("ix_job_runs_job_started_at", "job", "started_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(sa.String(64))
    owner: Mapped[str] = mapped_column(sa.String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str | None] = mapped_column(sa.String(16))
