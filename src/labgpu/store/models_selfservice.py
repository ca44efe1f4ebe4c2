"""ORM row of the members' self-service (revision 0009): requests to be told when GPUs are free. Apart from
models.py, which is at its size limit; registered on the same ``Base.metadata`` (labgpu.store imports this
module). The no-GPU mode is a column of the member's row (``Member.no_gpu``): it is part of the container's
desired state."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from labgpu.store.models import Base, utcnow


class FreeRequestStatus(enum.StrEnum):
    WAITING = "waiting"  # the jobs look for free GPUs
    SENT = "sent"  # the member was told (once); the request is over
    EXPIRED = "expired"  # nothing came free before it expired
    CANCELLED = "cancelled"


class GpuFreeRequest(Base):
    """ "Tell me when ``count`` GPUs are free on ``host``": one member's wait, ended by one notification,
    its expiry or a cancel."""

    __tablename__ = "gpu_free_requests"
    __table_args__ = (
        sa.CheckConstraint("count > 0", name="count_positive"),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s.value}'" for s in FreeRequestStatus) + ")", name="status"
        ),
        sa.Index("ix_gpu_free_requests_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int] = mapped_column(sa.ForeignKey("hosts.id", ondelete="CASCADE"))
    count: Mapped[int]
    status: Mapped[str] = mapped_column(sa.String(16), default=FreeRequestStatus.WAITING.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    free_gpus: Mapped[str | None] = mapped_column(sa.String(255))  # the GPUs the notification named

    def __repr__(self) -> str:
        return f"GpuFreeRequest(id={self.id!r}, member_id={self.member_id!r}, status={self.status!r})"
