"""Property tests (hypothesis): the usage rollups lose nothing on the way raw -> hourly -> daily, on a real
store and in the pure rollup; and the fair-use decisions are right for any sequence of what the job sees
and of bookings: a violation exactly when a limit is broken, one notice per spell, never a stop unless
the policy allows it and the spell has lasted the grace time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from labgpu.domain.fairuse import GPUS, HOURS, UNBOOKED, Limits, OnGpu, Policy, decide, find_violations
from labgpu.domain.usage import Usage, UsageKey, rollup
from labgpu.services.gpus import _history as history
from labgpu.services.gpus import _report as report
from labgpu.store.models import JobState
from labgpu.store.usage_models import UsageDaily, UsageHourly, UsageSample
from tests.unit.gpu_store import GpuStore

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")
MEMBERS = ("alice", "bob", "carol", "")

samples = st.lists(
    st.tuples(
        st.integers(0, 4 * 24 * 60 - 1),  # minute within four days
        st.sampled_from(("gpu1", "gpu2")),
        st.integers(0, 3),
        st.sampled_from(MEMBERS),
        st.integers(1, 600),  # seconds
        st.integers(0, 81920),  # MiB
        st.one_of(st.none(), st.integers(0, 100)),
    ),
    max_size=60,
)


@given(rows=samples)
def test_pure_rollups_preserve_every_sum(rows: list[tuple[int, str, int, str, int, int, int | None]]) -> None:
    raw = [
        (UsageKey(T0 + timedelta(minutes=m), h, g, who), Usage.of_sample(s, mem, util))
        for m, h, g, who, s, mem, util in rows
    ]
    hourly = rollup(raw, unit="hour")
    daily = rollup(hourly.items(), unit="day", tz=SHANGHAI)
    total = sum((u for _, u in raw), Usage())
    assert sum(hourly.values(), Usage()) == total == sum(daily.values(), Usage())
    for key, usage in daily.items():  # each day is exactly the raw samples of its (Shanghai) day
        assert usage == sum(
            (
                u
                for k, u in raw
                if (k.host, k.gpu, k.member) == (key.host, key.gpu, key.member)
                and key.bucket <= k.bucket < key.bucket + timedelta(days=1)
            ),
            Usage(),
        )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=samples, cut=st.integers(60, 4 * 24 * 60))
def test_store_rollups_and_reports_preserve_sums(
    gpu_store: GpuStore, rows: list[tuple[int, str, int, str, int, int, int | None]], cut: int
) -> None:
    svc = gpu_store.svc()
    with svc.session() as session:
        for table in (UsageSample, UsageHourly, UsageDaily):
            session.execute(delete(table))
        session.execute(delete(JobState).where(JobState.name.startswith("usage:")))
        history.store_usage(
            session,
            [
                {"at": T0 + timedelta(minutes=m), "host": h, "gpu_index": g, "member": who, "seconds": s,
                 "memory_mib": mem, "utilization": util, "processes": 1}
                for m, h, g, who, s, mem, util in rows
            ],
        )  # fmt: skip
    expected = sum((Usage.of_sample(s, mem, util) for _, _, _, _, s, mem, util in rows), Usage())
    # A rollup part way (at ``cut``), then to the end: a report over everything sees the same sums
    # from raw samples, hours and days, whatever was rolled up.
    end = T0 + timedelta(days=5)
    for now in (T0 + timedelta(minutes=cut), end):
        history.roll_up(svc, now=now, tz=SHANGHAI)
        with svc.session() as session:
            got = sum((u for _, u in report.collect(session, T0 - timedelta(days=1), end, SHANGHAI)), Usage())
        assert got == expected
    with svc.session() as session:
        for table in (UsageHourly, UsageDaily):
            assert (
                session.scalar(select(func.coalesce(func.sum(table.seconds), 0))) or 0
            ) <= expected.seconds
        assert session.scalar(select(func.coalesce(func.sum(UsageHourly.seconds), 0))) == expected.seconds
    # Rolling up again changes nothing.
    assert history.roll_up(svc, now=end, tz=SHANGHAI) == (0, 0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=samples,
    cut=st.integers(60, 4 * 24 * 60),
    now=st.integers(3 * 60, 5 * 24 * 60),
    span=st.sampled_from(("6h", "2d", "3d", "7d")),
    member=st.sampled_from((None, "alice", "")),
)
def test_reports_grouped_in_sql_equal_the_reports_of_every_row(
    gpu_store: GpuStore,
    rows: list[tuple[int, str, int, str, int, int, int | None]],
    cut: int,
    now: int,
    span: str,
    member: str | None,
) -> None:
    """The reports group their sums in SQL (by bucket and label); they must equal, exactly, the report
    built from every raw, hourly and daily row, whatever was rolled up and however the span falls."""
    svc = gpu_store.svc()
    with svc.session() as session:
        for table in (UsageSample, UsageHourly, UsageDaily):
            session.execute(delete(table))
        session.execute(delete(JobState).where(JobState.name.startswith("usage:")))
        history.store_usage(
            session,
            [
                {"at": T0 + timedelta(minutes=m), "host": h, "gpu_index": g, "member": who, "seconds": s,
                 "memory_mib": mem, "utilization": util, "processes": 1}
                for m, h, g, who, s, mem, util in rows
            ],
        )  # fmt: skip
    history.roll_up(svc, now=T0 + timedelta(minutes=cut), tz=SHANGHAI)
    at = T0 + timedelta(minutes=now, seconds=17)
    for by in report.BY:
        got = report.usage_report(svc, since=span, by=by, member=member or None, now=at, tz=SHANGHAI)
        start, end = got.since, got.until
        with svc.session() as session:
            every = report.collect(session, start, end, SHANGHAI)
        if member:
            every = [(k, u) for k, u in every if k.member == member]
        want = report.build_report(every, since=start, until=end, by=by, member=member or None, tz=SHANGHAI)
        assert got == want


# Fair use ---------------------------------------------------------------------------------------------

GPUS_ = [("h1", g) for g in range(4)] + [("h2", g) for g in range(4)]
MODES = {"h1": "shared", "h2": "booked"}
ticks = st.lists(
    st.tuples(
        st.sets(st.tuples(st.sampled_from(GPUS_), st.sampled_from(("alice", "bob", ""))), max_size=8),
        st.sets(st.tuples(st.sampled_from(("alice", "bob")), st.sampled_from(GPUS_[4:])), max_size=4),
        st.integers(1, 25),  # minutes to the next run
    ),
    min_size=1,
    max_size=25,
)


@given(
    seq=ticks,
    max_gpus=st.one_of(st.none(), st.integers(0, 3)),
    max_hours=st.one_of(st.none(), st.floats(0, 5)),
    stop=st.booleans(),
    grace=st.integers(0, 60),
)
def test_fair_use_decisions_for_any_sequence(
    seq: list[tuple[set[tuple[tuple[str, int], str]], set[tuple[str, tuple[str, int]]], int]],
    max_gpus: int | None,
    max_hours: float | None,
    stop: bool,
    grace: int,
) -> None:
    policy = Policy(stop=stop, grace=timedelta(minutes=grace), max_gap=timedelta(minutes=10))
    limits = {m: Limits(max_gpus, max_hours) for m in ("alice", "bob")}
    spells: dict = {}
    started: dict[tuple[str, str], datetime] = {}  # the oracle's own spell starts
    last: dict[tuple[str, str], datetime] = {}
    hours = {"alice": 0.0, "bob": 0.0}
    now = T0
    for seen_pairs, bookings, step in seq:
        seen = [OnGpu(h, g, m, m, (100 + g,)) for (h, g), m in sorted(seen_pairs)]
        booked: dict[str, set[tuple[str, int]]] = {}
        for m, gpu in bookings:
            booked.setdefault(m, set()).add(gpu)
        violations = find_violations(seen, modes=MODES, booked=booked, limits=limits, week_hours=hours)
        # The oracle: what each member did, by mode.
        for member in ("alice", "bob"):
            shared = sorted({(h, g) for (h, g), m in seen_pairs if m == member and MODES[h] == "shared"})
            unbooked = sorted(
                {(h, g) for (h, g), m in seen_pairs if m == member and MODES[h] == "booked"}
                - booked.get(member, set())
            )
            mine = {v.kind: v for v in violations if v.member == member}
            over = max_gpus is not None and len(shared) > max_gpus
            assert (GPUS in mine) == over
            if over:
                assert max_gpus is not None
                assert list(mine[GPUS].gpus) == shared[max_gpus:]  # keeps the first max_gpus
            assert (HOURS in mine) == bool(shared and max_hours is not None and hours[member] >= max_hours)
            assert (UNBOOKED in mine) == bool(unbooked)
            if unbooked:
                assert list(mine[UNBOOKED].gpus) == unbooked
        assert all(v.member for v in violations)  # processes of nobody are nobody's violation
        decisions, spells = decide(violations, spells, now=now, policy=policy)
        for d in decisions:
            key = d.violation.key
            new = key not in last or now - last[key] > policy.max_gap
            if new:
                started[key] = now
            last[key] = now
            assert d.notify_member == (new and policy.notify_member)
            assert d.notify_admins == (new and policy.notify_admins)
            assert d.stop == (stop and now - started[key] >= timedelta(minutes=grace))
            if d.stop:
                assert not new or grace == 0
        for key in list(last):
            if key not in {d.violation.key for d in decisions}:
                del last[key]  # the spell ended: a later sighting is a new one
        assert set(spells) == {d.violation.key for d in decisions}
        for member in hours:  # GPU time piles up while a member is on shared GPUs
            hours[member] += (
                step / 60 * len({(h, g) for (h, g), m in seen_pairs if m == member and h == "h1"})
            )
        now += timedelta(minutes=step)
