"""GPU usage figures and their rollups, without I/O.

A usage sample says: member M had processes on GPU G of host H for ``seconds`` (the sampling interval)
around ``at``, holding ``memory_mib`` of GPU memory, while the GPU showed ``utilization`` percent.
Figures are kept as integer SUMS (:class:`Usage`) so that rolling raw samples up into hours, and hours
into days, loses nothing: the hourly rows of a day add up to exactly its daily row, and a report reads
the same totals from any mix of them. Means (utilization, memory) are derived at the end.

GPU time counts each member on a GPU for the whole interval, whoever else is on it: two members sharing
a GPU for an hour each have used one GPU-hour ("held the GPU"), which is what fair-use limits are about.

Buckets: an hour starts on a UTC hour; a day starts at midnight in the lab's time zone (``tz``), stored
as that moment in UTC, so daily charts follow the lab's own days.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from labgpu.errors import N_, BadInput

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
NO_MEMBER = ""  # a host process, or a container labgpu does not own


@dataclass(frozen=True)
class Usage:
    """Additive usage figures: sums, so that they roll up exactly."""

    seconds: int = 0  # GPU time: seconds a member had processes on the GPU
    memory_mib_seconds: int = 0  # GPU memory held x time (MiB x seconds)
    util_seconds: int = 0  # GPU utilization (percent) x seconds, over samples where NVML said
    util_known_seconds: int = 0  # the seconds of those samples
    samples: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.seconds + other.seconds,
            self.memory_mib_seconds + other.memory_mib_seconds,
            self.util_seconds + other.util_seconds,
            self.util_known_seconds + other.util_known_seconds,
            self.samples + other.samples,
        )

    @classmethod
    def of_sample(cls, seconds: int, memory_mib: int, utilization: int | None) -> Usage:
        known = seconds if utilization is not None else 0
        return cls(seconds, memory_mib * seconds, (utilization or 0) * seconds, known, 1)

    @property
    def gpu_hours(self) -> float:
        return self.seconds / 3600

    @property
    def mean_utilization(self) -> float | None:
        """Mean GPU utilization (percent) while the member was on it; None when never known."""
        return self.util_seconds / self.util_known_seconds if self.util_known_seconds else None

    @property
    def mean_memory_mib(self) -> float:
        return self.memory_mib_seconds / self.seconds if self.seconds else 0.0

    @property
    def memory_gib_hours(self) -> float:
        return self.memory_mib_seconds / 1024 / 3600


@dataclass(frozen=True)
class UsageKey:
    """Where usage was counted: a bucket (its start, UTC), host, GPU and member."""

    bucket: datetime
    host: str
    gpu: int
    member: str


def floor_hour(moment: datetime) -> datetime:
    """The start of ``moment``'s hour, in UTC."""
    m = moment.astimezone(UTC)
    return m.replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime, tz: tzinfo) -> datetime:
    """The lab's midnight (``tz``) that starts ``moment``'s day, in UTC."""
    local = moment.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def next_day(day: datetime, tz: tzinfo) -> datetime:
    """The lab's next midnight after the midnight ``day`` (UTC); 23 or 25 hours later across DST."""
    local = day.astimezone(tz)
    return floor_day((local + DAY + 2 * HOUR).replace(tzinfo=tz), tz)


def rollup(rows: Iterable[tuple[UsageKey, Usage]], *, unit: str, tz: tzinfo = UTC) -> dict[UsageKey, Usage]:
    """Sum ``rows`` into hourly (``unit="hour"``) or daily (``"day"``, midnights in ``tz``) buckets."""
    if unit not in ("hour", "day"):
        raise ValueError(f"unknown unit {unit!r}")
    out: dict[UsageKey, Usage] = {}
    for key, usage in rows:
        bucket = floor_hour(key.bucket) if unit == "hour" else floor_day(key.bucket, tz)
        k = UsageKey(bucket, key.host, key.gpu, key.member)
        out[k] = out.get(k, Usage()) + usage
    return out


_SINCE = re.compile(r"^\s*(\d{1,5})\s*([hdw])\s*$")


def parse_since(text: str) -> timedelta:
    """``7d``, ``24h``, ``4w`` as a time span (at most ten years). Raises BadInput."""
    m = _SINCE.match(text or "")
    if not m:
        raise BadInput(
            N_("%(value)s is not a time span: write a number and h, d or w (24h, 7d, 4w)"),
            values={"value": (text or "")[:40]},
        )
    n, unit = int(m.group(1)), m.group(2)
    span = {"h": HOUR, "d": DAY, "w": WEEK}[unit] * n
    if span <= timedelta(0) or span > 3653 * DAY:
        raise BadInput(N_("the time span must be between 1 hour and 10 years"))
    return span


def report_window(now: datetime, span: timedelta) -> tuple[datetime, datetime]:
    """``[since, until)`` of a report over the last ``span``: since on a whole hour, until now."""
    return floor_hour(now - span), now
