"""Bookings as people ask for them in the portal and the JSON API: times as typed, GPUs by count or list.

A thin layer over :mod:`labgpu.services.gpus._bookings`, which holds every rule (conflicts, quotas, who may touch
which booking, the audit log): this module only turns what was typed into its arguments and finds the GPUs
of the member's host (:meth:`~labgpu.services.gpus._usage.GpuUsageReader.bookable_gpus`), so a booking made
in the portal does not depend on the local daemon listing them.

Times are read like the CLI reads them (:func:`labgpu.domain.bookings.parse_time`: ``now``, ``+2h``,
``14:00``, ``2026-03-02 14:00``, ISO 8601 with an offset), in the portal machine's local time zone unless
they carry their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

import tzlocal
from sqlalchemy import select

from labgpu.domain.bookings import parse_time
from labgpu.domain.members import validate_member_name
from labgpu.errors import N_, BadInput, LabgpuError
from labgpu.services.context import Services
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus._booking_records import BookingView
from labgpu.services.gpus._bookings import book, cancel, extend, get_booking, reject
from labgpu.services.gpus._usage import GpuUsageReader
from labgpu.store.models import Host, Member, utcnow

TIME_MAX = 64  # characters of a typed time
# Typed times further from now are refused: nothing books years ahead, and far dates overflow datetime's
# range in the slot and week arithmetic.
TIME_RANGE = timedelta(days=3660)


def local_tz() -> tzinfo:
    """The machine's time zone (TZ, else /etc/localtime), with its daylight-saving rules: typed times
    without a zone are read in it and the board shows it. A fixed offset (the one in force now) would put
    a booking typed for a day after the clocks change an hour off, and show that day with 24 hours."""
    try:
        return tzlocal.get_localzone()
    except (LookupError, ValueError, OSError):  # no zone database, an unknown TZ: the offset in force now
        tz = datetime.now().astimezone().tzinfo
        assert tz is not None
        return tz


def gpu_choice(count: int | None = None, indexes: Sequence[int] | None = None) -> str:
    """The service's ``gpus`` argument: a count (``"2"``) or chosen GPUs (``"0,2,"``: a list even of
    one). Chosen GPUs win over a count. Raises BadInput when neither is given."""
    if indexes:
        return ",".join(str(i) for i in sorted(set(indexes))) + ","
    if count is not None:
        return str(count)
    raise BadInput(N_("say how many GPUs, or pick them"))


def read_time(text: str, what: str, *, now: datetime, tz: tzinfo, base: datetime | None = None) -> datetime:
    """A typed moment (see the module). Raises BadInput naming ``what``."""
    value = text.strip()
    if not value:
        raise BadInput(f"{what}: give a time, e.g. +2h or 2026-03-02 18:00")
    if len(value) > TIME_MAX:
        raise BadInput(f"{what}: at most {TIME_MAX} characters")
    try:
        moment = parse_time(value, now=now, tz=tz, base=base)
    except BadInput as exc:
        raise BadInput(f"{what}: {exc.message}") from None
    except OverflowError:
        moment = None
    if moment is None or abs(moment - now) > TIME_RANGE:
        raise BadInput(f"{what}: {value!r} is more than 10 years from now")
    return moment


def clean_note(note: str | None) -> str | None:
    """A booking's note: one line of printable text, or None. Raises BadInput."""
    text = (note or "").strip()
    if not text.isprintable():
        raise BadInput(N_("the note must be one line of printable text"))
    return text or None


def clean_reason(reason: str | None) -> str | None:
    """A rejection's reason: printable lines (ended by LF or CRLF, stored as LF), or None. Raises
    BadInput. Only those two end lines: str.splitlines would also take a lone CR (which overwrites a
    line on a terminal), form feeds and the separators \x1c-\x1e, \x85, U+2028 as line ends, and let
    them into the audit log and the member's mail."""
    text = (reason or "").strip().replace("\r\n", "\n")
    if not all(line.isprintable() for line in text.split("\n")):
        raise BadInput(N_("the reason must be printable text"))
    return text or None


def member_host(svc: Services, member: str) -> Host | None:
    """The host of ``member``'s container (None without one, or for a name that is no member)."""
    with svc.session() as session:
        row = session.scalars(select(Member).where(Member.name == member)).first()
        if row is None or row.host_id is None:
            return None
        return session.get(Host, row.host_id)


def request_booking(
    svc: Services,
    reader: GpuUsageReader,
    *,
    member: str,
    gpus: str,
    start: str = "now",
    until: str,
    note: str | None = None,
    now: datetime | None = None,
    tz: tzinfo | None = None,
) -> BookingView:
    """Book GPUs of ``member``'s host from typed times (``until`` counts from ``start`` for ``+2h``).
    Everything else is :func:`labgpu.services.gpus._bookings.book`'s: it raises BadInput, BookingConflict,
    QuotaExceeded, Exhausted, Conflict (host not in booked mode), NotFound, NotAllowed (a member booking
    for someone else). Asks the member's host (daemon or GPU agent) for its GPUs."""
    now = now or utcnow()
    tz = tz or local_tz()
    validate_member_name(member)
    note = clean_note(note)
    start_at = read_time(start or "now", "from", now=now, tz=tz)
    end_at = read_time(until, "until", now=now, tz=tz, base=start_at)
    host = member_host(svc, member)
    gpus_on_host = (
        {g.index: g.pci_address for g in reader.bookable_gpus(svc, host)}
        if host is not None and host.gpu_mode == "booked"
        else {}
    )
    return book(
        svc,
        member=member,
        gpus=gpus,
        start=start_at,
        end=end_at,
        note=note,
        now=now,
        gpus_on_host=gpus_on_host,
    )


def request_extension(
    svc: Services, booking_id: int, *, until: str, now: datetime | None = None, tz: tzinfo | None = None
) -> BookingView:
    """Move a booking's end to a typed time (``+2h``: after its current end). Raises what
    :func:`labgpu.services.gpus._bookings.extend` raises (NotFound for another member's booking)."""
    now = now or utcnow()
    current = get_booking(svc, booking_id)
    new_end = read_time(until, "until", now=now, tz=tz or local_tz(), base=current.end)
    return extend(svc, booking_id, until=new_end, now=now)


def reject_booking(svc: Services, booking_id: int, *, reason: str | None = None) -> BookingView:
    """Reject a pending booking with a typed reason (admins only). Raises what
    :func:`labgpu.services.gpus._bookings.reject` raises, and BadInput for a reason that is not text."""
    return reject(svc, booking_id, reason=clean_reason(reason))


@dataclass(frozen=True)
class CancelOutcome:
    """A cancelled booking, and for one that had started what happened to its GPUs."""

    booking: BookingView
    ended_early: bool
    note: str  # "" when nothing needed saying


def cancel_booking(
    svc: Services,
    booking_id: int,
    *,
    now: datetime | None = None,
    reader: GpuUsageReader | None = None,
) -> CancelOutcome:
    """Cancel a booking (one that runs ends now). The GPUs of one that ran are detached at once,
    through the daemon of the booking's host (``reader`` finds a remote host's GPUs through its agent);
    when that daemon does not answer, by the job runner within a minute (the note says so). Raises
    what :func:`labgpu.services.gpus._bookings.cancel` raises. Waits for the detach."""
    done = cancel(svc, booking_id, now=now)
    if not done.ended_early:
        return CancelOutcome(done.booking, False, "")
    with svc.session() as session:
        host = session.scalars(select(Host).where(Host.name == done.booking.host)).first()
    if host is None:
        return CancelOutcome(done.booking, True, "its GPUs are detached by the job runner")
    try:
        outcomes = gpu_attach.sync_host(svc, host=host, members={done.booking.member}, reader=reader)
    except LabgpuError as exc:
        return CancelOutcome(
            done.booking,
            True,
            f"GPUs not detached from {host.name} yet ({exc.message}); the job runner detaches them",
        )
    note = "; ".join(o.message for o in outcomes if o.changed or o.failed)
    return CancelOutcome(done.booking, True, note)
