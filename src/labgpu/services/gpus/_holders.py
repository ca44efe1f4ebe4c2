"""Who holds which GPU (active bookings; assigned GPUs in assigned mode), and which held GPUs are idle by the
idle rule (:mod:`labgpu.domain.gpus`), from the samples in the store. Reads the store only; sampling and
acting on idle GPUs is :mod:`labgpu.services.gpus._idle`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labgpu.domain.gpus import IdleRule, IdleVerdict, UtilizationSample, idle_verdict
from labgpu.services.context import Services
from labgpu.services.gpus._booking_records import active_bookings, parse_gpus
from labgpu.store.models import GpuMode, GpuSample, Host, JobState, Member, utcnow

EPISODE_PREFIX = "idle:"


def idle_rule(svc: Services) -> IdleRule:
    """The idle rule from the settings. A hole longer than 10 minutes, or 3 sampling periods when
    those are longer, ends a spell."""
    s = svc.settings
    return IdleRule(
        threshold=s.gpu_idle_threshold,
        duration=timedelta(minutes=s.gpu_idle_minutes),
        max_gap=max(timedelta(minutes=10), 3 * timedelta(seconds=s.gpu_sample_seconds)),
    )


# Who holds which GPU ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """GPUs a member holds on a host: by a booking (``booking`` set) or by assignment."""

    host_id: int
    host: str
    member: str
    email: str | None
    gpus: tuple[int, ...]
    since: datetime | None  # the booking's start: samples before it do not count
    booking: int | None = None


def held_gpus(session: Session, host: Host) -> list[Held]:
    out = [
        Held(host.id, host.name, b.member.name, b.member.email, parse_gpus(b.gpus), b.start_at, b.id)
        for b in active_bookings(session, host.id)
    ]
    if host.gpu_mode == GpuMode.ASSIGNED:
        for m in session.scalars(select(Member).where(Member.host_id == host.id)):
            if m.gpu_spec and m.gpu_spec not in ("all", "none"):
                gpus = tuple(int(p) for p in m.gpu_spec.split(",") if p.strip().isdigit())
                out.append(Held(host.id, host.name, m.name, m.email, gpus, None))
    return out


def _verdicts(session: Session, held: Held, rule: IdleRule, now: datetime) -> dict[int, IdleVerdict]:
    lookback = now - rule.duration - 2 * rule.max_gap
    if held.since is not None:
        lookback = max(lookback, held.since)
    rows = session.execute(
        select(GpuSample.gpu_index, GpuSample.at, GpuSample.utilization).where(
            GpuSample.host_id == held.host_id,
            GpuSample.gpu_index.in_(held.gpus),
            GpuSample.at >= lookback,
            GpuSample.at <= now,
        )
    ).tuples()
    samples: dict[int, list[UtilizationSample]] = {g: [] for g in held.gpus}
    for gpu, at, util in rows:
        samples[gpu].append(UtilizationSample(at, None if util is None else float(util)))
    return {gpu: idle_verdict(s, rule, now) for gpu, s in samples.items()}


# Idle check ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdleGpu:
    """A GPU someone holds and does not use, as the portal and `jobs run-once` show it."""

    host: str
    gpu: int
    member: str
    booking: int | None
    since: datetime
    minutes: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"] = self.since.isoformat()
        return out


def _hosts(session: Session) -> list[Host]:
    return list(session.scalars(select(Host).order_by(Host.name)))


def idle_gpus(svc: Services, *, now: datetime | None = None) -> list[IdleGpu]:
    """The held GPUs that are idle now, on every host (no side effects): for the portal."""
    now = now or utcnow()
    rule = idle_rule(svc)
    out = []
    with svc.session() as session:
        for host in _hosts(session):
            for held in held_gpus(session, host):
                out.extend(_idle(session, held, _verdicts(session, held, rule, now), now))
    return out


def _idle(session: Session, held: Held, verdicts: dict[int, IdleVerdict], now: datetime) -> list[IdleGpu]:
    """The idle GPUs among ``verdicts``. A spell already known goes back to when it was first seen
    (the samples read for a verdict reach back only a little longer than the rule's duration)."""
    out = []
    for gpu, v in sorted(verdicts.items()):
        if not v.idle or v.since is None:
            continue
        since = v.since
        state = session.get(JobState, _episode_key(held, gpu))
        if (
            state is not None
            and state.last_started_at is not None
            and state.last_finished_at is not None
            and v.since <= state.last_finished_at
        ):
            since = min(since, state.last_started_at)
        out.append(
            IdleGpu(
                held.host, gpu, held.member, held.booking, since, int((now - since).total_seconds() // 60)
            )
        )
    return out


def _episode_key(held: Held, gpu: int) -> str:
    return f"{EPISODE_PREFIX}{held.host_id}:{gpu}:{held.member}"[:64]
