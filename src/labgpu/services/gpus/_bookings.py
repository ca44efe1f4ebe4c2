"""GPU bookings: book, list, cancel, extend, approve, reject; the start and end of bookings over time.

Conflicts are impossible by construction, twice over:

1. Every change runs in ONE serialized transaction (:func:`serialized`): SQLite's write lock taken up
   front (``BEGIN IMMEDIATE``), a PostgreSQL advisory lock on PostgreSQL. Inside it the domain rules
   (:func:`labgpu.domain.bookings.check_booking`: conflicts, quotas, advance limit, lengths) see every
   booking that any other writer committed, and the insert follows before anyone else may check.
2. A live booking holds one :class:`~labgpu.store.models.BookingSlot` row per GPU per slot, whose
   primary key (host, GPU, slot start) refuses a second holder whatever the code above did. A clash
   there becomes the same :class:`~labgpu.domain.bookings.BookingConflict` as the domain's.

The lock is one for all bookings of all hosts (not a host row lock) because quotas count a member's
bookings on every host. Bookings are rare next to the time a check takes, so nobody waits long.

Bookings hold whole slots (``booking_slot_minutes``): a start is rounded down and an end up. The
member's request is checked as asked (not in the past, within the advance limit, the lengths), the
rounded window for conflicts and quotas.

Times are aware datetimes; ``now`` is a parameter everywhere so that tests (and `labgpu jobs run-once
--now`) control the clock.
"""

from __future__ import annotations

import logging
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
from labgpu.errors import BadInput, Conflict, LabgpuError, NotFound, Unavailable
from labgpu.services.context import Services
from labgpu.services.mail import send_mail
from labgpu.store.db import violated_constraint
from labgpu.store.models import Booking, BookingSlot, BookingStatus, GpuMode, Host, Member, utcnow

log = logging.getLogger(__name__)

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


def _gpus_of_members_host(svc: Services, member: str) -> Mapping[int, str]:
    """The GPUs of ``member``'s host, asked before the booking lock is taken (no I/O under it); empty
    when there is no such member or host (book() then says why)."""
    from labgpu.services.gpus._attach import host_gpu_map

    with svc.session() as session:
        row = session.scalars(select(Member).where(Member.name == member)).first()
        host = session.get(Host, row.host_id) if row is not None and row.host_id is not None else None
    return host_gpu_map(svc, host) if host is not None else {}


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


# Book ---------------------------------------------------------------------------------------------


def book(
    svc: Services,
    *,
    member: str,
    gpus: str,
    start: datetime,
    end: datetime,
    note: str | None = None,
    now: datetime | None = None,
    gpus_on_host: Mapping[int, str] | None = None,
) -> BookingView:
    """Book GPUs of ``member``'s host for ``[start, end)`` (widened to whole slots).

    ``gpus`` is a count (``"2"``: labgpu picks free GPUs) or indexes (``"0,2"``, ``"3,"``).
    ``gpus_on_host`` (index -> PCI address) defaults to the GPUs of the member's host, from that host's
    daemon (or its GPU agent: :func:`labgpu.services.gpus._attach.host_gpu_map`). The booking is
    pending when policy asks for approval, else approved; its GPUs are attached at its start by the
    job runner. Audit ``booking.add``. Raises BadInput (bad window, unknown GPU), BookingConflict
    (overlap), QuotaExceeded, Exhausted (not enough free GPUs), Conflict (host not in booked mode),
    NotFound, NotAllowed. Does not wait for anything but the booking lock."""
    now = now or utcnow()
    count, indexes = rules.parse_gpu_choice(gpus)
    if note is not None and len(note) > NOTE_MAX:
        raise BadInput(f"the note is too long ({len(note)} characters; at most {NOTE_MAX})")
    _check_actor(svc, member, f"book GPUs for {member}")
    policy = booking_policy(svc)
    slot = slot_length(svc)
    rules.check_window(start, end, policy, now)  # the request as the member asked
    aligned_start, aligned_end = rules.align_window(start, end, slot)
    if gpus_on_host is None:
        gpus_on_host = _gpus_of_members_host(svc, member)
    with serialized(svc) as session:
        row_member = _member(session, member)
        host = _host_of(session, row_member)
        check_booked_mode(host)
        if not gpus_on_host:
            raise BadInput(
                f"host {host.name} has no GPU labgpu can attach (the runtime lists no NVIDIA GPU)",
                hint="check `labgpu doctor` and `labgpu gpu list`",
            )
        existing = _neighbours(session, row_member.id, aligned_start, aligned_end)
        if count is not None:
            assigned = _assigned_gpus(session, host.id)
            indexes = rules.assign_gpus(
                count,
                aligned_start,
                aligned_end,
                gpus=gpus_on_host.keys(),
                bookings=existing,
                assigned=assigned,
                host=host.name,
            )
        unknown = [i for i in indexes if i not in gpus_on_host]
        if unknown:
            have = ", ".join(map(str, sorted(gpus_on_host)))
            raise BadInput(f"host {host.name} has no GPU {', '.join(map(str, unknown))} (it has: {have})")
        candidate = rules.Booking(
            member=member,
            gpus=frozenset(indexes),
            start=aligned_start,
            end=aligned_end,
            status=policy.initial_status,
            host=host.name,
        )
        rules.check_booking(candidate, existing, _for_aligned(policy, slot), now, started=True)
        row = Booking(
            member_id=row_member.id,
            host_id=host.id,
            gpus=format_gpus(indexes),
            start_at=aligned_start,
            end_at=aligned_end,
            status=BookingStatus.PENDING if policy.approval_required else BookingStatus.APPROVED,
            note=note or None,
        )
        session.add(row)
        session.flush()
        _add_slots(session, row, aligned_start, aligned_end, slot)
        svc.audit(
            session,
            "booking.add",
            member,
            booking=row.id,
            host=host.name,
            gpus=row.gpus,
            start=aligned_start.isoformat(),
            end=aligned_end.isoformat(),
            status=str(row.status),
        )
        view = _view(row, member, host.name)
    return view


def _assigned_gpus(session: Session, host_id: int) -> set[int]:
    """GPUs that members of this host have by assignment (member set --gpus 0,1): booked last."""
    out: set[int] = set()
    for spec in session.scalars(select(Member.gpu_spec).where(Member.host_id == host_id)):
        if spec and spec not in ("all", "none"):
            out.update(int(p) for p in spec.split(",") if p.strip().isdigit())
    return out


# Read ---------------------------------------------------------------------------------------------


def list_bookings(
    svc: Services,
    *,
    member: str | None = None,
    include_all: bool = False,
    now: datetime | None = None,
) -> list[BookingView]:
    """Bookings by start time: those that hold GPUs (pending, approved, active), or with
    ``include_all`` also ended, cancelled and rejected ones. A member who is not an admin sees
    only their own. Raises NotAllowed for another member's list."""
    if member is not None:
        _check_actor(svc, member, f"list {member}'s bookings")
    elif not svc.actor.is_admin:
        member = svc.actor.name
    with svc.session() as session:
        names = _host_names(session)
        query = select(Booking).options(selectinload(Booking.member)).order_by(Booking.start_at, Booking.id)
        if not include_all:
            query = query.where(Booking.status.in_(HOLDING))
        if member is not None:
            query = query.join(Member, Member.id == Booking.member_id).where(Member.name == member)
        return [_view(r, r.member.name, names.get(r.host_id, "?")) for r in session.scalars(query)]


def get_booking(svc: Services, booking_id: int) -> BookingView:
    """One booking. Raises NotFound (also for another member's booking, to a member)."""
    with svc.session() as session:
        row = session.get(Booking, booking_id, options=[selectinload(Booking.member)])
        if row is None or (not svc.actor.is_admin and row.member.name != svc.actor.name):
            raise NotFound(f"no booking {booking_id}")
        return _view(row, row.member.name, _host_names(session).get(row.host_id, "?"))


def _locked_row(session: Session, svc: Services, booking_id: int) -> Booking:
    row = session.get(Booking, booking_id, options=[selectinload(Booking.member)])
    if row is None or (not svc.actor.is_admin and row.member.name != svc.actor.name):
        raise NotFound(f"no booking {booking_id}")
    return row


# Change -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cancelled:
    """What cancelling did: ``ended_early`` for a booking that had started (its GPUs are detached
    by the job runner, or at once by the caller)."""

    booking: BookingView
    ended_early: bool


def cancel(svc: Services, booking_id: int, *, now: datetime | None = None) -> Cancelled:
    """Cancel a booking; one that has started ends now. Its slots are freed at once (others may book
    them). Audit ``booking.cancel``. Raises NotFound, NotAllowed, Conflict (already over)."""
    now = now or utcnow()
    with serialized(svc) as session:
        row = _locked_row(session, svc, booking_id)
        if row.status not in HOLDING:
            raise Conflict(f"booking {booking_id} is {row.status} already")
        started = row.status == BookingStatus.ACTIVE or row.start_at <= now
        if started and row.status != BookingStatus.PENDING and now < row.end_at:
            row.status = BookingStatus.ENDED
            row.end_at = max(now, row.start_at + timedelta(seconds=1))
        else:
            row.status = BookingStatus.CANCELLED
        _free_slots(session, row.id)
        svc.audit(session, "booking.cancel", row.member.name, booking=row.id, status=str(row.status))
        view = _view(row, row.member.name, _host_names(session).get(row.host_id, "?"))
    return Cancelled(view, ended_early=view.status == BookingStatus.ENDED)


def extend(svc: Services, booking_id: int, *, until: datetime, now: datetime | None = None) -> BookingView:
    """Move a booking's end to ``until`` (rounded up to a slot), checked like a new booking (conflicts,
    quotas, the maximum length) except that its start may lie in the past. Audit ``booking.extend``.
    Raises BadInput, BookingConflict, QuotaExceeded, NotFound, NotAllowed."""
    now = now or utcnow()
    policy = booking_policy(svc)
    slot = slot_length(svc)
    new_end = rules.ceil_to_slot(until, slot)
    with serialized(svc) as session:
        row = _locked_row(session, svc, booking_id)
        if row.status not in HOLDING:
            raise Conflict(
                f"booking {booking_id} is {row.status}: only a pending, approved or active one can be extended"
            )
        names = _host_names(session)
        existing = _neighbours(session, row.member_id, row.start_at, new_end)
        current = _domain_booking(row, names)
        rules.extend(current, new_end, existing, _for_aligned(policy, slot), now)
        old_end = row.end_at
        row.end_at = new_end
        session.flush()
        _add_slots(session, row, old_end, new_end, slot)
        svc.audit(
            session,
            "booking.extend",
            row.member.name,
            booking=row.id,
            old_end=old_end.isoformat(),
            new_end=new_end.isoformat(),
        )
        view = _view(row, row.member.name, names.get(row.host_id, "?"))
    return view


def approve(svc: Services, booking_id: int, *, now: datetime | None = None) -> BookingView:
    """Approve a pending booking (admins only). Its GPUs are attached at its start (at the next job
    run when that is past). Mails the member. Audit ``booking.approve``. Raises NotAllowed, NotFound,
    Conflict (not pending, or already over)."""
    now = now or utcnow()
    _require_admin(svc, "approve bookings")
    with serialized(svc) as session:
        row = _locked_row(session, svc, booking_id)
        if row.status != BookingStatus.PENDING:
            raise Conflict(f"booking {booking_id} is {row.status}, not pending")
        if row.end_at <= now:
            raise Conflict(f"booking {booking_id} ended at {_fmt(row.end_at)} while it waited; reject it")
        row.status = BookingStatus.APPROVED
        svc.audit(session, "booking.approve", row.member.name, booking=row.id)
        view = _view(row, row.member.name, _host_names(session).get(row.host_id, "?"))
        email = row.member.email
    notify(svc, email, f"GPU booking {view.id} approved", _describe(view) + "\n\nIt was approved.")
    return view


def reject(
    svc: Services, booking_id: int, *, reason: str | None = None, now: datetime | None = None
) -> BookingView:
    """Reject a pending booking (admins only), freeing its slots; mails the member the reason. Audit
    ``booking.reject``. Raises NotAllowed, NotFound, Conflict (not pending)."""
    _require_admin(svc, "reject bookings")
    with serialized(svc) as session:
        row = _locked_row(session, svc, booking_id)
        if row.status != BookingStatus.PENDING:
            raise Conflict(f"booking {booking_id} is {row.status}, not pending")
        row.status = BookingStatus.REJECTED
        _free_slots(session, row.id)
        svc.audit(session, "booking.reject", row.member.name, booking=row.id, reason=reason)
        view = _view(row, row.member.name, _host_names(session).get(row.host_id, "?"))
        email = row.member.email
    body = _describe(view) + "\n\nIt was rejected" + (f": {reason}" if reason else ".")
    notify(svc, email, f"GPU booking {view.id} rejected", body)
    return view


def _require_admin(svc: Services, what: str) -> None:
    if not svc.actor.is_admin:
        raise NotAllowed(f"only an admin may {what}")


def _describe(view: BookingView) -> str:
    return (
        f"Booking {view.id}: GPU {format_gpus(view.gpus)} on {view.host} for {view.member}, "
        f"from {_fmt(view.start)} to {_fmt(view.end)}."
    )


def notify(svc: Services, email: str | None, subject: str, body: str) -> bool:
    """Mail a member; a mail that cannot be sent is logged, never fails the change it reports."""
    if not email:
        return False
    try:
        return send_mail(svc.settings, to=[email], subject=subject, body=body)
    except Unavailable as exc:
        log.warning("%s (mail %r to %s not sent)", exc.message, subject, email)
        return False


# Over time: the job runner's part -----------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """A booking that changed status because time passed."""

    booking: BookingView
    old: str
    new: str


def advance(svc: Services, *, now: datetime | None = None) -> list[Transition]:
    """Move bookings along the clock, in one serialized transaction: approved ones whose start has
    come become active; approved or active ones whose end has come end (their slots stay: they are
    in the past); pending ones whose end came without a decision are rejected. Idempotent."""
    now = now or utcnow()
    out: list[Transition] = []
    with serialized(svc) as session:
        names = _host_names(session)
        rows = session.scalars(
            select(Booking)
            .options(selectinload(Booking.member))
            .where(Booking.status.in_(HOLDING), or_(Booking.start_at <= now, Booking.end_at <= now))
            .order_by(Booking.start_at, Booking.id)
        ).all()
        for row in rows:
            old = row.status
            if row.status in (BookingStatus.APPROVED, BookingStatus.ACTIVE) and row.end_at <= now:
                row.status = BookingStatus.ENDED
            elif row.status == BookingStatus.APPROVED and row.start_at <= now:
                row.status = BookingStatus.ACTIVE
            elif row.status == BookingStatus.PENDING and row.end_at <= now:
                row.status = BookingStatus.REJECTED
                _free_slots(session, row.id)
            if row.status != old:
                out.append(
                    Transition(_view(row, row.member.name, names.get(row.host_id, "?")), old, row.status)
                )
        for t in out:
            svc.audit(
                session,
                f"booking.{_VERB[BookingStatus(t.new)]}",
                t.booking.member,
                booking=t.booking.id,
                gpus=format_gpus(t.booking.gpus),
                host=t.booking.host,
            )
    return out


_VERB = {
    BookingStatus.ACTIVE: "start",
    BookingStatus.ENDED: "end",
    BookingStatus.REJECTED: "expire",
}


def release(
    svc: Services, booking_id: int, *, reason: str, now: datetime | None = None
) -> BookingView | None:
    """End an active booking early because of ``reason`` (the idle rule), freeing its slots. Returns
    None when it was no longer active. Audit ``booking.release``."""
    now = now or utcnow()
    with serialized(svc) as session:
        row = session.get(Booking, booking_id, options=[selectinload(Booking.member)])
        if row is None or row.status != BookingStatus.ACTIVE or row.end_at <= now:
            return None
        row.status = BookingStatus.ENDED
        row.end_at = max(now, row.start_at + timedelta(seconds=1))
        _free_slots(session, row.id)
        svc.audit(session, "booking.release", row.member.name, booking=row.id, reason=reason)
        return _view(row, row.member.name, _host_names(session).get(row.host_id, "?"))


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
