"""The lab's containers as the portal shows them: every instance on every host, with its owner.

:func:`list_containers` is the seeds' "status page": ONE instance listing per host (``recursion=2``,
state included) joined with the store's members, never one request per instance. Instances labgpu does
not own (no ``user.labgpu.owner``) are listed as foreign, never changed. :func:`connection_sheet` is
what a member needs to connect (the portal's page, the API and the approval mail show the same).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labgpu.errors import LabgpuError
from labgpu.runtime.instances import Instance
from labgpu.services.clients import parse_host_url
from labgpu.services.context import Services
from labgpu.services.hosts import ask_all, known_hosts, list_instances, on_member, public_address, runtime_for
from labgpu.services.members._records import ConnectionSheet, MemberInfo, container_home
from labgpu.store.models import Host, Member

OWNED = "labgpu"  # a member's container
FOREIGN = "foreign"  # not labgpu's: shown, never touched
ORPHAN = "orphan"  # marked as labgpu's, but no member explains it


@dataclass
class ContainerRow:
    name: str
    host: str
    status: str  # Running, Stopped, ..., or missing (in the store, not on the host), unreachable
    kind: str  # OWNED, FOREIGN, ORPHAN
    owner: str | None
    ipv4: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    gpus: str = ""
    cpu: str | None = None
    memory: str | None = None
    template: str | None = None
    memory_usage: int = 0
    processes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HostRow:
    name: str
    kind: str
    url: str | None
    public_address: str | None
    drained: bool
    gpu_mode: str
    members: int
    reachable: bool | None  # None: not asked (a remote host; see the hosts work)
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gpus(inst: Instance) -> str:
    found = [
        dev.get("id") or dev.get("pci") or dev.get("productid") or "all"
        for dev in inst.expanded_devices.values()
        if dev.get("type") == "gpu"
    ]
    return ",".join(found) if found else "none"


def list_containers(svc: Services) -> list[ContainerRow]:
    """Every instance on every host in the store (and every member container missing from them).

    Asks each host's daemon ONCE (one listing with state), all hosts at once, each within
    ``runtime_timeout``; a host that does not answer shows its members' containers as "unreachable".
    Does not wait on anything else."""
    hosts = known_hosts(svc)
    with svc.session() as session:
        rows = session.scalars(select(Member).options(selectinload(Member.port_maps))).all()
        # host id -> container name -> (owner, ports, gpus, template)
        wanted: dict[int | None, dict[str, tuple[str, dict[str, int], str, str | None]]] = {}
        for m in rows:
            if m.container is not None and m.uid is not None:
                wanted.setdefault(m.host_id, {})[m.container] = (
                    m.name,
                    {str(p.purpose): p.host_port for p in m.port_maps},
                    m.gpu_spec or svc.settings.default_gpus,
                    m.template,
                )
    timeout = svc.settings.runtime_timeout

    def job(host: Host) -> Any:
        client = runtime_for(svc, host)
        return lambda: list_instances(client, with_state=True, timeout=timeout)

    answers = ask_all({h.id: job(h) for h in hosts}, timeout=timeout)
    out: list[ContainerRow] = []
    local_id = next((h.id for h in hosts if h.url is None), None)
    for host in hosts:
        mine = dict(wanted.get(host.id, {}))
        if host.id == local_id:
            mine.update(wanted.get(None, {}))
        answer = answers[host.id]
        if not answer.answered:
            for name, (owner, ports, gpus, template) in sorted(mine.items()):
                out.append(
                    ContainerRow(
                        name,
                        host.name,
                        "unreachable",
                        OWNED,
                        owner,
                        ports=ports,
                        gpus=gpus,
                        template=template,
                    )
                )
            continue
        target = parse_host_url(host.url).target if host.url else None
        for inst in on_member(answer.value or [], target):
            out.append(_row(host.name, inst, mine.pop(inst.name, None)))
        for name, (owner, ports, gpus, template) in sorted(mine.items()):
            out.append(
                ContainerRow(
                    name, host.name, "missing", OWNED, owner, ports=ports, gpus=gpus, template=template
                )
            )
    if not hosts:  # no host recorded yet (a fresh store, the daemon down)
        for name, (owner, ports, gpus, template) in sorted(wanted.get(None, {}).items()):
            out.append(
                ContainerRow(name, "", "unreachable", OWNED, owner, ports=ports, gpus=gpus, template=template)
            )
    return sorted(out, key=lambda r: (r.kind != OWNED, r.host, r.name))


def _row(host: str, inst: Instance, want: tuple[str, dict[str, int], str, str | None] | None) -> ContainerRow:
    owner = inst.label("owner")
    if owner is None:
        kind = FOREIGN
    elif want is not None and want[0] == owner:
        kind = OWNED
    else:
        kind = ORPHAN
    state = inst.state
    owned = kind == OWNED and want is not None
    return ContainerRow(
        name=inst.name,
        host=host,
        status=inst.status,
        kind=kind,
        owner=owner,
        ipv4=list(state.ipv4) if state else [],
        ports=dict(want[1]) if owned and want else _proxy_ports(inst),
        gpus=want[2] if owned and want else _gpus(inst),
        cpu=inst.expanded_config.get("limits.cpu") or None,
        memory=inst.expanded_config.get("limits.memory") or None,
        template=(want[3] if owned and want else None) or inst.config.get("user.labgpu.template"),
        memory_usage=state.memory_usage if state else 0,
        processes=state.processes if state else 0,
    )


def _proxy_ports(inst: Instance) -> dict[str, int]:
    ports: dict[str, int] = {}
    for dev_name, dev in inst.expanded_devices.items():
        if dev.get("type") == "proxy":
            listen = dev.get("listen", "")
            port = listen.rsplit(":", 1)[-1]
            if port.isdigit():
                ports[dev_name] = int(port)
    return ports


def list_hosts(svc: Services) -> list[HostRow]:
    """The hosts in the store with their member counts; the local daemon is asked whether it answers."""
    with svc.session() as session:
        hosts = session.scalars(select(Host).options(selectinload(Host.members)).order_by(Host.name)).all()
        rows = [
            (
                h.name,
                str(h.kind),
                h.url,
                public_address(h, svc.settings),
                h.drained,
                h.gpu_mode,
                len(h.members),
            )
            for h in hosts
        ]
    out = []
    for name, kind, url, address, drained, gpu_mode, count in rows:
        reachable: bool | None = None
        version = None
        if url is None:
            try:
                info = svc.runtime.server()
                reachable, version = True, f"{info.kind} {info.version}"
            except LabgpuError:
                reachable = False
        out.append(HostRow(name, kind, url, address, drained, gpu_mode, count, reachable, version))
    return out


def connection_sheet(svc: Services, info: MemberInfo) -> ConnectionSheet | None:
    """The connection sheet of a member's container, without any password; None when the member has no
    container with an SSH port."""
    if not info.container or "ssh" not in info.ports:
        return None
    return ConnectionSheet(
        name=info.name,
        container=info.container,
        host=info.host or "",
        address=info.address or svc.settings.public_address or "localhost",
        user=svc.settings.container_user,
        state=info.status,
        ports=dict(info.ports),
        home=info.home,
        container_home=container_home(svc, info.name),
    )


def uptime_seconds(svc: Services, container: str) -> int | None:
    """How long the container has run, from its init process on this host (the daemon's state gives its
    host pid); None when it does not run or the daemon is on another machine. One state request."""
    if not svc.runtime.endpoint.is_unix:
        return None
    try:
        state = svc.runtime.instances.state(container)
    except LabgpuError:
        return None
    if state.status != "Running" or state.pid <= 0:
        return None
    return process_age(state.pid)


def process_age(pid: int) -> int | None:
    """Seconds since process ``pid`` started (from /proc), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as f:
            boot_seconds = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks
    return max(0, int(boot_seconds - started))
