"""What the GPU views need from LXD/Incus: who owns which container, and the resources API.

Two requests per refresh (one instance listing and one resources read), cached
for ``ttl`` seconds so a `gpu top` refreshing every second or a Prometheus scrape every 15 s does
not list instances each time. Never raises: when the daemon cannot be reached, the GPU views still
show containers (from cgroups) without members, and say why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labgpu.errors import LabgpuError
from labgpu.gpu.inventory import owners_from_instances

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient


@dataclass(frozen=True)
class RuntimeFacts:
    owners: dict[tuple[str, str], str] = field(default_factory=dict)
    resources: dict[str, Any] | None = None
    error: str = ""  # why owners/resources are missing


class RuntimeView:
    """Cached :class:`RuntimeFacts` from a runtime client built on first use by ``connect``."""

    def __init__(
        self,
        connect: Callable[[], RuntimeClient],
        *,
        project: str = "default",
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._project = project
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._facts: RuntimeFacts | None = None
        self._at = 0.0

    def facts(self) -> RuntimeFacts:
        with self._lock:
            if self._facts is None or self._clock() - self._at >= self._ttl:
                self._facts = self._read()
                self._at = self._clock()
            return self._facts

    def _read(self) -> RuntimeFacts:
        try:
            runtime = self._connect()
            owners = owners_from_instances(runtime.instances.all(with_state=False), self._project)
        except LabgpuError as exc:
            return RuntimeFacts(error=f"members unknown: {exc.message}")
        try:
            resources: dict[str, Any] | None = runtime.resources()
        except LabgpuError:
            resources = None
        return RuntimeFacts(owners=owners, resources=resources)
