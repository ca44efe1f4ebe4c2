"""GPU rules that need no I/O: when a booked or assigned GPU counts as idle.

The idle rule: a GPU is idle when every utilization sample of the last ``duration`` is below
``threshold`` percent, the samples cover that time without holes longer than ``max_gap`` and the
newest sample is recent. Memory held by a process does not make a GPU busy: the usual idle GPU is a
notebook kernel that loaded a model and went to lunch. A hole in the samples (the agent was down,
NVML could not say) restarts the clock: labgpu only calls a GPU idle when it saw it idle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from labgpu.errors import BadInput


@dataclass(frozen=True)
class UtilizationSample:
    """One GPU's utilization (percent, 0 to 100) at ``at``; None when NVML could not say."""

    at: datetime
    utilization: float | None


@dataclass(frozen=True)
class IdleRule:
    threshold: float = 5.0  # percent: below this a sample counts as idle
    duration: timedelta = timedelta(hours=1)  # idle this long before anything happens
    max_gap: timedelta = timedelta(minutes=10)  # a longer hole between samples restarts the clock

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 100:
            raise BadInput(f"idle threshold must be between 0 and 100 percent (got {self.threshold})")
        if self.duration <= timedelta(0) or self.max_gap <= timedelta(0):
            raise BadInput("idle duration and maximum gap must be positive")


@dataclass(frozen=True)
class IdleVerdict:
    idle: bool
    since: datetime | None  # first sample of the current idle run; None when the last sample is busy
    observed: timedelta  # how long the current idle run has been seen

    @property
    def idle_minutes(self) -> int:
        return int(self.observed.total_seconds() // 60)


def idle_verdict(samples: Sequence[UtilizationSample], rule: IdleRule, now: datetime) -> IdleVerdict:
    """Apply ``rule`` to ``samples`` (any order) as of ``now``."""
    ordered = sorted(samples, key=lambda s: s.at)
    if not ordered or now - ordered[-1].at > rule.max_gap:
        return IdleVerdict(idle=False, since=None, observed=timedelta(0))
    run_start: datetime | None = None
    newer: datetime | None = None
    for sample in reversed(ordered):
        low = sample.utilization is not None and sample.utilization < rule.threshold
        if not low or (newer is not None and newer - sample.at > rule.max_gap):
            break
        run_start = newer = sample.at
    if run_start is None:
        return IdleVerdict(idle=False, since=None, observed=timedelta(0))
    observed = ordered[-1].at - run_start
    return IdleVerdict(idle=observed >= rule.duration, since=run_start, observed=observed)
