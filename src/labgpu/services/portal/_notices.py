"""Notices: short messages from the admins to every member (maintenance windows, rules, news).

A notice is shown from ``starts_at`` until ``ends_at`` (or until removed) by the login gateway's
status and by the portal (:func:`active_notices`). Adding and removing one is audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from labgpu.errors import BadInput, NotFound
from labgpu.services import hosts
from labgpu.services.context import Services
from labgpu.store.models import Notice, utcnow

MAX_LENGTH = 1000
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class NoticeInfo:
    id: int
    message: str
    starts_at: datetime
    ends_at: datetime | None
    created_by: str
    created_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message": self.message,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat() if self.ends_at else None,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_row(cls, row: Notice) -> NoticeInfo:
        return cls(
            id=row.id,
            message=row.message,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            created_by=row.created_by,
            created_at=row.created_at,
        )


def clean_message(text: str) -> str:
    """The message as it may be shown on members' terminals and pages: no control characters (an
    escape sequence would repaint a member's terminal), lines trimmed. Raises BadInput when empty or long."""
    lines = ["".join(c for c in line if c.isprintable()).rstrip() for line in str(text).splitlines()]
    message = "\n".join(lines).strip()
    if not message:
        raise BadInput("a notice needs a message")
    if len(message) > MAX_LENGTH:
        raise BadInput(f"a notice may be at most {MAX_LENGTH} characters (this one has {len(message)})")
    return message


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time from "2h", "30m", "3d", "1w" (from now) or a date/time such as "2025-06-01 18:00"
    (the host's local time unless it names a zone). Raises BadInput."""
    now = now or utcnow()
    match = _DURATION_RE.match(text)
    if match:
        return now + timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"cannot read the time {text!r}: use e.g. 2h, 3d, 1w or 2025-06-01 18:00") from None
    if value.tzinfo is None:
        value = value.astimezone()  # the host's local time, as the admin typed it
    return value.astimezone(UTC)


def add_notice(
    svc: Services, message: str, *, starts_at: datetime | None = None, ends_at: datetime | None = None
) -> NoticeInfo:
    """Add a notice (shown from ``starts_at``, default now, until ``ends_at``, default until removed).
    Raises BadInput for an empty or over-long message or an end not after the start."""
    text = clean_message(message)
    start = starts_at or utcnow()
    if ends_at is not None and ends_at <= start:
        raise BadInput("the notice would end before it starts")
    with svc.session() as session:
        row = Notice(message=text, starts_at=start, ends_at=ends_at, created_by=svc.actor.name[:64])
        session.add(row)
        session.flush()
        svc.audit(
            session,
            "notice.add",
            f"notice {row.id}",
            message=text[:200],
            ends_at=ends_at.isoformat() if ends_at else None,
        )
        info = NoticeInfo.from_row(row)
    hosts.refresh_map(svc)
    return info


def list_notices(
    svc: Services, *, include_past: bool = False, now: datetime | None = None
) -> list[NoticeInfo]:
    """Notices in force or still to come (every notice with ``include_past``), oldest start first."""
    now = now or utcnow()
    query = select(Notice).order_by(Notice.starts_at, Notice.id)
    if not include_past:
        query = query.where((Notice.ends_at.is_(None)) | (Notice.ends_at > now))
    with svc.session() as session:
        return [NoticeInfo.from_row(r) for r in session.scalars(query)]


def active_notices(svc: Services, now: datetime | None = None) -> list[NoticeInfo]:
    """The notices to show right now (the portal and the gateway show these), oldest start first."""
    now = now or utcnow()
    return [n for n in list_notices(svc, now=now) if n.active(now)]


def remove_notice(svc: Services, notice_id: int) -> NoticeInfo:
    """Delete a notice. Raises NotFound."""
    with svc.session() as session:
        row = session.get(Notice, notice_id)
        if row is None:
            raise NotFound(f"no notice {notice_id}")
        info = NoticeInfo.from_row(row)
        session.delete(row)
        svc.audit(session, "notice.rm", f"notice {notice_id}", message=info.message[:200])
    hosts.refresh_map(svc)
    return info
