"""What a job is (:class:`Job`), what a run gets (:class:`JobContext`) and what it says (:class:`JobResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from labgpu.gpu.nvml import GpuSource, NvmlSource
from labgpu.services.context import Services
from labgpu.services.gpus import GpuUsageReader


@dataclass
class JobContext:
    """What a job run gets besides the services: the clock and where GPU readings come from."""

    now: datetime
    gpu_source: Callable[[], GpuSource] | None = None  # None: the real NVML on this host
    agent_transport: httpx.BaseTransport | None = None  # None: the agents over the network
    proc_root: str = "/proc"  # where GPU processes are looked up (a FAKE /proc with a FAKE GPU source)

    def source(self) -> GpuSource:
        if self.gpu_source is not None:
            return self.gpu_source()
        return NvmlSource()

    def reader(self) -> GpuUsageReader:
        """Reads other hosts' GPU agents (their inventories, and their GPUs when a daemon lists none)."""
        return GpuUsageReader(transport=self.agent_transport)


@dataclass
class JobResult:
    """What one run did: lines for people (and logs), and errors (the run then counts as failed)."""

    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    name: str
    help: str
    every: Callable[[Services], timedelta]
    lease: timedelta
    run: Callable[[Services, JobContext], JobResult]
