"""Attach booked GPUs to members' containers and detach them again, and say how it went.

The desired state is the store's: a member's container should have exactly the GPUs of their ACTIVE
bookings, as runtime ``gpu`` devices named ``booked-gpuN`` (see :mod:`labgpu.domain.gpus`).
:func:`sync_host` compares that with ONE instance listing and changes each container that differs in
ONE update request, so it is safe to run again and again (the job runner does, every minute):

- a RUNNING container gets its GPUs hot-plugged; LXD and Incus add (or remove) the device nodes
  while it runs (APPLIED_LIVE);
- a STOPPED container gets them written to its config; they appear when it starts (APPLIED_NEXT_START);
- when the daemon refuses (a running container and a GPU it cannot find: "Failed to detect requested
  GPU device", "Invalid PCI address"), it changes nothing (the update is all or nothing, checked by
  reading the instance back) and the outcome says so in plain words (REFUSED); the next run tries again.

How the driver's user-space reaches the container (CDI, ``nvidia.runtime=true`` or nothing) is the
``gpu_passthrough`` setting; :func:`passthrough` resolves ``auto`` from the daemon's API extensions
and the host's tools.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from labgpu.domain.container import check_safe
from labgpu.domain.gpus import (
    PASSTHROUGH_CDI,
    PASSTHROUGH_NONE,
    PASSTHROUGH_NVIDIA_RUNTIME,
    booked_device_index,
    booked_devices,
    passthrough_config,
)
from labgpu.errors import LabgpuError
from labgpu.gpu.nvml import GpuSource, NvmlUnavailable
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.runtime.instances import Instance
from labgpu.services import bookings
from labgpu.services.context import Services
from labgpu.services.members import host_gpus
from labgpu.store.models import Host

log = logging.getLogger(__name__)

APPLIED_LIVE = "live"  # hot-plugged into the running container
APPLIED_NEXT_START = "at next start"  # written to the stopped container's config
UNCHANGED = "unchanged"
REFUSED = "refused"  # the daemon said no; nothing changed
NO_CONTAINER = "no container"  # the member has no container (yet): attached when it is made
AS_BOOKED = "already as booked"


@dataclass(frozen=True)
class AttachOutcome:
    """What happened to one member's container."""

    member: str
    container: str | None
    wanted: tuple[int, ...]  # the GPUs their active bookings hold now
    attached: tuple[int, ...]  # GPUs added by this run
    detached: tuple[int, ...]  # GPUs removed by this run
    applied: str  # APPLIED_LIVE, APPLIED_NEXT_START, UNCHANGED, REFUSED, NO_CONTAINER
    message: str

    @property
    def changed(self) -> bool:
        return self.applied in (APPLIED_LIVE, APPLIED_NEXT_START)

    @property
    def failed(self) -> bool:
        return self.applied == REFUSED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def passthrough(svc: Services) -> str:
    """The ``gpu_passthrough`` setting with ``auto`` resolved: CDI when the daemon has the ``gpu_cdi``
    API extension (LXD 5.21.3+ and 6.x; not LXD 5.0 or Incus 6.0), else ``nvidia.runtime`` when
    ``nvidia-container-cli`` is installed on this host, else device nodes only."""
    wanted = svc.settings.gpu_passthrough
    if wanted != "auto":
        return wanted
    try:
        if svc.runtime.server().has("gpu_cdi"):
            return PASSTHROUGH_CDI
    except LabgpuError:
        pass
    return PASSTHROUGH_NVIDIA_RUNTIME if shutil.which("nvidia-container-cli") else PASSTHROUGH_NONE


def gpu_map(svc: Services, source: GpuSource | None = None) -> dict[int, str]:
    """The host's GPUs as index -> PCI address: from the runtime's resources API (what it can attach);
    when it lists none and ``source`` is given (a recorded NVML reading in tests and demos), from that."""
    found = host_gpus(svc.runtime)
    if found or source is None:
        return found
    try:
        reading = source.read()
    except NvmlUnavailable:
        return {}
    return {g.index: g.pci_address for g in reading.gpus if g.pci_bus_id}


def explain_refusal(message: str) -> str:
    """The daemon's refusal in words an admin can act on."""
    text = message.lower()
    if (
        "failed to detect requested gpu device" in text
        or "invalid pci address" in text
        or "no device found" in text
    ):
        return f"the daemon cannot find that GPU on the host ({message})"
    if "nvidia container tools" in text:
        return (
            f"nvidia.runtime=true needs nvidia-container-cli on the host ({message}); install "
            "libnvidia-container-tools or set gpu_passthrough"
        )
    return message


def sync_member(
    svc: Services,
    member: str,
    inst: Instance | None,
    wanted: set[int],
    gpus_on_host: Mapping[int, str],
    mode: str,
) -> AttachOutcome:
    """Bring ``inst`` (``member``'s container, as listed) to exactly the booked GPUs ``wanted``, in ONE
    update. Never raises for the daemon's refusal: the outcome says what happened. Waits for the update."""
    want_sorted = tuple(sorted(wanted))
    if inst is None:
        return AttachOutcome(
            member, None, want_sorted, (), (), NO_CONTAINER,
            f"{member} has no container: GPUs are attached once it exists",
        )  # fmt: skip
    desired, missing = booked_devices(wanted, gpus_on_host, mode)
    current = {name: dev for name, dev in inst.devices.items() if booked_device_index(name) is not None}
    patch: dict[str, dict[str, str] | None] = {
        name: dev for name, dev in desired.items() if dict(current.get(name) or {}) != dev
    }
    patch.update({name: None for name in current if name not in desired})
    notes = [f"GPU {', '.join(map(str, missing))} not on this host: nothing to attach"] if missing else []
    if not patch:
        return AttachOutcome(member, inst.name, want_sorted, (), (), UNCHANGED, "; ".join(notes) or AS_BOOKED)
    added = tuple(
        sorted(i for n, d in patch.items() if d is not None and (i := booked_device_index(n)) is not None)
    )
    removed = tuple(
        sorted(i for n, d in patch.items() if d is None and (i := booked_device_index(n)) is not None)
    )
    check_safe({}, {n: d for n, d in patch.items() if d is not None}, allowed_roots=[])
    running = inst.status == "Running"
    config = {k: v for k, v in passthrough_config(mode).items() if inst.config.get(k) != v} if added else {}
    try:
        if config:
            # Apart from the devices: a config key the daemon will not change live must not stop the
            # GPUs themselves from being hot-plugged.
            try:
                svc.runtime.instances.update(inst.name, config=dict(config))
                if running:
                    notes.append(f"{', '.join(config)} set: takes effect at the next start")
            except LabgpuError as exc:
                notes.append(f"could not set {', '.join(config)}: {explain_refusal(exc.message)}")
        svc.runtime.instances.update(inst.name, devices=patch)
    except LabgpuError as exc:
        return _refused(svc, member, inst, want_sorted, added, removed, running, exc, notes)
    applied = APPLIED_LIVE if running else APPLIED_NEXT_START
    what = []
    if added:
        what.append(f"GPU {', '.join(map(str, added))} attached")
    if removed:
        what.append(f"GPU {', '.join(map(str, removed))} detached")
    how = (
        "live (hot-plugged into the running container)"
        if running
        else "in the config (the container is stopped: applied at its next start)"
    )
    message = f"{' and '.join(what)} {how}"
    return AttachOutcome(
        member, inst.name, want_sorted, added, removed, applied, "; ".join([message, *notes])
    )


def _refused(
    svc: Services,
    member: str,
    inst: Instance,
    wanted: tuple[int, ...],
    added: tuple[int, ...],
    removed: tuple[int, ...],
    running: bool,
    exc: LabgpuError,
    notes: list[str],
) -> AttachOutcome:
    try:
        after = svc.runtime.instances.get(inst.name)
        before_devices = {n for n in inst.devices if booked_device_index(n) is not None}
        after_devices = {n for n in after.devices if booked_device_index(n) is not None}
        state = (
            "nothing was changed on the container"
            if before_devices == after_devices
            else f"the container now has {', '.join(sorted(after_devices)) or 'no booked GPU'}"
        )
    except LabgpuError:
        state = "the container could not be read back"
    verb = "hot-plug" if running else "write"
    gpus = ", ".join(map(str, added or removed))
    action = "attach" if added else "detach"
    message = (
        f"the daemon refused to {verb} ({action}) GPU {gpus} {'into' if added else 'from'} {inst.name} "
        f"({'running' if running else 'stopped'}): {explain_refusal(exc.message)}; {state}; "
        "labgpu tries again at the next job run"
    )
    log.warning("%s", message)
    return AttachOutcome(member, inst.name, wanted, (), (), REFUSED, "; ".join([message, *notes]))


def sync_host(
    svc: Services,
    *,
    gpus_on_host: Mapping[int, str] | None = None,
    mode: str | None = None,
    members: set[str] | None = None,
) -> list[AttachOutcome]:
    """Give every container on the local host exactly the GPUs of its member's active bookings.

    Visits members with an active booking and containers that carry booked GPUs (ONE instance
    listing); ``members`` limits the visit. Returns one outcome per container looked at, changed or
    not. Raises RuntimeUnavailable when the daemon cannot be listed."""
    with svc.session() as session:
        host = session.scalars(select(Host).where(Host.url.is_(None)).order_by(Host.id)).first()
        if host is None:
            return []
        wanted_by_member = bookings.active_gpus(session, host.id)
    instances = svc.runtime.instances.all(with_state=False)
    carrying = {
        owner: inst
        for inst in instances
        if (owner := inst.label("owner")) and any(booked_device_index(n) is not None for n in inst.devices)
    }
    names = set(wanted_by_member) | set(carrying)
    if members is not None:
        names &= members
    containers = _containers(svc, names)
    # Instances labelled for someone who is no member (orphans) are reconcile's to report, not ours.
    names = {n for n in names if n in containers or n in wanted_by_member}
    if not names:
        return []
    gpus_on_host = gpu_map(svc) if gpus_on_host is None else gpus_on_host
    mode = mode or passthrough(svc)
    by_name = {i.name: i for i in instances}
    out = []
    for member in sorted(names):
        container = containers.get(member)
        inst = by_name.get(container) if container else None
        if inst is not None and inst.label("owner") != member:
            inst = None  # never touch an instance that is not the member's
        try:
            out.append(
                sync_member(svc, member, inst, wanted_by_member.get(member, set()), gpus_on_host, mode)
            )
        except RuntimeNotFound:
            out.append(
                AttachOutcome(
                    member, container, (), (), (), NO_CONTAINER, f"{container} disappeared meanwhile"
                )
            )
    return out


def _containers(svc: Services, names: set[str]) -> dict[str, str]:
    from labgpu.store.models import Member

    with svc.session() as session:
        rows = session.execute(select(Member.name, Member.container).where(Member.name.in_(names))).tuples()
        return {name: container for name, container in rows if container}
