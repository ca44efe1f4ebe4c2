"""ORM row of sign-on identities (LDAP, OIDC, CAS; revision 0007). Apart from models.py, which is at its size
limit; registered on the same ``Base.metadata`` (labgpu.store imports this module)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from labgpu.store.models import Base, utcnow


class SignOnIdentity(Base):
    """An outside identity (LDAP, OIDC, CAS) and the labgpu account it logs in to.

    Linked by the provider's stable subject (LDAP entryUUID/objectGUID, OIDC ``sub``, the CAS user), never
    by a name that can change. Until an admin approves the application it came with, ``application_id``
    says which one and ``member_id`` is empty; the first sign-on after the member was made links it."""

    __tablename__ = "identities"
    __table_args__ = (sa.UniqueConstraint("provider", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(64))  # "ldap", "cas", "oidc:NAME"
    subject: Mapped[str] = mapped_column(sa.String(255))
    member_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    application_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("applications.id", ondelete="SET NULL"), index=True
    )
    email: Mapped[str | None] = mapped_column(sa.String(254))
    display_name: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    last_login_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"SignOnIdentity(provider={self.provider!r}, member_id={self.member_id!r})"
