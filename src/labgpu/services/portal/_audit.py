"""Reading the audit log: every state change by a person (who, what, target, when, from where).

Writing happens in :meth:`labgpu.services.context.Services.audit`, inside the transaction of the change it
records; the database refuses to update or delete an entry. This module only reads, with filters, newest
first, a page at a time (``before_id`` is the id of the last entry of the previous page).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from labgpu.errors import BadInput
from labgpu.services.context import Services
from labgpu.store.models import AuditEvent

MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any] | None
    source_address: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_events(
    svc: Services,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    source_address: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Audit entries matching every filter given, newest first, at most ``limit``.

    ``action`` matches exactly, or as a prefix when it ends with ``.`` or ``*`` (``account.`` or
    ``account*``: every account action). ``since``/``until`` bound the time (inclusive/exclusive).
    Raises BadInput for a limit outside 1..MAX_PAGE or a naive datetime."""
    if not 1 <= limit <= MAX_PAGE:
        raise BadInput(f"limit must be between 1 and {MAX_PAGE}")
    for value, what in ((since, "since"), (until, "until")):
        if value is not None and value.tzinfo is None:
            raise BadInput(f"{what} needs a time zone (e.g. 2026-01-31T12:00:00Z)")
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        if action.endswith(("*", ".")):
            prefix = action.rstrip("*")
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(AuditEvent.action.like(escaped + "%", escape="\\"))
        else:
            query = query.where(AuditEvent.action == action)
    if target:
        query = query.where(AuditEvent.target == target)
    if source_address:
        query = query.where(AuditEvent.source_address == source_address)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    with svc.session() as session:
        return [
            AuditEntry(
                id=e.id,
                at=e.at,
                actor=e.actor,
                action=e.action,
                target=e.target,
                detail=e.detail,
                source_address=e.source_address,
            )
            for e in session.scalars(query)
        ]
