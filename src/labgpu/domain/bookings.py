"""Bookings: time-boxed claims of GPUs by a member, and the lab's rules for them. Pure, no I/O.

Rules, all in :class:`BookingPolicy`:

- A booking is the half-open window ``[start, end)`` on a set of GPU indexes of one host; two
  bookings conflict when they share a GPU on the same host and their windows intersect. One that
  ends at 14:00 and one that starts at 14:00 do not conflict.
- Bookings that are pending (waiting for an admin), confirmed or active HOLD their GPUs: they block
  others and count against quotas. A pending booking holds its GPUs so that an admin can never
  approve two overlapping requests; ended, cancelled, rejected and released ones hold nothing.
- Length: at least ``min_length``, at most ``max_length``. Advance limit: a booking may start at most
  ``advance_limit`` from now. It may not start in the past (``past_grace`` allows for the seconds
  between "now" on the client and the check).
- GPUs: at most ``max_gpus_per_booking`` in one booking, and at most ``max_gpus_per_member`` held by
  one member at any moment (over all their bookings).
- GPU-hours: GPUs x hours. A member's holding bookings may not add up to more than
  ``max_gpu_hours_per_week`` within ANY 7 consecutive days (a rolling week). We chose the rolling
  week over calendar weeks because a calendar week lets a member book a full quota on Sunday and
  another on Monday; the rolling rule cannot be gamed at the boundary, and "no more than N
  GPU-hours in any 7 days" is easy to say. The price is that the remaining quota depends on the
  window, so :func:`gpu_hours_left` answers for one given window.

All times are timezone-aware datetimes; naive ones are refused (they are the usual source of
off-by-eight-hours bugs in labs that are not on UTC).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum

from labgpu.errors import BadInput, Conflict, Exhausted, LabgpuError

WEEK = timedelta(days=7)


class BookingStatus(StrEnum):
    PENDING = "pending"  # waiting for an admin's approval
    CONFIRMED = "confirmed"  # accepted, not started yet
    ACTIVE = "active"  # started: its GPUs are attached
    ENDED = "ended"
    CANCELLED = "cancelled"  # by the member or an admin
    REJECTED = "rejected"  # by an admin
    RELEASED = "released"  # ended early by the idle rule

    @property
    def holds(self) -> bool:
        """Whether a booking in this status keeps its GPUs from others and counts for quotas."""
        return self in HOLDING


HOLDING = frozenset({BookingStatus.PENDING, BookingStatus.CONFIRMED, BookingStatus.ACTIVE})


class BookingConflict(Conflict):
    reason = "booking-conflict"


class QuotaExceeded(LabgpuError):
    """The booking is well-formed but the lab's policy does not allow it."""

    status = 403
    reason = "quota"


def _aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadInput(f"{what} {value.isoformat()} has no time zone")


@dataclass(frozen=True)
class Booking:
    """A member's claim of GPUs (indexes on ``host``) for ``[start, end)``."""

    member: str
    gpus: frozenset[int]
    start: datetime
    end: datetime
    status: BookingStatus = BookingStatus.CONFIRMED
    id: int | None = None
    host: str = ""

    def __post_init__(self) -> None:
        _aware(self.start, "start")
        _aware(self.end, "end")
        if self.end <= self.start:
            raise BadInput(f"a booking must end after it starts ({_fmt(self.start)} to {_fmt(self.end)})")
        if not self.gpus:
            raise BadInput("a booking needs at least one GPU")
        if any(i < 0 for i in self.gpus):
            raise BadInput("GPU indexes are 0 or more")
        object.__setattr__(self, "gpus", frozenset(self.gpus))

    @property
    def holds(self) -> bool:
        return self.status.holds

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def gpu_hours(self) -> float:
        return len(self.gpus) * self.length.total_seconds() / 3600

    def overlaps_window(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end

    def conflicts_with(self, other: Booking) -> bool:
        """Both hold, same host, a shared GPU and intersecting windows (the same booking never)."""
        if self.id is not None and self.id == other.id:
            return False
        return (
            self.holds
            and other.holds
            and self.host == other.host
            and bool(self.gpus & other.gpus)
            and self.overlaps_window(other.start, other.end)
        )

    def gpu_hours_within(self, start: datetime, end: datetime) -> float:
        lo, hi = max(self.start, start), min(self.end, end)
        return len(self.gpus) * max((hi - lo).total_seconds(), 0.0) / 3600


@dataclass(frozen=True)
class BookingPolicy:
    """The lab's booking rules. None means "no limit"."""

    max_gpus_per_booking: int | None = None
    max_gpus_per_member: int | None = None
    max_gpu_hours_per_week: float | None = None
    advance_limit: timedelta | None = timedelta(days=14)
    min_length: timedelta = timedelta(minutes=30)
    max_length: timedelta | None = timedelta(days=7)
    past_grace: timedelta = timedelta(minutes=5)
    approval_required: bool = False

    @property
    def initial_status(self) -> BookingStatus:
        return BookingStatus.PENDING if self.approval_required else BookingStatus.CONFIRMED


def _fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M %Z").strip()


def _hours(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def conflicts(candidate: Booking, bookings: Iterable[Booking]) -> list[Booking]:
    """The holding bookings ``candidate`` would overlap on some GPU."""
    return [b for b in bookings if candidate.conflicts_with(b)]


def gpus_held_at(bookings: Iterable[Booking], moment: datetime) -> set[int]:
    return {i for b in bookings if b.holds and b.start <= moment < b.end for i in b.gpus}


def max_gpus_held(bookings: Sequence[Booking]) -> int:
    """The most GPUs these bookings hold at the same moment."""
    holding = [b for b in bookings if b.holds]
    # The count only rises at a start, so the maximum is at some start.
    return max((len(gpus_held_at(holding, b.start)) for b in holding), default=0)


def gpu_hours_in_window(bookings: Iterable[Booking], start: datetime, end: datetime) -> float:
    return sum(b.gpu_hours_within(start, end) for b in bookings if b.holds)


def busiest_week(bookings: Sequence[Booking]) -> tuple[float, datetime | None]:
    """The most GPU-hours of holding ``bookings`` in any 7 consecutive days, and where that week starts.

    The sum is piecewise linear in the window's start, so its maximum is at a window that starts
    where a booking starts or ends, or ends where one starts or ends; only those are tried."""
    holding = [b for b in bookings if b.holds]
    candidates = {t for b in holding for t in (b.start, b.end, b.start - WEEK, b.end - WEEK)}
    best, where = 0.0, None
    for t in sorted(candidates):
        hours = gpu_hours_in_window(holding, t, t + WEEK)
        if hours > best + 1e-9:
            best, where = hours, t
    return best, where


def gpu_hours_left(
    member: str, start: datetime, end: datetime, bookings: Iterable[Booking], policy: BookingPolicy
) -> float | None:
    """GPU-hours ``member`` could still book within ``[start, end)``: None when there is no quota.

    For a window up to 7 days this is the quota minus what the member holds in the 7 days ending
    at ``end`` or starting at ``start``, whichever is busier (a conservative answer for display)."""
    if policy.max_gpu_hours_per_week is None:
        return None
    mine = [b for b in bookings if b.member == member and b.holds]
    used = max(gpu_hours_in_window(mine, end - WEEK, end), gpu_hours_in_window(mine, start, start + WEEK))
    return max(policy.max_gpu_hours_per_week - used, 0.0)


def check_window(
    start: datetime, end: datetime, policy: BookingPolicy, now: datetime, *, started: bool = False
) -> None:
    """Length and timing rules. ``started``: the booking already runs (an extension), so its start
    may lie in the past and the advance limit no longer applies. Raises BadInput or QuotaExceeded."""
    _aware(start, "start")
    _aware(end, "end")
    _aware(now, "now")
    if end <= start:
        raise BadInput(f"a booking must end after it starts ({_fmt(start)} to {_fmt(end)})")
    if end <= now:
        raise BadInput(f"the booking would end in the past ({_fmt(end)})")
    if not started:
        if start < now - policy.past_grace:
            raise BadInput(f"a booking cannot start in the past ({_fmt(start)})")
        if policy.advance_limit is not None and start > now + policy.advance_limit:
            raise QuotaExceeded(
                f"bookings may start at most {policy.advance_limit.days} days ahead "
                f"(this one starts {_fmt(start)})",
                hint=f"book again after {_fmt(start - policy.advance_limit)}",
            )
    length = end - start
    if length < policy.min_length:
        raise BadInput(f"a booking lasts at least {policy.min_length} (this one: {length})")
    if policy.max_length is not None and length > policy.max_length:
        raise QuotaExceeded(
            f"a booking lasts at most {policy.max_length} (this one: {length})",
            hint="book a shorter time and extend it later",
        )


def check_booking(
    candidate: Booking,
    existing: Iterable[Booking],
    policy: BookingPolicy,
    now: datetime,
    *,
    started: bool = False,
) -> None:
    """Whether ``candidate`` may be accepted next to ``existing`` (which may contain an older
    version of the same booking, matched by id and ignored). Checks, in order: the window, GPUs per
    booking, conflicts, GPUs held at once, GPU-hours in any 7 days.

    Raises BadInput, BookingConflict or QuotaExceeded with a message naming the rule."""
    others = [b for b in existing if candidate.id is None or b.id != candidate.id]
    check_window(candidate.start, candidate.end, policy, now, started=started)
    n = len(candidate.gpus)
    if policy.max_gpus_per_booking is not None and n > policy.max_gpus_per_booking:
        raise QuotaExceeded(f"at most {policy.max_gpus_per_booking} GPU(s) per booking (asked for {n})")
    clash = conflicts(candidate, others)
    if clash:
        first = min(clash, key=lambda b: b.start)
        shared = ", ".join(str(i) for i in sorted(candidate.gpus & first.gpus))
        raise BookingConflict(
            f"GPU {shared} is booked by {first.member} from {_fmt(first.start)} to {_fmt(first.end)}",
            hint="pick other GPUs or another time, or let labgpu pick free GPUs",
        )
    mine = [b for b in others if b.member == candidate.member and b.holds and b.host == candidate.host]
    if policy.max_gpus_per_member is not None and candidate.holds:
        overlapping = [b for b in mine if b.overlaps_window(candidate.start, candidate.end)]
        held = max_gpus_held([*overlapping, candidate])
        if held > policy.max_gpus_per_member:
            raise QuotaExceeded(
                f"{candidate.member} would hold {held} GPUs at once; the limit is {policy.max_gpus_per_member}"
            )
    if policy.max_gpu_hours_per_week is not None and candidate.holds:
        all_mine = [b for b in others if b.member == candidate.member and b.holds]
        hours, week = busiest_week([*all_mine, candidate])
        if hours > policy.max_gpu_hours_per_week + 1e-9:
            assert week is not None
            raise QuotaExceeded(
                f"{candidate.member} would have {_hours(hours)} GPU-hours booked in the 7 days from "
                f"{_fmt(week)}; the limit is {_hours(policy.max_gpu_hours_per_week)} in any 7 days",
                hint="book fewer GPUs or a shorter time",
            )


def extend(
    booking: Booking, new_end: datetime, existing: Iterable[Booking], policy: BookingPolicy, now: datetime
) -> Booking:
    """``booking`` with its end moved to ``new_end``, if the rules allow. Raises like check_booking."""
    if not booking.holds:
        raise BadInput(f"a {booking.status.value} booking cannot be extended")
    if new_end <= booking.end:
        raise BadInput(f"the new end {_fmt(new_end)} is not after the current end {_fmt(booking.end)}")
    longer = replace(booking, end=new_end)
    started = booking.status is BookingStatus.ACTIVE or booking.start <= now
    others = [b for b in existing if b is not booking and (booking.id is None or b.id != booking.id)]
    check_booking(longer, others, policy, now, started=started)
    return longer


def accept(candidate: Booking, existing: list[Booking], policy: BookingPolicy, now: datetime) -> Booking:
    """Check ``candidate`` and add it to ``existing`` (in place); returns the accepted booking.

    The store must run this under the same lock or serialized transaction as the insert: the check
    is only as good as the list it is given."""
    check_booking(candidate, existing, policy, now)
    existing.append(candidate)
    return candidate


def free_gpus(
    gpus: Iterable[int], start: datetime, end: datetime, bookings: Iterable[Booking], *, host: str = ""
) -> list[int]:
    """The GPUs of ``gpus`` that no holding booking on ``host`` claims during ``[start, end)``."""
    taken = {
        i for b in bookings if b.holds and b.host == host and b.overlaps_window(start, end) for i in b.gpus
    }
    return sorted(set(gpus) - taken)


def assign_gpus(
    count: int,
    start: datetime,
    end: datetime,
    *,
    gpus: Iterable[int],
    bookings: Iterable[Booking],
    assigned: Collection[int] = (),
    host: str = "",
) -> tuple[int, ...]:
    """Pick ``count`` GPUs free for ``[start, end)``.

    Preference: GPUs not permanently assigned to someone (``assigned``, the assigned mode), then
    the GPUs with the fewest holding bookings on this host (to spread wear and leave busy GPUs to
    their regulars), then the lowest index. Raises BadInput for a count below 1 and Exhausted when
    fewer than ``count`` are free."""
    if count < 1:
        raise BadInput("book at least one GPU")
    bookings = list(bookings)
    free = free_gpus(gpus, start, end, bookings, host=host)
    if len(free) < count:
        have = ", ".join(map(str, free)) if free else "none"
        raise Exhausted(
            f"{count} GPU(s) asked for, but only {len(free)} free from {_fmt(start)} to {_fmt(end)} (free: {have})",
            hint="book fewer GPUs or another time",
        )
    load = {i: 0 for i in free}
    for b in bookings:
        if b.holds and b.host == host:
            for i in b.gpus & load.keys():
                load[i] += 1
    assigned_set = set(assigned)
    ranked = sorted(free, key=lambda i: (i in assigned_set, load[i], i))
    return tuple(sorted(ranked[:count]))


# Slots and times as people type them -----------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SLOT_MINUTES = (5, 10, 15, 20, 30, 60)  # divisors of an hour: slots line up with the clock


def floor_to_slot(moment: datetime, slot: timedelta) -> datetime:
    """The start of the slot ``moment`` lies in (slots are counted from the Unix epoch, in UTC)."""
    _aware(moment, "time")
    return moment - (moment.astimezone(UTC) - _EPOCH) % slot


def ceil_to_slot(moment: datetime, slot: timedelta) -> datetime:
    floor = floor_to_slot(moment, slot)
    return floor if floor == moment else floor + slot


def align_window(start: datetime, end: datetime, slot: timedelta) -> tuple[datetime, datetime]:
    """``[start, end)`` widened to whole slots: the start down, the end up.

    A booking holds whole slots, so that the store can hold one row per GPU per slot and let its
    primary key refuse any overlap. Rounding the start down means "from now" gets the GPUs now."""
    return floor_to_slot(start, slot), ceil_to_slot(end, slot)


def slot_starts(start: datetime, end: datetime, slot: timedelta) -> list[datetime]:
    """The starts of the slots an (aligned) window ``[start, end)`` covers, in UTC."""
    first, last = align_window(start, end, slot)
    out, t = [], first.astimezone(UTC)
    while t < last:
        out.append(t)
        t += slot
    return out


_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|min)", re.IGNORECASE)
_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}


def parse_duration(text: str) -> timedelta:
    """``90m``, ``2h``, ``1h30m``, ``3d``, ``1w`` as a timedelta. Raises BadInput."""
    value = text.strip().lower().replace(" ", "")
    if not value or _DURATION.sub("", value) != "":
        raise BadInput(f"invalid duration {text!r}: use e.g. 90m, 2h, 1h30m, 3d")
    total = timedelta(0)
    for number, unit in _DURATION.findall(value):
        total += int(number) * _UNITS[unit[0]]
    if total <= timedelta(0):
        raise BadInput(f"invalid duration {text!r}: it must be more than 0")
    return total


def parse_time(text: str, *, now: datetime, tz: tzinfo, base: datetime | None = None) -> datetime:
    """A moment as people type it, as an aware datetime.

    ``now``; ``+2h`` / ``+90m`` / ``+1d`` (after ``base``, else after now); ``14:00`` (today);
    ``2026-03-02 14:00`` or ``2026-03-02T14:00``; ``2026-03-02`` (midnight); ISO 8601 with an offset
    (``...+08:00``, ``...Z``). Times without a zone are in ``tz`` (the host's local zone in the CLI).
    Raises BadInput with examples."""
    _aware(now, "now")
    value = text.strip()
    if value.lower() == "now":
        return now
    if value.startswith("+"):
        return (base or now) + parse_duration(value[1:])
    if re.fullmatch(r"\d{1,2}:\d{2}", value):
        hour, minute = (int(p) for p in value.split(":"))
        if hour > 23 or minute > 59:
            raise BadInput(f"invalid time {text!r}")
        local = now.astimezone(tz)
        return local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"invalid time {text!r}: use now, +2h, 14:00, 2026-03-02 14:00 or 2026-03-02T14:00+08:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def parse_gpu_choice(text: str) -> tuple[int | None, tuple[int, ...]]:
    """``--gpus`` of a booking: a count (``2``: any two free GPUs) or GPU indexes (``0,2``; one chosen
    GPU as a list of one: ``3,``). Returns (count, ()) or (None, indexes). Raises BadInput."""
    value = text.strip().replace(" ", "")
    if value.isdigit():
        count = int(value)
        if count < 1:
            raise BadInput("book at least one GPU")
        return count, ()
    parts = [p for p in value.split(",") if p != ""]
    if "," not in value or not parts or not all(p.isdigit() for p in parts):
        raise BadInput(f"invalid --gpus {text!r}: give a count (2) or GPU indexes (0,2; one GPU: 3,)")
    indexes = tuple(sorted({int(p) for p in parts}))
    return None, indexes
