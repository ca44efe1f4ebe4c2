"""One GPU inventory of THIS machine: NVML plus attribution, as `gpu list`, `gpu top`, the agent and the
portal (for a host without an agent) take it.

:func:`make_sweep` builds the sweep once (it looks at the PCI bus once, and keeps a
:class:`~labgpu.gpu.runtime_view.RuntimeView` whose owner map is cached for 30 s); each call of the
returned function reads NVML once. It never raises for a host without a GPU or driver: the inventory
then says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from labgpu.gpu.inventory import Inventory, attribute_reading, unavailable_inventory
from labgpu.gpu.nvml import GpuSource, NvmlUnavailable
from labgpu.gpu.runtime_view import RuntimeView
from labgpu.services.hosts import HostPaths, nvidia_pci_devices

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient

Sweep = Callable[[], Inventory]


def gpus_on_bus() -> int:
    """NVIDIA GPUs this machine's PCI bus shows (sysfs), whatever NVML says."""
    return len(nvidia_pci_devices(HostPaths()))


def make_sweep(
    connect: Callable[[], RuntimeClient],
    source: GpuSource,
    *,
    project: str = "default",
    proc_root: Path = Path("/proc"),
    on_bus: int | None = None,
) -> Sweep:
    """One inventory per call: NVML through ``source``, members from the runtime ``connect`` gives
    (its instance listing, cached). ``on_bus`` defaults to :func:`gpus_on_bus`, read once here."""
    view = RuntimeView(connect, project=project)
    bus = gpus_on_bus() if on_bus is None else on_bus

    def sweep() -> Inventory:
        started = time.perf_counter()
        try:
            reading = source.read()
        except NvmlUnavailable as exc:
            # sysfs tells "no GPU" from "GPU but no driver"; no need to ask the daemon.
            return unavailable_inventory(exc, gpus_on_bus=bus)
        facts = view.facts()
        return attribute_reading(
            reading,
            owners=facts.owners,
            resources=facts.resources,
            proc_root=proc_root,
            notes=[facts.error] if facts.error else [],
            started=started,
        )

    return sweep
