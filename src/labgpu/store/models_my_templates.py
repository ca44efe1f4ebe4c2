"""ORM row of members' own templates (images a member published from a snapshot of their container). Apart
from models.py, which is at its size limit; registered on the same ``Base.metadata`` (labgpu.store imports
this module)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labgpu.store.models import Base, Host, Member, utcnow


class MemberTemplate(Base):
    """A member's own template: an image on ``host`` reached by the alias ``member/OWNER/LABEL``.

    Private to its owner (and admins): only the owner's container is ever made from it. The row goes with the
    member (cascade); the image stays on the host until an admin deletes it (`lxc image delete`)."""

    __tablename__ = "member_templates"
    __table_args__ = (sa.UniqueConstraint("member_id", "label", name="uq_member_templates_member_label"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(sa.String(40))
    alias: Mapped[str] = mapped_column(sa.String(255), unique=True)
    # The host whose daemon holds the image; NULL: the default daemon (a single-host lab).
    host_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hosts.id", ondelete="RESTRICT"), index=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default=sa.text("0"))
    snapshot: Mapped[str] = mapped_column(sa.String(63))  # the snapshot it was published from
    description: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())

    member: Mapped[Member] = relationship()
    host: Mapped[Host | None] = relationship()

    def __repr__(self) -> str:
        return f"MemberTemplate(alias={self.alias!r})"
