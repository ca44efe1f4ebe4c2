"""Bookings in the store: the policy, the views, THE serialized transaction, and the queries other modules
read (the GPUs active bookings hold, what a host's bookings hold). Why one lock for all bookings, and why
conflicts cannot happen: :mod:`labgpu.services.gpus._bookings`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from labgpu.domain import bookings as rules
from labgpu.domain.bookings import WEEK, BookingConflict, BookingPolicy
from labgpu.errors import BadInput, Conflict, LabgpuError, NotFound
from labgpu.services.context import Services
from labgpu.store.db import violated_constraint
from labgpu.store.models import Booking, BookingSlot, BookingStatus, GpuMode, Host, Member

# PostgreSQL advisory lock that serialises all booking changes ("lgpubook" in ASCII).
_PG_BOOKING_LOCK = int.from_bytes(b"lgpubook", "big") & 0x7FFF_FFFF_FFFF_FFFF
HOLDING = (BookingStatus.PENDING, BookingStatus.APPROVED, BookingStatus.ACTIVE)
_TO_DOMAIN = {
    BookingStatus.PENDING: rules.BookingStatus.PENDING,
    BookingStatus.APPROVED: rules.BookingStatus.CONFIRMED,
    BookingStatus.ACTIVE: rules.BookingStatus.ACTIVE,
    BookingStatus.ENDED: rules.BookingStatus.ENDED,
    BookingStatus.CANCELLED: rules.BookingStatus.CANCELLED,
    BookingStatus.REJECTED: rules.BookingStatus.REJECTED,
}
# Bookings that ran count for the member's rolling week but hold nothing: they are handed to the
# domain as active bookings on this pseudo-host, where they meet no real booking.
_HISTORY_HOST = "\0history"
NOTE_MAX = 255


class NotAllowed(LabgpuError):
    """The actor may not do this to this booking (a member acting on another member's booking)."""

    status = 403
    reason = "forbidden"


# Policy -------------------------------------------------------------------------------------------


def booking_policy(svc: Services) -> BookingPolicy:
    """The lab's booking rules from the settings (0 in a limit setting: no limit)."""
    s = svc.settings
    return BookingPolicy(
        max_gpus_per_booking=s.booking_max_gpus or None,
        max_gpus_per_member=s.booking_max_gpus_per_member or None,
        max_gpu_hours_per_week=s.booking_max_gpu_hours_per_week or None,
        advance_limit=timedelta(days=s.booking_advance_days) if s.booking_advance_days else None,
        min_length=timedelta(minutes=s.booking_min_minutes),
        max_length=timedelta(hours=s.booking_max_hours) if s.booking_max_hours else None,
        approval_required=s.booking_approval,
    )


def slot_length(svc: Services) -> timedelta:
    return timedelta(minutes=svc.settings.booking_slot_minutes)


def _for_aligned(policy: BookingPolicy, slot: timedelta) -> BookingPolicy:
    """The policy applied to a window widened to whole slots: up to one slot more at each end."""
    return replace(
        policy,
        past_grace=policy.past_grace + slot,
        max_length=policy.max_length + 2 * slot if policy.max_length is not None else None,
    )


# Views --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BookingView:
    """A booking as the CLI, the API and the portal show it."""

    id: int
    member: str
    host: str
    gpus: tuple[int, ...]
    start: datetime
    end: datetime
    status: str
    note: str | None
    created_at: datetime

    @property
    def gpu_hours(self) -> float:
        return len(self.gpus) * (self.end - self.start).total_seconds() / 3600

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "member": self.member,
            "host": self.host,
            "gpus": list(self.gpus),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "status": self.status,
            "note": self.note,
            "gpu_hours": round(self.gpu_hours, 2),
            "created_at": self.created_at.isoformat(),
        }


def parse_gpus(text: str) -> tuple[int, ...]:
    """GPU indexes stored as "0,2"."""
    return tuple(int(p) for p in text.split(",") if p.strip())


def format_gpus(indexes: Sequence[int]) -> str:
    return ",".join(str(i) for i in sorted(set(indexes)))


def _view(row: Booking, member: str, host: str) -> BookingView:
    return BookingView(
        id=row.id,
        member=member,
        host=host,
        gpus=parse_gpus(row.gpus),
        start=row.start_at,
        end=row.end_at,
        status=str(row.status),
        note=row.note,
        created_at=row.created_at,
    )


# The serialized transaction -----------------------------------------------------------------------


@contextmanager
def serialized(svc: Services) -> Iterator[Session]:
    """A transaction that no other booking change runs beside: committed at the end of the block,
    rolled back on error. SQLite: the database's write lock from the first statement on
    (``BEGIN IMMEDIATE``; others wait up to the busy timeout). PostgreSQL: a transaction-scoped
    advisory lock, taken first, so every later read sees what the previous holder committed."""
    with svc.sessions() as session, session.begin():
        conn = session.connection()
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_BOOKING_LOCK})")
        yield session


def _host_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Host.id, Host.name)).tuples().all())


def _domain_booking(row: Booking, host_names: Mapping[int, str]) -> rules.Booking:
    return rules.Booking(
        member=row.member.name,
        gpus=frozenset(parse_gpus(row.gpus)),
        start=row.start_at,
        end=row.end_at,
        status=_TO_DOMAIN[row.status],
        id=row.id,
        host=host_names.get(row.host_id, str(row.host_id)),
    )


def _neighbours(session: Session, member_id: int, start: datetime, end: datetime) -> list[rules.Booking]:
    """What a booking of ``[start, end)`` must be checked against: every holding booking within a
    week of the window (conflicts, GPUs at once, the rolling week), and the member's bookings that
    ran in that time (the rolling week only)."""
    names = _host_names(session)
    rows = session.scalars(
        select(Booking)
        .options(selectinload(Booking.member))
        .where(
            Booking.end_at > start - WEEK,
            Booking.start_at < end + WEEK,
            or_(
                Booking.status.in_(HOLDING),
                (Booking.status == BookingStatus.ENDED) & (Booking.member_id == member_id),
            ),
        )
    ).all()
    out = []
    for row in rows:
        b = _domain_booking(row, names)
        if row.status == BookingStatus.ENDED:
            b = replace(b, status=rules.BookingStatus.ACTIVE, host=_HISTORY_HOST)
        out.append(b)
    return out


def _add_slots(session: Session, row: Booking, start: datetime, end: datetime, slot: timedelta) -> None:
    """Hold every GPU of ``row`` for every slot of ``[start, end)``; the primary key refuses overlap."""
    for gpu in parse_gpus(row.gpus):
        for at in rules.slot_starts(start, end, slot):
            session.add(BookingSlot(host_id=row.host_id, gpu_index=gpu, slot_start=at, booking_id=row.id))
    try:
        session.flush()
    except IntegrityError as exc:
        if violated_constraint(exc) == "pk_booking_slots":
            raise BookingConflict(
                f"GPU {row.gpus} is already held by another booking between {_fmt(start)} and {_fmt(end)}",
                hint="pick other GPUs or another time",
                log_message=f"booking slot primary key refused booking {row.id}: {exc.orig}",
            ) from None
        raise


def _free_slots(session: Session, booking_id: int) -> None:
    session.execute(delete(BookingSlot).where(BookingSlot.booking_id == booking_id))


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def _check_actor(svc: Services, member: str, what: str) -> None:
    if not svc.actor.is_admin and svc.actor.name != member:
        raise NotAllowed(f"only {member} or an admin may {what}")


def _member(session: Session, name: str) -> Member:
    member = session.scalars(select(Member).where(Member.name == name)).first()
    if member is None:
        raise NotFound(f"no member named {name}")
    return member


def _host_of(session: Session, member: Member) -> Host:
    host = session.get(Host, member.host_id) if member.host_id is not None else None
    if host is None or member.container is None:
        raise BadInput(
            f"{member.name} has no container on any host, so there is nothing to attach GPUs to",
            hint=f"add the container first (labgpu member add {member.name})",
        )
    return host


def check_booked_mode(host: Host) -> None:
    """Raise Conflict unless ``host`` shares its GPUs by booking."""
    if host.gpu_mode != GpuMode.BOOKED:
        what = {
            GpuMode.SHARED: "every container has every GPU",
            GpuMode.ASSIGNED: "the admin assigns GPUs to members",
        }.get(GpuMode(host.gpu_mode), host.gpu_mode)
        raise Conflict(
            f"host {host.name} is in {host.gpu_mode} GPU mode ({what}); bookings need booked mode",
            hint="switch with `labgpu gpu mode booked`",
        )


def _assigned_gpus(session: Session, host_id: int) -> set[int]:
    """GPUs that members of this host have by assignment (member set --gpus 0,1): booked last."""
    out: set[int] = set()
    for spec in session.scalars(select(Member.gpu_spec).where(Member.host_id == host_id)):
        if spec and spec not in ("all", "none"):
            out.update(int(p) for p in spec.split(",") if p.strip().isdigit())
    return out


def _locked_row(session: Session, svc: Services, booking_id: int) -> Booking:
    row = session.get(Booking, booking_id, options=[selectinload(Booking.member)])
    if row is None or (not svc.actor.is_admin and row.member.name != svc.actor.name):
        raise NotFound(f"no booking {booking_id}")
    return row


def _require_admin(svc: Services, what: str) -> None:
    if not svc.actor.is_admin:
        raise NotAllowed(f"only an admin may {what}")


def active_gpus(session: Session, host_id: int) -> dict[str, set[int]]:
    """member -> GPUs their active bookings on ``host_id`` hold now."""
    out: dict[str, set[int]] = {}
    rows = session.execute(
        select(Member.name, Booking.gpus)
        .join(Member, Member.id == Booking.member_id)
        .where(Booking.host_id == host_id, Booking.status == BookingStatus.ACTIVE)
    ).tuples()
    for name, gpus in rows:
        out.setdefault(name, set()).update(parse_gpus(gpus))
    return out


def active_bookings(session: Session, host_id: int) -> list[Booking]:
    """The active bookings of ``host_id`` (with their members loaded)."""
    return list(
        session.scalars(
            select(Booking)
            .options(selectinload(Booking.member))
            .where(Booking.host_id == host_id, Booking.status == BookingStatus.ACTIVE)
        )
    )


def holding_on_host(session: Session, host_id: int) -> int:
    """How many bookings of ``host_id`` hold GPUs (pending, approved, active)."""
    return len(
        session.scalars(
            select(Booking.id).where(Booking.host_id == host_id, Booking.status.in_(HOLDING))
        ).all()
    )


def cancel_all_on_host(svc: Services, session: Session, host_id: int, *, now: datetime) -> int:
    """Cancel (or end, when started) every holding booking of a host, inside the caller's
    transaction (switching the host out of booked mode). Returns how many."""
    rows = session.scalars(
        select(Booking)
        .options(selectinload(Booking.member))
        .where(Booking.host_id == host_id, Booking.status.in_(HOLDING))
    ).all()
    for row in rows:
        if row.status == BookingStatus.ACTIVE and row.start_at < now < row.end_at:
            row.status = BookingStatus.ENDED
            row.end_at = now
        else:
            row.status = BookingStatus.CANCELLED
        _free_slots(session, row.id)
        svc.audit(session, "booking.cancel", row.member.name, booking=row.id, reason="GPU mode changed")
    return len(rows)


def prune_slots(svc: Services, *, before: datetime) -> int:
    """Delete the slots of bookings that ended before ``before`` (they can clash with nothing)."""
    with svc.session() as session:
        ids = (
            select(Booking.id)
            .where(Booking.status.not_in(HOLDING), Booking.end_at < before)
            .scalar_subquery()
        )
        result = session.execute(delete(BookingSlot).where(BookingSlot.booking_id.in_(ids)))
        return int(getattr(result, "rowcount", 0) or 0)
