"""GPU rules that need no I/O: when a booked or assigned GPU counts as idle, and the runtime devices
that give a container a GPU.

The idle rule: a GPU is idle when every utilization sample of the last ``duration`` is below
``threshold`` percent, the samples cover that time without holes longer than ``max_gap`` and the
newest sample is recent. Memory held by a process does not make a GPU busy: the usual idle GPU is a
notebook kernel that loaded a model and went to lunch. A hole in the samples (the agent was down,
NVML could not say) restarts the clock: labgpu only calls a GPU idle when it saw it idle.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from labgpu.errors import BadInput


@dataclass(frozen=True)
class UtilizationSample:
    """One GPU's utilization (percent, 0 to 100) at ``at``; None when NVML could not say."""

    at: datetime
    utilization: float | None


@dataclass(frozen=True)
class IdleRule:
    threshold: float = 5.0  # percent: below this a sample counts as idle
    duration: timedelta = timedelta(hours=1)  # idle this long before anything happens
    max_gap: timedelta = timedelta(minutes=10)  # a longer hole between samples restarts the clock

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 100:
            raise BadInput(f"idle threshold must be between 0 and 100 percent (got {self.threshold})")
        if self.duration <= timedelta(0) or self.max_gap <= timedelta(0):
            raise BadInput("idle duration and maximum gap must be positive")


@dataclass(frozen=True)
class IdleVerdict:
    idle: bool
    since: datetime | None  # first sample of the current idle run; None when the last sample is busy
    observed: timedelta  # how long the current idle run has been seen

    @property
    def idle_minutes(self) -> int:
        return int(self.observed.total_seconds() // 60)


def idle_verdict(samples: Sequence[UtilizationSample], rule: IdleRule, now: datetime) -> IdleVerdict:
    """Apply ``rule`` to ``samples`` (any order) as of ``now``."""
    ordered = sorted(samples, key=lambda s: s.at)
    if not ordered or now - ordered[-1].at > rule.max_gap:
        return IdleVerdict(idle=False, since=None, observed=timedelta(0))
    run_start: datetime | None = None
    newer: datetime | None = None
    for sample in reversed(ordered):
        low = sample.utilization is not None and sample.utilization < rule.threshold
        if not low or (newer is not None and newer - sample.at > rule.max_gap):
            break
        run_start = newer = sample.at
    if run_start is None:
        return IdleVerdict(idle=False, since=None, observed=timedelta(0))
    observed = ordered[-1].at - run_start
    return IdleVerdict(idle=observed >= rule.duration, since=run_start, observed=observed)


# GPU devices for LXD/Incus ------------------------------------------------------------------------

# Devices labgpu adds for bookings. Deliberately NOT "labgpu-*": those belong to the member's container
# spec (member set --gpus, reconcile), which knows nothing of bookings and would remove them. The
# booking job is the one owner of "booked-gpuN" devices and puts them right on every run.
BOOKED_DEVICE_PREFIX = "booked-gpu"
_BOOKED_DEVICE = re.compile(rf"{BOOKED_DEVICE_PREFIX}(\d+)")

# How the NVIDIA user-space (driver libraries, nvidia-smi) reaches a container.
PASSTHROUGH_CDI = "cdi"  # the gpu device names a CDI id; the runtime injects what the CDI spec lists
PASSTHROUGH_NVIDIA_RUNTIME = "nvidia-runtime"  # nvidia.runtime=true: nvidia-container-cli at start
PASSTHROUGH_NONE = "none"  # device nodes only; the container must bring matching libraries


def booked_device_name(index: int) -> str:
    return f"{BOOKED_DEVICE_PREFIX}{index}"


def booked_device_index(name: str) -> int | None:
    """The GPU index of a booking's device name, None for any other device."""
    m = _BOOKED_DEVICE.fullmatch(name)
    return int(m.group(1)) if m else None


def gpu_device(index: int, pci_address: str, passthrough: str) -> dict[str, str]:
    """The runtime's ``gpu`` device for one physical GPU.

    With CDI (LXD's ``gpu_cdi`` API extension) the device names the GPU by CDI id
    (``nvidia.com/gpu=INDEX``, the index nvidia-smi shows) and the runtime also passes in the driver's
    user-space; otherwise by PCI address, which is stable across reboots and driver upgrades."""
    if passthrough == PASSTHROUGH_CDI:
        return {"type": "gpu", "gputype": "physical", "id": f"nvidia.com/gpu={index}"}
    return {"type": "gpu", "gputype": "physical", "pci": pci_address}


def booked_devices(
    indexes: Iterable[int], host_gpus: Mapping[int, str], passthrough: str
) -> tuple[dict[str, dict[str, str]], list[int]]:
    """The devices that give a container the booked GPUs ``indexes``, and the indexes this host does
    not have (nothing can be attached for those)."""
    devices: dict[str, dict[str, str]] = {}
    missing: list[int] = []
    for i in sorted(set(indexes)):
        if i in host_gpus:
            devices[booked_device_name(i)] = gpu_device(i, host_gpus[i], passthrough)
        else:
            missing.append(i)
    return devices, missing


def passthrough_config(passthrough: str) -> dict[str, str]:
    """Instance config the passthrough needs: ``nvidia.runtime=true`` for the nvidia-container-cli
    path (LXD and Incus forbid ``nvidia.*`` keys next to CDI devices)."""
    return {"nvidia.runtime": "true"} if passthrough == PASSTHROUGH_NVIDIA_RUNTIME else {}
