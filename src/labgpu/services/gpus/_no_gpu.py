"""No-GPU mode: a member's container without any GPU while they set things up, and back with one click.

The mode is part of the container's desired state (``Member.no_gpu``): the container spec then has no
``labgpu-gpu*`` device whatever the member's GPU choice (``all``, ``none``, ``0,2``), which is kept for the
way back; reconcile keeps it so. The change reaches the container the way ``member set --gpus`` does: the row
first (audit ``member.no-gpu``), then ONE update, live when the container runs (LXD and Incus hot-unplug and
hot-plug ``gpu`` devices; nothing restarts), at its next start when stopped; when the daemon refuses, the row
is put back and nothing is left half-made.

Bookings (booked mode): no-GPU mode wins. A booking that is active, or starts, while the member is in no-GPU
mode keeps its GPUs reserved for them (nobody else can book them, and its time runs), but the bookings job
does not attach them (:func:`labgpu.services.gpus._attach.sync_host` leaves such members without booked
devices). Switching back attaches them at once. The member's own choice, made last, decides what is in their
container; nothing changes it behind their back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from labgpu.errors import N_, Conflict, LabgpuError
from labgpu.services import members as members_svc
from labgpu.services.context import Services
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus._booking_records import _check_actor
from labgpu.store.models import GpuMode, Host, MemberState

UNCHANGED = "unchanged"


@dataclass(frozen=True)
class NoGpuOutcome:
    """A member's container after switching no-GPU mode on or off, and how it reached the container."""

    member: str
    no_gpu: bool  # True: the container has no GPU now
    applied: str  # live, at next start, when the container is created, recorded, unchanged
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def set_no_gpu(
    svc: Services, name: str, no_gpu: bool, *, gpus_on_host: Mapping[int, str] | None = None
) -> NoGpuOutcome:
    """Switch ``name``'s container to no-GPU mode (``no_gpu=True``: every GPU device detached) or back.

    The member themself or an admin. Writes the row (audit ``member.no-gpu``), then updates the container
    in ONE request (live when it runs), then, on a host in booked mode, brings its booked GPUs to the mode
    (detached; attached again when switching back). ``gpus_on_host`` (index -> PCI address) stands for the
    host's GPUs where its daemon lists none (tests and demos). Raises NotAllowed, NotFound, Conflict (a
    member being removed, or without a container), and the daemon's refusal (then the row is put back). A
    booking's GPUs that could not be attached or detached are a note, not an error: the bookings job tries
    again every minute."""
    _check_actor(svc, name, f"switch {name}'s GPUs off or on")
    with svc.session() as session:
        member = members_svc.load_member(session, name)
        if member.state == MemberState.REMOVING:
            raise Conflict(f"member {name} is being removed; finish with `labgpu member rm {name}`")
        if member.container is None or member.uid is None:
            raise Conflict(N_("%(name)s has no container"), values={"name": name})
        if member.no_gpu == no_gpu:
            return NoGpuOutcome(name, no_gpu, UNCHANGED)
        spec_version = member.spec_version
        member.no_gpu = no_gpu
        member.spec_version += 1
        svc.audit(session, "member.no-gpu", name, no_gpu=no_gpu)
        host = member.host
    try:
        applied = members_svc.apply_spec(
            svc, name, gpus_on_host=dict(gpus_on_host) if gpus_on_host is not None else None
        )
    except LabgpuError as exc:
        with svc.session() as session:
            member = members_svc.load_member(session, name)
            member.no_gpu = not no_gpu
            member.spec_version = spec_version
            svc.audit(session, "member.no-gpu.reverted", name, reason=exc.message)
        raise type(exc)(
            f"{name}'s container refused the change, so nothing was changed: {exc.message}", hint=exc.hint
        ) from exc
    if applied == UNCHANGED:  # a host whose daemon lists no GPU: nothing was attached to take away
        applied = "recorded"
    notes = _sync_booked(svc, name, host, gpus_on_host)
    return NoGpuOutcome(name, no_gpu, applied, notes)


def _sync_booked(
    svc: Services, name: str, host: Host | None, gpus_on_host: Mapping[int, str] | None
) -> list[str]:
    """The member's booked GPUs brought to the mode, on their host; what happened, as notes."""
    if host is None:
        return []
    try:
        if host.gpu_mode != GpuMode.BOOKED:
            return []
        outcomes = gpu_attach.sync_host(svc, host=host, members={name}, gpus_on_host=gpus_on_host)
    except LabgpuError as exc:
        return [f"booked GPUs not changed yet ({exc.message}); the bookings job tries again every minute"]
    return [o.message for o in outcomes if o.applied != gpu_attach.UNCHANGED or o.failed]
