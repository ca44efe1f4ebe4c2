"""GPU modes per host (shared, assigned, booked) and GPU assignment to members.

- **shared**: every container gets every GPU (the seeds' way; the default). Members' GPU choice is
  ``all``.
- **assigned**: the admin attaches chosen GPUs to a member (``labgpu gpu assign alice 0,1``); members
  without an assignment get none.
- **booked**: containers get GPUs only for the time of a booking (:mod:`labgpu.services.gpus._bookings`,
  attached by :mod:`labgpu.services.gpus._attach`); members' own GPU choice is ``none``.

A mode switch writes the host's mode (audit ``gpu.mode``) and then changes each member's GPU choice
through the same path as ``labgpu member set --gpus`` (:func:`labgpu.services.members.set_member`:
the row first, then ONE update of the container, live when it runs), member by member, reporting each.
Leaving booked mode with bookings that hold GPUs needs ``force``, which cancels them (audited) and
detaches their GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labgpu.domain.gpus import passthrough_config
from labgpu.domain.members import parse_gpu_request
from labgpu.errors import BadInput, Conflict, LabgpuError, NotFound
from labgpu.services import members as members_svc
from labgpu.services.context import Services
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus._booking_records import cancel_all_on_host, holding_on_host, serialized
from labgpu.services.hosts import local_host
from labgpu.store.models import GpuMode, Host, Member, MemberState, utcnow


@dataclass(frozen=True)
class MemberGpus:
    """One member's GPU choice after a mode switch or assignment, and how it reached the container."""

    member: str
    old: str
    new: str
    applied: str  # live, at next start, recorded, unchanged, or "failed"
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "member": self.member,
            "old": self.old,
            "new": self.new,
            "applied": self.applied,
            "note": self.note,
        }


@dataclass
class ModeReport:
    host: str
    old: str
    new: str
    members: list[MemberGpus] = field(default_factory=list)
    cancelled_bookings: int = 0
    detached: list[gpu_attach.AttachOutcome] = field(default_factory=list)
    detach_error: str = ""  # the host's daemon could not be reached to detach the ended bookings' GPUs

    @property
    def failed(self) -> bool:
        return (
            any(m.applied == "failed" for m in self.members)
            or any(o.failed for o in self.detached)
            or bool(self.detach_error)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "old": self.old,
            "new": self.new,
            "members": [m.as_dict() for m in self.members],
            "cancelled_bookings": self.cancelled_bookings,
            "detached": [o.as_dict() for o in self.detached],
            "detach_error": self.detach_error or None,
        }


def _host(svc: Services, session: Session, name: str | None) -> Host:
    if name is None:
        return local_host(session, svc.runtime)
    host = session.scalars(select(Host).where(Host.name == name)).first()
    if host is None:
        raise NotFound(f"no host named {name}")
    return host


def get_mode(svc: Services, *, host: str | None = None) -> tuple[str, str]:
    """(host name, GPU mode) of ``host`` (default: the local daemon's host)."""
    with svc.session() as session:
        row = _host(svc, session, host)
        return row.name, row.gpu_mode


def _choice_for(mode: GpuMode, current: str) -> str:
    """A member's GPU choice (all, none, 0,2) under ``mode``, from what they had."""
    if mode == GpuMode.SHARED:
        return "all"
    if mode == GpuMode.BOOKED:
        return "none"
    return "none" if current == "all" else current  # assigned: keep assignments, drop "every GPU"


def set_mode(
    svc: Services, mode: str, *, host: str | None = None, force: bool = False, now: datetime | None = None
) -> ModeReport:
    """Switch ``host``'s GPU mode and bring every member's container to it (see the module doc).

    Raises BadInput (unknown mode), NotFound (host), Conflict (leaving booked mode while bookings hold
    GPUs, without ``force``). A member whose container refuses is reported, not raised; the mode
    stays switched and `labgpu gpu mode MODE` can be run again."""
    try:
        new = GpuMode(mode)
    except ValueError:
        raise BadInput(f"unknown GPU mode {mode!r}: use shared, assigned or booked") from None
    now = now or utcnow()
    with serialized(svc) as session:
        row = _host(svc, session, host)
        old = GpuMode(row.gpu_mode)
        cancelled = 0
        if old == GpuMode.BOOKED and new != GpuMode.BOOKED:
            holding = holding_on_host(session, row.id)
            if holding and not force:
                raise Conflict(
                    f"{holding} booking(s) on {row.name} hold GPUs; leaving booked mode would end them",
                    hint="cancel them (labgpu gpu bookings; labgpu gpu cancel ID), or add --force to cancel them all",
                )
            cancelled = cancel_all_on_host(svc, session, row.id, now=now)
        row.gpu_mode = new.value
        if old != new:
            svc.audit(
                session, "gpu.mode", row.name, old=old.value, new=new.value, cancelled_bookings=cancelled
            )
        host_id, host_name = row.id, row.name
        names = list(
            session.scalars(
                select(Member.name).where(Member.host_id == host_id, Member.state != MemberState.REMOVING)
            )
        )
    report = ModeReport(host=host_name, old=old.value, new=new.value, cancelled_bookings=cancelled)
    for name in sorted(names):
        with svc.session() as session:
            current = members_svc.load_member(session, name).gpu_spec or svc.settings.default_gpus
        report.members.append(_set_choice(svc, name, current, _choice_for(new, current)))
    if cancelled:
        with svc.session() as session:
            changed = session.get(Host, host_id)
        try:
            outcomes = gpu_attach.sync_host(svc, host=changed)
        except LabgpuError as exc:
            # The mode is switched and the bookings ended; the bookings job detaches their GPUs once
            # the daemon answers (it visits hosts whose bookings ended recently).
            report.detach_error = (
                f"GPUs of the ended bookings not detached from {host_name} yet ({exc.message}); "
                "the bookings job detaches them"
            )
        else:
            report.detached = [o for o in outcomes if o.applied != gpu_attach.UNCHANGED]
    return report


def _set_choice(
    svc: Services, name: str, current: str, wanted: str, *, raise_errors: bool = False
) -> MemberGpus:
    if str(parse_gpu_request(current)) == wanted:
        return MemberGpus(name, current, wanted, "unchanged")
    try:
        changes = members_svc.set_member(svc, name, members_svc.parse_set_request(gpus=wanted))
    except LabgpuError as exc:
        if raise_errors:
            raise
        return MemberGpus(name, current, wanted, "failed", exc.message)
    gpu_changes = [c for c in changes if c.setting == "gpus"]
    applied = gpu_changes[0].applied if gpu_changes else "unchanged"
    note = gpu_changes[0].note if gpu_changes else ""
    extra = ensure_passthrough(svc, name) if wanted != "none" else ""
    return MemberGpus(name, current, wanted, applied, "; ".join(n for n in (note, extra) if n))


def ensure_passthrough(svc: Services, name: str) -> str:
    """Set the config the driver passthrough needs (``nvidia.runtime=true``) on ``name``'s container,
    unless it is there. Returns a note for the admin ("" when nothing was needed)."""
    config = passthrough_config(gpu_attach.passthrough(svc))
    if not config:
        return ""
    with svc.session() as session:
        container = members_svc.load_member(session, name).container
    if not container:
        return ""
    try:
        inst = members_svc.owned_instance(svc, name, container)
        if inst is None:
            return ""
        patch: dict[str, str | None] = {k: v for k, v in config.items() if inst.config.get(k) != v}
        if not patch:
            return ""
        svc.runtime.instances.update(container, config=patch)
    except LabgpuError as exc:
        return f"could not set {', '.join(config)}: {gpu_attach.explain_refusal(exc.message)}"
    when = "at its next start" if inst.status == "Running" else "when it starts"
    return f"{', '.join(f'{k}={v}' for k, v in config.items())} set (takes effect {when})"


def _assigned_mode_host(svc: Services, name: str) -> tuple[str, str]:
    with svc.session() as session:
        member = members_svc.load_member(session, name)
        host = member.host if member.host is not None else local_host(session, svc.runtime)
        if host.gpu_mode != GpuMode.ASSIGNED:
            raise Conflict(
                f"host {host.name} is in {host.gpu_mode} GPU mode; assigning GPUs needs assigned mode",
                hint="switch with `labgpu gpu mode assigned`",
            )
        return host.name, member.gpu_spec or svc.settings.default_gpus


def assign(svc: Services, name: str, gpus: str) -> MemberGpus:
    """Give ``name``'s container the GPUs ``gpus`` (indexes, e.g. "0,1") on a host in assigned mode,
    through `member set --gpus` (live when the container runs). Audit ``gpu.assign``. Raises BadInput
    (not indexes, a GPU the host does not have), NotFound, Conflict (host not in assigned mode), and
    the daemon's refusal (then nothing was changed: `member set` puts the row back). A GPU also
    assigned to others is allowed (the admin may pair members on one GPU) and said in the note."""
    request = parse_gpu_request(gpus)
    if request.mode != "indexes":
        raise BadInput(f"give GPU indexes such as 0,1 (not {gpus!r}); to take GPUs away: labgpu gpu unassign")
    host_name, current = _assigned_mode_host(svc, name)
    wanted = str(request)
    shared_with = _also_assigned(svc, name, set(request.indexes))
    result = _set_choice(svc, name, current, wanted, raise_errors=True)
    with svc.session() as session:
        svc.audit(session, "gpu.assign", name, host=host_name, gpus=wanted, old=current)
    if shared_with:
        note = "; ".join(
            f"GPU {gpu} is also assigned to {', '.join(who)}" for gpu, who in sorted(shared_with.items())
        )
        result = MemberGpus(
            result.member,
            result.old,
            result.new,
            result.applied,
            "; ".join(filter(None, (result.note, note))),
        )
    return result


def unassign(svc: Services, name: str) -> MemberGpus:
    """Take every assigned GPU away from ``name``'s container (live when it runs). Audit
    ``gpu.unassign``. Raises NotFound, Conflict (host not in assigned mode)."""
    host_name, current = _assigned_mode_host(svc, name)
    result = _set_choice(svc, name, current, "none", raise_errors=True)
    with svc.session() as session:
        svc.audit(session, "gpu.unassign", name, host=host_name, old=current)
    return result


def _also_assigned(svc: Services, name: str, gpus: set[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    with svc.session() as session:
        me = members_svc.load_member(session, name)
        rows = session.execute(
            select(Member.name, Member.gpu_spec).where(Member.host_id == me.host_id, Member.name != name)
        ).tuples()
        for other, spec in rows:
            if spec and spec not in ("all", "none"):
                for gpu in {int(p) for p in spec.split(",") if p.strip().isdigit()} & gpus:
                    out.setdefault(gpu, []).append(other)
    return out
