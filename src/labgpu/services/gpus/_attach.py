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

Every host is synced with its OWN daemon (:func:`labgpu.services.hosts._clients.services_for`): the
listing, the device changes and the read-back after a refusal all go to the daemon of the host the
bookings are on. Its GPUs (index -> PCI address, :func:`host_gpu_map`) come from that daemon's resources
API; for a host on another machine whose daemon lists none, from its `labgpu agent`'s inventory
(:meth:`labgpu.services.gpus._usage.GpuUsageReader.bookable_gpus`).

How the driver's user-space reaches the container (CDI, ``nvidia.runtime=true`` or nothing) is the
``gpu_passthrough`` setting; :func:`passthrough` resolves ``auto`` from the host daemon's API extensions
and, for a daemon on this machine, this machine's tools.
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
from labgpu.services.context import Services
from labgpu.services.gpus._booking_records import active_gpus
from labgpu.services.gpus._usage import GpuUsageReader
from labgpu.services.hosts import is_local, on_member, recorded_local_host, runtime_for, services_for
from labgpu.services.members import host_gpus
from labgpu.store.models import Host, Member

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


def passthrough(svc: Services, host: Host | None = None) -> str:
    """The ``gpu_passthrough`` setting with ``auto`` resolved for ``host`` (default: the local daemon):
    CDI when its daemon has the ``gpu_cdi`` API extension (LXD 5.21.3+ and 6.x; not LXD 5.0 or Incus
    6.0); else, for a daemon on this machine, ``nvidia.runtime`` when ``nvidia-container-cli`` is
    installed here and device nodes only when it is not; for a daemon on another machine, whose tools
    labgpu cannot see, ``nvidia.runtime`` (what the seeds set on every GPU host): a host without the
    NVIDIA container tools refuses it, and the refusal says to install them or set ``gpu_passthrough``
    (:func:`explain_refusal`). Asks the daemon once (its server info is cached)."""
    wanted = svc.settings.gpu_passthrough
    if wanted != "auto":
        return wanted
    try:
        if runtime_for(svc, host).server().has("gpu_cdi"):
            return PASSTHROUGH_CDI
    except LabgpuError:
        pass
    if not is_local(host):
        return PASSTHROUGH_NVIDIA_RUNTIME
    return PASSTHROUGH_NVIDIA_RUNTIME if shutil.which("nvidia-container-cli") else PASSTHROUGH_NONE


def gpu_map(svc: Services, source: GpuSource | None = None) -> dict[int, str]:
    """The GPUs of ``svc``'s daemon as index -> PCI address: from the runtime's resources API (what it
    can attach); when it lists none and ``source`` is given (a recorded NVML reading in tests and
    demos), from that."""
    found = host_gpus(svc.runtime)
    if found or source is None:
        return found
    return _recorded(source)


def host_gpu_map(
    svc: Services,
    host: Host,
    *,
    source: GpuSource | None = None,
    reader: GpuUsageReader | None = None,
) -> dict[int, str]:
    """``host``'s GPUs as index -> PCI address. A daemon on this machine: :func:`gpu_map` of its
    daemon. A daemon on another machine: its resources API or, when that lists none (the daemon does
    not see them, or is down), the PCI addresses of its GPU agent's inventory
    (:meth:`~labgpu.services.gpus._usage.GpuUsageReader.bookable_gpus`; ``reader`` carries the agents'
    transport in tests); then, when ``source`` is given (tests and demos), the recording. Waits for the
    agent at most its timeout; never raises for an unreachable daemon or agent (empty map)."""
    if is_local(host):
        return gpu_map(services_for(svc, host), source)
    found = {g.index: g.pci_address for g in (reader or GpuUsageReader()).bookable_gpus(svc, host)}
    if found or source is None:
        return found
    return _recorded(source)


def _recorded(source: GpuSource) -> dict[int, str]:
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
    host: Host | None = None,
    gpus_on_host: Mapping[int, str] | None = None,
    mode: str | None = None,
    members: set[str] | None = None,
    source: GpuSource | None = None,
    reader: GpuUsageReader | None = None,
) -> list[AttachOutcome]:
    """Give every container on ``host`` (default: the local daemon's host row) exactly the GPUs of its
    member's active bookings there, through THAT host's daemon.

    Visits members with an active booking on the host and containers on it that carry booked GPUs
    (ONE instance listing; a cluster member's listing is the whole cluster's, and only the instances
    located on that member count as carrying); ``members`` limits the visit. ``gpus_on_host`` defaults
    to :func:`host_gpu_map` (with ``source`` and ``reader``), ``mode`` to :func:`passthrough` for the
    host. Returns one outcome per container looked at, changed or not. Raises RuntimeUnavailable when
    the host's daemon cannot be listed, ConfigError when labgpu cannot reach it at all (its pinned
    certificate is gone). Waits for each update."""
    if host is None:
        with svc.session() as session:
            host = recorded_local_host(session)
        if host is None:
            return []
    with svc.session() as session:
        wanted_by_member = active_gpus(session, host.id)
        # No-GPU mode wins over a booking: its GPUs stay the member's, attached once they switch back.
        for name in session.scalars(select(Member.name).where(Member.host_id == host.id, Member.no_gpu)):
            wanted_by_member.pop(name, None)
    host_svc = services_for(svc, host)
    instances = host_svc.runtime.instances.all(with_state=False)
    carrying = {
        owner: inst
        for inst in on_member(instances, host_svc.runtime.target)
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
    if gpus_on_host is None:
        gpus_on_host = host_gpu_map(svc, host, source=source, reader=reader)
    mode = mode or passthrough(svc, host)
    by_name = {i.name: i for i in instances}
    out = []
    for member in sorted(names):
        container = containers.get(member)
        inst = by_name.get(container) if container else None
        if inst is not None and inst.label("owner") != member:
            inst = None  # never touch an instance that is not the member's
        try:
            out.append(
                sync_member(host_svc, member, inst, wanted_by_member.get(member, set()), gpus_on_host, mode)
            )
        except RuntimeNotFound:
            out.append(
                AttachOutcome(
                    member, container, (), (), (), NO_CONTAINER, f"{container} disappeared meanwhile"
                )
            )
    return out


def _containers(svc: Services, names: set[str]) -> dict[str, str]:
    with svc.session() as session:
        rows = session.execute(select(Member.name, Member.container).where(Member.name.in_(names))).tuples()
        return {name: container for name, container in rows if container}
