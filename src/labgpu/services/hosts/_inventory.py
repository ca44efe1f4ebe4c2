"""Asking every host at once: what it is, what it has, what runs on it.

Each host is asked in its own thread, and the answers are collected until ``host_timeout`` has passed:
a host that has not answered by then is reported as unreachable ("no answer within 5s") and the others
are not held up. The threads are daemon threads, so a host that hangs does not hold up the process
either. Instances are listed in ONE request per host (``recursion=1``, or ``2`` with their state); on a
cluster each member's row keeps the instances whose ``location`` is that member.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labgpu.errors import LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.instances import Instance
from labgpu.services.clients import parse_host_url
from labgpu.services.context import Services
from labgpu.services.hosts._clients import runtime_for
from labgpu.services.hosts._records import local_host, public_address
from labgpu.store.models import Host, Member

K = TypeVar("K")
T = TypeVar("T")


@dataclass(frozen=True)
class Answer(Generic[T]):
    """One job's outcome: its value, or the error it raised, or neither (no answer in time)."""

    value: T | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def answered(self) -> bool:
        return self.error is None and self.value is not None


def ask_all(jobs: Mapping[K, Callable[[], T]], *, timeout: float) -> dict[K, Answer[T]]:
    """Run every job in its own daemon thread; return what each said within ``timeout`` seconds.

    A job still running at the deadline gets an Answer with the error "no answer within Ns"."""
    results: dict[K, Answer[T]] = {}
    lock = threading.Lock()
    done = threading.Condition(lock)
    start = time.monotonic()

    def run(key: K, job: Callable[[], T]) -> None:
        t0 = time.monotonic()
        try:
            answer: Answer[T] = Answer(value=job(), seconds=time.monotonic() - t0)
        except LabgpuError as exc:
            answer = Answer(error=exc.message, seconds=time.monotonic() - t0)
        except Exception as exc:  # a bug or an odd answer on one host must not hide the others
            answer = Answer(error=f"{type(exc).__name__}: {exc}", seconds=time.monotonic() - t0)
        with done:
            results[key] = answer
            done.notify_all()

    for key, job in jobs.items():
        threading.Thread(target=run, args=(key, job), daemon=True, name=f"labgpu-ask-{key}").start()
    deadline = start + timeout
    with done:
        while len(results) < len(jobs):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done.wait(left)
        out = dict(results)
    for key in jobs:
        if key not in out:
            out[key] = Answer(error=f"no answer within {timeout:g}s", seconds=timeout)
    return out


# Hosts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    index: int  # as nvidia-smi numbers them (NVIDIA cards in PCI order); -1 for other vendors
    pci_address: str
    vendor: str
    product: str


@dataclass
class HostFacts:
    """A host as the store records it and as its daemon describes itself (when it answered)."""

    id: int
    name: str
    kind: str
    url: str | None
    address: str  # what members connect to
    drained: bool
    gpu_mode: str
    local: bool
    cluster: str | None = None
    target: str | None = None
    reachable: bool = False
    error: str | None = None
    seconds: float = 0.0
    version: str = ""
    cpu_threads: int | None = None
    memory_total: int | None = None
    memory_used: int | None = None
    gpus: list[Gpu] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)

    @property
    def nvidia_gpus(self) -> dict[int, str]:
        """index -> PCI address of the NVIDIA GPUs (what member specs use)."""
        return {g.index: g.pci_address for g in self.gpus if g.index >= 0}

    @property
    def containers(self) -> int:
        return sum(1 for i in self.instances if i.type == "container")

    @property
    def running(self) -> int:
        return sum(1 for i in self.instances if i.type == "container" and i.running)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "address": self.address,
            "cluster": self.cluster,
            "target": self.target,
            "local": self.local,
            "drained": self.drained,
            "gpu_mode": self.gpu_mode,
            "reachable": self.reachable,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "version": self.version or None,
            "cpu_threads": self.cpu_threads,
            "memory_total": self.memory_total,
            "memory_used": self.memory_used,
            "gpus": [g.__dict__ for g in self.gpus],
            "containers": self.containers if self.reachable else None,
            "running": self.running if self.reachable else None,
        }


def parse_gpus(resources: Mapping[str, Any]) -> list[Gpu]:
    """The GPUs of the resources API (``RuntimeClient.resources``); NVIDIA cards numbered in PCI order, as nvidia-smi does."""
    cards = (resources.get("gpu") or {}).get("cards") or []
    nvidia = sorted(
        str(c.get("pci_address")) for c in cards if c.get("driver") == "nvidia" and c.get("pci_address")
    )
    index = {pci: i for i, pci in enumerate(nvidia)}
    out = []
    for card in cards:
        pci = str(card.get("pci_address") or "")
        out.append(
            Gpu(
                index=index.get(pci, -1) if card.get("driver") == "nvidia" else -1,
                pci_address=pci,
                vendor=str(card.get("vendor") or ""),
                product=str(card.get("product") or ""),
            )
        )
    return sorted(out, key=lambda g: (g.index < 0, g.index, g.pci_address))


def known_hosts(svc: Services) -> list[Host]:
    """Every host row, the local daemon's included (recorded on first use when it answers)."""
    with svc.session() as session:
        if session.scalars(select(Host.id).where(Host.url.is_(None))).first() is None:
            # The local daemon may be down: then it is not a host labgpu can show yet.
            with contextlib.suppress(LabgpuError):
                local_host(session, svc.runtime)
        return list(session.scalars(select(Host).order_by(Host.url.is_not(None), Host.name)))


def _facts_of(svc: Services, host: Host) -> HostFacts:
    address = parse_host_url(host.url) if host.url else None
    return HostFacts(
        id=host.id,
        name=host.name,
        kind=str(host.kind),
        url=host.url,
        address=public_address(host, svc.settings),
        drained=host.drained,
        gpu_mode=host.gpu_mode,
        local=host.url is None,
        cluster=address.cluster if address else None,
        target=address.target if address else None,
    )


def list_instances(client: RuntimeClient, *, with_state: bool, timeout: float) -> list[Instance]:
    """Every instance of the daemon (a cluster: of every member) in ONE request."""
    return client.instances.all(with_state=with_state, timeout=timeout)


def on_member(instances: list[Instance], target: str | None) -> list[Instance]:
    """The instances located on cluster member ``target`` (all of them for a standalone daemon)."""
    return instances if target is None else [i for i in instances if i.location == target]


def host_facts(
    svc: Services,
    *,
    hosts: list[Host] | None = None,
    resources: bool = True,
    with_state: bool = False,
) -> list[HostFacts]:
    """Ask every host (or ``hosts``) at once what it is (server info), what it has (its resources)
    and what runs there (one instance listing), each within ``host_timeout``. Never raises for a host:
    one that fails or does not answer in time comes back with ``reachable`` False and the reason."""
    rows = known_hosts(svc) if hosts is None else hosts
    timeout = svc.settings.host_timeout
    facts = {h.id: _facts_of(svc, h) for h in rows}

    def job(host: Host) -> Callable[[], HostFacts]:
        def ask() -> HostFacts:
            out = facts[host.id]
            client = runtime_for(svc, host)
            info = client.server(refresh=True, timeout=timeout)
            out.version = info.version
            out.kind = info.kind
            if resources:
                res = client.resources(target=out.target, timeout=timeout)
                out.cpu_threads = int((res.get("cpu") or {}).get("total") or 0) or None
                memory = res.get("memory") or {}
                out.memory_total = int(memory.get("total") or 0) or None
                out.memory_used = int(memory.get("used") or 0) or None
                out.gpus = parse_gpus(res)
            out.instances = on_member(
                list_instances(client, with_state=with_state, timeout=timeout), out.target
            )
            return out

        return ask

    answers = ask_all({h.id: job(h) for h in rows}, timeout=timeout)
    result = []
    for host in rows:
        answer = answers[host.id]
        if answer.answered and answer.value is not None:
            fact = answer.value
            fact.reachable = True
        else:
            # A late thread may still fill in the shared object: hand back a clean copy.
            fact = _facts_of(svc, host)
            fact.error = answer.error
        fact.seconds = answer.seconds
        result.append(fact)
    return result


# Containers -------------------------------------------------------------------------------------------

MEMBER = "member"
FOREIGN = "foreign"
ORPHAN = "orphan"
MISSING = "missing"
UNREACHABLE = "unreachable"


@dataclass
class ContainerView:
    """One instance on one host (or a member's container that should be there and is not)."""

    host: str
    name: str
    status: str  # Running, Stopped, ... ; missing; unreachable
    kind: str  # member, foreign (not labgpu's), orphan (labgpu's, no member), missing, unreachable
    member: str | None = None
    address: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    ipv4: list[str] = field(default_factory=list)
    memory_usage: int = 0
    processes: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_containers(svc: Services) -> list[ContainerView]:
    """Every host's instances, asked in parallel (one listing with state per host, no resources),
    joined with the store's members. A host that does not answer in time gives one row saying so,
    plus its members' containers as "unreachable"."""
    with svc.session() as session:
        members = session.scalars(select(Member).options(selectinload(Member.port_maps))).all()
        by_host: dict[int | None, dict[str, Member]] = {}
        for member in members:
            if member.container:
                by_host.setdefault(member.host_id, {})[member.container] = member
    facts = host_facts(svc, resources=False, with_state=True)
    out: list[ContainerView] = []
    for fact in facts:
        wanted = dict(by_host.get(fact.id, {}))
        if fact.local:
            wanted.update(by_host.get(None, {}))
        if not fact.reachable:
            out.append(
                ContainerView(
                    host=fact.name, name="-", status=UNREACHABLE, kind=UNREACHABLE, error=fact.error
                )
            )
            for name, gone in sorted(wanted.items()):
                out.append(_member_row(fact, name, gone, UNREACHABLE, UNREACHABLE))
            continue
        for inst in sorted(fact.instances, key=lambda i: i.name):
            owner = inst.label("owner")
            m = wanted.pop(inst.name) if inst.name in wanted else None
            if owner is None:
                kind = FOREIGN
            elif m is not None and m.name == owner:
                kind = MEMBER
            else:
                kind = ORPHAN
            view = ContainerView(host=fact.name, name=inst.name, status=inst.status, kind=kind, member=owner)
            if kind == MEMBER and m is not None:
                view.address = fact.address
                view.ports = {str(p.purpose): p.host_port for p in m.port_maps}
            if inst.state is not None:
                view.ipv4 = list(inst.state.ipv4)
                view.memory_usage = inst.state.memory_usage
                view.processes = inst.state.processes
            out.append(view)
        for name, gone in sorted(wanted.items()):
            out.append(_member_row(fact, name, gone, MISSING, MISSING))
    return out


def _member_row(fact: HostFacts, name: str, m: Member, status: str, kind: str) -> ContainerView:
    return ContainerView(
        host=fact.name,
        name=name,
        status=status,
        kind=kind,
        member=m.name,
        address=fact.address,
        ports={str(p.purpose): p.host_port for p in m.port_maps},
    )
