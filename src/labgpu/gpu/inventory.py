"""The GPU inventory: one NVML reading with every process attributed to a container and member.

:func:`take_inventory` is the one sweep `gpu list`, `gpu top` and the agent all use: read NVML
once (through a :class:`~labgpu.gpu.nvml.GpuSource`), read ``/proc/PID/cgroup`` once per GPU
process, look the container's owner up in a map the caller built from ONE instance listing, and
compare what NVML sees with the LXD/Incus resources API (``RuntimeClient.resources``) when given.

A host without NVIDIA GPUs or without the driver is not an error here: the inventory says
``available=False`` and why.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labgpu.gpu.attribution import (
    OwnerKind,
    ProcessOwner,
    attribute_pids,
    command_of_pid,
    container_pid_of,
)
from labgpu.gpu.nvml import GpuProcessSample, GpuSample, GpuSource, NvmlReading, NvmlUnavailable

DEFAULT_PROJECT = "default"

# (project, container) -> member. The project is "default" for the default project.
OwnerMap = Mapping[tuple[str, str], str]


@dataclass(frozen=True)
class ProcessUsage:
    """A GPU process, where it runs and whose it is."""

    pid: int
    used_memory: int | None
    type: str
    owner: ProcessOwner
    member: str | None  # None: a host process, an unknown one, or a container labgpu does not own
    command: str
    container_pid: int | None = None  # its pid inside the container (fair use stops it there)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "container_pid": self.container_pid,
            "command": self.command,
            "used_memory": self.used_memory,
            "type": self.type,
            "where": self.owner.kind.value,
            "container": self.owner.container,
            "project": self.owner.project,
            "member": self.member,
            "cgroup": self.owner.cgroup,
            "detail": self.owner.detail or None,
        }


@dataclass(frozen=True)
class GpuUsage:
    gpu: GpuSample
    processes: tuple[ProcessUsage, ...] = ()

    def to_json(self) -> dict[str, Any]:
        g = self.gpu
        return {
            "index": g.index,
            "uuid": g.uuid,
            "pci_address": g.pci_address,
            "name": g.name,
            "memory_total": g.memory_total,
            "memory_used": g.memory_used,
            "utilization": g.utilization,
            "memory_utilization": g.memory_utilization,
            "temperature": g.temperature,
            "power_watts": g.power_watts,
            "power_limit_watts": g.power_limit_watts,
            "mig_enabled": g.mig_enabled,
            "error": g.error,
            "processes": [p.to_json() for p in self.processes],
        }


@dataclass(frozen=True)
class MemberUsage:
    """One member's (or the host's) use of one GPU: for per-member metrics."""

    gpu: GpuSample
    where: OwnerKind
    container: str
    member: str
    used_memory: int
    processes: int


@dataclass(frozen=True)
class Inventory:
    available: bool
    reason: str = ""  # why there is nothing to show, when not available
    hint: str = ""  # how to fix that, when there is something to fix
    driver_version: str = ""
    cuda_version: str = ""
    gpus: tuple[GpuUsage, ...] = ()
    warnings: tuple[str, ...] = ()
    gpus_on_bus: int = 0  # NVIDIA GPUs the PCI bus or the runtime shows, when NVML could not be used
    taken_at: float = field(default_factory=time.time)
    seconds: float = 0.0  # how long the sweep took

    @property
    def headline(self) -> str:
        """One line saying why there are no GPUs to show ("" when there are)."""
        if self.available:
            return ""
        if self.gpus_on_bus:
            fix = f" (fix: {self.hint})" if self.hint else ""
            return (
                f"{self.gpus_on_bus} NVIDIA GPU(s) on the PCI bus but NVML cannot be used: {self.reason}{fix}"
            )
        # No GPU at all: the driver's absence is the explanation, not something to fix.
        return f"no NVIDIA GPU on this host ({self.reason})"

    def to_json(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.headline or None,
            "driver_version": self.driver_version or None,
            "cuda_version": self.cuda_version or None,
            "taken_at": self.taken_at,
            "warnings": list(self.warnings),
            "gpus": [g.to_json() for g in self.gpus],
        }

    def member_usage(self) -> list[MemberUsage]:
        """Memory and process count per (GPU, container) pair; host processes under container ""."""
        rows: list[MemberUsage] = []
        for usage in self.gpus:
            groups: dict[tuple[OwnerKind, str, str], list[ProcessUsage]] = {}
            for p in usage.processes:
                container = p.owner.label if p.owner.in_container else ""
                groups.setdefault((p.owner.kind, container, p.member or ""), []).append(p)
            for (where, container, member), procs in groups.items():
                used = sum(p.used_memory or 0 for p in procs)
                rows.append(MemberUsage(usage.gpu, where, container, member, used, len(procs)))
        return rows


def owners_from_instances(
    instances: Iterable[Any], project: str = DEFAULT_PROJECT
) -> dict[tuple[str, str], str]:
    """The owner map from ONE instance listing (``runtime.instances.all()`` of ``project``):
    every instance with a ``user.labgpu.owner`` key."""
    owners: dict[tuple[str, str], str] = {}
    for inst in instances:
        owner = inst.label("owner")
        if owner:
            owners[(project, inst.name)] = owner
    return owners


def nvidia_cards(resources: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The NVIDIA cards of a resources API answer (``RuntimeClient.resources``)."""
    cards = (resources.get("gpu") or {}).get("cards") or []
    return [c for c in cards if c.get("driver") == "nvidia" or c.get("vendor_id") == "10de"]


def cross_check(gpus: Iterable[GpuSample], resources: Mapping[str, Any] | None) -> list[str]:
    """What NVML and the LXD/Incus resources API disagree on (by PCI address), as sentences."""
    if resources is None:
        return []
    runtime = {str(c.get("pci_address", "")).lower() for c in nvidia_cards(resources)} - {""}
    nvml = {g.pci_address for g in gpus if g.pci_bus_id}
    warnings = [
        f"GPU {addr} is on the PCI bus (the runtime sees it) but NVML does not list it: "
        "it may have fallen off the bus (check `dmesg | grep -i xid`)"
        for addr in sorted(runtime - nvml)
    ]
    warnings += [
        f"NVML lists GPU {addr} but the runtime's resources API does not: "
        "containers cannot be given it until the daemon sees it"
        for addr in sorted(nvml - runtime)
    ]
    return warnings


def take_inventory(
    source: GpuSource,
    *,
    owners: OwnerMap | None = None,
    resources: Mapping[str, Any] | None = None,
    proc_root: str | Path = "/proc",
    gpus_on_bus: int | None = None,
    notes: Iterable[str] = (),
    now: float | None = None,
) -> Inventory:
    """One sweep: NVML reading, attribution of every process, owner lookup, cross-check.

    Never raises for a missing GPU or driver: the inventory is then ``available=False`` with the
    reason. ``gpus_on_bus`` (NVIDIA devices in sysfs, when the caller looked) and the resources
    API tell "no GPU here" from "GPUs here but NVML cannot be used". ``notes`` are added to the
    warnings (e.g. why members are unknown)."""
    started = time.perf_counter()
    try:
        reading = source.read()
    except NvmlUnavailable as exc:
        return unavailable_inventory(exc, resources=resources, gpus_on_bus=gpus_on_bus, notes=notes, now=now)
    return attribute_reading(
        reading,
        owners=owners,
        resources=resources,
        proc_root=proc_root,
        notes=notes,
        now=now,
        started=started,
    )


def unavailable_inventory(
    exc: NvmlUnavailable,
    *,
    resources: Mapping[str, Any] | None = None,
    gpus_on_bus: int | None = None,
    notes: Iterable[str] = (),
    now: float | None = None,
) -> Inventory:
    """The inventory of a host where NVML cannot be used, saying why."""
    on_bus = max(len(nvidia_cards(resources)) if resources is not None else 0, gpus_on_bus or 0)
    return Inventory(
        available=False,
        reason=exc.message,
        hint=exc.hint or "",
        gpus_on_bus=on_bus,
        warnings=tuple(notes),
        taken_at=time.time() if now is None else now,
    )


def attribute_reading(
    reading: NvmlReading,
    *,
    owners: OwnerMap | None = None,
    resources: Mapping[str, Any] | None = None,
    proc_root: str | Path = "/proc",
    notes: Iterable[str] = (),
    now: float | None = None,
    started: float | None = None,
    commands: bool = True,
) -> Inventory:
    """The inventory of one reading: each GPU process attributed through ``proc_root`` (each pid's
    cgroup and comm read once) and its container's owner looked up in ``owners``. ``commands=False``
    leaves each process's command empty (the sampling job does not show them: one file fewer per
    process)."""
    started = time.perf_counter() if started is None else started
    owners = owners or {}
    pids = [p.pid for g in reading.gpus for p in g.processes]
    where = attribute_pids(pids, proc_root)
    names = {pid: command_of_pid(pid, proc_root) if commands else "" for pid in where}
    gpus = tuple(
        GpuUsage(g, tuple(_usage(p, where[p.pid], names[p.pid], owners, proc_root) for p in g.processes))
        for g in reading.gpus
    )
    warnings = cross_check(reading.gpus, resources)
    warnings += [g.error for g in reading.gpus if g.error]
    warnings += notes
    return Inventory(
        available=bool(reading.gpus),
        reason="" if reading.gpus else "NVML works but lists no GPU",
        driver_version=reading.driver_version,
        cuda_version=reading.cuda_version,
        gpus=gpus,
        warnings=tuple(warnings),
        taken_at=time.time() if now is None else now,
        seconds=time.perf_counter() - started,
    )


def _usage(
    p: GpuProcessSample, owner: ProcessOwner, command: str, owners: OwnerMap, proc_root: str | Path
) -> ProcessUsage:
    member = None
    container_pid = None
    if owner.in_container and owner.container is not None:
        member = owners.get((owner.project or DEFAULT_PROJECT, owner.container))
        if member is not None:
            container_pid = container_pid_of(p.pid, proc_root)
    return ProcessUsage(
        pid=p.pid,
        used_memory=p.used_memory,
        type=p.type,
        owner=owner,
        member=member,
        command=command,
        container_pid=container_pid,
    )
