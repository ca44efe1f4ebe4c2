"""Booking rules: conflicts, quotas, advance limit, length, extension, assignment (pure, with
property-based tests: whatever is asked, what gets accepted never overlaps and never beats a quota)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labgpu.domain.bookings import (
    WEEK,
    Booking,
    BookingConflict,
    BookingPolicy,
    BookingStatus,
    QuotaExceeded,
    accept,
    assign_gpus,
    busiest_week,
    check_booking,
    conflicts,
    extend,
    free_gpus,
    gpu_hours_left,
    max_gpus_held,
)
from labgpu.errors import BadInput, Exhausted, LabgpuError

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
OPEN = BookingPolicy(advance_limit=None, max_length=None, min_length=timedelta(minutes=1))


def b(member: str, gpus: set[int], start_h: float, hours: float, **kw: object) -> Booking:
    start = NOW + timedelta(hours=start_h)
    return Booking(member=member, gpus=frozenset(gpus), start=start, end=start + timedelta(hours=hours), **kw)  # type: ignore[arg-type]


# Conflicts --------------------------------------------------------------------------------------


def test_overlap_on_a_shared_gpu_conflicts() -> None:
    first = b("alice", {0, 1}, 1, 4)
    assert conflicts(b("bob", {1}, 2, 1), [first]) == [first]
    assert conflicts(b("bob", {2}, 2, 1), [first]) == []  # other GPU
    assert conflicts(b("bob", {0}, 5, 1), [first]) == []  # starts when it ends: half-open windows
    assert conflicts(b("bob", {0}, 0, 1), [first]) == []  # ends when it starts
    assert conflicts(b("bob", {0}, 2, 1, host="gpu2"), [first]) == []  # another host


def test_only_holding_bookings_block() -> None:
    for status in (BookingStatus.PENDING, BookingStatus.CONFIRMED, BookingStatus.ACTIVE):
        assert conflicts(b("bob", {0}, 2, 1), [b("alice", {0}, 1, 4, status=status)])
    for status in (
        BookingStatus.CANCELLED,
        BookingStatus.REJECTED,
        BookingStatus.ENDED,
        BookingStatus.RELEASED,
    ):
        assert not conflicts(b("bob", {0}, 2, 1), [b("alice", {0}, 1, 4, status=status)])


def test_conflict_message_names_the_gpu_the_member_and_the_time() -> None:
    with pytest.raises(BookingConflict) as info:
        check_booking(b("bob", {1, 3}, 2, 1), [b("alice", {0, 1}, 1, 4)], OPEN, NOW)
    assert info.value.message == "GPU 1 is booked by alice from 2026-03-02 10:00 UTC to 2026-03-02 14:00 UTC"
    assert info.value.status == 409


def test_a_booking_does_not_conflict_with_its_older_self() -> None:
    old = b("alice", {0}, 1, 2, id=7)
    check_booking(b("alice", {0}, 1, 3, id=7), [old], OPEN, NOW)


# Window rules -----------------------------------------------------------------------------------


def test_bad_windows() -> None:
    with pytest.raises(BadInput, match="end after"):
        b("a", {0}, 1, 0)
    with pytest.raises(BadInput, match="time zone"):
        Booking("a", frozenset({0}), datetime(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(BadInput, match="at least one GPU"):
        b("a", set(), 1, 1)
    policy = BookingPolicy(
        advance_limit=timedelta(days=14), min_length=timedelta(minutes=30), max_length=timedelta(days=3)
    )
    with pytest.raises(BadInput, match="past"):
        check_booking(b("a", {0}, -1, 2), [], policy, NOW)
    check_booking(b("a", {0}, -0.05, 2), [], policy, NOW)  # 3 minutes ago: within the grace
    with pytest.raises(BadInput, match="at least"):
        check_booking(b("a", {0}, 1, 0.25), [], policy, NOW)
    with pytest.raises(QuotaExceeded, match="at most 3 days"):
        check_booking(b("a", {0}, 1, 80), [], policy, NOW)
    with pytest.raises(QuotaExceeded, match="14 days ahead"):
        check_booking(b("a", {0}, 15 * 24, 2), [], policy, NOW)
    check_booking(b("a", {0}, 13 * 24, 2), [], policy, NOW)


def test_time_zones_compare_correctly() -> None:
    beijing = timezone(timedelta(hours=8))
    alice = b("alice", {0}, 1, 2)  # 10:00-12:00 UTC
    bob_start = datetime(2026, 3, 2, 19, 0, tzinfo=beijing)  # 11:00 UTC
    bob = Booking("bob", frozenset({0}), bob_start, bob_start + H)
    assert conflicts(bob, [alice]) == [alice]


# Quotas -----------------------------------------------------------------------------------------


def test_gpus_per_booking_and_at_once() -> None:
    policy = BookingPolicy(max_gpus_per_booking=2, max_gpus_per_member=3, advance_limit=None)
    with pytest.raises(QuotaExceeded, match="at most 2 GPU"):
        check_booking(b("a", {0, 1, 2}, 1, 1), [], policy, NOW)
    mine = [b("a", {0, 1}, 1, 4)]
    check_booking(b("a", {2}, 2, 1), mine, policy, NOW)  # 3 at once: fine
    with pytest.raises(QuotaExceeded, match="4 GPUs at once"):
        check_booking(b("a", {2, 3}, 2, 1), mine, policy, NOW)
    check_booking(b("a", {2, 3}, 5, 1), mine, policy, NOW)  # after the first ended
    check_booking(b("b", {2, 3}, 2, 1), mine, policy, NOW)  # someone else


def test_weekly_gpu_hours_are_a_rolling_week() -> None:
    policy = BookingPolicy(max_gpu_hours_per_week=100, advance_limit=None, max_length=None)
    sunday = b("a", {0, 1}, 5 * 24 + 14, 40)  # 80 GPU-hours from Saturday 23:00 into Monday
    with pytest.raises(QuotaExceeded) as info:
        check_booking(b("a", {2}, 7 * 24 + 20, 30), [sunday], policy, NOW)  # +30 within 7 days
    assert "110 GPU-hours" in info.value.message and "any 7 days" in info.value.message
    check_booking(b("a", {2}, 7 * 24 + 20, 20), [sunday], policy, NOW)  # 100: exactly the limit
    check_booking(b("a", {2}, 5 * 24 + 14 + 7 * 24 + 40, 30), [sunday], policy, NOW)  # a week later
    check_booking(b("b", {2}, 7 * 24 + 20, 90), [sunday], policy, NOW)  # someone else


def test_busiest_week_and_hours_left() -> None:
    bookings = [b("a", {0}, 0, 10), b("a", {0, 1}, 24 * 6, 10), b("a", {0}, 24 * 20, 5)]
    hours, start = busiest_week(bookings)
    assert hours == 30 and start is not None
    policy = BookingPolicy(max_gpu_hours_per_week=40)
    assert gpu_hours_left("a", NOW + 6 * 24 * H, NOW + 7 * 24 * H, bookings, policy) == 10
    assert gpu_hours_left("b", NOW, NOW + H, bookings, policy) == 40
    assert gpu_hours_left("a", NOW, NOW + H, bookings, BookingPolicy()) is None


def test_the_busiest_week_can_end_where_a_booking_ends() -> None:
    # Neither starting at a booking's start nor ending at one's start finds it: the week from 20 h,
    # which ends where the 4-GPU booking ends, holds 28 + 40 = 68 GPU-hours.
    long_one = b("a", {0}, 0, 48)
    wide_one = b("a", {0, 1, 2, 3}, 24 * 7 + 10, 10)
    hours, start = busiest_week([long_one, wide_one])
    assert (hours, start) == (68, NOW + 20 * H)
    policy = BookingPolicy(max_gpu_hours_per_week=60, advance_limit=None, max_length=None)
    with pytest.raises(QuotaExceeded, match="68 GPU-hours"):
        check_booking(wide_one, [long_one], policy, NOW)


def test_pending_needs_approval_and_still_holds() -> None:
    policy = BookingPolicy(approval_required=True)
    assert policy.initial_status is BookingStatus.PENDING
    pending = b("alice", {0}, 1, 2, status=policy.initial_status)
    with pytest.raises(BookingConflict):
        check_booking(b("bob", {0}, 1, 2), [pending], policy, NOW)


# Extension --------------------------------------------------------------------------------------


def test_extend_checks_conflicts_length_and_quota_but_not_the_past_start() -> None:
    policy = BookingPolicy(max_length=timedelta(hours=10), max_gpu_hours_per_week=20, advance_limit=None)
    running = b("alice", {0}, -3, 5, id=1, status=BookingStatus.ACTIVE)  # started 3 h ago
    later = b("bob", {0}, 6, 2, id=2)
    longer = extend(running, NOW + 3 * H, [running, later], policy, NOW)
    assert longer.end == NOW + 3 * H and longer.id == 1
    with pytest.raises(BookingConflict, match="bob"):
        extend(running, NOW + 7 * H, [running, later], policy, NOW)
    with pytest.raises(QuotaExceeded, match="at most 10:00:00"):
        extend(running, NOW + 8 * H, [running], policy, NOW)
    with pytest.raises(BadInput, match="not after"):
        extend(running, NOW + H, [running], policy, NOW)
    with pytest.raises(BadInput, match="cancelled"):
        extend(b("a", {0}, 1, 1, status=BookingStatus.CANCELLED), NOW + 5 * H, [], policy, NOW)


# Assignment -------------------------------------------------------------------------------------


def test_assignment_prefers_unassigned_then_least_booked() -> None:
    bookings = [b("x", {0}, 50, 1), b("x", {0}, 60, 1), b("x", {1}, 70, 1), b("x", {3}, 1, 5)]
    # GPU 3 is taken in the window; 2 has no bookings; 1 has one; 0 has two.
    assert assign_gpus(1, NOW + H, NOW + 3 * H, gpus=range(4), bookings=bookings) == (2,)
    assert assign_gpus(2, NOW + H, NOW + 3 * H, gpus=range(4), bookings=bookings) == (1, 2)
    assert assign_gpus(2, NOW + H, NOW + 3 * H, gpus=range(4), bookings=bookings, assigned={2}) == (0, 1)
    assert assign_gpus(3, NOW + 10 * H, NOW + 11 * H, gpus=range(4), bookings=bookings) == (1, 2, 3)
    with pytest.raises(Exhausted, match=r"only 3 free .* \(free: 0, 1, 2\)"):
        assign_gpus(4, NOW + H, NOW + 3 * H, gpus=range(4), bookings=bookings)
    with pytest.raises(BadInput):
        assign_gpus(0, NOW + H, NOW + 3 * H, gpus=range(4), bookings=bookings)


# Properties -------------------------------------------------------------------------------------

GPUS = 4
requests = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob", "carol"]),
        st.sets(st.integers(0, GPUS - 1), min_size=1, max_size=GPUS),
        st.integers(0, 24 * 10),  # start, hours from now
        st.integers(1, 48),  # length in hours
        st.sampled_from([BookingStatus.CONFIRMED, BookingStatus.PENDING, BookingStatus.CANCELLED]),
    ),
    max_size=25,
)
policies = st.builds(
    BookingPolicy,
    max_gpus_per_booking=st.none() | st.integers(1, GPUS),
    max_gpus_per_member=st.none() | st.integers(1, GPUS),
    max_gpu_hours_per_week=st.none() | st.integers(1, 200).map(float),
    advance_limit=st.just(None),
    min_length=st.just(H),
    max_length=st.none() | st.integers(1, 48).map(lambda h: h * H),
)


def _accept_all(
    reqs: list[tuple[str, set[int], int, int, BookingStatus]], policy: BookingPolicy
) -> list[Booking]:
    accepted: list[Booking] = []
    for member, gpus, start_h, hours, status in reqs:
        with contextlib.suppress(LabgpuError):
            accept(b(member, gpus, start_h, hours, status=status), accepted, policy, NOW)
    return accepted


@settings(max_examples=300, deadline=None)
@given(reqs=requests, policy=policies)
def test_accepted_bookings_never_overlap_on_a_gpu(reqs, policy) -> None:  # type: ignore[no-untyped-def]
    accepted = _accept_all(reqs, policy)
    holding = [x for x in accepted if x.holds]
    for i, x in enumerate(holding):
        for y in holding[i + 1 :]:
            # Brute force, independent of conflicts_with: any hour where both hold a shared GPU?
            if x.gpus & y.gpus:
                assert x.end <= y.start or y.end <= x.start, (x, y)


@settings(max_examples=300, deadline=None)
@given(reqs=requests, policy=policies)
def test_quotas_are_never_exceeded(reqs, policy) -> None:  # type: ignore[no-untyped-def]
    accepted = _accept_all(reqs, policy)
    horizon = range(-24 * 7, 24 * 12)
    for member in ("alice", "bob", "carol"):
        mine = [x for x in accepted if x.member == member and x.holds]
        per_hour = [sum(len(x.gpus) for x in mine if x.start <= NOW + h * H < x.end) for h in horizon]
        if policy.max_gpus_per_member is not None:
            assert max(per_hour, default=0) <= policy.max_gpus_per_member
            assert max_gpus_held(mine) <= policy.max_gpus_per_member
        if policy.max_gpu_hours_per_week is not None:
            # Every booking starts and ends on the hour, so hourly windows find the busiest week.
            week = 24 * 7
            for start in range(len(per_hour) - week + 1):
                assert sum(per_hour[start : start + week]) <= policy.max_gpu_hours_per_week
        for x in mine:
            if policy.max_gpus_per_booking is not None:
                assert len(x.gpus) <= policy.max_gpus_per_booking
            if policy.max_length is not None:
                assert x.length <= policy.max_length


@settings(max_examples=300, deadline=None)
@given(
    reqs=requests,
    count=st.integers(1, GPUS),
    start_h=st.integers(0, 24 * 10),
    hours=st.integers(1, 48),
    assigned=st.sets(st.integers(0, GPUS - 1)),
)
def test_assignment_returns_only_free_gpus(reqs, count, start_h, hours, assigned) -> None:  # type: ignore[no-untyped-def]
    accepted = _accept_all(reqs, OPEN)
    start, end = NOW + start_h * H, NOW + (start_h + hours) * H
    free = free_gpus(range(GPUS), start, end, accepted)
    try:
        picked = assign_gpus(count, start, end, gpus=range(GPUS), bookings=accepted, assigned=assigned)
    except Exhausted:
        assert len(free) < count
        return
    assert len(picked) == count == len(set(picked))
    # The picked GPUs can be booked right away without a conflict.
    accept(Booking("new", frozenset(picked), start, end), list(accepted), OPEN, NOW)
    # Never an assigned GPU while an unassigned one was free and left out.
    unassigned_free = [g for g in free if g not in assigned]
    if any(g in assigned for g in picked):
        assert set(unassigned_free) <= set(picked)


def test_week_constant() -> None:
    assert timedelta(days=7) == WEEK
