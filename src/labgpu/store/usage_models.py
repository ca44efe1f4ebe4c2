"""Tables of the GPU usage history and fair use (revision 0006), beside :mod:`labgpu.store.models`
(imported with the store package, so ``Base.metadata`` always has them). Hosts and members are kept by
NAME, not by foreign key, so the history outlives them, as the audit log does."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from labgpu.store.models import Base, BigIntId


class UsageSample(Base):
    """Raw usage: a member's ("": no member's) processes on one GPU at one sampling run of ``seconds``."""

    __tablename__ = "usage_samples"
    __table_args__ = (sa.Index("ix_usage_samples_at", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    host: Mapped[str] = mapped_column(sa.String(64))
    gpu_index: Mapped[int]
    member: Mapped[str] = mapped_column(sa.String(32))
    seconds: Mapped[int]
    memory_mib: Mapped[int]
    utilization: Mapped[int | None]  # percent, the GPU's; None: NVML could not say (MIG, lost GPU)
    processes: Mapped[int]


class _UsageRollup:
    """Sums of raw samples per bucket (an hour, or a day from the lab's midnight), host, GPU and member."""

    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    gpu_index: Mapped[int] = mapped_column(primary_key=True)
    member: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    seconds: Mapped[int] = mapped_column(sa.BigInteger)
    memory_mib_seconds: Mapped[int] = mapped_column(sa.BigInteger)
    util_seconds: Mapped[int] = mapped_column(sa.BigInteger)
    util_known_seconds: Mapped[int] = mapped_column(sa.BigInteger)
    samples: Mapped[int]


class UsageHourly(_UsageRollup, Base):
    __tablename__ = "usage_hourly"


class UsageDaily(_UsageRollup, Base):
    __tablename__ = "usage_daily"


class UsageMember(Base):
    """A member's own fair-use limits (None: the lab's default) and weekly-report choice."""

    __tablename__ = "usage_members"

    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    max_gpus: Mapped[int | None]
    max_gpu_hours_week: Mapped[float | None] = mapped_column(sa.Float)
    weekly_report: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
