"""GPU samples and idle detection: who holds a GPU without using it.

:func:`sample_gpus` takes one inventory of the local host (NVML through a
:class:`~labgpu.gpu.nvml.GpuSource`, every process attributed to its member) and stores one
:class:`~labgpu.store.models.GpuSample` per GPU; :func:`sample_agents` does the same for every other
host with a GPU agent, from the agent's inventory (all agents asked at once). An agent that does not
answer, and a host on another machine without one, is a note: those hosts get no samples, so their
held GPUs are never called idle. :func:`check_idle` applies the idle rule (:mod:`labgpu.domain.gpus`)
to the GPUs someone holds, on every host: those of active bookings (counted from the booking's start
only, so a GPU idle before it was booked does not count against the member) and, on hosts in assigned
mode, the assigned ones.

An idle spell ("episode") is reported ONCE: the member gets one notification per spell, however many runs
see it. The spell's state lives in the store (a :class:`~labgpu.store.models.JobState` row per host,
GPU and member, named ``idle:HOST:GPU:MEMBER``) so that a restart does not notify again; the
notification itself is queued (:mod:`labgpu.services.notify`) and retried there. A spell goes
on while the job keeps seeing the GPU idle; any busy sample or a hole in the samples ends it.

With ``gpu_idle_action = "release"`` a booking ALL of whose GPUs are idle is ended early and its GPUs
detached; assigned GPUs are only ever notified.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from labgpu.domain.fairuse import OnGpu
from labgpu.errors import LabgpuError
from labgpu.gpu.inventory import Inventory, attribute_reading, owners_from_instances, unavailable_inventory
from labgpu.gpu.nvml import GpuSource, NvmlUnavailable
from labgpu.services import notify
from labgpu.services.context import Services
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus._bookings import release as release_booking
from labgpu.services.gpus._history import store_usage, usage_rows, usage_rows_of_status
from labgpu.services.gpus._holders import (
    EPISODE_PREFIX,
    Held,
    IdleGpu,
    _episode_key,
    _hosts,
    _idle,
    _verdicts,
    held_gpus,
    idle_rule,
)
from labgpu.services.gpus._usage import SOURCE_AGENT, GpuStatus, GpuUsageReader
from labgpu.services.hosts import ask_all, recorded_local_host
from labgpu.store import replaceable_writes
from labgpu.store.models import GpuSample, Host, JobState, Member, utcnow
from labgpu.store.usage_models import UsageSample

log = logging.getLogger(__name__)


# Sampling -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleResult:
    samples: int
    note: str = ""
    seen: tuple[OnGpu, ...] = ()  # each member's processes per GPU, for fair use


def sample_gpus(
    svc: Services, *, source: GpuSource, now: datetime | None = None, proc_root: str | Path = "/proc"
) -> SampleResult:
    """Read the local host's GPUs once and store a sample per GPU (utilization, memory used, and the
    member with the most GPU memory on it) and a usage sample per GPU and member. A host without NVML
    stores nothing and says why.

    Members come from the store (each member's container on this host); the daemon's instance
    listing (``user.labgpu.owner``) is asked only when a GPU process runs in a container the store
    names no member for, so a run costs no daemon request in the usual case. The rows are written in
    one transaction whose commit does not wait for the disk (:func:`~labgpu.store.replaceable_writes`:
    a power cut may lose the last minute of samples, nothing else)."""
    now = now or utcnow()
    project = svc.settings.runtime_project
    with svc.session() as session:
        host = recorded_local_host(session)
        where = (host.id, host.name) if host is not None else None
        owners = members_of_host(session, host, project)
    started = time.perf_counter()
    try:
        reading = source.read()
    except NvmlUnavailable as exc:
        return SampleResult(0, unavailable_inventory(exc).headline)
    inv = attribute_reading(reading, owners=owners, proc_root=proc_root, started=started, commands=False)
    if _unnamed_containers(inv):
        try:
            listed = owners_from_instances(svc.runtime.instances.all(with_state=False), project)
            notes: list[str] = []
        except LabgpuError as exc:
            listed, notes = {}, [f"members known from the store only: {exc.message}"]
        # The store names its members' containers; the daemon's labels name the others.
        owners = {**listed, **owners}
        inv = attribute_reading(
            reading, owners=owners, proc_root=proc_root, notes=notes, started=started, commands=False
        )
    if not inv.available:
        return SampleResult(0, inv.headline)
    if where is None:
        return SampleResult(0, "no host in the store yet")
    host_id, host_name = where
    usage, seen = usage_rows(inv, host=host_name, now=now, seconds=svc.settings.gpu_sample_seconds)
    with replaceable_writes(svc.engine) as conn:
        conn.execute(insert(GpuSample), _sample_rows(inv, host_id, now))
        if usage:
            conn.execute(insert(UsageSample), usage)
    return SampleResult(len(inv.gpus), "; ".join(inv.warnings), tuple(seen))


def _unnamed_containers(inv: Inventory) -> bool:
    """Whether a GPU process runs in a container without a known member."""
    return any(p.owner.in_container and p.member is None for g in inv.gpus for p in g.processes)


def members_of_host(session: Session, host: Host | None, project: str) -> dict[tuple[str, str], str]:
    """The owner map the store knows for ``host``: each member's container. The daemon's own labels
    (``user.labgpu.owner``) are added on top when it answers."""
    if host is None:
        return {}
    rows = session.execute(
        select(Member.container, Member.name).where(Member.host_id == host.id, Member.container.is_not(None))
    )
    return {(project, str(container)): name for container, name in rows}


def _sample_rows(inv: Inventory, host_id: int, now: datetime) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for usage in inv.gpus:
        g = usage.gpu
        rows.append(
            {
                "host_id": host_id,
                "gpu_index": g.index,
                "at": now,
                "utilization": None if g.error or g.mig_enabled else g.utilization,
                "memory_used": g.memory_used,
                "member": _top_member((p.member, p.used_memory) for p in usage.processes),
            }
        )
    return rows


def _top_member(processes: Iterable[tuple[str | None, int | None]]) -> str | None:
    """The member with the most GPU memory among (member, bytes) of a GPU's processes."""
    memory: dict[str, int] = defaultdict(int)
    for member, used in processes:
        if member:
            memory[member] += used or 0
    return max(memory, key=lambda m: memory[m]) if memory else None


def _status_rows(gpus: Iterable[GpuStatus], host_id: int, now: datetime) -> list[GpuSample]:
    """Sample rows from an agent's inventory, read as :func:`_sample_rows` reads the local one."""
    return [
        GpuSample(
            host_id=host_id,
            gpu_index=g.index,
            at=now,
            utilization=None if g.error or g.mig_enabled else g.utilization,
            memory_used=g.memory_used,
            member=_top_member((p.member, p.memory) for p in g.processes),
        )
        for g in gpus
    ]


@dataclass
class AgentSamples:
    """What :func:`sample_agents` did: samples stored per host, and a note per host it could not
    sample (its agent did not answer or has no GPU; one line naming the hosts without an agent)."""

    samples: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seen: list[OnGpu] = field(default_factory=list)  # each member's processes per GPU, for fair use


def sample_agents(svc: Services, *, reader: GpuUsageReader, now: datetime | None = None) -> AgentSamples:
    """Sample every host but the local daemon's from its GPU agent (``reader.inventory``, every agent
    asked at once; each waits at most the agent timeout): one sample per GPU, as :func:`sample_gpus`
    stores for the local host. Never raises for an agent that does not answer: a note says so."""
    now = now or utcnow()
    out = AgentSamples()
    with svc.session() as session:
        others = list(session.scalars(select(Host).where(Host.url.is_not(None)).order_by(Host.name)))
    with_agent = [h for h in others if h.agent_url]
    without = [h.name for h in others if not h.agent_url]
    answers = ask_all(
        {h.id: partial(reader.inventory, svc, h) for h in with_agent}, timeout=svc.settings.host_timeout + 1
    )
    rows: list[GpuSample] = []
    usage: list[dict[str, object]] = []
    for h in with_agent:
        answer = answers[h.id]
        found = answer.value
        if found is None:
            out.notes.append(f"{h.name}: not sampled: {answer.error}")
        elif found.source != SOURCE_AGENT or not found.available:
            out.notes.append(f"{h.name}: not sampled: {found.message}")
        else:
            rows += _status_rows(found.gpus, h.id, now)
            more, seen = usage_rows_of_status(
                found.gpus, host=h.name, now=now, seconds=svc.settings.gpu_sample_seconds
            )
            usage += more
            out.seen += seen
            out.samples[h.name] = len(found.gpus)
    if rows:
        with svc.session() as session:
            session.add_all(rows)
            store_usage(session, usage)
    if without:
        out.notes.append(
            f"not sampled (no GPU agent set; `labgpu host set NAME --agent-url URL`): {', '.join(without)}"
        )
    return out


def prune_samples(svc: Services, *, before: datetime) -> int:
    """Delete samples taken before ``before``, and idle-spell records last seen before it."""
    with svc.session() as session:
        gone = session.execute(delete(GpuSample).where(GpuSample.at < before))
        session.execute(
            delete(JobState).where(
                JobState.name.startswith(EPISODE_PREFIX), JobState.last_finished_at < before
            )
        )
        return int(getattr(gone, "rowcount", 0) or 0)


@dataclass
class IdleReport:
    idle: list[IdleGpu] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)  # "alice: GPU 0, 2" for each mail sent (or due)
    released: list[int] = field(default_factory=list)  # booking ids
    detached: list[gpu_attach.AttachOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def check_idle(
    svc: Services, *, now: datetime | None = None, reader: GpuUsageReader | None = None
) -> IdleReport:
    """Apply the idle rule to every held GPU of every host: mail the member once per idle spell and,
    when policy says release, end bookings whose GPUs are all idle and detach them through their
    host's daemon (``reader`` finds a remote host's GPUs through its agent when its daemon lists none).
    Notifications are queued and retried by the notify job; a host
    whose daemon does not answer keeps its released GPUs until the bookings job detaches them (an
    error naming the host)."""
    now = now or utcnow()
    rule = idle_rule(svc)
    report = IdleReport()
    release = svc.settings.gpu_idle_action == "release"
    to_release: list[tuple[Held, list[IdleGpu]]] = []
    hosts: dict[int, Host] = {}
    to_tell: list[tuple[Held, list[IdleGpu]]] = []
    with svc.session() as session:
        for host in _hosts(session):
            hosts[host.id] = host
            for held in held_gpus(session, host):
                idle = _idle(session, held, _verdicts(session, held, rule, now), now)
                report.idle.extend(idle)
                new = [g for g in idle if _new_spell(session, held, g, now)]
                all_idle = bool(idle) and len(idle) == len(held.gpus)
                if release and held.booking is not None and all_idle:
                    to_release.append((held, idle))
                    continue
                if new:
                    # Queued after this transaction: the queue writes to the store too.
                    to_tell.append((held, new))
                    _mark(session, held, new, now, "notified")
                    report.notified.append(f"{held.member}: GPU {', '.join(str(g.gpu) for g in new)}")
    for held, new in to_tell:
        _tell(svc, held, new, released=False)
    released: dict[int, set[str]] = defaultdict(set)  # host id -> members whose booking was released
    for held, idle in to_release:
        assert held.booking is not None
        view = release_booking(
            svc, held.booking, reason=f"idle for {min(g.minutes for g in idle)} minutes", now=now
        )
        if view is None:
            continue
        report.released.append(view.id)
        released[held.host_id].add(held.member)
        with svc.session() as session:
            _mark(session, held, idle, now, "released")
        _tell(svc, held, idle, released=True)
        report.notified.append(f"{held.member}: booking {view.id} released")
    for host_id, members in sorted(released.items()):
        host = hosts[host_id]
        try:
            report.detached += gpu_attach.sync_host(svc, host=host, members=members, reader=reader)
        except LabgpuError as exc:
            report.errors.append(f"released GPUs on {host.name} not detached yet: {exc.message}")
    return report


def _new_spell(session: Session, held: Held, gpu: IdleGpu, now: datetime) -> bool:
    """Whether ``gpu``'s idle spell is one the member was not told about.

    The same spell as the one recorded when the current run of idle samples reaches back to the last
    time a job saw it idle (no busy sample or hole since). Each look at a known spell moves "last seen"
    on."""
    state = session.get(JobState, _episode_key(held, gpu.gpu))
    if state is None or state.last_started_at is None or state.last_finished_at is None:
        return True
    if (
        gpu.since != state.last_started_at
    ):  # _idle() carried a known spell's start over; a new one starts later
        return True
    state.last_finished_at = now
    return False


def _mark(session: Session, held: Held, gpus: list[IdleGpu], now: datetime, status: str) -> None:
    for g in gpus:
        key = _episode_key(held, g.gpu)
        state = session.get(JobState, key)
        if state is None:
            state = JobState(name=key)
            session.add(state)
        state.last_started_at = g.since
        state.last_finished_at = now
        state.last_status = status
        session.flush()


def _tell(svc: Services, held: Held, gpus: list[IdleGpu], *, released: bool) -> bool:
    """Notify the member (queued: a channel that fails is retried by the job runner). False: the
    member has no channel for idle GPUs (no address, mail not configured, none of their own)."""
    which = ", ".join(str(g.gpu) for g in gpus)
    minutes = min(g.minutes for g in gpus)
    what = f"booking {held.booking}" if held.booking is not None else "your assigned GPUs"
    if released:
        subject = f"GPU {which} on {held.host} released: idle"
        body = (
            f"Hello {held.member},\n\nGPU {which} on {held.host} ({what}) showed under "
            f"{svc.settings.gpu_idle_threshold:g}% utilization for {minutes} minutes, so the booking was "
            "ended early and the GPUs were taken from your container, for others to use.\n\n"
            "Book again when you need them (labgpu gpu book, or the portal).\n"
        )
    else:
        subject = f"GPU {which} on {held.host} is idle"
        body = (
            f"Hello {held.member},\n\nGPU {which} on {held.host} ({what}) has shown under "
            f"{svc.settings.gpu_idle_threshold:g}% utilization for {minutes} minutes. Memory held by an "
            "idle process (a notebook kernel, a stopped training) keeps others from the GPU.\n\n"
            "If you no longer need it, cancel the booking or end your processes."
        )
        if svc.settings.gpu_idle_action == "release" and held.booking is not None:
            body += " When all of the booking's GPUs are idle, the booking is released automatically."
        body += "\n"
    if svc.settings.portal_url:
        body += f"\n{svc.settings.portal_url}\n"
    return notify.send(svc, notify.IDLE_GPU, [held.member], subject, body) > 0
