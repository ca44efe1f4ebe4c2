"""The ``bookings`` job: bookings start and end, GPUs follow, and members are told (start, end, reminder)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from labgpu.errors import LabgpuError
from labgpu.services import gpus, members, notify
from labgpu.services.context import Services
from labgpu.services.members import checkpoint
from labgpu.services.ops._job_types import JobContext, JobResult
from labgpu.store.models import Booking, BookingStatus, GpuMode, Host

log = logging.getLogger(__name__)

# A host whose bookings ended this long ago is still visited: its detach may have failed then (the
# daemon was down, or the mode switch that ended them could not reach it).
RECENTLY_ENDED = timedelta(days=1)


def booking_hosts(svc: Services, *, now: datetime) -> list[Host]:
    """The hosts the bookings job visits: those in booked mode, those with an active booking, and those
    where a booking ended within :data:`RECENTLY_ENDED` (GPUs may still be attached there). By name."""
    with svc.session() as session:
        with_bookings = select(Booking.host_id).where(
            or_(
                Booking.status == BookingStatus.ACTIVE,
                (Booking.status.in_((BookingStatus.ENDED, BookingStatus.CANCELLED)))
                & (Booking.end_at >= now - RECENTLY_ENDED),
            )
        )
        return list(
            session.scalars(
                select(Host)
                .where(or_(Host.gpu_mode == GpuMode.BOOKED.value, Host.id.in_(with_bookings)))
                .order_by(Host.name)
            )
        )


def run_bookings(svc: Services, ctx: JobContext) -> JobResult:
    """Start and end bookings, then attach and detach GPUs to match the active ones, on every host
    where GPUs may be booked (each through its own daemon). A host whose daemon cannot be reached is
    an error naming it; the other hosts are synced all the same."""
    result = JobResult()
    started: list[gpus.BookingView] = []
    for t in gpus.advance(svc, now=ctx.now):
        b = t.booking
        result.lines.append(
            f"booking {b.id} ({b.member}, GPU {gpus.format_gpus(b.gpus)}): {t.old} -> {t.new}"
        )
        if t.new == BookingStatus.ACTIVE:
            started.append(b)
        elif t.new == BookingStatus.ENDED:
            _tell_ended(svc, b)
    # Fault injection (tests/reliability): killed here, the store has the new statuses but the GPUs
    # are not attached or detached yet; the next run (once this run's lease expires) does it.
    checkpoint("booking-advanced")
    source = ctx.source() if ctx.gpu_source is not None else None
    reader = ctx.reader()
    outcomes: list[gpus.AttachOutcome] = []
    for host in booking_hosts(svc, now=ctx.now):
        try:
            outcomes += gpus.sync_host(svc, host=host, source=source, reader=reader)
        except LabgpuError as exc:  # the transitions above stand; attaching waits for the next run
            result.errors.append(f"GPUs on {host.name} not attached or detached: {exc.message}")
        except Exception as exc:  # one host's odd answer must not keep the others' GPUs waiting
            log.exception("bookings: syncing %s failed", host.name)
            result.errors.append(f"GPUs on {host.name} not attached or detached: {type(exc).__name__}: {exc}")
    checkpoint("booking-attached")
    notes: dict[str, str] = {}
    for o in outcomes:
        if o.applied == gpus.UNCHANGED and o.message == gpus.AS_BOOKED:
            continue
        line = f"{o.member} ({o.container or 'no container'}): {o.message}"
        (result.errors if o.failed else result.lines).append(line)
        notes[o.member] = _attach_note(o)
    for b in started:
        note = notes.get(b.member, "")
        if _in_no_gpu_mode(svc, b.member):
            result.lines.append(
                f"{b.member} is in no-GPU mode: booking {b.id}'s GPUs wait until they switch back"
            )
            note += (
                "You are in no-GPU mode: the booking's GPUs are kept for you but not put into your container. "
                "Give the GPUs back on My container (or `labgpu member set NAME --gpu`) to have them at once.\n"
            )
        _tell_started(svc, b, note)
    result.lines += _remind(svc, now=ctx.now)
    result.data["attach"] = [o.as_dict() for o in outcomes]
    if not result.lines and not result.errors:
        result.lines.append("nothing to start, end, attach or detach")
    return result


def _attach_note(outcome: gpus.AttachOutcome) -> str:
    """What a member whose booking just started must know when its GPUs are NOT in the running
    container yet (the container is stopped, or the daemon refused): they would otherwise look for
    them in vain."""
    if outcome.applied == gpus.APPLIED_NEXT_START and outcome.attached:
        return (
            f"Its GPU(s) {', '.join(map(str, outcome.attached))} were added to {outcome.container}, which is "
            "stopped: they are there once you start it.\n"
        )
    if outcome.applied in (gpus.REFUSED, gpus.NO_CONTAINER) and outcome.wanted:
        return (
            f"Its GPU(s) could not be attached yet: {outcome.message}.\nlabgpu keeps trying every minute; "
            "the admins see this in `labgpu jobs status`.\n"
        )
    return ""


def _in_no_gpu_mode(svc: Services, member: str) -> bool:
    try:
        return members.get_member(svc, member, live=False).no_gpu
    except LabgpuError:
        return False


def _when(t: datetime) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _tell_started(svc: Services, b: gpus.BookingView, note: str) -> None:
    body = (
        f"Hello {b.member},\n\nYour booking {b.id} has started: GPU {gpus.format_gpus(b.gpus)} on {b.host} "
        f"until {_when(b.end)}.\n" + (f"\n{note}" if note else "")
    )
    gpus.tell_member(
        svc, b.member, notify.BOOKING_START, "Your GPU booking has started", body, key=f"booking-start:{b.id}"
    )


def _tell_ended(svc: Services, b: gpus.BookingView) -> None:
    body = (
        f"Hello {b.member},\n\nYour booking {b.id} (GPU {gpus.format_gpus(b.gpus)} on {b.host}) has ended: "
        "its GPUs were taken from your container. Your files are where they were.\n"
    )
    gpus.tell_member(
        svc, b.member, notify.BOOKING_END, "Your GPU booking has ended", body, key=f"booking-end:{b.id}"
    )


def _remind(svc: Services, *, now: datetime) -> list[str]:
    """Remind the members whose approved bookings start within notify_booking_reminder_minutes (once
    per booking: the notification's key)."""
    minutes = svc.settings.notify_booking_reminder_minutes
    if minutes <= 0:
        return []
    lines = []
    for b in gpus.list_bookings(svc, now=now):
        if b.status != BookingStatus.APPROVED or not now < b.start <= now + timedelta(minutes=minutes):
            continue
        body = (
            f"Hello {b.member},\n\nYour booking {b.id} starts at {_when(b.start)}: GPU "
            f"{gpus.format_gpus(b.gpus)} on {b.host}, until {_when(b.end)}.\n"
        )
        subject = f"Your GPU booking starts in {max(1, round((b.start - now).total_seconds() / 60))} min"
        if gpus.tell_member(
            svc, b.member, notify.BOOKING_REMINDER, subject, body, key=f"booking-reminder:{b.id}"
        ):
            lines.append(f"reminded {b.member} of booking {b.id}")
    return lines
