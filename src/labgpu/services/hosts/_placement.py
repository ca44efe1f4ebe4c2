"""Placing a new member's container: ask the hosts, then let :mod:`labgpu.domain.placement` choose.

Every candidate host is asked at once (within ``host_timeout``) for its hardware (the resources API),
its containers and their limits (one listing), the template alias and the labgpu profile; the
store adds which GPUs are assigned to members there. With a single host and no name given, nothing
is asked: it is the only choice (unless drained).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from labgpu.domain.members import GpuRequest, parse_gpu_request
from labgpu.domain.placement import Candidate, Choice, Demand, choose_host, committed
from labgpu.errors import BadInput
from labgpu.services.clients import parse_host_url
from labgpu.services.context import Services
from labgpu.services.hosts._clients import runtime_for
from labgpu.services.hosts._inventory import (
    ask_all,
    known_hosts,
    list_instances,
    on_member,
    parse_gpus,
)
from labgpu.services.hosts._records import local_host
from labgpu.store.models import Host, Member


@dataclass(frozen=True)
class Placement:
    """The host chosen for a container, and why."""

    host: Host
    choice: Choice

    @property
    def note(self) -> str:
        return self.choice.summary


def _assigned_gpus(svc: Services, host_ids: list[int], *, exclude: str | None) -> dict[int, frozenset[int]]:
    """GPU indexes given to members, by host (their gpu_spec lists indexes)."""
    out: dict[int, set[int]] = {}
    with svc.session() as session:
        rows = session.execute(
            select(Member.host_id, Member.gpu_spec, Member.name).where(Member.host_id.in_(host_ids))
        ).all()
    for host_id, spec, name in rows:
        if name == exclude or host_id is None or not spec:
            continue
        request = parse_gpu_request(spec)
        if request.mode == "indexes":
            out.setdefault(host_id, set()).update(request.indexes)
    return {k: frozenset(v) for k, v in out.items()}


def candidates(
    svc: Services, hosts: list[Host], demand: Demand, *, member: str | None = None
) -> list[Candidate]:
    """Each host as placement sees it, asked in parallel (a host that does not answer in time is a
    candidate that is not reachable)."""
    timeout = svc.settings.host_timeout
    profile = svc.settings.profile_name
    assigned = _assigned_gpus(svc, [h.id for h in hosts], exclude=member)

    def job(host: Host) -> Callable[[], Candidate]:
        def ask() -> Candidate:
            client = runtime_for(svc, host)
            target = parse_host_url(host.url).target if host.url else None
            res = client.resources(target=target, timeout=timeout)
            memory_total = int((res.get("memory") or {}).get("total") or 0) or None
            instances = on_member(list_instances(client, with_state=False, timeout=timeout), target)
            containers = [i for i in instances if i.type == "container"]
            cpu, memory = committed(
                (
                    (i.expanded_config.get("limits.cpu"), i.expanded_config.get("limits.memory"))
                    for i in containers
                ),
                memory_total,
            )
            has_template = has_profile = True
            if demand.template:
                has_template = client.images.resolve_alias(demand.template, timeout=timeout) is not None
            has_profile = client.profiles.find(profile, timeout=timeout) is not None
            gpus = parse_gpus(res)
            return Candidate(
                name=host.name,
                drained=host.drained,
                has_template=has_template,
                has_profile=has_profile,
                gpus={g.index: g.pci_address for g in gpus if g.index >= 0},
                gpu_mode=host.gpu_mode,
                gpus_assigned=assigned.get(host.id, frozenset()),
                cpu_threads=int((res.get("cpu") or {}).get("total") or 0) or None,
                memory_total=memory_total,
                cpu_committed=cpu,
                memory_committed=memory,
                containers=len(containers),
            )

        return ask

    answers = ask_all({h.id: job(h) for h in hosts}, timeout=timeout)
    out = []
    for host in hosts:
        answer = answers[host.id]
        if answer.value is not None and answer.error is None:
            out.append(answer.value)
        else:
            out.append(Candidate(name=host.name, reachable=False, error=answer.error, drained=host.drained))
    return out


def place(
    svc: Services,
    *,
    gpus: GpuRequest,
    cpu: int | None = None,
    memory_bytes: int | None = None,
    template: str = "",
    host: str | None = None,
    member: str | None = None,
) -> Placement:
    """Choose the host for a new container (``host``: the admin's choice, checked). Asks the hosts in
    parallel unless there is only one. Raises BadInput, Conflict, Exhausted (see choose_host)."""
    hosts = known_hosts(svc)
    if not hosts:
        # Not even the local daemon is known: record it, or say why it cannot be (it does not answer).
        with svc.session() as session:
            local_host(session, svc.runtime)  # safe when a concurrent add records it meanwhile
        hosts = known_hosts(svc)
    if host is not None and all(h.name != host for h in hosts):
        known = ", ".join(h.name for h in hosts) or "none"
        raise BadInput(f"no host named {host} (hosts: {known})", hint="list them with `labgpu host list`")
    demand = Demand(gpus=gpus, cpu=cpu, memory_bytes=memory_bytes, template=template)
    if host is None and len(hosts) == 1 and hosts[0].url is None and not hosts[0].drained:
        return Placement(host=hosts[0], choice=Choice(host=hosts[0].name, reason="the only host"))
    asked = [h for h in hosts if h.name == host] if host is not None else hosts
    choice = choose_host(candidates(svc, asked, demand, member=member), demand, named=host)
    chosen = next(h for h in hosts if h.name == choice.host)
    return Placement(host=chosen, choice=choice)
