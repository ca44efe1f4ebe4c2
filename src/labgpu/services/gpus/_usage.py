"""Who uses which GPU, on every host: for the portal's GPU page and ``GET /api/v1/gpus``.

Where each host's inventory comes from (:meth:`GpuUsageReader.inventory`):

- a host row with an ``agent_url``: that host's `labgpu agent`, ``GET {agent_url}/v1/gpus`` with
  ``Authorization: Bearer <agent_token>`` (the portal's own ``agent_token`` setting), waiting at most
  :data:`AGENT_TIMEOUT` seconds;
- else a host whose daemon runs on THIS machine (the local daemon, or another unix socket): a sweep in
  this process (NVML and /proc, :func:`labgpu.services.gpus._sweep.make_sweep`, as `labgpu gpu list`);
- else (a daemon on another machine without an agent): nothing, and one line saying how to set one up.

Every host is asked at once (:func:`labgpu.services.hosts._inventory.ask_all`). An agent that cannot be reached,
refuses the token or answers something else than an inventory, and a host without a GPU or driver, become
ONE line for that host (:attr:`HostGpus.message`); they never fail the whole answer.

Then, from the store: who holds each GPU now (active bookings; in assigned mode, the assigned members) and
which held GPUs are idle, with since when (:func:`labgpu.services.gpus._holders.idle_gpus`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from labgpu.errors import LabgpuError
from labgpu.gpu.inventory import Inventory
from labgpu.gpu.nvml import GpuSource, NvmlSource
from labgpu.services.context import Services
from labgpu.services.gpus._booking_records import active_bookings
from labgpu.services.gpus._holders import held_gpus, idle_gpus
from labgpu.services.gpus._sweep import Sweep, make_sweep
from labgpu.services.hosts import ask_all, is_local, known_hosts, parse_gpus, runtime_for
from labgpu.store.models import Host, utcnow

AGENT_TIMEOUT = 3.0  # seconds; capped by host_timeout
SOURCE_AGENT = "agent"
SOURCE_LOCAL = "local"
SOURCE_NONE = "none"


# Results ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuProcess:
    """A process on a GPU: where it runs (``container``, ``host``, ``monitor`` or ``unknown``), and whose."""

    pid: int
    command: str
    where: str
    container: str | None  # project/name outside the default project
    member: str | None  # None: a host process, or a container labgpu does not own
    memory: int | None  # bytes of GPU memory; None when NVML does not say
    container_pid: int | None = None  # its pid inside the container, when the agent could read it

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "command": self.command,
            "where": self.where,
            "container": self.container,
            "member": self.member,
            "memory": self.memory,
        }


@dataclass(frozen=True)
class GpuHolder:
    """Who holds a GPU now: a member's active booking (until its end), or an admin's assignment."""

    member: str
    booking: int | None  # None: assigned
    until: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"member": self.member, "booking": self.booking, "until": self.until}


@dataclass(frozen=True)
class GpuStatus:
    """One GPU now: its figures, processes, holders, and whether a held GPU is idle."""

    index: int
    name: str
    uuid: str
    pci_address: str
    utilization: int | None
    memory_used: int | None
    memory_total: int | None
    temperature: int | None
    error: str | None
    processes: tuple[GpuProcess, ...] = ()
    holders: tuple[GpuHolder, ...] = ()
    idle_since: datetime | None = None  # held, and idle since then (the idle rule)
    idle_minutes: int | None = None
    mig_enabled: bool = False  # MIG mode: NVML's utilization is not the GPU's (samples store none)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "pci_address": self.pci_address,
            "utilization": self.utilization,
            "memory_used": self.memory_used,
            "memory_total": self.memory_total,
            "temperature": self.temperature,
            "error": self.error,
            "processes": [p.as_dict() for p in self.processes],
            "held_by": [h.as_dict() for h in self.holders],
            "idle_since": self.idle_since,
            "idle_minutes": self.idle_minutes,
        }


@dataclass(frozen=True)
class HostGpus:
    """One host's GPUs, or the one line that says why there are none to show."""

    host: str
    gpu_mode: str
    source: str  # SOURCE_AGENT, SOURCE_LOCAL or SOURCE_NONE
    available: bool
    message: str = ""  # why nothing is shown, when not available
    driver_version: str = ""
    cuda_version: str = ""
    warnings: tuple[str, ...] = ()
    gpus: tuple[GpuStatus, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "gpu_mode": self.gpu_mode,
            "source": self.source,
            "available": self.available,
            "message": self.message or None,
            "driver_version": self.driver_version or None,
            "cuda_version": self.cuda_version or None,
            "warnings": list(self.warnings),
            "gpus": [g.as_dict() for g in self.gpus],
        }


@dataclass(frozen=True)
class BookableGpu:
    """A GPU members may book on a host: its index (as nvidia-smi numbers it), PCI address, model."""

    index: int
    pci_address: str
    name: str


# Reading an inventory -----------------------------------------------------------------------------


class AgentAnswerError(ValueError):
    """The agent's answer is not an inventory."""


def parse_inventory(data: Any, *, host: Host, source: str) -> HostGpus:
    """A :class:`HostGpus` from the agent's ``/v1/gpus`` JSON (:meth:`Inventory.to_json`). Raises
    AgentAnswerError for anything else."""
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise AgentAnswerError("not an inventory (no list of GPUs)")
    try:
        gpus = tuple(_gpu(g) for g in data["gpus"])
        warnings = tuple(str(w) for w in data.get("warnings") or ())
    except (KeyError, TypeError, ValueError) as exc:
        raise AgentAnswerError(f"not an inventory ({type(exc).__name__}: {exc})") from None
    available = bool(data.get("available")) and bool(gpus)
    reason = data.get("reason")
    return HostGpus(
        host=host.name,
        gpu_mode=host.gpu_mode,
        source=source,
        available=available,
        message="" if available else str(reason or "no GPU on this host"),
        driver_version=str(data.get("driver_version") or ""),
        cuda_version=str(data.get("cuda_version") or ""),
        warnings=warnings,
        gpus=gpus,
    )


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return int(value)


def _gpu(data: Mapping[str, Any]) -> GpuStatus:
    return GpuStatus(
        index=int(data["index"]),
        name=str(data.get("name") or ""),
        uuid=str(data.get("uuid") or ""),
        pci_address=str(data.get("pci_address") or ""),
        utilization=_optional_int(data.get("utilization")),
        memory_used=_optional_int(data.get("memory_used")),
        memory_total=_optional_int(data.get("memory_total")),
        temperature=_optional_int(data.get("temperature")),
        error=str(data["error"]) if data.get("error") else None,
        processes=tuple(_process(p) for p in data.get("processes") or ()),
        mig_enabled=data.get("mig_enabled") is True,
    )


def _process(data: Mapping[str, Any]) -> GpuProcess:
    where = str(data.get("where") or "unknown")
    container = data.get("container")
    project = data.get("project")
    if container and project and project != "default":
        container = f"{project}/{container}"
    return GpuProcess(
        pid=int(data["pid"]),
        command=str(data.get("command") or "?"),
        where=where,
        container=str(container) if container else None,
        member=str(data["member"]) if data.get("member") else None,
        memory=_optional_int(data.get("used_memory")),
        container_pid=_optional_int(data.get("container_pid")),
    )


def _unavailable(host: Host, source: str, message: str) -> HostGpus:
    return HostGpus(host=host.name, gpu_mode=host.gpu_mode, source=source, available=False, message=message)


# The reader ---------------------------------------------------------------------------------------


@dataclass
class GpuUsageReader:
    """Reads the GPUs of every host for the portal. Made once per web app: it keeps one sweep of this
    machine per local host row, so the owner map stays cached between page views and a page polled by
    many people sweeps at most once a second.

    ``source`` makes the GPU source of this machine (default: the real NVML); ``transport`` is handed to
    httpx for the agents (tests may pass one; by default the network)."""

    source: Callable[[], GpuSource] | None = None
    proc_root: Path = Path("/proc")
    transport: httpx.BaseTransport | None = None
    _sweeps: dict[tuple[int, str | None], Sweep] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # One host -------------------------------------------------------------------------------------

    def inventory(self, svc: Services, host: Host) -> HostGpus:
        """``host``'s GPUs and processes, from its agent or a sweep of this machine (see the module).
        Never raises for an unreachable agent or a host without GPUs: the answer says why. Waits for the
        agent at most :data:`AGENT_TIMEOUT` seconds (or ``host_timeout``, when shorter)."""
        if host.agent_url:
            return self._from_agent(svc, host)
        if is_local(host):
            inv = self._sweep(svc, host)()
            return self._from_inventory(host, inv)
        return _unavailable(
            host,
            SOURCE_NONE,
            f"no GPU agent is set for host {host.name}: run `labgpu agent` there and set its address with "
            f"`labgpu host set {host.name} --agent-url http://ADDRESS:9410`",
        )

    def _from_inventory(self, host: Host, inv: Inventory) -> HostGpus:
        if not inv.available:
            return _unavailable(host, SOURCE_LOCAL, inv.headline)
        return parse_inventory(inv.to_json(), host=host, source=SOURCE_LOCAL)

    def _sweep(self, svc: Services, host: Host) -> Sweep:
        # Imported here: labgpu.gpu.agent is the agent's web app (FastAPI, prometheus_client), which the
        # CLI need not load; only a portal sweeping a host without an agent uses SharedSweep.
        from labgpu.gpu.agent import SharedSweep

        key = (host.id, host.url)
        with self._lock:
            sweep = self._sweeps.get(key)
            if sweep is None:
                source = self.source() if self.source is not None else _real_nvml()
                runtime = runtime_for(svc, host)
                sweep = SharedSweep(
                    make_sweep(
                        lambda: runtime,
                        source,
                        project=svc.settings.runtime_project,
                        proc_root=self.proc_root,
                    )
                )
                self._sweeps[key] = sweep
            return sweep

    def _from_agent(self, svc: Services, host: Host) -> HostGpus:
        assert host.agent_url is not None
        url = host.agent_url.rstrip("/") + "/v1/gpus"
        token = svc.settings.agent_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        timeout = min(AGENT_TIMEOUT, svc.settings.host_timeout)
        try:
            with httpx.Client(timeout=timeout, transport=self.transport, follow_redirects=False) as client:
                response = client.get(url, headers=headers)
        except httpx.TimeoutException:
            return _unavailable(
                host, SOURCE_AGENT, f"the GPU agent at {host.agent_url} did not answer within {timeout:g}s"
            )
        except httpx.HTTPError as exc:
            return _unavailable(
                host, SOURCE_AGENT, f"the GPU agent at {host.agent_url} cannot be reached ({_short(exc)})"
            )
        if response.status_code == 401:
            return _unavailable(
                host,
                SOURCE_AGENT,
                f"the GPU agent at {host.agent_url} refused the portal's token: set the same agent_token "
                f"in the portal's settings and on {host.name}",
            )
        if response.status_code != 200:
            return _unavailable(
                host, SOURCE_AGENT, f"the GPU agent at {host.agent_url} answered HTTP {response.status_code}"
            )
        try:
            return parse_inventory(response.json(), host=host, source=SOURCE_AGENT)
        except ValueError as exc:  # not JSON, or AgentAnswerError
            return _unavailable(
                host, SOURCE_AGENT, f"the GPU agent at {host.agent_url} answered something else: {exc}"
            )

    def bookable_gpus(self, svc: Services, host: Host) -> list[BookableGpu]:
        """The GPUs of ``host`` that bookings may name: the runtime's resources API (what the daemon can
        attach) or, when that lists none (the daemon is unreachable or does not see them), the GPU
        inventory (agent or sweep). Empty when neither knows a GPU."""
        try:
            resources = runtime_for(svc, host).resources()
        except LabgpuError:
            resources = {}
        found = [
            BookableGpu(g.index, g.pci_address, g.product) for g in parse_gpus(resources) if g.index >= 0
        ]
        if found:
            return found
        inv = self.inventory(svc, host)
        return [BookableGpu(g.index, g.pci_address, g.name) for g in inv.gpus if g.pci_address]

    # Every host -----------------------------------------------------------------------------------

    def read(self, svc: Services, *, now: datetime | None = None) -> list[HostGpus]:
        """Every host's GPUs, asked at once, with holders and idle GPUs from the store. A host that
        does not answer within ``host_timeout`` is one line, like an unreachable agent."""
        now = now or utcnow()
        hosts = known_hosts(svc)
        answers = ask_all(
            {h.id: partial(self.inventory, svc, h) for h in hosts},
            timeout=svc.settings.host_timeout + 1,
        )
        out = []
        for h in hosts:
            answer = answers[h.id]
            found = (
                answer.value if answer.value is not None else _unavailable(h, SOURCE_NONE, answer.error or "")
            )
            out.append(found)
        return with_holders(svc, out, now=now)


def _real_nvml() -> GpuSource:
    return NvmlSource()


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# Holders and idle GPUs ----------------------------------------------------------------------------


def with_holders(svc: Services, hosts: list[HostGpus], *, now: datetime) -> list[HostGpus]:
    """``hosts`` with each GPU's holders (active bookings; assigned GPUs in assigned mode) and, for
    held GPUs that are idle, since when. Reads the store only."""
    idle = {(g.host, g.gpu): g for g in idle_gpus(svc, now=now)}
    holders: dict[tuple[str, int], list[GpuHolder]] = {}
    with svc.session() as session:
        for host in session.scalars(select(Host)):
            ends = {b.id: b.end_at for b in active_bookings(session, host.id)}
            for held in held_gpus(session, host):
                until = ends.get(held.booking) if held.booking is not None else None
                for gpu in held.gpus:
                    holders.setdefault((host.name, gpu), []).append(
                        GpuHolder(held.member, held.booking, until)
                    )
    out = []
    for h in hosts:
        gpus = []
        for g in h.gpus:
            spell = idle.get((h.host, g.index))
            gpus.append(
                replace(
                    g,
                    holders=tuple(holders.get((h.host, g.index), ())),
                    idle_since=spell.since if spell else None,
                    idle_minutes=spell.minutes if spell else None,
                )
            )
        out.append(replace(h, gpus=tuple(gpus)))
    return out
