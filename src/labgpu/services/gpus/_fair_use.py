"""Fair use: per-member GPU limits in shared mode, bookings kept in booked mode, and what labgpu does when
they are broken (:mod:`labgpu.domain.fairuse` has the rules).

:func:`check_fair_use` runs in the GPU job right after sampling, on what that run saw. Each violation is
a spell (a :class:`~labgpu.store.models.JobState` row ``fairuse:MEMBER:KIND``, as the idle spells are):
its first sighting is written to the audit log (``fairuse.violation``, with the reason) and told to the
member and/or the admins through :func:`~labgpu.services.gpus._notice.send_notice`; with ``fair_use_stop``
on, once it has lasted ``fair_use_grace_minutes``, the offending processes get SIGTERM inside their
container (``fairuse.stop``, with the pids). The member sees both on their usage page, with the reason.
Nothing is ever stopped unless an admin turned ``fair_use_stop`` on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from labgpu.domain.fairuse import GPUS, HOURS, Decision, Limits, OnGpu, Policy, Spell, decide, find_violations
from labgpu.domain.members import validate_member_name
from labgpu.errors import LabgpuError, NotFound
from labgpu.services.context import Services
from labgpu.services.gpus._booking_records import active_bookings, parse_gpus
from labgpu.services.gpus._notice import ADMINS, LIMIT_REACHED, send_notice
from labgpu.services.gpus._report import week_hours
from labgpu.services.hosts import runtime_for
from labgpu.store.models import AuditEvent, Host, JobState, Member, utcnow
from labgpu.store.usage_models import UsageMember

log = logging.getLogger(__name__)

SPELL_PREFIX = "fairuse:"
EVENT_ACTIONS = ("fairuse.violation", "fairuse.stop")


# Limits -------------------------------------------------------------------------------------------


def default_limits(svc: Services) -> Limits:
    s = svc.settings
    return Limits(
        max_gpus=s.fair_use_max_gpus or None,
        max_gpu_hours_week=s.fair_use_max_gpu_hours_per_week or None,
    )


def member_limits(svc: Services, session: Session) -> dict[str, Limits]:
    """Every member's limits: their own where set (``usage_members``), else the lab's defaults."""
    base = default_limits(svc)
    out = {name: base for name in session.scalars(select(Member.name))}
    rows = session.execute(
        select(Member.name, UsageMember).join(UsageMember, UsageMember.member_id == Member.id)
    )
    for name, own in rows:
        out[name] = Limits(
            max_gpus=own.max_gpus if own.max_gpus is not None else base.max_gpus,
            max_gpu_hours_week=(
                own.max_gpu_hours_week if own.max_gpu_hours_week is not None else base.max_gpu_hours_week
            ),
        )
    return out


@dataclass(frozen=True)
class MemberUsageSettings:
    """A member's fair-use limits in force (and whether they are the member's own) and report choice."""

    member: str
    max_gpus: int | None
    max_gpu_hours_week: float | None
    own_max_gpus: bool
    own_max_gpu_hours_week: bool
    weekly_report: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _member_row(session: Session, name: str) -> Member:
    validate_member_name(name)
    member = session.scalars(select(Member).where(Member.name == name)).first()
    if member is None:
        raise NotFound(f"no member named {name}")
    return member


def usage_settings(svc: Services, member: str) -> MemberUsageSettings:
    """``member``'s limits in force and weekly-report choice. Raises NotFound."""
    base = default_limits(svc)
    with svc.session() as session:
        row = _member_row(session, member)
        own = session.get(UsageMember, row.id)
        gpus = own.max_gpus if own and own.max_gpus is not None else None
        hours = own.max_gpu_hours_week if own and own.max_gpu_hours_week is not None else None
        return MemberUsageSettings(
            member=member,
            max_gpus=gpus if gpus is not None else base.max_gpus,
            max_gpu_hours_week=hours if hours is not None else base.max_gpu_hours_week,
            own_max_gpus=gpus is not None,
            own_max_gpu_hours_week=hours is not None,
            weekly_report=bool(own and own.weekly_report),
        )


UNSET: Any = object()


def set_usage_settings(
    svc: Services,
    member: str,
    *,
    max_gpus: int | None = UNSET,
    max_gpu_hours_week: float | None = UNSET,
    weekly_report: bool | None = None,
) -> MemberUsageSettings:
    """Set ``member``'s own limits (None: back to the lab's default; leave out: unchanged; 0 GPUs or
    hours: none allowed) and weekly-report choice. Audited (``usage.settings``). Raises NotFound,
    BadInput for a negative limit."""
    from labgpu.errors import N_, BadInput

    for value in (max_gpus, max_gpu_hours_week):
        if value is not UNSET and value is not None and value < 0:
            raise BadInput(N_("a limit cannot be negative"))
    with svc.session() as session:
        row = _member_row(session, member)
        own = session.get(UsageMember, row.id)
        if own is None:
            own = UsageMember(member_id=row.id, weekly_report=False)
            session.add(own)
        changed: dict[str, Any] = {}
        if max_gpus is not UNSET:
            own.max_gpus = changed["max_gpus"] = max_gpus
        if max_gpu_hours_week is not UNSET:
            own.max_gpu_hours_week = changed["max_gpu_hours_week"] = max_gpu_hours_week
        if weekly_report is not None:
            own.weekly_report = changed["weekly_report"] = weekly_report
        svc.audit(session, "usage.settings", member, **changed)
    return usage_settings(svc, member)


# Checking -----------------------------------------------------------------------------------------


def policy(svc: Services) -> Policy:
    s = svc.settings
    return Policy(
        notify_member=s.fair_use_notify_member,
        notify_admins=s.fair_use_notify_admins,
        stop=s.fair_use_stop,
        grace=timedelta(minutes=s.fair_use_grace_minutes),
        max_gap=max(timedelta(minutes=10), 3 * timedelta(seconds=s.gpu_sample_seconds)),
    )


@dataclass
class FairUseReport:
    """What one check did: decisions that acted, pids stopped per member, and errors."""

    decisions: list[Decision] = field(default_factory=list)
    stopped: dict[str, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for d in self.decisions:
            v = d.violation
            what = ", ".join(f"{h}/{g}" for h, g in v.gpus)
            told = [w for w, on in (("member", d.notify_member), ("admins", d.notify_admins)) if on]
            out.append(
                f"fair use: {v.member} {v.kind} ({v.used:g} of {v.limit:g}) on {what}"
                + (f"; told {' and '.join(told)}" if told else "")
            )
        out += [
            f"fair use: stopped {m}'s processes {', '.join(map(str, p))}" for m, p in self.stopped.items()
        ]
        return out


def reason(kind: str, used: float, limit: float, gpus: str) -> str:
    """The reason as a sentence (mails, the audit log); the pages translate it from kind and figures."""
    if kind == GPUS:
        return f"using {used:g} GPUs at once, over the limit of {limit:g} (GPUs {gpus})"
    if kind == HOURS:
        return f"{used:g} GPU-hours in the last 7 days, at or over the limit of {limit:g} (GPUs {gpus})"
    return f"processes on GPUs not booked (GPUs {gpus})"


def _load_spells(session: Session) -> dict[tuple[str, str], Spell]:
    out = {}
    for s in session.scalars(select(JobState).where(JobState.name.startswith(SPELL_PREFIX))):
        _, member, kind = s.name.split(":", 2)
        if s.last_started_at is None or s.last_finished_at is None:
            continue
        out[(member, kind)] = Spell(
            member, kind, s.last_started_at, s.last_finished_at, s.last_status == "notified"
        )
    return out


def _save_spells(session: Session, spells: dict[tuple[str, str], Spell]) -> None:
    session.execute(delete(JobState).where(JobState.name.startswith(SPELL_PREFIX)))
    session.flush()
    for (member, kind), s in spells.items():
        session.add(
            JobState(
                name=f"{SPELL_PREFIX}{member}:{kind}",
                last_started_at=s.since,
                last_finished_at=s.last_seen,
                last_status="notified" if s.notified else "seen",
            )
        )


def check_fair_use(svc: Services, seen: list[OnGpu], *, now: datetime | None = None) -> FairUseReport:
    """Apply the fair-use limits to what one sampling run ``seen`` (all hosts): record, tell and, when
    policy says so, stop (see the module). Never raises for a notice or a stop that fails: those are
    errors in the report (a stop is tried again at the next run)."""
    now = now or utcnow()
    report = FairUseReport()
    pol = policy(svc)
    with svc.session() as session:
        hosts = list(session.scalars(select(Host)))
        modes = {h.name: str(h.gpu_mode) for h in hosts}
        booked: dict[str, set[tuple[str, int]]] = {}
        for h in hosts:
            for b in active_bookings(session, h.id):
                booked.setdefault(b.member.name, set()).update((h.name, g) for g in parse_gpus(b.gpus))
        limits = member_limits(svc, session)
        spells = _load_spells(session)
    hours = (
        week_hours(svc, now=now) if any(lim.max_gpu_hours_week is not None for lim in limits.values()) else {}
    )
    violations = find_violations(
        seen,
        modes=modes,
        booked=booked,
        limits=limits,
        week_hours=hours,
        enforce_bookings=svc.settings.fair_use_booked,
    )
    decisions, kept = decide(violations, spells, now=now, policy=pol)
    with svc.session() as session:
        _save_spells(session, kept)
    hosts_by_name = {h.name: h for h in hosts}
    for d in decisions:
        v = d.violation
        gpus = ", ".join(f"{h}/{g}" for h, g in v.gpus)
        why = reason(v.kind, v.used, v.limit, gpus)
        new = d.spell.since == now
        stopped: list[int] = []
        if d.stop:
            stopped = _stop(
                svc,
                hosts_by_name,
                [s for s in seen if s.member == v.member and (s.host, s.gpu) in v.gpus],
                report,
            )
            if stopped:
                report.stopped[v.member] = stopped
        if not (new or stopped):
            continue
        report.decisions.append(d)
        detail: dict[str, Any] = {
            "kind": v.kind,
            "gpus": gpus,
            "used": v.used,
            "limit": v.limit,
            "reason": why,
        }
        with svc.session() as session:
            if new:
                svc.audit(
                    session,
                    "fairuse.violation",
                    v.member,
                    **detail,
                    notified_member=d.notify_member,
                    notified_admins=d.notify_admins,
                )
            if stopped:
                svc.audit(session, "fairuse.stop", v.member, **detail, pids=stopped)
        _tell(svc, d, why, stopped)
    return report


def _stop(svc: Services, hosts: dict[str, Host], targets: list[OnGpu], report: FairUseReport) -> list[int]:
    """SIGTERM the offending processes inside their containers (an argument list through the daemon's
    exec). Returns the pids (as the container numbers them) the daemon accepted."""
    done: list[int] = []
    by_container: dict[tuple[str, str], set[int]] = {}
    for t in targets:
        if t.container and t.pids:
            by_container.setdefault((t.host, t.container.rsplit("/", 1)[-1]), set()).update(t.pids)
    for (host_name, container), pids in sorted(by_container.items()):
        host = hosts.get(host_name)
        try:
            result = runtime_for(svc, host).instances.exec(
                container, ["kill", "-TERM", *(str(p) for p in sorted(pids))], timeout=30
            )
        except LabgpuError as exc:
            report.errors.append(
                f"fair use: stopping {sorted(pids)} in {container} on {host_name}: {exc.message}"
            )
            continue
        if result.exit_code != 0:
            report.errors.append(
                f"fair use: kill in {container} on {host_name} exited {result.exit_code}: {result.stderr.strip()[:200]}"
            )
        done += sorted(pids)
    return done


def _tell(svc: Services, d: Decision, why: str, stopped: list[int]) -> None:
    v = d.violation
    link = f"\n{svc.settings.portal_url.rstrip('/')}/usage\n" if svc.settings.portal_url else ""
    if stopped:
        subject = f"GPU fair use: {v.member}'s processes were stopped"
        body = (
            f"labgpu stopped processes {', '.join(map(str, stopped))} of {v.member}: {why}.\n"
            f"The limit was broken for {svc.settings.fair_use_grace_minutes} minutes or more.\n{link}"
        )
        send_notice(svc, LIMIT_REACHED, [v.member], subject, body)
        if svc.settings.fair_use_notify_admins:
            send_notice(svc, LIMIT_REACHED, [ADMINS], subject, body)
        return
    stop_note = (
        f"Processes on these GPUs are stopped if this lasts {svc.settings.fair_use_grace_minutes} minutes.\n"
        if svc.settings.fair_use_stop
        else ""
    )
    if d.notify_member:
        send_notice(
            svc,
            LIMIT_REACHED,
            [v.member],
            "GPU fair use: a limit was reached",
            f"Hello {v.member},\n\nlabgpu saw you {why}.\n{stop_note}{link}",
        )
    if d.notify_admins:
        send_notice(
            svc,
            LIMIT_REACHED,
            [ADMINS],
            f"GPU fair use: {v.member} reached a limit",
            f"{v.member}: {why}.\n{stop_note}{link}",
        )


# What members see ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FairUseEvent:
    """A fair-use action as the member and admins see it: when, whose, what and why."""

    at: datetime
    member: str
    action: str  # violation or stop
    kind: str
    gpus: str
    used: float
    limit: float
    reason: str
    pids: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["at"] = self.at.isoformat()
        out["pids"] = list(self.pids)
        return out


def fair_use_events(svc: Services, *, member: str | None = None, limit: int = 50) -> list[FairUseEvent]:
    """Fair-use actions, newest first (``member``'s only, when given), from the audit log."""
    if member is not None:
        validate_member_name(member)
    query = (
        select(AuditEvent)
        .where(AuditEvent.action.in_(EVENT_ACTIONS))
        .order_by(AuditEvent.id.desc())
        .limit(max(1, min(limit, 500)))
    )
    if member is not None:
        query = query.where(AuditEvent.target == member)
    out = []
    with svc.session() as session:
        for e in session.scalars(query):
            d = e.detail or {}
            out.append(
                FairUseEvent(
                    at=e.at,
                    member=e.target or "",
                    action=e.action.split(".", 1)[1],
                    kind=str(d.get("kind", "")),
                    gpus=str(d.get("gpus", "")),
                    used=float(d.get("used", 0)),
                    limit=float(d.get("limit", 0)),
                    reason=str(d.get("reason", "")),
                    pids=tuple(int(p) for p in d.get("pids", ())),
                )
            )
    return out
