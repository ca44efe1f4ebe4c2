"""GPU usage history: raw samples per member and GPU, their hourly and daily rollups, and retention.

The GPU job (``gpu-idle``, every ``gpu_sample_seconds``) takes one inventory per host (NVML here, the
agents elsewhere); :func:`usage_rows` turns each into one :class:`~labgpu.store.models.UsageSample` per
(GPU, member with processes on it), worth the sampling interval. :func:`roll_up` (the ``usage-rollup``
job) sums complete hours of raw samples into :class:`~labgpu.store.models.UsageHourly` and complete days
(the lab's midnights) of hours into :class:`~labgpu.store.models.UsageDaily`. How far each got is a
watermark in the store (the ``usage:hourly`` and ``usage:daily`` job-state rows): a rollup always
rewrites whole buckets from their source, so running it twice, or after a crash halfway, changes
nothing. :func:`prune_usage` deletes raw samples and hours past their keep time, never before they
were rolled up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, cast

from sqlalchemy import case, delete, func, insert, literal, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from labgpu.domain.fairuse import OnGpu
from labgpu.domain.usage import DAY, NO_MEMBER, Usage, UsageKey, floor_day, floor_hour, next_day
from labgpu.gpu.inventory import Inventory
from labgpu.services.context import Services
from labgpu.services.gpus._usage import GpuStatus
from labgpu.store.models import JobState
from labgpu.store.usage_models import UsageDaily, UsageHourly, UsageSample

HOURLY_MARK = "usage:hourly"
DAILY_MARK = "usage:daily"
LATE = timedelta(minutes=5)  # a sampling run may store its rows this long after its start
MIB = 2**20


# Raw samples --------------------------------------------------------------------------------------


def _group(
    processes: Iterable[tuple[str | None, str | None, int | None, int | None]],
) -> dict[str, tuple[int, int, str, tuple[int, ...]]]:
    """(member, container, memory bytes, pid in container) of a GPU's processes -> member: (memory
    bytes, processes, container, pids in the container)."""
    out: dict[str, tuple[int, int, str, tuple[int, ...]]] = {}
    for member, container, memory, cpid in processes:
        key = member or NO_MEMBER
        used, count, where, pids = out.get(key, (0, 0, container or "", ()))
        out[key] = (
            used + (memory or 0),
            count + 1,
            where or container or "",
            pids + ((cpid,) if cpid else ()),
        )
    return out


def _rows(
    host: str,
    gpus: Iterable[tuple[int, int | None, dict[str, tuple[int, int, str, tuple[int, ...]]]]],
    now: datetime,
    seconds: int,
) -> tuple[list[dict[str, object]], list[OnGpu]]:
    rows: list[dict[str, object]] = []
    seen: list[OnGpu] = []
    for index, utilization, members in gpus:
        for member, (memory, count, container, pids) in members.items():
            rows.append(
                {
                    "at": now,
                    "host": host,
                    "gpu_index": index,
                    "member": member,
                    "seconds": seconds,
                    "memory_mib": (memory + MIB // 2) // MIB,
                    "utilization": utilization,
                    "processes": count,
                }
            )
            if member:
                seen.append(OnGpu(host, index, member, container, pids))
    return rows, seen


def usage_rows(
    inv: Inventory, *, host: str, now: datetime, seconds: int
) -> tuple[list[dict[str, object]], list[OnGpu]]:
    """Raw usage rows of one local inventory (one per GPU and member with processes there; member ""
    for the others), and what fair use looks at: each member's processes per GPU."""
    gpus = []
    for usage in inv.gpus:
        g = usage.gpu
        members = _group(
            (p.member, p.owner.label if p.owner.in_container else "", p.used_memory, p.container_pid)
            for p in usage.processes
        )
        gpus.append((g.index, None if g.error or g.mig_enabled else g.utilization, members))
    return _rows(host, gpus, now, seconds)


def usage_rows_of_status(
    statuses: Iterable[GpuStatus], *, host: str, now: datetime, seconds: int
) -> tuple[list[dict[str, object]], list[OnGpu]]:
    """:func:`usage_rows` for a host's GPUs as its agent reported them."""
    gpus = []
    for g in statuses:
        members = _group((p.member, p.container, p.memory, p.container_pid) for p in g.processes)
        gpus.append((g.index, None if g.error or g.mig_enabled else g.utilization, members))
    return _rows(host, gpus, now, seconds)


def store_usage(session: Session, rows: Sequence[dict[str, object]]) -> None:
    """Insert raw usage rows (one executemany)."""
    if rows:
        session.execute(insert(UsageSample), list(rows))


# Rollups ------------------------------------------------------------------------------------------


def _mark(session: Session, name: str) -> datetime | None:
    state = session.get(JobState, name)
    return state.last_finished_at if state is not None else None


def _set_mark(session: Session, name: str, until: datetime) -> None:
    state = session.get(JobState, name)
    if state is None:
        state = JobState(name=name)
        session.add(state)
    state.last_finished_at = until
    state.last_status = "ok"


def marks(svc: Services) -> tuple[datetime | None, datetime | None]:
    """How far the hourly and the daily rollups got (exclusive ends; None: never ran)."""
    with svc.session() as session:
        return _mark(session, HOURLY_MARK), _mark(session, DAILY_MARK)


def _sums(table: type[UsageSample] | type[UsageHourly] | type[UsageDaily]) -> tuple[Any, ...]:
    if table is UsageSample:
        return (
            func.sum(UsageSample.seconds),
            func.sum(UsageSample.memory_mib * UsageSample.seconds),
            func.sum(func.coalesce(UsageSample.utilization, 0) * UsageSample.seconds),
            func.sum(case((UsageSample.utilization.is_not(None), UsageSample.seconds), else_=0)),
            func.count(),
        )
    rollup = cast(type[UsageHourly], table)
    return (
        func.sum(rollup.seconds),
        func.sum(rollup.memory_mib_seconds),
        func.sum(rollup.util_seconds),
        func.sum(rollup.util_known_seconds),
        func.sum(rollup.samples),
    )


# What a report groups by: the columns its lines are labelled with (the others come back empty).
GROUPS = ("member", "gpu", "host")


def _group_columns(
    table: type[UsageSample] | type[UsageHourly] | type[UsageDaily], by: str | None
) -> tuple[Any, Any, Any]:
    """(host, gpu_index, member) to select and group by: the real columns ``by`` needs, constants for
    the others (None: all three)."""
    host = table.host if by in (None, "gpu", "host") else literal("")
    gpu = table.gpu_index if by in (None, "gpu") else literal(-1)
    member = table.member if by in (None, "member") else literal("")
    return host, gpu, member


def _hour_of(session: Session, column: Any) -> Any:
    """``column``'s UTC hour, as SQL both backends group by: SQLite keeps times as text
    (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), PostgreSQL as timestamptz (truncated in UTC, whatever the
    session's zone)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.substr(column, 1, 13)
    return func.date_trunc("hour", func.timezone("UTC", column))


def raw_usage(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    by: str | None = None,
    member: str | None = None,
) -> list[tuple[UsageKey, Usage]]:
    """Raw samples in ``[since, until)`` summed per hour, host, GPU and member (in SQL; only the
    columns ``by`` groups by, and only ``member``'s samples, when given)."""
    host, gpu, who = _group_columns(UsageSample, by)
    hour = _hour_of(session, UsageSample.at)
    query = (
        select(func.min(UsageSample.at), host, gpu, who, *_sums(UsageSample))
        .where(UsageSample.at >= since, UsageSample.at < until)
        .group_by(hour, *_real(host, gpu, who))
    )
    if member is not None:
        query = query.where(UsageSample.member == member)
    out: dict[UsageKey, Usage] = {}
    for at, h, g, m, s, mem, util, known, n in session.execute(query):
        key = UsageKey(floor_hour(at), h, g, m)
        # One group per hour, but the key's hour is taken from the group's first sample: add, in case a
        # backend splits an hour.
        out[key] = out.get(key, Usage()) + Usage(int(s), int(mem), int(util), int(known or 0), int(n))
    return list(out.items())


def _real(*columns: Any) -> list[Any]:
    return [c for c in columns if isinstance(c, InstrumentedAttribute)]


def rollup_usage(
    session: Session,
    table: type[UsageHourly] | type[UsageDaily],
    since: datetime,
    until: datetime,
    *,
    by: str | None = None,
    member: str | None = None,
) -> list[tuple[UsageKey, Usage]]:
    """Rows of ``table`` whose bucket lies in ``[since, until)``: each row (plain rows, no ORM
    objects), or with ``by``, summed in SQL per bucket and the columns ``by`` groups by; only
    ``member``'s, when given."""
    host, gpu, who = _group_columns(table, by)
    if by is None:
        figures: tuple[Any, ...] = (
            table.seconds,
            table.memory_mib_seconds,
            table.util_seconds,
            table.util_known_seconds,
            table.samples,
        )
    else:
        figures = _sums(table)
    query = select(table.bucket, host, gpu, who, *figures).where(table.bucket >= since, table.bucket < until)
    if by is not None:
        query = query.group_by(table.bucket, *_real(host, gpu, who))
    if member is not None:
        query = query.where(table.member == member)
    return [
        (UsageKey(bucket, h, g, m), Usage(int(s), int(mem), int(util), int(known), int(n)))
        for bucket, h, g, m, s, mem, util, known, n in session.execute(query)
    ]


def _write(
    session: Session,
    table: type[UsageHourly] | type[UsageDaily],
    since: datetime,
    until: datetime,
    sums: dict[UsageKey, Usage],
) -> int:
    session.execute(delete(table).where(table.bucket >= since, table.bucket < until))
    rows = [
        {
            "bucket": k.bucket,
            "host": k.host,
            "gpu_index": k.gpu,
            "member": k.member,
            "seconds": u.seconds,
            "memory_mib_seconds": u.memory_mib_seconds,
            "util_seconds": u.util_seconds,
            "util_known_seconds": u.util_known_seconds,
            "samples": u.samples,
        }
        for k, u in sums.items()
    ]
    if rows:
        session.execute(insert(table), rows)
    return len(rows)


def roll_up(svc: Services, *, now: datetime, tz: tzinfo = UTC, chunk: timedelta = DAY) -> tuple[int, int]:
    """Roll complete hours of raw samples into hourly rows, then complete days of hours into daily
    rows; returns how many of each were written. Each chunk is one transaction that also moves the
    watermark, so a crash loses nothing and a rerun repeats nothing."""
    hours = days = 0
    end = floor_hour(now - LATE)
    with svc.session() as session:
        start = _mark(session, HOURLY_MARK)
        if start is None:
            first = session.scalar(select(func.min(UsageSample.at)))
            start = floor_hour(first) if first is not None else end
    while start < end:
        stop = min(end, start + chunk)
        with svc.session() as session:
            sums: dict[UsageKey, Usage] = dict(raw_usage(session, start, stop))
            hours += _write(session, UsageHourly, start, stop, sums)
            _set_mark(session, HOURLY_MARK, stop)
        start = stop
    with svc.session() as session:
        hourly_until = _mark(session, HOURLY_MARK)
        day = _mark(session, DAILY_MARK)
        if day is None:
            first = session.scalar(select(func.min(UsageHourly.bucket)))
            day = floor_day(first, tz) if first is not None else None
    if hourly_until is None or day is None:
        return hours, days
    while next_day(day, tz) <= hourly_until:
        following = next_day(day, tz)
        with svc.session() as session:
            sums = {}
            for key, usage in rollup_usage(session, UsageHourly, day, following):
                k = UsageKey(day, key.host, key.gpu, key.member)
                sums[k] = sums.get(k, Usage()) + usage
            days += _write(session, UsageDaily, day, following, sums)
            _set_mark(session, DAILY_MARK, following)
        day = following
    return hours, days


# Retention ----------------------------------------------------------------------------------------


def prune_usage(svc: Services, *, now: datetime) -> tuple[int, int, int]:
    """Delete raw samples, hourly and daily rows past their keep days (never raw samples or hours not
    rolled up yet). Returns how many of each."""
    s = svc.settings
    with svc.session() as session:
        hourly_mark, daily_mark = _mark(session, HOURLY_MARK), _mark(session, DAILY_MARK)
        raw = 0
        if hourly_mark is not None:
            cut = min(now - timedelta(days=s.usage_samples_keep_days), hourly_mark)
            raw = _count(session.execute(delete(UsageSample).where(UsageSample.at < cut)))
        hourly_before = now - timedelta(days=s.usage_hourly_keep_days)
        hourly = 0
        if daily_mark is not None:
            cut = min(hourly_before, daily_mark)
            hourly = _count(session.execute(delete(UsageHourly).where(UsageHourly.bucket < cut)))
        daily = 0
        if s.usage_daily_keep_days:
            cut = now - timedelta(days=s.usage_daily_keep_days)
            daily = _count(session.execute(delete(UsageDaily).where(UsageDaily.bucket < cut)))
    return raw, hourly, daily


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
