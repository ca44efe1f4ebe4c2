"""GPU usage reports: who used how many GPU-hours, per member, GPU or host, over a time span, with a
series over time for charts. One function (:func:`usage_report`) serves `labgpu gpu usage`, the API
and the portal's usage pages, so they always agree.

A report over ``[since, until)`` reads each stretch of time from exactly one table: whole days the
daily rollup covers from ``usage_daily``, hours the hourly rollup covers from ``usage_hourly``, the rest
(the last hour or so) from the raw samples. Figures are integer sums, so the answer is the same
whichever tables it came from.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labgpu.domain.members import validate_member_name
from labgpu.domain.usage import (
    NO_MEMBER,
    WEEK,
    Usage,
    UsageKey,
    floor_day,
    floor_hour,
    next_day,
    parse_since,
    report_window,
)
from labgpu.errors import N_, BadInput
from labgpu.services.context import Services
from labgpu.services.gpus._history import DAILY_MARK, HOURLY_MARK, _mark, raw_usage, rollup_usage
from labgpu.store.models import Member, utcnow
from labgpu.store.usage_models import UsageDaily, UsageHourly, UsageMember

BY = ("member", "gpu", "host")
OTHERS = "(others)"  # the label of usage by no member: host processes, containers labgpu does not own


def collect(
    session: Session,
    since: datetime,
    until: datetime,
    tz: tzinfo = UTC,
    *,
    by: str | None = None,
    member: str | None = None,
) -> list[tuple[UsageKey, Usage]]:
    """Usage in ``[since, until)`` (``since`` on a whole hour), each stretch of time from one table: keys
    are hourly buckets for raw samples and hourly rows, daily ones for daily rows. With ``by``
    (member, gpu or host) the sums are grouped in SQL by bucket and the columns that label a report's
    lines (a 30-day report reads hundreds of rows, not thousands); ``member``: only theirs."""
    hourly_mark, daily_mark = _mark(session, HOURLY_MARK), _mark(session, DAILY_MARK)
    until_hour = floor_hour(until)
    hours_end = max(since, min(hourly_mark, until_hour)) if hourly_mark else since
    first_day = floor_day(since, tz)
    if first_day < since:
        first_day = next_day(first_day, tz)
    days_end = min(daily_mark, floor_day(until, tz), hours_end) if daily_mark else first_day
    rows: list[tuple[UsageKey, Usage]] = []
    if days_end > first_day:
        rows += rollup_usage(session, UsageDaily, first_day, days_end, by=by, member=member)
        rows += rollup_usage(session, UsageHourly, since, first_day, by=by, member=member)
        rows += rollup_usage(session, UsageHourly, days_end, hours_end, by=by, member=member)
    else:
        rows += rollup_usage(session, UsageHourly, since, hours_end, by=by, member=member)
    rows += raw_usage(session, hours_end, until, by=by, member=member)
    return rows


LABELS: dict[str, Callable[[UsageKey], str]] = {
    "member": lambda k: k.member or OTHERS,
    "gpu": lambda k: f"{k.host}/{k.gpu}",
    "host": lambda k: k.host,
}


@dataclass(frozen=True)
class UsageLine:
    """One member's, GPU's or host's usage over the report's span."""

    label: str
    usage: Usage

    def as_dict(self) -> dict[str, Any]:
        u = self.usage
        mean = u.mean_utilization
        return {
            "name": self.label,
            "gpu_hours": round(u.gpu_hours, 4),
            "gpu_seconds": u.seconds,
            "memory_gib_hours": round(u.memory_gib_hours, 4),
            "mean_memory_mib": round(u.mean_memory_mib, 1),
            "mean_utilization": None if mean is None else round(mean, 1),
            "samples": u.samples,
        }


@dataclass
class UsageReport:
    """Usage over ``[since, until)`` grouped ``by`` member, GPU or host, largest first, with a series
    per line over ``buckets`` (days; hours when the span is two days or less) in GPU-hours."""

    since: datetime
    until: datetime
    by: str
    member: str | None
    lines: list[UsageLine] = field(default_factory=list)
    buckets: list[datetime] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)
    unit: str = "day"

    @property
    def total(self) -> Usage:
        out = Usage()
        for line in self.lines:
            out = out + line.usage
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "by": self.by,
            "member": self.member,
            "total_gpu_hours": round(self.total.gpu_hours, 4),
            "rows": [line.as_dict() for line in self.lines],
            "unit": self.unit,
            "buckets": [b.isoformat() for b in self.buckets],
            "series": {k: [round(v, 4) for v in vs] for k, vs in self.series.items()},
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = ["name", "gpu_hours", "memory_gib_hours", "mean_memory_mib", "mean_utilization", "samples"]
        writer.writerow([self.by, *columns[1:], "since", "until"])
        for line in self.lines:
            d = line.as_dict()
            writer.writerow([_cell(d[c]) for c in columns] + [self.since.isoformat(), self.until.isoformat()])
        return out.getvalue()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A cell a spreadsheet would run as a formula is quoted as text (names come from users).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def usage_report(
    svc: Services,
    *,
    since: str | timedelta = "7d",
    by: str = "member",
    member: str | None = None,
    now: datetime | None = None,
    tz: tzinfo = UTC,
) -> UsageReport:
    """GPU usage over the last ``since`` (``7d``, ``24h``, ``4w``) grouped ``by`` member, gpu or host;
    only ``member``'s when given. Reads the store only. Raises BadInput for a bad span, grouping or
    member name."""
    if by not in BY:
        raise BadInput(N_("group usage by member, gpu or host (not %(by)s)"), values={"by": str(by)[:20]})
    if member is not None:
        validate_member_name(member)
    span = parse_since(since) if isinstance(since, str) else since
    now = now or utcnow()
    start, end = report_window(now, span)
    with svc.session() as session:
        rows = collect(session, start, end, tz, by=by, member=member)
    return build_report(rows, since=start, until=end, by=by, member=member, tz=tz)


def build_report(
    rows: Iterable[tuple[UsageKey, Usage]],
    *,
    since: datetime,
    until: datetime,
    by: str,
    member: str | None = None,
    tz: tzinfo = UTC,
) -> UsageReport:
    """The report of collected ``rows``: totals per label, and a series per label over time."""
    label_of = LABELS[by]
    hourly = until - since <= timedelta(days=2)
    buckets: list[datetime] = []
    cursor = floor_hour(since) if hourly else floor_day(since, tz)
    while cursor < until:
        buckets.append(cursor)
        cursor = cursor + timedelta(hours=1) if hourly else next_day(cursor, tz)
    position = {b: i for i, b in enumerate(buckets)}
    floors: dict[datetime, int | None] = {}  # a row's bucket -> its place in the series
    totals: dict[str, Usage] = {}
    seconds: dict[str, list[int]] = {}
    for key, usage in rows:
        label = label_of(key)
        totals[label] = totals.get(label, Usage()) + usage
        if key.bucket not in floors:
            floors[key.bucket] = position.get(floor_hour(key.bucket) if hourly else floor_day(key.bucket, tz))
        i = floors[key.bucket]
        if i is not None:
            # Whole seconds, divided once at the end: the same series however the rows were grouped.
            seconds.setdefault(label, [0] * len(buckets))[i] += usage.seconds
    lines = sorted(
        (UsageLine(label, u) for label, u in totals.items()),
        key=lambda line: (-line.usage.seconds, line.label),
    )
    series = {line.label: [s / 3600 for s in seconds.get(line.label, [0] * len(buckets))] for line in lines}
    return UsageReport(
        since=since,
        until=until,
        by=by,
        member=member,
        lines=lines,
        buckets=buckets,
        series=series,
        unit="hour" if hourly else "day",
    )


def week_hours(svc: Services, *, now: datetime) -> dict[str, float]:
    """Each member's GPU-hours over the last 7 days (to the hour), for the weekly limit."""
    start, end = report_window(now, WEEK)
    hours: dict[str, float] = {}
    with svc.session() as session:
        for key, usage in collect(session, start, end, by="member"):
            if key.member != NO_MEMBER:
                hours[key.member] = hours.get(key.member, 0.0) + usage.seconds / 3600
    return hours


# The weekly report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeeklyReport:
    """A weekly usage report ready to send: to whom (member names; ``admins`` for the lab's report), a
    subject and a plain-text body."""

    recipients: tuple[str, ...]
    subject: str
    body: str
    report: UsageReport


def _table(report: UsageReport) -> str:
    lines = [f"{'name':<24} {'GPU-hours':>10} {'util %':>7} {'mem GiB-h':>10}"]
    for line in report.lines:
        d = line.as_dict()
        util = "-" if d["mean_utilization"] is None else f"{d['mean_utilization']:.0f}"
        lines.append(f"{line.label:<24} {d['gpu_hours']:>10.2f} {util:>7} {d['memory_gib_hours']:>10.1f}")
    return "\n".join(lines)


def weekly_reports(svc: Services, *, now: datetime | None = None, tz: tzinfo = UTC) -> list[WeeklyReport]:
    """The week's reports: the lab's (by member, then by host) for ``admins``, and one for each member
    who asked for theirs (``usage_members.weekly_report``) and used a GPU this week. Reads the store
    only; sending them is the caller's (the notification service's)."""
    now = now or utcnow()
    lab = usage_report(svc, since=WEEK, by="member", now=now, tz=tz)
    hosts = usage_report(svc, since=WEEK, by="host", now=now, tz=tz)
    day = "%Y-%m-%d"
    span = f"{lab.since.astimezone(tz).strftime(day)} - {lab.until.astimezone(tz).strftime(day)}"
    portal = f"\n\n{svc.settings.portal_url.rstrip('/')}/admin/usage\n" if svc.settings.portal_url else "\n"
    out = [
        WeeklyReport(
            ("admins",),
            f"GPU usage of the lab, {span}: {lab.total.gpu_hours:.1f} GPU-hours",
            f"GPU usage of the lab, {span}.\n\nBy member:\n{_table(lab)}\n\nBy host:\n{_table(hosts)}{portal}",
            lab,
        )
    ]
    with svc.session() as session:
        wanted = set(
            session.scalars(
                select(Member.name)
                .join(UsageMember, UsageMember.member_id == Member.id)
                .where(UsageMember.weekly_report)
            )
        )
    for name in sorted(wanted):
        mine = usage_report(svc, since=WEEK, by="gpu", member=name, now=now, tz=tz)
        if not mine.lines:
            continue
        link = f"\n\n{svc.settings.portal_url.rstrip('/')}/usage\n" if svc.settings.portal_url else "\n"
        out.append(
            WeeklyReport(
                (name,),
                f"Your GPU usage, {span}: {mine.total.gpu_hours:.1f} GPU-hours",
                f"Hello {name},\n\nyour GPU usage, {span}, by GPU:\n{_table(mine)}{link}",
                mine,
            )
        )
    return out
