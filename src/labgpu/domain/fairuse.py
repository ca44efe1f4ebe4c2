"""Fair-use rules, without I/O: which members break a limit, and what to do about it.

Each run of the GPU job sees, per host and GPU, which members have processes there (:class:`OnGpu`).
:func:`find_violations` compares that with the limits:

- ``gpus`` (shared mode): a member on more GPUs at once than ``max_gpus``. The member keeps the GPUs
  that come first by (host, index); the processes on the others offend.
- ``hours`` (shared mode): a member whose GPU-hours over the last 7 days reached ``max_gpu_hours_week``
  and who still has processes running: all of them offend.
- ``unbooked`` (booked mode): a member's process on a GPU they hold no active booking of.

:func:`decide` turns violations into actions through a SPELL per (member, kind): a spell starts when a
violation is first seen and goes on while every run sees it again (a hole longer than ``max_gap``
starts a new one). A spell is notified once (member and/or admins, as the policy says). Processes are
stopped only when the policy says so (off by default) and only once the spell has lasted ``grace``;
then at every run that still sees them, since a stopped job may be restarted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

GPUS = "gpus"
HOURS = "hours"
UNBOOKED = "unbooked"
KINDS = (GPUS, HOURS, UNBOOKED)

Gpu = tuple[str, int]  # (host, index)


@dataclass(frozen=True)
class OnGpu:
    """A member's processes on one GPU, as one run of the job saw them."""

    host: str
    gpu: int
    member: str
    container: str = ""  # the container the processes run in ("project/name" outside the default project)
    pids: tuple[int, ...] = ()  # their pids inside the container (those a stop can reach)


@dataclass(frozen=True)
class Limits:
    """A member's limits in shared mode; None: no limit."""

    max_gpus: int | None = None
    max_gpu_hours_week: float | None = None


@dataclass(frozen=True)
class Violation:
    """A member over a limit: which GPUs offend (their processes are the ones to stop), and the figures
    that say why (``used``, ``limit``)."""

    member: str
    kind: str
    gpus: tuple[Gpu, ...]
    used: float
    limit: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.member, self.kind)


def find_violations(
    seen: Iterable[OnGpu],
    *,
    modes: Mapping[str, str],
    booked: Mapping[str, set[Gpu]],
    limits: Mapping[str, Limits],
    week_hours: Mapping[str, float],
    enforce_bookings: bool = True,
) -> list[Violation]:
    """The violations in one run's view ``seen``. ``modes`` maps host -> GPU mode, ``booked`` member ->
    GPUs of their active bookings, ``limits`` member -> limits (missing: none), ``week_hours`` member ->
    GPU-hours in the last 7 days. Processes without a member are nobody's violation. By member, kind."""
    shared: dict[str, set[Gpu]] = {}
    unbooked: dict[str, set[Gpu]] = {}
    for s in seen:
        if not s.member:
            continue
        mode = modes.get(s.host, "shared")
        if mode == "shared":
            shared.setdefault(s.member, set()).add((s.host, s.gpu))
        elif mode == "booked" and enforce_bookings and (s.host, s.gpu) not in booked.get(s.member, set()):
            unbooked.setdefault(s.member, set()).add((s.host, s.gpu))
    out: list[Violation] = []
    for member in sorted(set(shared) | set(unbooked)):
        on = sorted(shared.get(member, ()))
        lim = limits.get(member, Limits())
        if lim.max_gpus is not None and len(on) > lim.max_gpus:
            out.append(Violation(member, GPUS, tuple(on[lim.max_gpus :]), len(on), lim.max_gpus))
        hours = week_hours.get(member, 0.0)
        if on and lim.max_gpu_hours_week is not None and hours >= lim.max_gpu_hours_week:
            out.append(Violation(member, HOURS, tuple(on), round(hours, 2), lim.max_gpu_hours_week))
        if member in unbooked:
            gpus = tuple(sorted(unbooked[member]))
            out.append(Violation(member, UNBOOKED, gpus, len(gpus), 0))
    return out


@dataclass(frozen=True)
class Policy:
    """What labgpu does about a violation. Stopping is off unless an admin turns it on."""

    notify_member: bool = True
    notify_admins: bool = True
    stop: bool = False
    grace: timedelta = timedelta(minutes=30)
    max_gap: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class Spell:
    """A violation seen without interruption since ``since``."""

    member: str
    kind: str
    since: datetime
    last_seen: datetime
    notified: bool = False


@dataclass(frozen=True)
class Decision:
    """What to do now about one violation."""

    violation: Violation
    spell: Spell
    notify_member: bool
    notify_admins: bool
    stop: bool

    @property
    def acts(self) -> bool:
        return self.notify_member or self.notify_admins or self.stop


def decide(
    violations: Iterable[Violation],
    spells: Mapping[tuple[str, str], Spell],
    *,
    now: datetime,
    policy: Policy,
) -> tuple[list[Decision], dict[tuple[str, str], Spell]]:
    """Decisions for this run's violations, and the spells to keep (those seen now; the others ended)."""
    decisions: list[Decision] = []
    kept: dict[tuple[str, str], Spell] = {}
    for v in violations:
        old = spells.get(v.key)
        if old is None or now - old.last_seen > policy.max_gap or now < old.last_seen:
            spell = Spell(v.member, v.kind, since=now, last_seen=now)
        else:
            spell = replace(old, last_seen=now)
        tell = not spell.notified
        stop = policy.stop and now - spell.since >= policy.grace
        decisions.append(
            Decision(
                v,
                replace(spell, notified=True),
                notify_member=tell and policy.notify_member,
                notify_admins=tell and policy.notify_admins,
                stop=stop,
            )
        )
        kept[v.key] = replace(spell, notified=True)
    return decisions, kept
