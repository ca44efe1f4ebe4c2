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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from labgpu.domain import bookings as rules
from labgpu.errors import BadInput, Conflict, NotFound
from labgpu.services import notify as notifications
from labgpu.services.context import Services
from labgpu.services.gpus._attach import host_gpu_map
from labgpu.services.gpus._booking_records import (
    HOLDING,
    NOTE_MAX,
    BookingView,
    _add_slots,
    _assigned_gpus,
    _check_actor,
    _domain_booking,
    _fmt,
    _for_aligned,
    _free_slots,
    _host_names,
    _host_of,
    _locked_row,
    _member,
    _neighbours,
    _require_admin,
    _view,
    booking_policy,
    check_booked_mode,
    format_gpus,
    serialized,
    slot_length,
)
from labgpu.store.models import Booking, BookingStatus, Host, Member, utcnow

log = logging.getLogger(__name__)


def _gpus_of_members_host(svc: Services, member: str) -> Mapping[int, str]:
    """The GPUs of ``member``'s host, asked before the booking lock is taken (no I/O under it); empty
    when there is no such member or host (book() then says why)."""
    with svc.session() as session:
        row = session.scalars(select(Member).where(Member.name == member)).first()
        host = session.get(Host, row.host_id) if row is not None and row.host_id is not None else None
    return host_gpu_map(svc, host) if host is not None else {}


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
    tell_member(
        svc, view.member, notifications.APPROVAL, f"GPU booking {view.id} approved",
        _describe(view) + "\n\nIt was approved.",
    )  # fmt: skip
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
    body = _describe(view) + "\n\nIt was rejected" + (f": {reason}" if reason else ".")
    tell_member(svc, view.member, notifications.APPROVAL, f"GPU booking {view.id} rejected", body)
    return view


def _describe(view: BookingView) -> str:
    return (
        f"Booking {view.id}: GPU {format_gpus(view.gpus)} on {view.host} for {view.member}, "
        f"from {_fmt(view.start)} to {_fmt(view.end)}."
    )


def tell_member(
    svc: Services, member: str, kind: str, subject: str, body: str, *, key: str | None = None
) -> int:
    """Notify a member on their channels (mail by default); queued, so a channel that fails is retried
    and never fails or delays the change it reports. Returns how many deliveries were queued."""
    return notifications.send(svc, kind, [member], subject, body, key=key)


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
