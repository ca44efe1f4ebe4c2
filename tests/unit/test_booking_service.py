"""The booking service on a real store (SQLite, and PostgreSQL when LABGPU_TEST_POSTGRES_URL is set):
the rules as members meet them, slots, approval, the clock moving bookings along, and above all that
two overlapping bookings of a GPU can never both be accepted, whoever races whom."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from labgpu.domain import bookings as rules
from labgpu.domain.bookings import BookingConflict, QuotaExceeded
from labgpu.errors import BadInput, Conflict, Exhausted, LabgpuError
from labgpu.services.context import Actor
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus._booking_records import NotAllowed, parse_gpus
from labgpu.store.models import Booking, BookingSlot, Host
from tests.conftest import MailBox
from tests.unit.gpu_store import GPUS, MIN, T0, GpuStore, H


def book(
    store: GpuStore, member: str, gpus: str, start_h: float, hours: float, **kw: object
) -> bookings.BookingView:
    svc = kw.pop("svc", None) or store.svc()
    start = T0 + timedelta(hours=start_h)
    return bookings.book(
        svc,  # type: ignore[arg-type]
        member=member,
        gpus=gpus,
        start=start,
        end=start + timedelta(hours=hours),
        now=kw.pop("now", T0),  # type: ignore[arg-type]
        gpus_on_host=GPUS,
        **kw,  # type: ignore[arg-type]
    )


def counts(store: GpuStore) -> tuple[int, int]:
    with store.svc().session() as session:
        return (
            session.scalar(select(func.count()).select_from(Booking)) or 0,
            session.scalar(select(func.count()).select_from(BookingSlot)) or 0,
        )


# Booking ------------------------------------------------------------------------------------------


def test_a_booking_holds_one_slot_per_gpu_per_quarter_hour(gpu_store: GpuStore) -> None:
    view = book(gpu_store, "alice", "0,2", 1, 2, note="paper deadline")
    assert (view.member, view.host, view.gpus, view.status) == ("alice", "gpu1", (0, 2), "approved")
    assert (view.start, view.end) == (T0 + H, T0 + 3 * H)
    assert counts(gpu_store) == (1, 2 * 8)
    listed = bookings.list_bookings(gpu_store.svc())
    assert [(b.id, b.note) for b in listed] == [(view.id, "paper deadline")]


def test_windows_are_widened_to_whole_slots(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc()
    view = bookings.book(
        svc,
        member="alice",
        gpus="1,",
        start=T0 + 7 * MIN,
        end=T0 + 112 * MIN,
        now=T0 + 5 * MIN,
        gpus_on_host=GPUS,
    )
    assert (view.start, view.end) == (T0, T0 + 2 * H)  # 09:07 -> 09:00, 10:52 -> 11:00
    # "now" in the middle of a slot gets the GPU now: the start is rounded down, not refused as past.
    now = T0 + 3 * H + 14 * MIN
    view = bookings.book(svc, member="bob", gpus="1,", start=now, end=now + H, now=now, gpus_on_host=GPUS)
    assert view.start == T0 + 3 * H


def test_an_overlap_is_refused_with_who_and_when_and_nothing_is_written(gpu_store: GpuStore) -> None:
    book(gpu_store, "alice", "0,1", 1, 4)
    before = counts(gpu_store)
    with pytest.raises(BookingConflict) as info:
        book(gpu_store, "bob", "1,3", 2, 1)
    assert info.value.message == "GPU 1 is booked by alice from 2026-03-02 10:00 UTC to 2026-03-02 14:00 UTC"
    assert counts(gpu_store) == before
    book(gpu_store, "bob", "1,", 5, 1)  # starts when alice's ends: half-open windows
    book(gpu_store, "bob", "2,3", 2, 1)  # other GPUs


def test_a_count_gets_free_gpus_and_too_many_is_exhausted(gpu_store: GpuStore) -> None:
    book(gpu_store, "alice", "0,1", 1, 4)
    view = book(gpu_store, "bob", "2", 2, 1)
    assert view.gpus == (2, 3)
    with pytest.raises(Exhausted, match="only 0 free"):
        book(gpu_store, "carol", "1", 2, 1)


def test_bad_requests(gpu_store: GpuStore) -> None:
    with pytest.raises(BadInput, match="past"):
        book(gpu_store, "alice", "0,", -2, 1)
    with pytest.raises(QuotaExceeded, match="14 days ahead"):
        book(gpu_store, "alice", "0,", 15 * 24, 1)
    with pytest.raises(BadInput, match="at least 0:30"):
        book(gpu_store, "alice", "0,", 1, 0.25)
    with pytest.raises(QuotaExceeded, match="at most 3 days"):
        book(gpu_store, "alice", "0,", 1, 73)
    with pytest.raises(BadInput, match="has no GPU 7"):
        book(gpu_store, "alice", "7,", 1, 1)
    with pytest.raises(BadInput, match="invalid --gpus"):
        book(gpu_store, "alice", "0-2", 1, 1)
    with pytest.raises(LabgpuError, match="no member named dave"):
        book(gpu_store, "dave", "0,", 1, 1)
    with pytest.raises(BadInput, match="note is too long"):
        book(gpu_store, "alice", "0,", 1, 1, note="x" * 300)
    assert counts(gpu_store) == (0, 0)


def test_bookings_need_booked_mode(gpu_store: GpuStore) -> None:
    with gpu_store.svc().session() as session:
        session.scalars(select(Host)).one().gpu_mode = "shared"
    with pytest.raises(Conflict, match="shared GPU mode") as info:
        book(gpu_store, "alice", "0,", 1, 1)
    assert info.value.hint == "switch with `labgpu gpu mode booked`"


def test_weekly_quota_counts_bookings_that_already_ran(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc(booking_max_gpu_hours_per_week=10)
    first = book(gpu_store, "alice", "0,1", 1, 4, svc=svc)  # 8 GPU-hours
    bookings.advance(svc, now=T0 + 6 * H)  # it ran and ended
    assert bookings.get_booking(svc, first.id).status == "ended"
    with pytest.raises(QuotaExceeded, match="12 GPU-hours"):
        book(gpu_store, "alice", "2,3", 24, 2, svc=svc, now=T0 + 6 * H)
    book(gpu_store, "alice", "2,", 24, 2, svc=svc, now=T0 + 6 * H)  # 10: the limit
    book(gpu_store, "bob", "0,1", 24, 5, svc=svc, now=T0 + 6 * H)  # someone else


def test_gpus_per_booking_and_at_once(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc(booking_max_gpus=2, booking_max_gpus_per_member=3)
    with pytest.raises(QuotaExceeded, match="at most 2 GPU"):
        book(gpu_store, "alice", "3", 1, 1, svc=svc)
    book(gpu_store, "alice", "0,1", 1, 4, svc=svc)
    with pytest.raises(QuotaExceeded, match="4 GPUs at once"):
        book(gpu_store, "alice", "2,3", 2, 1, svc=svc)


# Changing -----------------------------------------------------------------------------------------


def test_cancel_frees_the_slots_for_others(gpu_store: GpuStore) -> None:
    view = book(gpu_store, "alice", "0,", 1, 2)
    done = bookings.cancel(gpu_store.svc(), view.id, now=T0)
    assert done.booking.status == "cancelled" and not done.ended_early
    assert counts(gpu_store) == (1, 0)
    book(gpu_store, "bob", "0,", 1, 2)
    with pytest.raises(Conflict, match="cancelled already"):
        bookings.cancel(gpu_store.svc(), view.id, now=T0)


def test_cancelling_a_running_booking_ends_it_now(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc()
    view = book(gpu_store, "alice", "0,", 1, 4)
    bookings.advance(svc, now=T0 + H)
    done = bookings.cancel(svc, view.id, now=T0 + 2 * H + 5 * MIN)
    assert done.ended_early and done.booking.status == "ended"
    assert done.booking.end == T0 + 2 * H + 5 * MIN
    book(gpu_store, "bob", "0,", 2.25, 1, now=T0 + 2 * H + 5 * MIN)  # the rest is free again


def test_extend_adds_slots_and_is_checked_like_a_new_booking(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc()
    view = book(gpu_store, "alice", "0,", 1, 2)
    book(gpu_store, "bob", "0,", 5, 1)
    longer = bookings.extend(svc, view.id, until=T0 + 4 * H + 50 * MIN, now=T0)
    assert longer.end == T0 + 5 * H  # rounded up to the slot
    assert counts(gpu_store)[1] == 4 * 4 + 4
    with pytest.raises(BookingConflict, match="booked by bob"):
        bookings.extend(svc, view.id, until=T0 + 6 * H, now=T0)
    with pytest.raises(BadInput, match="not after the current end"):
        bookings.extend(svc, view.id, until=T0 + 2 * H, now=T0)


def test_approval_pending_bookings_hold_their_gpus(gpu_store: GpuStore, smtp_server: MailBox) -> None:
    admin = gpu_store.svc(booking_approval=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    alice = gpu_store.svc(actor=Actor("alice", is_admin=False), booking_approval=True)
    first = book(gpu_store, "alice", "0,", 1, 2, svc=alice)
    assert first.status == "pending"
    with pytest.raises(BookingConflict):  # a waiting request already holds the GPU
        book(gpu_store, "bob", "0,", 1, 2, svc=admin)
    with pytest.raises(NotAllowed):
        bookings.approve(alice, first.id, now=T0)
    assert bookings.approve(admin, first.id, now=T0).status == "approved"
    second = book(gpu_store, "alice", "1,", 1, 2, svc=alice)
    assert bookings.reject(admin, second.id, reason="GPU 1 is under repair").status == "rejected"
    book(gpu_store, "bob", "1,", 1, 2, svc=admin)  # freed
    subjects = [
        m["Subject"] for m in smtp_server.wait_for("alice@lab.test", count=2)
    ]  # sent in the background
    assert sorted(subjects) == [f"GPU booking {first.id} approved", f"GPU booking {second.id} rejected"]
    (rejected,) = [m for m in smtp_server.to("alice@lab.test") if "rejected" in m["Subject"]]
    assert "GPU 1 is under repair" in rejected.get_content()


def test_members_act_only_for_themselves(gpu_store: GpuStore) -> None:
    alice = gpu_store.svc(actor=Actor("alice", is_admin=False))
    mine = book(gpu_store, "alice", "0,", 1, 1, svc=alice)
    with pytest.raises(NotAllowed):
        book(gpu_store, "bob", "1,", 1, 1, svc=alice)
    theirs = book(gpu_store, "bob", "1,", 1, 1)
    assert [b.id for b in bookings.list_bookings(alice)] == [mine.id]
    with pytest.raises(LabgpuError, match=f"no booking {theirs.id}"):
        bookings.cancel(alice, theirs.id, now=T0)


# The clock ----------------------------------------------------------------------------------------


def test_advance_starts_ends_and_expires(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc()
    a = book(gpu_store, "alice", "0,", 1, 2)
    pending_svc = gpu_store.svc(booking_approval=True)
    p = book(gpu_store, "bob", "1,", 1, 1, svc=pending_svc)
    assert bookings.advance(svc, now=T0 + 30 * MIN) == []
    started = bookings.advance(svc, now=T0 + H)
    assert [(t.booking.id, t.old, t.new) for t in started] == [(a.id, "approved", "active")]
    assert bookings.advance(svc, now=T0 + H) == []  # idempotent
    later = bookings.advance(svc, now=T0 + 3 * H)
    assert sorted((t.booking.id, t.new) for t in later) == sorted([(a.id, "ended"), (p.id, "rejected")])
    with svc.session() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(BookingSlot).where(BookingSlot.booking_id == p.id)
            )
            == 0
        )


# Conflicts impossible by construction ------------------------------------------------------------


def test_the_primary_key_refuses_an_overlap_the_check_missed(
    gpu_store: GpuStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    book(gpu_store, "alice", "0,1", 1, 2)
    monkeypatch.setattr(rules, "check_booking", lambda *a, **k: None)  # a bug in the rules
    before = counts(gpu_store)
    with pytest.raises(BookingConflict, match="already held by another booking"):
        book(gpu_store, "bob", "1,2", 2, 2)
    assert counts(gpu_store) == before


@pytest.mark.parametrize("check", ["rules", "only the primary key", "the primary key without the lock"])
def test_racing_threads_never_both_book_a_gpu(
    gpu_store: GpuStore, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    if check != "rules":
        monkeypatch.setattr(rules, "check_booking", lambda *a, **k: None)
    if check == "the primary key without the lock":
        if gpu_store.backend == "sqlite":
            pytest.skip("SQLite cannot run two writers at once: without the lock one fails with 'locked'")
        # Truly concurrent transactions: PostgreSQL makes the second insert of a slot wait for the
        # first to commit, then refuses it.
        monkeypatch.setattr(bookings, "serialized", lambda svc: svc.session())
    wins: list[int] = []
    losses: list[str] = []
    barrier = threading.Barrier(8)

    def attempt(n: int) -> None:
        svc = gpu_store.svc()
        barrier.wait()
        try:
            # Every attempt overlaps every other on GPU 2, each with a different window and neighbour.
            view = book(gpu_store, ("alice", "bob", "carol")[n % 3], f"{n % 2},2", 1 + n * 0.25, 3, svc=svc)
            wins.append(view.id)
        except BookingConflict as exc:
            losses.append(exc.message)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7, (wins, losses)
    assert_no_overlap(gpu_store)


def assert_no_overlap(store: GpuStore) -> None:
    with store.svc().session() as session:
        rows = session.scalars(select(Booking).where(Booking.status.in_(bookings.HOLDING))).all()
        held = [(set(parse_gpus(r.gpus)), r.start_at, r.end_at, r.id) for r in rows]
    for i, (g1, s1, e1, id1) in enumerate(held):
        for g2, s2, e2, id2 in held[i + 1 :]:
            assert not (g1 & g2 and s1 < e2 and s2 < e1), f"bookings {id1} and {id2} overlap"


ops = st.lists(
    st.tuples(
        st.sampled_from(["book", "book", "book", "cancel", "extend"]),
        st.sampled_from(["alice", "bob", "carol"]),
        st.sampled_from(["0,", "1,", "0,1", "2,3", "1", "2"]),
        st.integers(0, 40),  # start, in quarter hours from T0
        st.integers(1, 16),  # length, in quarter hours
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_whatever_is_asked_no_two_accepted_bookings_overlap(gpu_store: GpuStore, ops: list) -> None:  # type: ignore[type-arg]
    if gpu_store.backend != "sqlite":
        pytest.skip("the property runs on SQLite (the race tests cover PostgreSQL)")
    svc = gpu_store.svc(booking_min_minutes=15, booking_max_gpu_hours_per_week=20)
    with svc.session() as session:
        session.execute(delete(BookingSlot))
        session.execute(delete(Booking))
    made: list[int] = []
    for op, member, gpus, start_q, length_q in ops:
        try:
            if op == "book":
                made.append(book(gpu_store, member, gpus, start_q / 4, length_q / 4, svc=svc).id)
            elif op == "cancel" and made:
                bookings.cancel(svc, made[start_q % len(made)], now=T0)
            elif op == "extend" and made:
                b = bookings.get_booking(svc, made[start_q % len(made)])
                bookings.extend(svc, b.id, until=b.end + timedelta(minutes=15 * length_q), now=T0)
        except LabgpuError:
            pass
    assert_no_overlap(gpu_store)
    with svc.session() as session:
        slots = session.scalar(select(func.count()).select_from(BookingSlot)) or 0
        rows = session.scalars(select(Booking).where(Booking.status.in_(bookings.HOLDING))).all()
        expected = sum(len(parse_gpus(r.gpus)) * int((r.end_at - r.start_at) / (15 * MIN)) for r in rows)
    assert slots == expected  # live bookings hold exactly their slots, cancelled ones none
