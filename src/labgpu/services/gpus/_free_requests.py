""" "Tell me when N GPUs are free": a member waits for GPUs on a host; the jobs tell them once.

A request names a host (by default the member's own) and a count; it waits until the ``gpu-free`` job
(every minute) sees at least that many free GPUs there, then ONE ``gpu-free`` notification goes to the
member (:func:`labgpu.services.notify.send`, keyed by the request: sent once however often the job runs) and
the request is over. It ends unanswered at its expiry (``gpu_free_request_hours``, or fewer hours given by
the member) or when cancelled. One waiting request per member and host.

A GPU is **free** (:func:`free_gpus`) when, by the store alone (the samples the ``gpu-idle`` job writes):

- nobody holds it: no booking (pending, approved or active) holds it now or within the next hour, and in
  assigned mode nobody has it assigned;
- nobody uses it: every utilization sample of the last ``gpu_free_minutes`` is below
  ``gpu_idle_threshold`` with no member's process on it, and the samples cover that time without holes
  (the idle rule of :mod:`labgpu.domain.gpus`, over a shorter time).

Telling is not reserving: several members waiting on one host are all told, and the first to book (or,
in shared mode, to start a job) gets the GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labgpu.domain.gpus import IdleRule, UtilizationSample, idle_verdict
from labgpu.errors import N_, BadInput, Conflict, NotFound
from labgpu.services import notify
from labgpu.services.context import Services
from labgpu.services.gpus._booking_records import _check_actor, format_gpus, parse_gpus
from labgpu.services.gpus._holders import idle_rule
from labgpu.store.models import Booking, BookingStatus, GpuMode, GpuSample, Host, Member, utcnow
from labgpu.store.models_selfservice import FreeRequestStatus, GpuFreeRequest

HOLD_AHEAD = timedelta(hours=1)  # a GPU booked to start within this time is not free
MAX_COUNT = 64
HOLDING = (BookingStatus.PENDING, BookingStatus.APPROVED, BookingStatus.ACTIVE)


@dataclass(frozen=True)
class FreeRequestView:
    """One "tell me when N GPUs are free" request, as the CLI, the API and the pages show it."""

    id: int
    member: str
    host: str
    count: int
    status: str  # waiting, sent, expired, cancelled
    created: datetime
    expires: datetime
    ended: datetime | None
    free_gpus: str | None  # the GPUs the notification named ("1,3")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "member": self.member,
            "host": self.host,
            "count": self.count,
            "status": self.status,
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat(),
            "ended": self.ended.isoformat() if self.ended else None,
            "free_gpus": self.free_gpus,
        }


def _view(row: GpuFreeRequest, member: str, host: str) -> FreeRequestView:
    return FreeRequestView(
        row.id,
        member,
        host,
        row.count,
        row.status,
        row.created_at,
        row.expires_at,
        row.ended_at,
        row.free_gpus,
    )


def _views(session: Session, rows: list[GpuFreeRequest]) -> list[FreeRequestView]:
    members = {k: v for k, v in session.execute(select(Member.id, Member.name)).tuples()}
    hosts = {k: v for k, v in session.execute(select(Host.id, Host.name)).tuples()}
    return [_view(r, members.get(r.member_id, "?"), hosts.get(r.host_id, "?")) for r in rows]


# Asking, cancelling, listing ----------------------------------------------------------------------


def ask_when_free(
    svc: Services,
    *,
    member: str,
    count: int,
    host: str | None = None,
    hours: float | None = None,
    now: datetime | None = None,
) -> FreeRequestView:
    """Ask to be told once when ``count`` GPUs are free on ``host`` (default: ``member``'s host), for
    ``hours`` (default and most: ``gpu_free_request_hours``). The member themself or an admin. Audit
    ``gpu.free-request``. Raises BadInput (a count or time out of range, no host), NotFound (member, host),
    NotAllowed, Conflict (a request of theirs already waits on that host)."""
    now = now or utcnow()
    _check_actor(svc, member, f"ask for free GPUs for {member}")
    if not 1 <= count <= MAX_COUNT:
        raise BadInput(N_("ask for 1 to %(max)s GPUs"), values={"max": MAX_COUNT})
    most = svc.settings.gpu_free_request_hours
    if hours is None:
        hours = most
    if not 0 < hours <= most:
        raise BadInput(N_("a request can wait at most %(hours)s hours"), values={"hours": f"{most:g}"})
    with svc.session() as session:
        row_member = session.scalars(select(Member).where(Member.name == member)).first()
        if row_member is None:
            raise NotFound(N_("no member named %(name)s"), values={"name": member})
        if host:
            row_host = session.scalars(select(Host).where(Host.name == host)).first()
            if row_host is None:
                raise NotFound(N_("no host named %(name)s"), values={"name": host})
        else:
            row_host = session.get(Host, row_member.host_id) if row_member.host_id is not None else None
            if row_host is None:
                raise BadInput(N_("you have no container on a host yet: name the host"))
        known = _known_gpus(session, row_host.id, now)
        if known and count > len(known):
            raise BadInput(
                N_("%(host)s has %(n)s GPUs: ask for at most that many"),
                values={"host": row_host.name, "n": len(known)},
            )
        waiting = session.scalars(
            select(GpuFreeRequest.id).where(
                GpuFreeRequest.member_id == row_member.id,
                GpuFreeRequest.host_id == row_host.id,
                GpuFreeRequest.status == FreeRequestStatus.WAITING.value,
                GpuFreeRequest.expires_at > now,
            )
        ).first()
        if waiting is not None:
            raise Conflict(
                N_("request %(id)s already waits for free GPUs on %(host)s: cancel it first"),
                values={"id": waiting, "host": row_host.name},
            )
        row = GpuFreeRequest(
            member_id=row_member.id,
            host_id=row_host.id,
            count=count,
            status=FreeRequestStatus.WAITING.value,
            created_at=now,
            expires_at=now + timedelta(hours=hours),
        )
        session.add(row)
        session.flush()
        svc.audit(
            session, "gpu.free-request", member, id=row.id, host=row_host.name, count=count,
            expires=row.expires_at.isoformat(),
        )  # fmt: skip
        return _view(row, member, row_host.name)


def _load(session: Session, svc: Services, request_id: int) -> tuple[GpuFreeRequest, str, str]:
    row = session.get(GpuFreeRequest, request_id)
    member = session.get(Member, row.member_id) if row is not None else None
    host = session.get(Host, row.host_id) if row is not None else None
    if row is None or member is None or host is None:
        raise NotFound(N_("no request %(id)s"), values={"id": request_id})
    if not svc.actor.is_admin and member.name != svc.actor.name:
        raise NotFound(N_("no request %(id)s"), values={"id": request_id})  # another's: as if none
    return row, member.name, host.name


def cancel_free_request(svc: Services, request_id: int, *, now: datetime | None = None) -> FreeRequestView:
    """Cancel a waiting request (its member or an admin; another member's is NotFound). Audit
    ``gpu.free-request.cancel``. Raises NotFound, Conflict (it is over already)."""
    now = now or utcnow()
    with svc.session() as session:
        row, member, host = _load(session, svc, request_id)
        if row.status != FreeRequestStatus.WAITING.value:
            raise Conflict(
                N_("request %(id)s is over already (%(status)s)"), values={"id": row.id, "status": row.status}
            )
        row.status = FreeRequestStatus.CANCELLED.value
        row.ended_at = now
        svc.audit(session, "gpu.free-request.cancel", member, id=row.id, host=host)
        return _view(row, member, host)


def list_free_requests(
    svc: Services, *, member: str | None = None, include_all: bool = False, now: datetime | None = None
) -> list[FreeRequestView]:
    """Requests, newest first: the actor's own (an admin: everyone's, or ``member``'s); waiting ones only
    unless ``include_all``. A waiting request past its expiry shows as expired (the job marks it)."""
    now = now or utcnow()
    if not svc.actor.is_admin:
        _check_actor(svc, member or svc.actor.name, f"list {member}'s requests")
        member = svc.actor.name
    with svc.session() as session:
        query = select(GpuFreeRequest).order_by(GpuFreeRequest.id.desc())
        if member:
            query = query.join(Member, Member.id == GpuFreeRequest.member_id).where(Member.name == member)
        if not include_all:
            query = query.where(
                GpuFreeRequest.status == FreeRequestStatus.WAITING.value, GpuFreeRequest.expires_at > now
            )
        views = _views(session, list(session.scalars(query)))
    return [
        v
        if v.status != FreeRequestStatus.WAITING.value or v.expires > now
        else FreeRequestView(**{**v.__dict__, "status": FreeRequestStatus.EXPIRED.value})
        for v in views
    ]


# Which GPUs are free ------------------------------------------------------------------------------


def _known_gpus(session: Session, host_id: int, now: datetime) -> set[int]:
    """The GPUs the samples of the last day name on ``host_id``."""
    return set(
        session.scalars(
            select(GpuSample.gpu_index)
            .where(GpuSample.host_id == host_id, GpuSample.at >= now - timedelta(days=1))
            .distinct()
        )
    )


def held_soon(session: Session, host: Host, now: datetime) -> set[int]:
    """GPUs of ``host`` that someone holds now or within :data:`HOLD_AHEAD`: bookings, assignments."""
    held: set[int] = set()
    rows = session.scalars(
        select(Booking.gpus).where(
            Booking.host_id == host.id,
            Booking.status.in_(HOLDING),
            Booking.start_at < now + HOLD_AHEAD,
            Booking.end_at > now,
        )
    )
    for gpus in rows:
        held.update(parse_gpus(gpus))
    if host.gpu_mode == GpuMode.ASSIGNED:
        for spec in session.scalars(select(Member.gpu_spec).where(Member.host_id == host.id)):
            if spec and spec not in ("all", "none"):
                held.update(int(p) for p in spec.split(",") if p.strip().isdigit())
    return held


def free_gpus(svc: Services, session: Session, host: Host, now: datetime) -> list[int]:
    """The free GPUs of ``host`` at ``now`` (see the module doc), from the store."""
    base = idle_rule(svc)
    rule = IdleRule(
        threshold=base.threshold,
        duration=timedelta(minutes=svc.settings.gpu_free_minutes),
        max_gap=base.max_gap,
    )
    rows = session.execute(
        select(GpuSample.gpu_index, GpuSample.at, GpuSample.utilization, GpuSample.member).where(
            GpuSample.host_id == host.id,
            GpuSample.at >= now - rule.duration - 2 * rule.max_gap,
            GpuSample.at <= now,
        )
    ).tuples()
    samples: dict[int, list[tuple[datetime, int | None, str | None]]] = {}
    for gpu, at, util, who in rows:
        samples.setdefault(gpu, []).append((at, util, who))
    held = held_soon(session, host, now)
    free = []
    for gpu, seen in sorted(samples.items()):
        if gpu in held:
            continue
        verdict = idle_verdict(
            [UtilizationSample(at, None if u is None else float(u)) for at, u, _ in seen], rule, now
        )
        if not verdict.idle or verdict.since is None:
            continue
        since = verdict.since
        if any(who for at, _, who in seen if at >= since):
            continue  # a member's process sits on it (a model loaded, waiting): not free
        free.append(gpu)
    return free


# The job ------------------------------------------------------------------------------------------


@dataclass
class FreeCheck:
    """What one run of the ``gpu-free`` job did."""

    sent: list[FreeRequestView] = field(default_factory=list)
    expired: list[FreeRequestView] = field(default_factory=list)
    waiting: int = 0

    def lines(self) -> list[str]:
        out = [f"told {v.member}: GPU {v.free_gpus} free on {v.host} (request {v.id})" for v in self.sent]
        out += [f"request {v.id} of {v.member} expired" for v in self.expired]
        if not out:
            out.append(f"{self.waiting} request(s) waiting, no GPUs free for them")
        return out


def check_free_requests(svc: Services, *, now: datetime | None = None) -> FreeCheck:
    """Tell every waiting member whose GPUs are free (once; the request is then over), and end the
    requests past their expiry. Safe to run again: a request is told under its own key. Called by the
    ``gpu-free`` job."""
    now = now or utcnow()
    report = FreeCheck()
    to_tell: list[tuple[FreeRequestView, list[int], str]] = []
    with svc.session() as session:
        rows = list(
            session.scalars(
                select(GpuFreeRequest)
                .where(GpuFreeRequest.status == FreeRequestStatus.WAITING.value)
                .order_by(GpuFreeRequest.id)
            )
        )
        free_by_host: dict[int, list[int]] = {}
        for row, view in zip(rows, _views(session, rows), strict=True):
            if row.expires_at <= now:
                row.status = FreeRequestStatus.EXPIRED.value
                row.ended_at = now
                report.expired.append(_view(row, view.member, view.host))
                continue
            host = session.get(Host, row.host_id)
            if host is None:
                continue
            if host.id not in free_by_host:
                free_by_host[host.id] = free_gpus(svc, session, host, now)
            free = free_by_host[host.id]
            if len(free) >= row.count:
                to_tell.append((view, free, str(host.gpu_mode)))
            else:
                report.waiting += 1
    for view, free, mode in to_tell:
        subject, body = _message(svc, view, free, mode)
        notify.send(svc, notify.GPU_FREE, [view.member], subject, body, key=f"gpu-free:{view.id}")
        with svc.session() as session:
            told = session.get(GpuFreeRequest, view.id)
            if told is None or told.status != FreeRequestStatus.WAITING.value:
                continue  # cancelled meanwhile (the message may still go: it was asked for)
            told.status = FreeRequestStatus.SENT.value
            told.ended_at = now
            told.free_gpus = format_gpus(free)
            report.sent.append(_view(told, view.member, view.host))
    return report


def _message(svc: Services, view: FreeRequestView, free: list[int], mode: str) -> tuple[str, str]:
    gpus = ", ".join(map(str, free))
    subject = f"{len(free)} GPU(s) free on {view.host}: GPU {gpus}"
    minutes = svc.settings.gpu_free_minutes
    lines = [
        f"You asked to be told when {view.count} GPU(s) are free on {view.host}.",
        f"GPU {gpus} on {view.host} are free now: nobody holds them, and they were idle for the last "
        f"{minutes} minutes.",
    ]
    portal = svc.settings.portal_url.rstrip("/") if svc.settings.portal_url else ""
    if mode == GpuMode.BOOKED:
        lines.append("Book them before someone else does" + (f": {portal}/bookings" if portal else "."))
    elif mode == GpuMode.ASSIGNED:
        lines.append("Ask an admin to assign them to you.")
    else:
        lines.append("Every container on the host has them: start your work now.")
    lines.append("Others waiting may have been told too. This request is now over.")
    return subject, "\n".join(lines)
