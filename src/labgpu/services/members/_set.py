"""Changing a member's container (``labgpu member set``): limits, GPUs, RDP/VNC ports.

The row changes first (one transaction, with an audit event) and then the container in ONE request; when
the daemon refuses the change, the row is put back, so nothing is left half-made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labgpu.domain.container import CONTAINER_PORTS, missing_gpus
from labgpu.domain.members import allocate_ports, format_size, parse_gpu_request, parse_size, validate_cpu
from labgpu.errors import BadInput, Conflict, LabgpuError
from labgpu.services.context import Services
from labgpu.services.hosts import local_host
from labgpu.services.members._apply import APPLIED_LIVE, apply_spec
from labgpu.services.members._records import host_gpus, load_member, member_services
from labgpu.store.db import violated_constraint
from labgpu.store.models import Member, MemberState, PortMap, PortPurpose, Share

_ALLOCATION_RETRIES = 5


# Set ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One setting `member set` changed, and how it reached the container."""

    setting: str
    old: str
    new: str
    applied: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class SetRequest:
    """A validated `member set`. A field named in ``given`` with the value None clears that limit."""

    given: frozenset[str] = frozenset()
    cpu: int | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    gpus: str | None = None
    add_shares: tuple[str, ...] = ()
    remove_shares: tuple[str, ...] = ()
    ports: Mapping[str, bool] = field(default_factory=dict)  # "rdp"/"vnc" -> wanted

    @property
    def empty(self) -> bool:
        return not (self.given or self.add_shares or self.remove_shares or self.ports)


def _clears(value: str | int | None) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("none", "default", "")


def parse_set_request(
    *,
    cpu: str | int | None = None,
    memory: str | None = None,
    disk: str | None = None,
    gpus: str | None = None,
    add_shares: Sequence[str] = (),
    remove_shares: Sequence[str] = (),
    rdp: bool | None = None,
    vnc: bool | None = None,
) -> SetRequest:
    """Check the options of `member set` (no store, no daemon). Raises BadInput.

    ``cpu``, ``memory`` and ``disk`` take ``none`` to go back to the profile's default."""
    given: set[str] = set()
    cpu_value = memory_value = disk_value = None
    if cpu is not None:
        given.add("cpu")
        if not _clears(cpu):
            text = str(cpu).strip()
            if not text.isdigit():
                raise BadInput(f"invalid CPU limit {cpu!r}: give a number of cores, or none")
            cpu_value = validate_cpu(int(text))
    if memory is not None:
        given.add("memory")
        memory_value = None if _clears(memory) else parse_size(memory, what="memory limit")
    if disk is not None:
        given.add("disk")
        disk_value = None if _clears(disk) else parse_size(disk, what="disk size")
    gpu_text = None
    if gpus is not None:
        given.add("gpus")
        gpu_text = str(parse_gpu_request(gpus))
    both = set(add_shares) & set(remove_shares)
    if both:
        raise BadInput(f"share(s) {', '.join(sorted(both))} given with both --share and --no-share")
    ports = {p: v for p, v in (("rdp", rdp), ("vnc", vnc)) if v is not None}
    return SetRequest(
        given=frozenset(given),
        cpu=cpu_value,
        memory_bytes=memory_value,
        disk_bytes=disk_value,
        gpus=gpu_text,
        add_shares=tuple(dict.fromkeys(add_shares)),
        remove_shares=tuple(dict.fromkeys(remove_shares)),
        ports=ports,
    )


@dataclass(frozen=True)
class _Before:
    """What `member set` changed in the row, to put it back when the daemon refuses."""

    cpu: int | None
    memory_bytes: int | None
    disk_bytes: int | None
    gpu_spec: str | None
    shares: frozenset[str]
    ports: dict[str, tuple[int, str, int]]  # purpose -> (host port, listen address, container port)
    spec_version: int


def _fmt_size(value: int | None) -> str:
    return format_size(value) if value else "default"


def set_member(svc: Services, name: str, request: SetRequest) -> list[Change]:
    """Change a member's limits, GPUs, shares and ports; apply them to the container.

    Writes the row (spec_version bumped, audit ``member.set``), then updates the container in ONE
    request: live when it runs (LXD and Incus apply limits, proxies and disks live), at its next
    start when stopped. When the daemon refuses, the row is put back and the error raised: nothing
    is left half-changed. Raises BadInput, NotFound, Conflict. Returns the changes (empty: nothing
    to do)."""
    if request.empty:
        raise BadInput(
            "nothing to change: give at least one of --cpu, --memory, --disk, --gpus, --share, "
            "--no-share, --rdp/--no-rdp, --vnc/--no-vnc"
        )
    svc = member_services(svc, name)  # the daemon of the member's host
    _check_set_against_world(svc, name, request)
    for attempt in range(_ALLOCATION_RETRIES):
        try:
            changes, before = _write_set(svc, name, request)
            break
        except IntegrityError as exc:
            if attempt + 1 == _ALLOCATION_RETRIES:
                constraint = violated_constraint(exc) or "a constraint"
                raise Conflict(f"could not change {name} ({constraint}); try again") from exc
    if not changes:
        return []
    try:
        applied = apply_spec(svc, name)
    except LabgpuError as exc:
        _revert_set(svc, name, before, reason=exc.message)
        raise type(exc)(
            f"{name}'s container refused the change, so nothing was changed: {exc.message}",
            hint=exc.hint,
        ) from exc
    if applied == "unchanged":  # e.g. --gpus on a host without GPUs: recorded, nothing to attach
        applied = "recorded"
    notes = _set_notes(svc, request, applied)
    return [replace(c, applied=applied, note=notes.get(c.setting, "")) for c in changes]


def _set_notes(svc: Services, request: SetRequest, applied: str) -> dict[str, str]:
    notes: dict[str, str] = {}
    if "disk" in request.given and request.disk_bytes is not None:
        pool = svc.runtime.storage_pools.find(svc.settings.storage_pool)
        if pool is not None and pool.driver == "dir":
            notes["disk"] = "the dir storage driver records the size but does not enforce it"
    if "cpu" in request.given and request.cpu is not None and applied == APPLIED_LIVE:
        # Both daemons pin CPUs in a background balancer (measured: usually at once, up to ~45 s).
        notes["cpu"] = "the daemon pins the CPUs in the background: at once or up to a minute later"
    if "gpus" in request.given and not host_gpus(svc.runtime):
        notes["gpus"] = "this host has no NVIDIA GPU: nothing attached now"
    return notes


def _check_set_against_world(svc: Services, name: str, request: SetRequest) -> None:
    with svc.session() as session:
        member = load_member(session, name)
        if member.state == MemberState.REMOVING:
            raise Conflict(f"member {name} is being removed; finish with `labgpu member rm {name}`")
        wanted = set(request.add_shares) | set(request.remove_shares)
        rows = {s.name: s for s in session.scalars(select(Share).where(Share.name.in_(wanted)))}
        unknown = sorted(wanted - set(rows))
        if unknown:
            raise BadInput(
                f"unknown share(s): {', '.join(unknown)}", hint="list them with `labgpu share list`"
            )
        for share_name in request.add_shares:
            if rows[share_name].all_members:
                raise BadInput(
                    f"share {share_name} is mounted for every member already (through the profile)"
                )
    if request.gpus is not None:
        missing = missing_gpus(parse_gpu_request(request.gpus), host_gpus(svc.runtime))
        if missing:
            raise BadInput(f"this host has no GPU {', '.join(map(str, missing))}")


def _write_set(svc: Services, name: str, request: SetRequest) -> tuple[list[Change], _Before]:
    settings = svc.settings
    changes: list[Change] = []
    with svc.session() as session:
        member = load_member(session, name)
        before = _Before(
            cpu=member.cpu_limit,
            memory_bytes=member.memory_limit_bytes,
            disk_bytes=member.disk_size_bytes,
            gpu_spec=member.gpu_spec,
            shares=frozenset(s.name for s in member.shares),
            ports={
                str(p.purpose): (p.host_port, p.listen_address, p.container_port) for p in member.port_maps
            },
            spec_version=member.spec_version,
        )
        if "cpu" in request.given and member.cpu_limit != request.cpu:
            changes.append(Change("cpu", str(member.cpu_limit or "default"), str(request.cpu or "default")))
            member.cpu_limit = request.cpu
        if "memory" in request.given and member.memory_limit_bytes != request.memory_bytes:
            changes.append(
                Change("memory", _fmt_size(member.memory_limit_bytes), _fmt_size(request.memory_bytes))
            )
            member.memory_limit_bytes = request.memory_bytes
        if "disk" in request.given and member.disk_size_bytes != request.disk_bytes:
            changes.append(Change("disk", _fmt_size(member.disk_size_bytes), _fmt_size(request.disk_bytes)))
            member.disk_size_bytes = request.disk_bytes
        current_gpus = member.gpu_spec or settings.default_gpus
        if request.gpus is not None and request.gpus != str(parse_gpu_request(current_gpus)):
            changes.append(Change("gpus", current_gpus, request.gpus))
            member.gpu_spec = request.gpus
        attached = {s.name: s for s in member.shares}
        for share in session.scalars(select(Share).where(Share.name.in_(request.add_shares))):
            if share.name not in attached:
                mode = "read-only" if share.readonly else "read-write"
                changes.append(Change(f"share {share.name}", "-", f"{share.path} ({mode})"))
                member.shares.append(share)
        for share_name in request.remove_shares:
            if share_name in attached:
                changes.append(Change(f"share {share_name}", attached[share_name].path, "-"))
                member.shares.remove(attached[share_name])
        have_ports = {str(p.purpose): p for p in member.port_maps}
        for purpose, wanted in request.ports.items():
            if wanted and purpose not in have_ports:
                port_map = _allocate_port(svc, session, member, purpose)
                member.port_maps.append(port_map)
                changes.append(Change(purpose, "-", f"port {port_map.host_port}"))
            elif not wanted and purpose in have_ports:
                changes.append(Change(purpose, f"port {have_ports[purpose].host_port}", "-"))
                member.port_maps.remove(have_ports[purpose])
        if changes:
            member.spec_version += 1
            session.flush()
            svc.audit(session, "member.set", name, changes=[c.as_dict() for c in changes])
    return changes, before


def _allocate_port(svc: Services, session: Session, member: Member, purpose: str) -> PortMap:
    """A new port map for ``purpose``: the lowest free port (the constraint catches a race)."""
    settings = svc.settings
    host_id = member.host_id if member.host_id is not None else local_host(session, svc.runtime).id
    used = session.scalars(
        select(PortMap.host_port).where(
            PortMap.host_id == host_id, PortMap.listen_address == settings.listen_address
        )
    )
    (port,) = allocate_ports(used, start=settings.port_range_start, end=settings.port_range_end, count=1)
    return PortMap(
        host_id=host_id,
        listen_address=settings.listen_address,
        host_port=port,
        container_port=CONTAINER_PORTS[purpose],
        purpose=PortPurpose(purpose),
    )


def _revert_set(svc: Services, name: str, before: _Before, *, reason: str) -> None:
    """Put the row back as it was before `member set` (the daemon refused the change)."""
    with svc.session() as session:
        member = load_member(session, name)
        member.cpu_limit = before.cpu
        member.memory_limit_bytes = before.memory_bytes
        member.disk_size_bytes = before.disk_bytes
        member.gpu_spec = before.gpu_spec
        for share in list(member.shares):
            if share.name not in before.shares:
                member.shares.remove(share)
        have = {s.name for s in member.shares}
        missing = before.shares - have
        if missing:
            member.shares.extend(session.scalars(select(Share).where(Share.name.in_(missing))))
        for pm in list(member.port_maps):
            if str(pm.purpose) not in before.ports:
                member.port_maps.remove(pm)
        session.flush()
        have_ports = {str(p.purpose) for p in member.port_maps}
        host_id = member.host_id if member.host_id is not None else local_host(session, svc.runtime).id
        for purpose, (port, listen, container_port) in before.ports.items():
            if purpose not in have_ports:
                member.port_maps.append(
                    PortMap(
                        host_id=host_id,
                        listen_address=listen,
                        host_port=port,
                        container_port=container_port,
                        purpose=PortPurpose(purpose),
                    )
                )
        member.spec_version = before.spec_version
        svc.audit(session, "member.set.reverted", name, reason=reason)
