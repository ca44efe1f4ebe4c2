"""Reading members with their containers' live state: one listing per host, all hosts at once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labgpu.errors import LabgpuError
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services.context import Services
from labgpu.services.hosts import ask_all, on_member, public_address, runtime_for
from labgpu.services.members._records import MemberInfo, home_dir, load_member
from labgpu.store.models import Host, Member

# Reading ------------------------------------------------------------------------------------------


def _info(svc: Services, member: Member) -> MemberInfo:
    return MemberInfo(
        name=member.name,
        email=member.email,
        role=str(member.role),
        state=str(member.state),
        host=member.host.name if member.host else None,
        container=member.container,
        template=member.template,
        uid=member.uid,
        cpu=member.cpu_limit,
        memory_bytes=member.memory_limit_bytes,
        disk_bytes=member.disk_size_bytes,
        gpus=member.gpu_spec or svc.settings.default_gpus,
        no_gpu=member.no_gpu,
        ports={str(p.purpose): p.host_port for p in member.port_maps},
        address=public_address(member.host, svc.settings) if member.host else None,
        shares=sorted(s.name for s in member.shares),
        keys=[k.fingerprint for k in member.ssh_keys],
        home=str(home_dir(svc, member.name)),
    )


def list_members(svc: Services, *, live: bool = True) -> list[MemberInfo]:
    """Every member, with their container's live state from ONE listing request."""
    with svc.session() as session:
        members = session.scalars(
            select(Member)
            .order_by(Member.name)
            .options(
                selectinload(Member.port_maps),
                selectinload(Member.ssh_keys),
                selectinload(Member.shares),
                selectinload(Member.host),
            )
        ).all()
        infos = [_info(svc, m) for m in members]
    if live and infos:
        hosts = {m.host_id: m.host for m in members}
        listings = _instances_by_host(svc, hosts)
        for member, info in zip(members, infos, strict=True):
            instances = listings.get(member.host_id)
            if instances is None:
                info.status = "unreachable"
                continue
            inst = instances.get(info.container or "")
            if inst is None:
                info.status = "missing"
                continue
            info.status = inst.status
            if inst.state is not None:
                info.ipv4 = list(inst.state.ipv4)
                info.memory_usage = inst.state.memory_usage
                info.processes = inst.state.processes
    return infos


def _instances_by_host(
    svc: Services, hosts: dict[int | None, Host | None]
) -> dict[int | None, dict[str, Any]]:
    """host id -> {name: Instance} with state, ONE listing per host; the local daemon for members
    without a host. Asked in parallel, each within host_timeout (the local one within the runtime's
    own timeout, as before); a host that fails is left out."""

    def job(host: Host | None) -> Any:
        def ask() -> dict[str, Any]:
            runtime = runtime_for(svc, host)
            found = on_member(runtime.instances.all(), runtime.target)
            return {i.name: i for i in found}

        return ask

    if set(hosts) <= {None} or all(h is None or h.url is None for h in hosts.values()):
        try:
            local = {i.name: i for i in svc.runtime.instances.all()}
        except LabgpuError:
            return {}
        return dict.fromkeys(hosts, local)
    answers = ask_all({key: job(host) for key, host in hosts.items()}, timeout=svc.settings.host_timeout)
    return {key: a.value for key, a in answers.items() if a.value is not None and a.error is None}


def get_member(svc: Services, name: str, *, live: bool = True) -> MemberInfo:
    """One member with their container's live state. Raises NotFound."""
    with svc.session() as session:
        member = load_member(session, name)
        info = _info(svc, member)
        runtime = runtime_for(svc, member.host)
    if live and info.container:
        try:
            state = runtime.instances.state(info.container)
            info.status = state.status
            info.ipv4 = list(state.ipv4)
            info.memory_usage = state.memory_usage
            info.processes = state.processes
        except RuntimeNotFound:
            info.status = "missing"
        except LabgpuError:
            info.status = "unreachable"
    return info
